// What the CPU and CUDA kernels of every fused op share. Torch-free (only the C++ standard
// library and, under nvcc, the CUDA runtime's qualifiers), so both csrc/cpu/*.cpp and the
// torch-free csrc/cuda/*.cu include it.
//   - the constants that must agree with Python, Triton and each other (copies of
//     eqkernels/ops/constants.py; eqkernels._C.constants() exposes them and
//     tests/test_ops_constants.py asserts they are equal);
//   - the noise stream, all of it but the CPU's SIMD Philox (eqkernels/ops/block_step.py states
//     it bit by bit): the step key, Philox2x32-10, the float32 Box-Muller of a pair, so the
//     C++ kernel the tests run compiles the same source as the CUDA one;
//   - the op parameter structs, defined once;
//   - the per-sample state view and the per-sample "finish" bookkeeping, host and device.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define EQK_HD __host__ __device__ __forceinline__
#else
#define EQK_HD inline
#endif

namespace eqk {

// ---- constants (eqkernels/ops/constants.py) ----
constexpr double kRelEps = 1e-9;           // REL_EPS
constexpr double kCholPivotRtol = 1e-12;   // CHOL_PIVOT_RTOL
constexpr int kMaxHistory = 16;            // MAX_HISTORY
constexpr uint32_t kHashMul0 = 0x7feb352dU;  // HASH_MUL[0]
constexpr uint32_t kHashMul1 = 0x846ca68bU;  // HASH_MUL[1]
constexpr uint32_t kNoiseStepOffset = 0x9e3779b9U;  // NOISE_STEP_OFFSET

// ---- the noise stream (eqkernels/ops/block_step.py states it bit by bit) ----
// Every backend evaluates the same sequence of IEEE float32 operations (+, -, *, fma and sqrt,
// each rounded once to nearest even; int <-> float conversions that are exact), so eps is
// bit-identical on the CPU, CUDA, Triton and the PyTorch reference. Nothing below may be
// contracted or reassociated: the device code spells every rounding (__f*_rn), and the host
// code has no a * b + c left for the compiler to fuse (each fma is explicit).

// Wellons' lowbias32 mixer; all arithmetic mod 2^32.
EQK_HD uint32_t lowbias32(uint32_t x) {
  x ^= x >> 16;
  x *= kHashMul0;
  x ^= x >> 15;
  x *= kHashMul1;
  x ^= x >> 16;
  return x;
}

// Key of update number `step` (1-based) of a run seeded with `seed`: block_step.noise_key.
// seed and step are taken mod 2^32, as the Python version does.
EQK_HD uint32_t noise_key(int64_t seed, int64_t step) {
  return lowbias32(lowbias32(static_cast<uint32_t>(seed)) ^
                   lowbias32(static_cast<uint32_t>(step) + kNoiseStepOffset));
}

// Philox2x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC11): the
// counter-based generator of the stream. Ten rounds of (L, R) -> (hi(M L) ^ k_i ^ R, lo(M L)),
// k_i = key + i W. The round keys of a step, computed once per thread.
constexpr uint32_t kPhiloxM = 0xD256D193u;  // PHILOX_M (eqkernels/ops/constants.py)
constexpr uint32_t kPhiloxW = 0x9E3779B9u;  // PHILOX_W
constexpr int kPhiloxRounds = 10;
struct PhiloxKeys {
  uint32_t k[kPhiloxRounds];
};
EQK_HD PhiloxKeys philox_keys(uint32_t key) {
  PhiloxKeys ks;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int i = 0; i < kPhiloxRounds; ++i) ks.k[i] = key + uint32_t(i) * kPhiloxW;
  return ks;
}
// (h0, h1) = Philox2x32-10 of the counter (c0, c1) under the round keys ks.
EQK_HD void philox2x32(uint32_t c0, uint32_t c1, const PhiloxKeys& ks, uint32_t& h0,
                       uint32_t& h1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int i = 0; i < kPhiloxRounds; ++i) {
    const uint64_t p = uint64_t(kPhiloxM) * c0;  // one 32 x 32 -> 64 multiply
    c0 = static_cast<uint32_t>(p >> 32) ^ ks.k[i] ^ c1;
    c1 = static_cast<uint32_t>(p);
  }
  h0 = c0;
  h1 = c1;
}

// ln(1 + t) = t + t^2 Q(t) on [sqrt(1/2) - 1, sqrt(2) - 1]: Q's coefficients, t^0 first
// (eqkernels/ops/constants.py NOISE_LOG_POLY, exact float32 values; fitted by
// scripts/fit_noise_polynomials.py). Scalars, not arrays: a constexpr array is not usable in
// device code.
constexpr float kNoiseLog0 = -0x1.fffff8p-2f, kNoiseLog1 = 0x1.55555p-2f,
                kNoiseLog2 = -0x1.000426p-2f, kNoiseLog3 = 0x1.99a3fap-3f,
                kNoiseLog4 = -0x1.54277cp-3f, kNoiseLog5 = 0x1.227146p-3f,
                kNoiseLog6 = -0x1.0f366ap-3f, kNoiseLog7 = 0x1.084968p-3f,
                kNoiseLog8 = -0x1.383702p-4f;
// sin(2 pi v) = v S0 + v w (S1 + w (S2 + w S3)), w = v^2, on [-1/8, 1/8]
constexpr float kNoiseSin0 = 0x1.921fb6p+2f, kNoiseSin1 = -0x1.4abbbap+5f,
                kNoiseSin2 = 0x1.465ec8p+6f, kNoiseSin3 = -0x1.2d9c22p+6f;
// cos(2 pi v) = 1 + w (C0 + w (C1 + w (C2 + w C3))) on [-1/8, 1/8]
constexpr float kNoiseCos0 = -0x1.3bd3ccp+4f, kNoiseCos1 = 0x1.03c1dep+6f,
                kNoiseCos2 = -0x1.55c5e2p+6f, kNoiseCos3 = 0x1.d9d5e8p+5f;
constexpr float kNoiseLn2 = 0x1.62e43p-1f;  // ln 2 rounded to float32

// The float32 operations of the spec, each rounded once (never fused with a neighbour).
EQK_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
EQK_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
EQK_HD float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  // One vfmadd / fmadd where the function's target has FMA (it vectorises); elsewhere the C
  // library's fmaf, correctly rounded too (slow: csrc/cpu/block_step.cpp compiles its noise
  // for FMA targets as well and picks at run time).
  return __builtin_fmaf(a, b, c);
#endif
}
// Correctly rounded sqrt of x in [2^-100, 2^126) (the stream's -2 ln u0 is in [1.2e-7, 34]).
// On the device: the main path of CUDA's own sqrt.rn.f32 (what ptxas emits for it: an
// approximate reciprocal square root, s = x y, then one exact-residual correction), without
// its range test, branch and slow-path call for other inputs: 5 instructions instead of ~11.
EQK_HD float sqrt_rn_in_range(float x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("rsqrt.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  const float s = __fmul_rn(x, y);
  const float h = __fmul_rn(0.5f, y);
  return __fmaf_rn(__fmaf_rn(-s, s, x), h, s);
#else
  return std::sqrt(x);
#endif
}
EQK_HD uint32_t bits_of(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}
EQK_HD float float_of(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}
// int32 -> float32; exact for |i| < 2^24, which is all the stream converts.
EQK_HD float float_of_int(int32_t i) {
#if defined(__CUDA_ARCH__)
  return __int2float_rn(i);
#else
  return static_cast<float>(i);
#endif
}

// u0 = (2 (h0 >> 9) + 1) / 2^24 in (0, 1): 1.m from the bits, minus (1 - 2^-24), exactly.
EQK_HD float noise_uniform(uint32_t h) {
  return add_rn(float_of(0x3f800000u | (h >> 9)), -0x1.fffffep-1f);
}

// ln u for a normal float u > 0: u = m 2^e, m in [sqrt(1/2), sqrt(2)) found on the bits,
// t = m - 1 exactly; ln u = e ln2 + (t + t^2 Q(t)). Within 0.87 ulp over every u0.
EQK_HD float noise_log(float u) {
  const int32_t ix = static_cast<int32_t>(bits_of(u));
  // arithmetic shift (GCC, Clang and nvcc define >> of a negative int32 so): floor division
  const int32_t e = (ix - 0x3f3504f3) >> 23;
  const float t = add_rn(float_of(static_cast<uint32_t>(ix - e * (1 << 23))), -1.0f);
  float q = fma_rn(kNoiseLog8, t, kNoiseLog7);
  q = fma_rn(q, t, kNoiseLog6);
  q = fma_rn(q, t, kNoiseLog5);
  q = fma_rn(q, t, kNoiseLog4);
  q = fma_rn(q, t, kNoiseLog3);
  q = fma_rn(q, t, kNoiseLog2);
  q = fma_rn(q, t, kNoiseLog1);
  q = fma_rn(q, t, kNoiseLog0);
  return fma_rn(float_of_int(e), kNoiseLn2, fma_rn(mul_rn(t, t), q, t));
}

// Box-Muller with both outputs, from the two Philox words of a pair: rad = sqrt(-2 ln u0); the
// angle from h1: a remainder v = r / 2^24 in (-1/8, 1/8) (r = 2 (bits 9-29) + 1 - 2^21) whose cos
// and sin are polynomials; bit 31 negates the cos, bit 30 swaps the two: that puts the angle in
// each quarter turn once, uniform over the 2^23 odd multiples of 2 pi / 2^24.
EQK_HD void box_muller_pair(uint32_t h0, uint32_t h1, float& eps0, float& eps1) {
  const float rad = sqrt_rn_in_range(mul_rn(-2.0f, noise_log(noise_uniform(h0))));
  // v = r / 2^24, r = 2k + 1 - 2^21 (k = bits 9-29 of h1): one fma, exact (the sum fits 24 bits)
  const float two_k = float_of_int(static_cast<int32_t>((h1 >> 8) & 0x3ffffeu));
  const float v = fma_rn(two_k, 0x1p-24f, (1 - 0x200000) * 0x1p-24f);
  const float w = mul_rn(v, v);
  float ps = fma_rn(kNoiseSin3, w, kNoiseSin2);
  ps = fma_rn(ps, w, kNoiseSin1);
  const float sn = fma_rn(v, kNoiseSin0, mul_rn(v, mul_rn(w, ps)));
  float pc = fma_rn(kNoiseCos3, w, kNoiseCos2);
  pc = fma_rn(pc, w, kNoiseCos1);
  pc = fma_rn(pc, w, kNoiseCos0);
  const float cs = float_of(bits_of(fma_rn(w, pc, 1.0f)) ^ (h1 & 0x80000000u));
#if defined(__CUDA_ARCH__)
  const bool swap = (h1 & 0x40000000u) != 0u;  // one predicate, two selects
  eps0 = mul_rn(rad, swap ? sn : cs);
  eps1 = mul_rn(rad, swap ? cs : sn);
#else
  // the swap as a bit blend: a ?: on floats kept GCC from vectorising the loop on AVX2
  const uint32_t cb = bits_of(cs), sb = bits_of(sn);
  const uint32_t swap = 0u - ((h1 >> 30) & 1u);  // all ones when bit 30 is set
  eps0 = mul_rn(rad, float_of((sb & swap) | (cb & ~swap)));
  eps1 = mul_rn(rad, float_of((cb & swap) | (sb & ~swap)));
#endif
}

// The pair (eps[2c], eps[2c + 1]) of pair counter c: (h0, h1) = Philox2x32-10((c, 0), key), then
// box_muller_pair.
EQK_HD void standard_normal_pair(uint32_t c, const PhiloxKeys& ks, float& eps0, float& eps1) {
  uint32_t h0, h1;
  philox2x32(c, 0u, ks, h0, h1);
  box_muller_pair(h0, h1, eps0, eps1);
}

// eps[idx] alone (flat index idx mod 2^32): the pair of idx >> 1, the half idx & 1. Twice the
// work of standard_normal_pair per element: for rows that start or end inside a pair.
EQK_HD float standard_normal(uint32_t idx, const PhiloxKeys& ks) {
  float e0, e1;
  standard_normal_pair(idx >> 1, ks, e0, e1);
  return (idx & 1u) ? e1 : e0;
}

// ---- op parameters (the scalars of each op's schema) ----
struct BlockStepParams {
  double damping;
  double sigma;   // 0: no noise term at all
  int64_t seed;   // the key of this call is noise_key(seed, *step + 1); the op stores *step + 1
  double tol;
  bool stop_rel;  // stop on the relative residual instead of the absolute one
};

struct AndersonParams {
  double tol;
  bool stop_rel;
  double beta;
  double lam;
  double restart_growth;
};

// ---- per-sample state (eqkernels.ops.tracking.SolveState), as raw pointers ----
// T: the state's element type (best_z); R: the residuals' type. The block step has no best_*
// (nullptr there).
template <typename T, typename R>
struct StateView {
  bool* active;
  bool* converged;
  bool* diverged;
  int32_t* nstep;
  R* abs_res;
  R* rel_res;
  R* best_abs;
  R* best_rel;
  T* best_z;
};

EQK_HD bool is_finite(double x) {
#if defined(__CUDA_ARCH__)
  return isfinite(x);
#else
  return std::isfinite(x);
#endif
}

enum Outcome : int { kLive = 0, kConverged = 1, kDiverged = 2 };

struct Finished {
  int outcome;    // Outcome
  bool improved;  // the metric beat the best so far (TRACK_BEST only)
  double best;    // the stop-mode best after this step, as stored (rounded to R)
  double metric;  // the stop-mode residual of this step
};

// The bookkeeping of one step of sample b whose residual is absv, with reference norm `norm`
// (||z_next|| for the block step, ||f(z)|| for Anderson): count the step, store the residuals,
// flag a non-finite one as diverged, (TRACK_BEST) keep the best residuals, flag a stop-mode
// residual below tol as converged; either flag deactivates the sample. The caller copies
// best_z when `improved` (a row copy is the caller's loop). Semantics: tracking.py.
template <bool TRACK_BEST, typename T, typename R>
EQK_HD Finished finish_sample(const StateView<T, R>& s, int64_t b, double absv, double norm,
                              bool stop_rel, double tol) {
  const double rel = absv / (norm + kRelEps);
  s.nstep[b] += 1;
  s.abs_res[b] = R(absv);
  s.rel_res[b] = R(rel);
  const double metric = stop_rel ? rel : absv;
  Finished f{kLive, false, 0.0, metric};
  if (!is_finite(absv) || !is_finite(norm)) {
    s.diverged[b] = true;
    s.active[b] = false;
    f.outcome = kDiverged;
    return f;
  }
  if (TRACK_BEST) {
    f.best = stop_rel ? double(s.best_rel[b]) : double(s.best_abs[b]);
    if (metric < f.best) {
      f.improved = true;
      s.best_abs[b] = R(absv);
      s.best_rel[b] = R(rel);
      f.best = stop_rel ? double(s.best_rel[b]) : double(s.best_abs[b]);
    }
  }
  if (metric < tol) {
    s.converged[b] = true;
    s.active[b] = false;
    f.outcome = kConverged;
  }
  return f;
}

}  // namespace eqk

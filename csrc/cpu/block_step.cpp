// Fused block-step epilogue, CPU. Semantics: eqkernels/ops/block_step.py (block_step_ref).
// Registered as the CPU implementation of eqk::block_step (schema: csrc/ops/block_step.cpp).
//
// One pass per sample that is active on entry, in blocks of BLK elements: read z and f_out
// once, write z_next once,
//   z_next = T((1 - damping) z + damping f_out + sigma eps)   (in W = float; double for double)
// while accumulating, in double, ||z_next - z||^2 and ||z_next||^2 of the stored values; then
// the bookkeeping (finish_sample: nstep, residuals, diverged / converged / active). The noise
// key is noise_key(seed, step + 1) of the step counter tensor, which the call then advances.
// Samples are independent: OpenMP over the batch when the work pays for the fork/join.
// z_next may alias z: each element of z is loaded before the same element of z_next is stored,
// and no element is read after it was stored.
// No heap allocation and no torch op inside the call: raw pointers, small stack arrays.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <c10/util/BFloat16.h>

#include "../ops.h"
#include "batch.h"

// Round every product and sum as PyTorch's separate mul/add kernels do (the reference): no
// a * b + c contracted into an FMA (C++ builds default to -ffp-contract=fast), so the noiseless
// float32/float64 step is bit-identical to block_step_ref. Applies to the code below only.
#pragma GCC optimize("fp-contract=off")

namespace eqk {
namespace {

constexpr int64_t BLK = 512;      // elements per block (the noise buffer of a block stays in L1)
// Fork/join of an OpenMP team costs a few microseconds, about what one thread needs for this
// many elements of the noiseless update (B * n; the noisy one is costlier, so this is safe).
constexpr int64_t OMP_MIN_ELEMS = int64_t(1) << 15;

// ---- the noise stream of block_step.standard_normal_ref: standard_normal_pair and the keys are
// in common/kernel_common.h, the same source the CUDA kernel compiles ----

// ---- the noise of a block: Philox2x32-10 of its pairs, then Box-Muller (common/kernel_common.h).
// GCC vectorises the portable philox2x32 with 64-bit lanes and vpmullq (twice the time of the
// whole old stream on AVX-512), so the x86 versions below do the 32 x 32 -> 64 multiplies as
// pmuludq on the even and the odd 32-bit lanes. Each version is compiled for its own target
// (pragma GCC target, so a build without -march=native still runs FMA and AVX-512 code where the
// CPU has them: fma_rn is one instruction only where the function's target has FMA) and one is
// picked at run time. The tests hold every version to the reference, bit for bit.

// eps pairs (h0[j], h1[j]) -> buf[2 j], buf[2 j + 1], vectorised in the caller's target.
__attribute__((always_inline)) inline void box_muller_block(const uint32_t* h0, const uint32_t* h1,
                                                            int64_t npairs, float* buf) {
  for (int64_t j = 0; j < npairs; ++j) {
    float e0, e1;
    box_muller_pair(h0[j], h1[j], e0, e1);
    buf[2 * j] = e0;
    buf[2 * j + 1] = e1;
  }
}

constexpr int64_t kPairsMax = BLK / 2 + 1;  // pairs covering one block (one extra at an edge)
using NoiseBlockFn = void (*)(uint32_t c0, const PhiloxKeys& ks, int64_t npairs, float* buf);

// The portable version: any target.
void noise_block_generic(uint32_t c0, const PhiloxKeys& ks, int64_t npairs, float* buf) {
  alignas(64) uint32_t h0[kPairsMax], h1[kPairsMax];
  for (int64_t j = 0; j < npairs; ++j)
    philox2x32((c0 + uint32_t(j)) & 0x7fffffffu, 0u, ks, h0[j], h1[j]);
  box_muller_block(h0, h1, npairs, buf);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
void noise_block_avx512(uint32_t c0, const PhiloxKeys& ks, int64_t npairs, float* buf) {
  alignas(64) uint32_t h0[kPairsMax], h1[kPairsMax];
  const __m512i m = _mm512_set1_epi32(int(kPhiloxM));
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i low31 = _mm512_set1_epi32(0x7fffffff);
  int64_t j = 0;
  for (; j + 16 <= npairs; j += 16) {
    __m512i L = _mm512_and_si512(
        _mm512_add_epi32(_mm512_set1_epi32(int(c0 + uint32_t(j))), lanes), low31);
    __m512i R = _mm512_setzero_si512();
    for (int i = 0; i < kPhiloxRounds; ++i) {
      const __m512i pe = _mm512_mul_epu32(L, m);                         // lanes 0, 2, ..
      const __m512i po = _mm512_mul_epu32(_mm512_srli_epi64(L, 32), m);  // lanes 1, 3, ..
      const __m512i hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(pe, 32), po);
      const __m512i lo = _mm512_mask_blend_epi32(0xAAAA, pe, _mm512_slli_epi64(po, 32));
      L = _mm512_ternarylogic_epi32(hi, _mm512_set1_epi32(int(ks.k[i])), R, 0x96);  // a^b^c
      R = lo;
    }
    _mm512_store_si512(h0 + j, L);
    _mm512_store_si512(h1 + j, R);
  }
  for (; j < npairs; ++j) philox2x32((c0 + uint32_t(j)) & 0x7fffffffu, 0u, ks, h0[j], h1[j]);
  box_muller_block(h0, h1, npairs, buf);
}
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
void noise_block_avx2(uint32_t c0, const PhiloxKeys& ks, int64_t npairs, float* buf) {
  alignas(64) uint32_t h0[kPairsMax], h1[kPairsMax];
  const __m256i m = _mm256_set1_epi32(int(kPhiloxM));
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i low31 = _mm256_set1_epi32(0x7fffffff);
  int64_t j = 0;
  for (; j + 8 <= npairs; j += 8) {
    __m256i L = _mm256_and_si256(
        _mm256_add_epi32(_mm256_set1_epi32(int(c0 + uint32_t(j))), lanes), low31);
    __m256i R = _mm256_setzero_si256();
    for (int i = 0; i < kPhiloxRounds; ++i) {
      const __m256i pe = _mm256_mul_epu32(L, m);
      const __m256i po = _mm256_mul_epu32(_mm256_srli_epi64(L, 32), m);
      const __m256i hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
      const __m256i lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
      L = _mm256_xor_si256(_mm256_xor_si256(hi, _mm256_set1_epi32(int(ks.k[i]))), R);
      R = lo;
    }
    _mm256_store_si256(reinterpret_cast<__m256i*>(h0 + j), L);
    _mm256_store_si256(reinterpret_cast<__m256i*>(h1 + j), R);
  }
  for (; j < npairs; ++j) philox2x32((c0 + uint32_t(j)) & 0x7fffffffu, 0u, ks, h0[j], h1[j]);
  box_muller_block(h0, h1, npairs, buf);
}
#pragma GCC pop_options

NoiseBlockFn pick_noise_block() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma"))
    return noise_block_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return noise_block_avx2;
  return noise_block_generic;
}
#else
NoiseBlockFn pick_noise_block() { return noise_block_generic; }
#endif

const NoiseBlockFn noise_block = pick_noise_block();

// eps of flat indices flat0 + i (mod 2^32), i < len: the whole pairs that cover them go into buf
// (cos half, sin half, ...: 2 floats a pair), and eps[i] is returned at buf + (flat0 & 1) (a
// row that starts on an odd index starts with a pair's sin half).
inline const float* standard_normal_block(uint32_t flat0, const PhiloxKeys& ks, int64_t len,
                                          float* buf) {
  const int64_t off = flat0 & 1u;
  noise_block(flat0 >> 1, ks, (off + len + 1) >> 1, buf);
  return buf + off;
}

// ---- vector helpers (GCC/Clang vector extensions; lowered to AVX2 / AVX-512 / SSE2 as -march
// allows), 4 lanes: W values in wv, their double widening in vd. Element-aligned types for
// unaligned loads/stores. ----
typedef double vd __attribute__((vector_size(32)));
typedef double vd_u __attribute__((vector_size(32), aligned(8)));
typedef float vf __attribute__((vector_size(16)));
typedef float vf_u __attribute__((vector_size(16), aligned(4)));
typedef uint32_t vu __attribute__((vector_size(16)));
typedef int32_t vi __attribute__((vector_size(16)));
// bfloat16 payloads are read through uint16_t: may_alias, since the objects are c10::BFloat16
typedef uint16_t vh_u __attribute__((vector_size(8), aligned(2), may_alias));
constexpr int64_t VW = 4;

inline vd widen(vf v) {
#if defined(__AVX__)
  return (vd)_mm256_cvtps_pd((__m128)v);  // GCC 12 splits __builtin_convertvector into halves
#else
  return __builtin_convertvector(v, vd);
#endif
}

// Lanes<T>: W (compute type), R (residual type), and 4-lane load / round-to-T / store of T.
template <typename T>
struct Lanes;

template <>
struct Lanes<float> {
  using W = float;
  using R = float;
  using wv = vf;
  static wv load(const float* p) { return *reinterpret_cast<const vf_u*>(p); }
  static wv round(wv v) { return v; }
  static void store(float* p, wv v) { *reinterpret_cast<vf_u*>(p) = v; }
  static vd to_double(wv v) { return widen(v); }
  static wv load_eps(const float* p) { return load(p); }
};

template <>
struct Lanes<double> {
  using W = double;
  using R = double;
  using wv = vd;
  static wv load(const double* p) { return *reinterpret_cast<const vd_u*>(p); }
  static wv round(wv v) { return v; }
  static void store(double* p, wv v) { *reinterpret_cast<vd_u*>(p) = v; }
  static vd to_double(wv v) { return v; }
  static wv load_eps(const float* p) { return widen(*reinterpret_cast<const vf_u*>(p)); }
};

template <>
struct Lanes<c10::BFloat16> {
  using W = float;
  using R = float;
  using wv = vf;
  static wv load(const c10::BFloat16* p) {  // bfloat16 -> float: the bits, shifted up
    const vh_u h = *reinterpret_cast<const vh_u*>(p);
    return (vf)(__builtin_convertvector(h, vu) << 16);
  }
  // Round to bfloat16, nearest even, kept as a float: c10::BFloat16(float) (NaN -> 0x7fc0).
  static wv round(wv v) {
    const vu u = (vu)v;
    const vu r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    const vi is_nan = v != v;
    return (vf)((r & ~(vu)is_nan) | (0x7fc00000u & (vu)is_nan));
  }
  static void store(c10::BFloat16* p, wv v) {  // v already rounded: keep the high half
    *reinterpret_cast<vh_u*>(p) = __builtin_convertvector((vu)v >> 16, vh_u);
  }
  static vd to_double(wv v) { return widen(v); }
  static wv load_eps(const float* p) { return *reinterpret_cast<const vf_u*>(p); }
};

template <typename T>
struct Args {
  const T* z;
  const T* f_out;
  T* z_next;
  StateView<T, typename Lanes<T>::R> s;
  int64_t n;
  PhiloxKeys ks;  // the round keys of this call's noise key
  BlockStepParams p;
};

// One block of len elements: out = T(keep z + lam f (+ sig eps)); adds (T(new) - z)^2 and
// T(new)^2 to the lane sums dd, qq. No __restrict: out may be z.
template <typename T, bool NOISE>
inline void update_block(const T* z, const T* f, T* out, const float* eps, int64_t len,
                         typename Lanes<T>::W keep, typename Lanes<T>::W lam,
                         typename Lanes<T>::W sig, vd& dd, vd& qq) {
  using L = Lanes<T>;
  using W = typename L::W;
  const typename L::wv vkeep = typename L::wv{} + keep, vlam = typename L::wv{} + lam,
                       vsig = typename L::wv{} + sig;
  vd dd1 = {0, 0, 0, 0}, qq1 = dd1;  // a second pair of sums: two independent chains
  int64_t i = 0;
  for (; i + 2 * VW <= len; i += 2 * VW) {
    const auto z0 = L::load(z + i), z1 = L::load(z + i + VW);  // both before any store
    auto v0 = vkeep * z0 + vlam * L::load(f + i);
    auto v1 = vkeep * z1 + vlam * L::load(f + i + VW);
    if constexpr (NOISE) {
      v0 += vsig * L::load_eps(eps + i);
      v1 += vsig * L::load_eps(eps + i + VW);
    }
    const auto t0 = L::round(v0), t1 = L::round(v1);
    L::store(out + i, t0);
    L::store(out + i + VW, t1);
    const vd q0 = L::to_double(t0), q1 = L::to_double(t1);
    const vd d0 = q0 - L::to_double(z0), d1 = q1 - L::to_double(z1);
    dd += d0 * d0;
    qq += q0 * q0;
    dd1 += d1 * d1;
    qq1 += q1 * q1;
  }
  dd += dd1;
  qq += qq1;
  double ds = 0.0, qs = 0.0;
  for (; i < len; ++i) {
    const W zi = W(z[i]);
    W v = keep * zi + lam * W(f[i]);
    if constexpr (NOISE) v += sig * W(eps[i]);
    const T t = T(v);
    out[i] = t;
    const double q = double(t);
    const double d = q - double(zi);
    ds += d * d;
    qs += q * q;
  }
  dd[0] += ds;
  qq[0] += qs;
}

template <typename T, bool NOISE>
inline void step_sample(const Args<T>& a, int64_t b) {
  if (!a.s.active[b]) return;
  using W = typename Lanes<T>::W;
  const int64_t n = a.n;
  // Scalars rounded to W once, as PyTorch does with a Python scalar times a W tensor.
  const W keep = W(1.0 - a.p.damping), lam = W(a.p.damping), sig = W(a.p.sigma);
  const T* z = a.z + b * n;
  const T* f = a.f_out + b * n;
  T* out = a.z_next + b * n;
  alignas(64) float buf[NOISE ? BLK + 2 : 1];  // the pairs of one block (one extra at an edge)
  const float* eps = buf;
  vd dd = {0, 0, 0, 0}, qq = dd;
  for (int64_t i0 = 0; i0 < n; i0 += BLK) {
    const int64_t len = std::min(BLK, n - i0);
    if constexpr (NOISE) eps = standard_normal_block(uint32_t(b * n + i0), a.ks, len, buf);
    update_block<T, NOISE>(z + i0, f + i0, out + i0, eps, len, keep, lam, sig, dd, qq);
  }
  const double absv = std::sqrt((dd[0] + dd[1]) + (dd[2] + dd[3]));
  const double nrm = std::sqrt((qq[0] + qq[1]) + (qq[2] + qq[3]));
  finish_sample<false>(a.s, b, absv, nrm, a.p.stop_rel, a.p.tol);
}

template <typename T, bool NOISE>
void run(const Args<T>& a, int64_t B) {
  const bool parallel = B > 1 && B * a.n >= OMP_MIN_ELEMS;
  for_each_sample(B, parallel, a.s.active, [&](int64_t b) { step_sample<T, NOISE>(a, b); });
}

template <typename T>
void dispatch(const at::Tensor& z, const at::Tensor& f_out, at::Tensor& z_next,
              at::Tensor& active, at::Tensor& converged, at::Tensor& diverged, at::Tensor& nstep,
              at::Tensor& abs_res, at::Tensor& rel_res, uint32_t key, const BlockStepParams& p) {
  using R = typename Lanes<T>::R;
  const StateView<T, R> s{active.data_ptr<bool>(), converged.data_ptr<bool>(),
                          diverged.data_ptr<bool>(), nstep.data_ptr<int32_t>(),
                          abs_res.data_ptr<R>(), rel_res.data_ptr<R>(), nullptr, nullptr,
                          nullptr};
  const Args<T> a{z.data_ptr<T>(), f_out.data_ptr<T>(), z_next.data_ptr<T>(), s, z.size(1),
                  philox_keys(key), p};
  // sigma == 0: the reference adds no noise term at all
  if (p.sigma != 0.0)
    run<T, true>(a, z.size(0));
  else
    run<T, false>(a, z.size(0));
}

void block_step_cpu(const at::Tensor& z, const at::Tensor& f_out, at::Tensor& z_next,
                    at::Tensor& active, at::Tensor& converged, at::Tensor& diverged,
                    at::Tensor& nstep, at::Tensor& abs_res, at::Tensor& rel_res, at::Tensor& step,
                    int64_t seed, double damping, double sigma, double tol, bool stop_rel) {
  check_block_step(z, f_out, z_next, active, converged, diverged, nstep, abs_res, rel_res, step);
  const BlockStepParams p{damping, sigma, seed, tol, stop_rel};
  int64_t* counter = step.data_ptr<int64_t>();
  const uint32_t key = noise_key(seed, *counter + 1);
  switch (z.scalar_type()) {
    case at::kFloat:
      dispatch<float>(z, f_out, z_next, active, converged, diverged, nstep, abs_res, rel_res,
                      key, p);
      break;
    case at::kDouble:
      dispatch<double>(z, f_out, z_next, active, converged, diverged, nstep, abs_res, rel_res,
                       key, p);
      break;
    default:  // bfloat16 (check_block_step admits no other)
      dispatch<c10::BFloat16>(z, f_out, z_next, active, converged, diverged, nstep, abs_res,
                              rel_res, key, p);
  }
  *counter += 1;
}

}  // namespace
}  // namespace eqk

TORCH_LIBRARY_IMPL(eqk, CPU, m) { m.impl("block_step", &eqk::block_step_cpu); }

// Fused Anderson step, CPU. Semantics: eqkernels/ops/anderson_mix.py (anderson_step_ref).
// Registered as the CPU implementation of eqk::anderson_step (schema: csrc/ops/anderson_mix.cpp).
//
// One sample at a time (samples are independent; OpenMP over the batch when the work is
// large enough to pay for the fork/join). Per sample:
//   pass 1  reads z, fz and the history rows G_j that stay valid (all rows in one sweep), in
//           blocks of BLK elements: |g|^2, |fz|^2 and g . G_j, all accumulated in double;
//   decide  bookkeeping (nstep, residuals, divergence, best iterate, convergence), restart,
//           ring-buffer slot, Gram row/column, k x k Cholesky solve for the mixing weights;
//   pass 2  writes best_z (if improved), X[slot] = z, G[slot] = g, and
//           z_out = sum_j alpha_j (X_j + beta G_j): summed in double (FMA) and rounded once
//           for float64; for float32 in float, written about the new slot.
// z_out may alias z: within a block every z element is read (first loop) before the block's
// z_out elements are written (last loop), and later blocks only touch later elements.
// No heap allocation and no torch op inside the call: raw pointers, small stack arrays.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "../ops.h"
#include "../ops/checks.h"
#include "batch.h"

namespace eqk {
namespace {

// CHOL_PIVOT_RTOL and MAX_HISTORY: the shared constants (common/kernel_common.h).
constexpr double CHOL_PIVOT_RTOL = kCholPivotRtol;
constexpr int MAX_HISTORY = kMaxHistory;
constexpr int64_t BLK = 512;          // elements per block of the two passes (stays in L1)
// Fork/join of an OpenMP team costs a few microseconds; below this many element-row visits
// (B * n * (m + 2)) one thread finishes first. Measured on a 2-core EPYC (AVX2): the team pays
// off from about B * n = 4096 at m = 6 (a serial step there takes ~10 us).
constexpr int64_t OMP_MIN_WORK = int64_t(1) << 15;

template <typename T>
struct Args {
  const T* z;
  const T* fz;
  T* z_out;
  StateView<T, T> s;
  T* X;
  T* G;
  double* gram;
  int32_t* count;
  int64_t n;
  int m;
  AndersonParams p;
};

// ---- vector helpers: 4 elements of T widened to 4 doubles (GCC/Clang vector extensions; the
// compiler lowers them to AVX2 / AVX-512 / SSE2 as -march allows). Explicit vectors, because
// auto-vectorisation of these loops turned out fragile (unroll-and-jam left the mix scalar). ----
typedef double vd __attribute__((vector_size(32)));
// Element-aligned vector types for unaligned loads/stores; as vectors of float/double they alias
// only float/double (not the pointer arrays the loops read), unlike memcpy.
typedef double vd_u __attribute__((vector_size(32), aligned(8)));
typedef float vf_u __attribute__((vector_size(16), aligned(4)));
template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef vf_u type;
};
template <>
struct Vec<double> {
  typedef vd_u type;
};
constexpr int64_t VW = 4;  // lanes of vd

template <typename T>
inline typename Vec<T>::type vload(const T* p) {
  return *reinterpret_cast<const typename Vec<T>::type*>(p);
}
template <typename T>
inline void vstore(T* p, typename Vec<T>::type v) {
  *reinterpret_cast<typename Vec<T>::type*>(p) = v;
}
template <typename T>
inline vd widen(typename Vec<T>::type v);
template <>
inline vd widen<double>(vd_u v) {
  return v;
}
template <>
inline vd widen<float>(vf_u v) {
#if defined(__AVX__)
  return (vd)_mm256_cvtps_pd((__m128)v);  // GCC 12 splits __builtin_convertvector into halves
#else
  return __builtin_convertvector(v, vd);
#endif
}
inline double hsum(vd v) { return (v[0] + v[1]) + (v[2] + v[3]); }

// a * b + c in one rounding where the target has FMA. (Explicit, not left to the compiler:
// whether it contracts `a * b + c` depends on the compiler and its -ffp-contract default.)
inline vd fmadd(vd a, vd b, vd c) {
#if defined(__FMA__)
  return (vd)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
#else
  return a * b + c;
#endif
}

// g = fz - z (rounded to T) of one block, widened into gbuf; adds |g|^2 and |fz|^2 to gg, ff.
template <typename T>
inline void residual_block(const T* z, const T* fz, int64_t len, double* gbuf, double& gg,
                           double& ff) {
  vd sg0 = {0, 0, 0, 0}, sg1 = sg0, sf0 = sg0, sf1 = sg0;
  int64_t i = 0;
  for (; i + 2 * VW <= len; i += 2 * VW) {
    const vd f0 = widen<T>(vload(fz + i)), f1 = widen<T>(vload(fz + i + VW));
    const vd g0 = widen<T>(vload(fz + i) - vload(z + i));
    const vd g1 = widen<T>(vload(fz + i + VW) - vload(z + i + VW));
    vstore<double>(gbuf + i, g0);
    vstore<double>(gbuf + i + VW, g1);
    sg0 += g0 * g0;
    sg1 += g1 * g1;
    sf0 += f0 * f0;
    sf1 += f1 * f1;
  }
  double sg = hsum(sg0 + sg1), sf = hsum(sf0 + sf1);
  for (; i < len; ++i) {
    const double g = double(T(fz[i] - z[i]));
    gbuf[i] = g;
    sg += g * g;
    sf += double(fz[i]) * double(fz[i]);
  }
  gg += sg;
  ff += sf;
}

// out[r] += sum_i gbuf[i] * rows[r][i] for every r < R in one sweep: gbuf is loaded once per
// element for all rows, and the R short row streams are in flight together (one 1-4 KB row
// after another is too short for the hardware prefetcher to get ahead of).
template <typename T, int R>
inline void dots_block(const double* gbuf, const T* const* rows, int64_t len, double* out) {
  vd acc[R > 0 ? R : 1];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r] = vd{0, 0, 0, 0};
  int64_t i = 0;
  for (; i + VW <= len; i += VW) {
    const vd gv = vload<double>(gbuf + i);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r] = fmadd(gv, widen<T>(vload(rows[r] + i)), acc[r]);
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    double s = hsum(acc[r]);
    for (int64_t j = i; j < len; ++j) s += gbuf[j] * double(rows[r][j]);
    out[r] += s;
  }
}

template <typename T>
using DotsFn = void (*)(const double*, const T* const*, int64_t, double*);

template <typename T, int... R>
constexpr std::array<DotsFn<T>, sizeof...(R)> make_dots_table(std::integer_sequence<int, R...>) {
  return {&dots_block<T, R>...};  // entry r dots r rows
}

// Pass 2 of one sample with R (compile time) other history rows, one overload per dtype
// (both called through PushMixFn):
//   X[slot] = z, G[slot] = g, best = z (if best is not null: the iterate improved),
//   z_out = a_slot z + ab_slot g + sum_r (a_r X_r + ab_r G_r),   ab = alpha * beta.
// Each element of z is loaded before the same element of z_out is stored (z_out may be z).
// The weights and row pointers are copied into locals first, so they stay in registers
// across the stores.
// float64: summed in double (FMA) and rounded once, as the reference does.
template <int R>
inline void push_and_mix(const double* z, const double* fz, double* Xs, double* Gs,
                         double* best, double* zo, const double* const* xr,
                         const double* const* gr, const double* ar, const double* abr,
                         double a_slot, double beta, int64_t n) {
  constexpr int RR = R > 0 ? R : 1;
  vd va[RR], vab[RR];
  const double* px[RR];
  const double* pg[RR];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    va[r] = vd{} + ar[r];
    vab[r] = vd{} + abr[r];
    px[r] = xr[r];
    pg[r] = gr[r];
  }
  const double ab_slot = a_slot * beta;
  const vd vas = vd{} + a_slot, vabs = vd{} + ab_slot;
  int64_t i = 0;
  for (; i + VW <= n; i += VW) {
    const vd zt = vload(z + i);
    const vd gt = vload(fz + i) - zt;
    vstore(Xs + i, zt);
    vstore(Gs + i, gt);
    if (best) vstore(best + i, zt);
    vd acc = fmadd(vas, zt, vabs * gt);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      acc = fmadd(va[r], vd(vload(px[r] + i)), acc);
      acc = fmadd(vab[r], vd(vload(pg[r] + i)), acc);
    }
    vstore(zo + i, acc);
  }
  for (; i < n; ++i) {
    const double zi = z[i];
    const double g = fz[i] - zi;
    Xs[i] = zi;
    Gs[i] = g;
    if (best) best[i] = zi;
    double acc = std::fma(a_slot, zi, ab_slot * g);
    for (int r = 0; r < R; ++r) {
      acc = std::fma(ar[r], px[r][i], acc);
      acc = std::fma(abr[r], pg[r][i], acc);
    }
    zo[i] = acc;
  }
}

// float32: the same mix, written about the new slot and summed on 8 float lanes (no
// widening: a double sum spends most of its time converting float32 to double); a_slot is
// not read, it is 1 - sum_r a_r:
//   z_out = z + (beta g + sum_r (a_r (X_r - z) + ab_r (G_r - g))),
// which equals the sum above because the weights sum to 1. Near a fixed point the
// differences are small (X_r - z is exact while the iterates are within a factor of 2), so
// the float sum's rounding is relative to them, not to |z|: z_out is within about an ulp of
// the reference's once-rounded double sum. (A float sum of the terms themselves was tried:
// its rounding noise kept the float32 (256, 1024) benchmark solve above tol 1e-6.)
typedef float vf8 __attribute__((vector_size(32)));
typedef float vf8_u __attribute__((vector_size(32), aligned(4)));
inline vf8 fmadd8(vf8 a, vf8 b, vf8 c) {
#if defined(__FMA__)
  return (vf8)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}
inline vf8 load8(const float* p) { return *reinterpret_cast<const vf8_u*>(p); }
inline void store8(float* p, vf8 v) { *reinterpret_cast<vf8_u*>(p) = v; }

template <int R>
inline void push_and_mix(const float* z, const float* fz, float* Xs, float* Gs, float* best,
                         float* zo, const float* const* xr, const float* const* gr,
                         const double* ar, const double* abr, double /*a_slot*/, double beta,
                         int64_t n) {
  constexpr int RR = R > 0 ? R : 1;
  vf8 va[RR], vab[RR];
  const float* px[RR];
  const float* pg[RR];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    va[r] = vf8{} + float(ar[r]);
    vab[r] = vf8{} + float(abr[r]);
    px[r] = xr[r];
    pg[r] = gr[r];
  }
  const vf8 vb = vf8{} + float(beta);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const vf8 zt = load8(z + i);
    const vf8 gt = load8(fz + i) - zt;
    store8(Xs + i, zt);
    store8(Gs + i, gt);
    if (best) store8(best + i, zt);
    vf8 acc = vb * gt;
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      acc = fmadd8(va[r], load8(px[r] + i) - zt, acc);
      acc = fmadd8(vab[r], load8(pg[r] + i) - gt, acc);
    }
    store8(zo + i, zt + acc);
  }
  for (; i < n; ++i) {
    const float zi = z[i];
    const float g = fz[i] - zi;
    Xs[i] = zi;
    Gs[i] = g;
    if (best) best[i] = zi;
    float acc = float(beta) * g;
    for (int r = 0; r < R; ++r) {
      acc = std::fma(float(ar[r]), px[r][i] - zi, acc);
      acc = std::fma(float(abr[r]), pg[r][i] - g, acc);
    }
    zo[i] = zi + acc;
  }
}

template <typename T>
using PushMixFn = void (*)(const T*, const T*, T*, T*, T*, T*, const T* const*,
                           const T* const*, const double*, const double*, double, double,
                           int64_t);

template <typename T, int... R>
constexpr std::array<PushMixFn<T>, sizeof...(R)> make_push_mix_table(
    std::integer_sequence<int, R...>) {
  return {static_cast<PushMixFn<T>>(&push_and_mix<R>)...};  // entry r mixes r other rows
}

// Solves (gram_K + lam I) y = 1 over the first K slots (gram: row stride m, lower triangle
// read), alpha = y / sum(y). Returns false when a pivot is not > CHOL_PIVOT_RTOL x the largest
// diagonal entry (or not > 0, or not finite), or alpha is not finite.
// The factorisation is the square-root-free form H = L D L^T of the Cholesky one: D_j is exactly
// the Cholesky pivot L_jj^2 (the number the Python reference tests), one division per column
// instead of a sqrt and a division, and K is a compile-time constant so the whole solve unrolls
// (it is latency-bound and runs once per sample per step).
template <int K>
bool solve_mixing_weights(const double* gram, int m, double lam, double* alpha) {
  double L[K][K], W[K][K], Dinv[K];  // W[i][j] = L[i][j] * D[j]
  double max_diag = 0.0;
#pragma GCC unroll 16
  for (int i = 0; i < K; ++i) max_diag = std::max(max_diag, gram[i * m + i] + lam);
  const double thresh = CHOL_PIVOT_RTOL * max_diag;
#pragma GCC unroll 16
  for (int j = 0; j < K; ++j) {
    double d = gram[j * m + j] + lam;
#pragma GCC unroll 16
    for (int q = 0; q < j; ++q) d -= L[j][q] * W[j][q];
    if (!(d > thresh) || !(d > 0.0) || !std::isfinite(d)) return false;
    Dinv[j] = 1.0 / d;
#pragma GCC unroll 16
    for (int i = j + 1; i < K; ++i) {
      double t = gram[i * m + j];
#pragma GCC unroll 16
      for (int q = 0; q < j; ++q) t -= L[i][q] * W[j][q];
      W[i][j] = t;
      L[i][j] = t * Dinv[j];
    }
  }
  double u[K];
#pragma GCC unroll 16
  for (int i = 0; i < K; ++i) {  // L u = 1 (L unit lower triangular)
    double t = 1.0;
#pragma GCC unroll 16
    for (int q = 0; q < i; ++q) t -= L[i][q] * u[q];
    u[i] = t;
  }
  double sum = 0.0;
#pragma GCC unroll 16
  for (int i = K - 1; i >= 0; --i) {  // L^T y = D^-1 u
    double t = u[i] * Dinv[i];
#pragma GCC unroll 16
    for (int q = i + 1; q < K; ++q) t -= L[q][i] * alpha[q];
    alpha[i] = t;
    sum += t;
  }
  const double inv_sum = 1.0 / sum;
  bool finite = std::isfinite(inv_sum);
#pragma GCC unroll 16
  for (int i = 0; i < K; ++i) {
    alpha[i] *= inv_sum;
    finite &= std::isfinite(alpha[i]);
  }
  return finite;
}

using SolveFn = bool (*)(const double*, int, double, double*);
template <int... K>
constexpr std::array<SolveFn, sizeof...(K)> make_solve_table(std::integer_sequence<int, K...>) {
  return {&solve_mixing_weights<K + 1>...};  // entry k - 1 solves k x k
}
constexpr auto kSolve = make_solve_table(std::make_integer_sequence<int, MAX_HISTORY>{});

template <typename T>
inline void step_sample(const Args<T>& a, int64_t b) {
  if (!a.s.active[b]) return;
  const int64_t n = a.n;
  const int m = a.m;
  const T* z = a.z + b * n;  // z_out may alias it: no __restrict anywhere here
  const T* fz = a.fz + b * n;
  T* Xb = a.X + b * m * n;
  T* Gb = a.G + b * m * n;
  double* gram = a.gram + b * m * m;

  // Rows that stay valid if the history does not restart: the old valid slots minus the one
  // about to be overwritten. (On a restart k becomes 1 and none of their dots are used.)
  const int32_t count_in = a.count[b];
  const int k_old = std::min<int32_t>(count_in, m);
  const int slot_keep = count_in % m;
  int others[MAX_HISTORY];
  int n_others = 0;
  for (int j = 0; j < k_old; ++j)
    if (j != slot_keep) others[n_others++] = j;

  // ---- pass 1: norms and dots, block by block so g stays in L1 ----
  double gg = 0.0, ff = 0.0;
  double dots[MAX_HISTORY];
  for (int o = 0; o < n_others; ++o) dots[o] = 0.0;
  alignas(64) double gbuf[BLK];
  const T* rows[MAX_HISTORY];
  static constexpr auto dots_table = make_dots_table<T>(std::make_integer_sequence<int, MAX_HISTORY>{});
  for (int64_t i0 = 0; i0 < n; i0 += BLK) {
    const int64_t len = std::min(BLK, n - i0);
    residual_block<T>(z + i0, fz + i0, len, gbuf, gg, ff);
    for (int o = 0; o < n_others; ++o) rows[o] = Gb + others[o] * n + i0;
    dots_table[n_others](gbuf, rows, len, dots);
  }

  // ---- decisions (tracking.track_residual_ref, then the Anderson update) ----
  const Finished fin = finish_sample<true>(a.s, b, std::sqrt(gg), std::sqrt(ff), a.p.stop_rel,
                                           a.p.tol);
  T* best_row = fin.improved ? a.s.best_z + b * n : nullptr;  // written before z_out (maybe z)
  if (best_row != nullptr && fin.outcome != kLive) std::memcpy(best_row, z, sizeof(T) * n);
  if (fin.outcome != kLive) return;
  const double metric = fin.metric, best = fin.best;
  const bool restart = metric > a.p.restart_growth * best;
  const int32_t cnt = restart ? 0 : count_in;
  const int slot = cnt % m;
  const int k = std::min<int32_t>(cnt + 1, m);
  if (restart) n_others = 0;  // k == 1: only the new slot is valid

  for (int o = 0; o < n_others; ++o) {
    const int j = others[o];
    gram[slot * m + j] = dots[o];
    gram[j * m + slot] = dots[o];
  }
  gram[slot * m + slot] = gg;

  double alpha[MAX_HISTORY];
  const bool ok = kSolve[k - 1](gram, m, a.p.lam, alpha);
  a.count[b] = ok ? cnt + 1 : 0;
  if (!ok) n_others = 0;  // alpha = one-hot of the new slot: z_out = z + beta g

  // ---- pass 2: push (z, g) into the slot and mix ----
  const T* xr[MAX_HISTORY];
  const T* gr[MAX_HISTORY];
  double ar[MAX_HISTORY], abr[MAX_HISTORY];
  for (int o = 0; o < n_others; ++o) {
    xr[o] = Xb + others[o] * n;
    gr[o] = Gb + others[o] * n;
    ar[o] = alpha[others[o]];
    abr[o] = alpha[others[o]] * a.p.beta;
  }
  static constexpr auto table =
      make_push_mix_table<T>(std::make_integer_sequence<int, MAX_HISTORY>{});
  table[n_others](z, fz, Xb + slot * n, Gb + slot * n, best_row, a.z_out + b * n, xr, gr, ar,
                  abr, ok ? alpha[slot] : 1.0, a.p.beta, n);
}

template <typename T>
void run(const Args<T>& a, int64_t B) {
  const bool parallel = B > 1 && B * a.n * (a.m + 2) >= OMP_MIN_WORK;
  for_each_sample(B, parallel, a.s.active, [&](int64_t b) { step_sample<T>(a, b); });
}

template <typename T>
void dispatch(const at::Tensor& z, const at::Tensor& fz, at::Tensor& z_out, at::Tensor& active,
              at::Tensor& converged, at::Tensor& diverged, at::Tensor& nstep,
              at::Tensor& abs_res, at::Tensor& rel_res, at::Tensor& best_abs,
              at::Tensor& best_rel, at::Tensor& best_z, at::Tensor& X, at::Tensor& G,
              at::Tensor& gram, at::Tensor& count, const AndersonParams& p) {
  const StateView<T, T> s{active.data_ptr<bool>(), converged.data_ptr<bool>(),
                          diverged.data_ptr<bool>(), nstep.data_ptr<int32_t>(),
                          abs_res.data_ptr<T>(),   rel_res.data_ptr<T>(),
                          best_abs.data_ptr<T>(),  best_rel.data_ptr<T>(),
                          best_z.data_ptr<T>()};
  const Args<T> a{z.data_ptr<T>(), fz.data_ptr<T>(), z_out.data_ptr<T>(), s, X.data_ptr<T>(),
                  G.data_ptr<T>(), gram.data_ptr<double>(), count.data_ptr<int32_t>(),
                  z.size(1), static_cast<int>(X.size(1)), p};
  run<T>(a, z.size(0));
}

void run_checked(const at::Tensor& z, const at::Tensor& fz, at::Tensor& z_out,
                 at::Tensor& active, at::Tensor& converged, at::Tensor& diverged,
                 at::Tensor& nstep, at::Tensor& abs_res, at::Tensor& rel_res,
                 at::Tensor& best_abs, at::Tensor& best_rel, at::Tensor& best_z, at::Tensor& X,
                 at::Tensor& G, at::Tensor& gram, at::Tensor& count, const AndersonParams& p) {
  if (z.scalar_type() == at::kDouble)
    dispatch<double>(z, fz, z_out, active, converged, diverged, nstep, abs_res, rel_res,
                     best_abs, best_rel, best_z, X, G, gram, count, p);
  else  // float32 (check_anderson_step admits no other)
    dispatch<float>(z, fz, z_out, active, converged, diverged, nstep, abs_res, rel_res,
                    best_abs, best_rel, best_z, X, G, gram, count, p);
}

void anderson_step_cpu(const at::Tensor& z, const at::Tensor& fz, at::Tensor& z_out,
                       at::Tensor& active, at::Tensor& converged, at::Tensor& diverged,
                       at::Tensor& nstep, at::Tensor& abs_res, at::Tensor& rel_res,
                       at::Tensor& best_abs, at::Tensor& best_rel, at::Tensor& best_z,
                       at::Tensor& X, at::Tensor& G, at::Tensor& gram, at::Tensor& count,
                       double tol, bool stop_rel, double beta, double lam,
                       double restart_growth) {
  check_anderson_step(z, fz, z_out, active, converged, diverged, nstep, abs_res, rel_res,
                      best_abs, best_rel, best_z, X, G, gram, count);
  run_checked(z, fz, z_out, active, converged, diverged, nstep, abs_res, rel_res, best_abs,
              best_rel, best_z, X, G, gram, count,
              AndersonParams{tol, stop_rel, beta, lam, restart_growth});
}

}  // namespace

AndersonStepCpu::AndersonStepCpu(at::Tensor z, at::Tensor active, at::Tensor converged,
                                 at::Tensor diverged, at::Tensor nstep, at::Tensor abs_res,
                                 at::Tensor rel_res, at::Tensor best_abs, at::Tensor best_rel,
                                 at::Tensor best_z, at::Tensor X, at::Tensor G, at::Tensor gram,
                                 at::Tensor count, double tol, bool stop_rel, double beta,
                                 double lam, double restart_growth)
    : z_(std::move(z)), active_(std::move(active)), converged_(std::move(converged)),
      diverged_(std::move(diverged)), nstep_(std::move(nstep)), abs_res_(std::move(abs_res)),
      rel_res_(std::move(rel_res)), best_abs_(std::move(best_abs)),
      best_rel_(std::move(best_rel)), best_z_(std::move(best_z)), X_(std::move(X)),
      G_(std::move(G)), gram_(std::move(gram)), count_(std::move(count)),
      p_{tol, stop_rel, beta, lam, restart_growth} {
  check_anderson_step(z_, z_, z_, active_, converged_, diverged_, nstep_, abs_res_, rel_res_,
                      best_abs_, best_rel_, best_z_, X_, G_, gram_, count_);
  TORCH_CHECK_VALUE(z_.device().is_cpu(), "anderson_step: the bound CPU step needs CPU tensors, "
                    "got ", z_.device());
}

int64_t AndersonStepCpu::operator()(const at::Tensor& z, const at::Tensor& fz) {
  constexpr const char* op = "anderson_step";
  TORCH_CHECK_VALUE(z.is_same(z_), op, ": z must be the iterate this step was bound to");
  checks::like(op, "fz", fz, "z", z_);
  TORCH_CHECK_VALUE(fz.device().is_cpu() && fz.is_contiguous(), op,
                    ": fz must be a contiguous CPU tensor");
  run_checked(z_, fz, z_, active_, converged_, diverged_, nstep_, abs_res_, rel_res_, best_abs_,
              best_rel_, best_z_, X_, G_, gram_, count_, p_);
  const bool* act = active_.data_ptr<bool>();
  int64_t live = 0;
  for (int64_t b = 0, B = active_.numel(); b < B; ++b) live += act[b];
  return live;
}

}  // namespace eqk

TORCH_LIBRARY_IMPL(eqk, CPU, m) { m.impl("anderson_step", &eqk::anderson_step_cpu); }

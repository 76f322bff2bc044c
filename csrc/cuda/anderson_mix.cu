// Fused Anderson step, CUDA. Semantics: eqkernels/ops/anderson_mix.py (anderson_step_ref);
// the CPU twin is csrc/cpu/anderson_mix.cpp. Torch-free: only the CUDA runtime.
//
// One block per sample:
//   pass 1  every thread strides over n, accumulating |g|^2, |fz|^2 and g . G_j (for the history
//           rows that stay valid) in double; warp shuffles + shared memory reduce them;
//   decide  thread 0 does the bookkeeping, the restart, the Gram row/column and the k x k solve
//           (in double, factors in shared memory) and publishes the mixing weights;
//   pass 2  every thread strides over n again: best_z (if improved), X[slot] = z, G[slot] = g,
//           z_out = sum_j alpha_j (X_j + beta G_j).
// z_out may alias z: each element of z is read, and the same element of z_out written, by the
// same thread in the same loop iteration; no thread reads an element another thread writes.
// active/count are read by every thread at entry and written by thread 0 only after a barrier.
#include <cmath>

#include "anderson_mix.cuh"

namespace eqk {
namespace cuda {
namespace {

// kCholPivotRtol, kMaxHistory: the shared constants (common/kernel_common.h).
constexpr int kMaxThreads = 256;          // block size for n >= 256 (a multiple of 32 below)
constexpr int kMaxWarps = kMaxThreads / 32;
constexpr int kNumSums = kMaxHistory + 2;  // slot 0: |g|^2, 1: |fz|^2, 2 + j: g . G_j
constexpr int kFlagLive = 1, kFlagImproved = 2;

template <typename T>
struct KernelArgs {
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

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;  // complete in lane 0
}

// Thread 0 only. Solves (gram_k + lam I) y = 1 (gram: row stride m, lower triangle read),
// alpha = y / sum(y), through H = L D L^T (D_j is exactly the Cholesky pivot L_jj^2). L and W
// (W[i][j] = L[i][j] D[j]) are kMaxHistory^2 scratch arrays in shared memory. Returns false when
// a pivot is not > kCholPivotRtol x the largest diagonal entry (or not > 0, or not finite), or
// alpha is not finite.
__device__ bool solve_mixing_weights(const double* gram, int m, int k, double lam, double* L,
                                     double* W, double* alpha) {
  double dinv[kMaxHistory];
  double max_diag = 0.0;
  for (int i = 0; i < k; ++i) max_diag = fmax(max_diag, gram[i * m + i] + lam);
  const double thresh = kCholPivotRtol * max_diag;
  for (int j = 0; j < k; ++j) {
    double d = gram[j * m + j] + lam;
    for (int q = 0; q < j; ++q) d -= L[j * kMaxHistory + q] * W[j * kMaxHistory + q];
    if (!(d > thresh) || !(d > 0.0) || !isfinite(d)) return false;
    dinv[j] = 1.0 / d;
    for (int i = j + 1; i < k; ++i) {
      double t = gram[i * m + j];
      for (int q = 0; q < j; ++q) t -= L[i * kMaxHistory + q] * W[j * kMaxHistory + q];
      W[i * kMaxHistory + j] = t;
      L[i * kMaxHistory + j] = t * dinv[j];
    }
  }
  double u[kMaxHistory];
  for (int i = 0; i < k; ++i) {  // L u = 1, L unit lower triangular
    double t = 1.0;
    for (int q = 0; q < i; ++q) t -= L[i * kMaxHistory + q] * u[q];
    u[i] = t;
  }
  double sum = 0.0;
  for (int i = k - 1; i >= 0; --i) {  // L^T y = D^-1 u
    double t = u[i] * dinv[i];
    for (int q = i + 1; q < k; ++q) t -= L[q * kMaxHistory + i] * alpha[q];
    alpha[i] = t;
    sum += t;
  }
  const double inv_sum = 1.0 / sum;
  bool finite = isfinite(inv_sum);
  for (int i = 0; i < k; ++i) {
    alpha[i] *= inv_sum;
    finite = finite && isfinite(alpha[i]);
  }
  return finite;
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) anderson_step_kernel(KernelArgs<T> a) {
  const int64_t b = blockIdx.x;
  if (!a.s.active[b]) return;  // the same for the whole block
  const int64_t n = a.n;
  const int m = a.m;
  const T* z = a.z + b * n;
  const T* fz = a.fz + b * n;
  T* Xb = a.X + b * m * n;
  T* Gb = a.G + b * m * n;

  // History rows that stay valid if the history does not restart: the old valid slots minus
  // the one about to be overwritten (bit j = row j). On a restart none of them is used.
  const int32_t count_in = a.count[b];
  const int k_old = min(count_in, m);
  const int slot_keep = count_in % m;
  const unsigned keep_mask = ((1u << k_old) - 1u) & ~(1u << slot_keep);

  // ---- pass 1 ----
  double gg = 0.0, ff = 0.0;
  double d[kMaxHistory];
#pragma unroll
  for (int j = 0; j < kMaxHistory; ++j) d[j] = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const T zi = z[i];
    const T fi = fz[i];
    const double g = double(T(fi - zi));
    gg += g * g;
    ff += double(fi) * double(fi);
#pragma unroll
    for (int j = 0; j < kMaxHistory; ++j)
      if ((keep_mask >> j) & 1u) d[j] += g * double(Gb[j * n + i]);
  }

  __shared__ double s_part[kMaxWarps][kNumSums];
  __shared__ double s_sum[kNumSums];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int n_warps = blockDim.x >> 5;  // blockDim.x is a multiple of 32
  gg = warp_sum(gg);
  ff = warp_sum(ff);
#pragma unroll
  for (int j = 0; j < kMaxHistory; ++j)
    if ((keep_mask >> j) & 1u) d[j] = warp_sum(d[j]);
  if (lane == 0) {
    s_part[warp][0] = gg;
    s_part[warp][1] = ff;
#pragma unroll
    for (int j = 0; j < kMaxHistory; ++j)
      if ((keep_mask >> j) & 1u) s_part[warp][2 + j] = d[j];
  }
  __syncthreads();

  // ---- decisions, thread 0 (warp 0 first finishes the sums, one lane per quantity) ----
  __shared__ double s_L[kMaxHistory * kMaxHistory];
  __shared__ double s_W[kMaxHistory * kMaxHistory];
  __shared__ double s_alpha[kMaxHistory];
  __shared__ double s_alpha_slot;
  __shared__ int s_flags;
  __shared__ int s_slot;
  __shared__ unsigned s_mix_mask;
  if (warp == 0) {
    if (lane < 2 || (lane < kNumSums && ((keep_mask >> (lane - 2)) & 1u))) {
      double s = 0.0;
      for (int w = 0; w < n_warps; ++w) s += s_part[w][lane];
      s_sum[lane] = s;
    }
    __syncwarp();
  }
  if (threadIdx.x == 0) {
    const double gsq = s_sum[0];
    int flags = 0, slot = 0;
    unsigned mix_mask = 0u;
    double alpha_slot = 1.0;
    const Finished fin = finish_sample<true>(a.s, b, sqrt(gsq), sqrt(s_sum[1]), a.p.stop_rel,
                                             a.p.tol);
    if (fin.improved) flags |= kFlagImproved;
    if (fin.outcome == eqk::kLive) {
      const double metric = fin.metric, best = fin.best;
      flags |= kFlagLive;
      const bool restart = metric > a.p.restart_growth * best;
      const int32_t cnt = restart ? 0 : count_in;
      slot = cnt % m;
      const int k = min(cnt + 1, m);
      const unsigned others = restart ? 0u : keep_mask;  // valid rows besides the slot
      double* gram = a.gram + b * m * m;
      for (int j = 0; j < m; ++j) {
        if ((others >> j) & 1u) {
          gram[slot * m + j] = s_sum[2 + j];
          gram[j * m + slot] = s_sum[2 + j];
        }
      }
      gram[slot * m + slot] = gsq;
      double alpha[kMaxHistory];
      const bool ok = solve_mixing_weights(gram, m, k, a.p.lam, s_L, s_W, alpha);
      a.count[b] = ok ? cnt + 1 : 0;
      if (ok) {  // else alpha = one-hot of the slot: z_out = z + beta g
        mix_mask = others;
        alpha_slot = alpha[slot];
        for (int j = 0; j < k; ++j) s_alpha[j] = alpha[j];
      }
    }
    s_flags = flags;
    s_slot = slot;
    s_mix_mask = mix_mask;
    s_alpha_slot = alpha_slot;
  }
  __syncthreads();

  // ---- pass 2 ----
  const int flags = s_flags;
  T* bz = a.s.best_z + b * n;
  if (!(flags & kFlagLive)) {  // converged or diverged this step: at most best_z changes
    if (flags & kFlagImproved)
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) bz[i] = z[i];
    return;
  }
  const bool improved = (flags & kFlagImproved) != 0;
  const unsigned mix_mask = s_mix_mask;
  const int slot = s_slot;
  const double alpha_slot = s_alpha_slot;
  const double beta = a.p.beta;
  double al[kMaxHistory];
#pragma unroll
  for (int j = 0; j < kMaxHistory; ++j) al[j] = ((mix_mask >> j) & 1u) ? s_alpha[j] : 0.0;
  T* Xs = Xb + slot * n;
  T* Gs = Gb + slot * n;
  T* zo = a.z_out + b * n;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const T zi = z[i];
    const T g = fz[i] - zi;
    if (improved) bz[i] = zi;
    Xs[i] = zi;
    Gs[i] = g;
    double acc = alpha_slot * (double(zi) + beta * double(g));
#pragma unroll
    for (int j = 0; j < kMaxHistory; ++j)
      if ((mix_mask >> j) & 1u) acc += al[j] * (double(Xb[j * n + i]) + beta * double(Gb[j * n + i]));
    zo[i] = T(acc);  // after every read of z[i] (z_out may be z)
  }
}

}  // namespace

template <typename T>
cudaError_t launch_anderson_step(const T* z, const T* fz, T* z_out, StateView<T, T> s, T* X,
                                 T* G, double* gram, int32_t* count, int64_t B, int64_t n, int m,
                                 AndersonParams p, cudaStream_t stream) {
  if (m < 1 || m > kMaxHistory || B < 0 || n < 0 || B > 0x7fffffffLL) return cudaErrorInvalidValue;
  if (B == 0) return cudaSuccess;
  const KernelArgs<T> args{z, fz, z_out, s, X, G, gram, count, n, m, p};
  // Whole warps only (the reductions shuffle with a full mask); small n gets a small block.
  const int threads = n >= kMaxThreads ? kMaxThreads : static_cast<int>(((n + 31) / 32) * 32);
  anderson_step_kernel<T><<<static_cast<unsigned>(B), threads > 0 ? threads : 32, 0, stream>>>(args);
  return cudaGetLastError();
}

template cudaError_t launch_anderson_step<float>(const float*, const float*, float*,
                                                 StateView<float, float>, float*, float*,
                                                 double*, int32_t*, int64_t, int64_t, int,
                                                 AndersonParams, cudaStream_t);
template cudaError_t launch_anderson_step<double>(const double*, const double*, double*,
                                                  StateView<double, double>, double*, double*,
                                                  double*, int32_t*, int64_t, int64_t, int,
                                                  AndersonParams, cudaStream_t);

}  // namespace cuda
}  // namespace eqk

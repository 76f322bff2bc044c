// Fused Anderson step, CUDA. Semantics: eqkernels/ops/anderson_mix.py (anderson_step_ref);
// the CPU twin is csrc/cpu/anderson_mix.cpp. Torch-free: only the CUDA runtime.
//
// Three launches, each one simple:
//   dots    one block per (sample active on entry, chunk of columns): |g|^2, |fz|^2 and g . G_j
//           for the history rows that stay valid (g = fz - z, formed in T), accumulated in
//           double, reduced over the block, written to the workspace (sample, chunk, quantity);
//   decide  one warp per sample: the lanes sum the chunks' partial sums (in chunk order, so the
//           result does not depend on scheduling); lane 0 does the bookkeeping, the restart,
//           the Gram row/column and the k x k solve (in double, factors in shared memory) and
//           writes the sample's mixing plan (flags, slot, weights); inactive samples get an
//           empty plan;
//   mix     one block per (sample, chunk) whose plan says so: best_z (if improved), X[slot] = z,
//           G[slot] = g, z_out = sum_j alpha_j (X_j + beta G_j) (in double, rounded once).
// Why: the old single kernel (one block per sample: pass 1, thread 0's solve, pass 2) streamed at
// 18% of copy bandwidth on an H200. Rows split into chunks give every SM several blocks whatever
// B is (B = 256 rows of 8192 are 1024 blocks, not 256); 16-byte vectors and all of a thread's
// history rows in flight together give the memory-level parallelism; the solve no longer stalls
// a block that holds the SM's bandwidth. The cost is reading z, fz and the old G rows twice
// (3m + 4 rows a step instead of the 2m + 5 the benchmark counts): the mix walks the (sample,
// chunk) blocks in reverse order, so its second read finds what dots read last still in L2, and
// it reads what it will not need again (X, the last reads of G) with an evict-first hint.
// z_out may alias z: each element of z is read, and the same element of z_out written, by the
// same thread in the same loop iteration (mix); dots and decide do not write it.
#include <cmath>

#include "anderson_mix.cuh"

namespace eqk {
namespace cuda {
namespace {

// kCholPivotRtol, kMaxHistory: the shared constants (common/kernel_common.h).
constexpr int kThreads = 256;                 // dots / mix block size
constexpr int kWarps = kThreads / 32;
constexpr int kNumSums = kMaxHistory + 2;     // 0: |g|^2, 1: |fz|^2, 2 + j: g . G_j
constexpr int kDecideWarps = 4;               // samples of one decide block
constexpr int kFlagLive = 1, kFlagImproved = 2;
// Columns of one dots / mix block: the largest of 16384 .. 1024 that still gives kMinBlocks
// blocks (every SM several; a short last wave), else 1024.
constexpr int64_t kChunkMin = 1024, kChunkMax = 16384, kMinBlocks = 1024;

// What decide leaves for mix, per sample.
struct MixPlan {
  double alpha[kMaxHistory];  // weights of the old rows in mix_mask
  double alpha_slot;          // weight of the new slot (z, g)
  int32_t flags;              // kFlagLive | kFlagImproved
  int32_t slot;               // ring-buffer slot of the new (z, g)
  uint32_t mix_mask;          // old rows in the mix (bit j = row j)
  int32_t pad;
};

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
  double* part;  // (B, n_chunks, kNumSums) partial sums of dots
  MixPlan* plan;  // (B,)
  int64_t B;
  int64_t n;
  int64_t chunk;
  int64_t n_chunks;
  int m;
  AndersonParams p;
};

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;  // complete in lane 0
}

// VEC elements of T as one access of VEC * sizeof(T) bytes.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};
// Loads whose data this step will not read again: evict-first in L1 and L2 (ld.global.cs).
template <typename T, int VEC>
__device__ __forceinline__ Vec<T, VEC> load_last(const T* p) {
  if constexpr (sizeof(Vec<T, VEC>) == 16) {
    const uint4 u = __ldcs(reinterpret_cast<const uint4*>(p));
    return *reinterpret_cast<const Vec<T, VEC>*>(&u);
  } else if constexpr (sizeof(Vec<T, VEC>) == 8) {
    const uint2 u = __ldcs(reinterpret_cast<const uint2*>(p));
    return *reinterpret_cast<const Vec<T, VEC>*>(&u);
  } else {
    return *reinterpret_cast<const Vec<T, VEC>*>(p);
  }
}

// Rows kept from the history if it does not restart: the old valid slots minus the one about to
// be overwritten (bit j = row j). On a restart none of them is used.
__device__ __forceinline__ unsigned keep_mask_of(int32_t count_in, int m) {
  const int k_old = min(count_in, m);
  return ((1u << k_old) - 1u) & ~(1u << (count_in % m));
}

// M_PAD: a bound on m (4, 8 or 16), so the registers a thread holds follow the history size.
template <typename T, int VEC, int M_PAD>
__global__ void __launch_bounds__(kThreads) dots_kernel(KernelArgs<T> a) {
  using V = Vec<T, VEC>;
  const int64_t b = blockIdx.x / static_cast<uint32_t>(a.n_chunks);  // B * n_chunks < 2^31
  const int64_t c = blockIdx.x % static_cast<uint32_t>(a.n_chunks);
  if (!a.s.active[b]) return;  // the same for the whole block
  const int64_t n = a.n, m = a.m;
  const int64_t lo = c * a.chunk, hi = min(n, lo + a.chunk);  // VEC divides n and the chunk
  const unsigned keep = keep_mask_of(a.count[b], a.m);
  const T* z = a.z + b * n;
  const T* fz = a.fz + b * n;
  const T* Gb = a.G + b * m * n;

  double gg = 0.0, ff = 0.0;
  double d[M_PAD];
#pragma unroll
  for (int j = 0; j < M_PAD; ++j) d[j] = 0.0;
  for (int64_t i = lo + int64_t(threadIdx.x) * VEC; i < hi; i += int64_t(kThreads) * VEC) {
    const V zv = *reinterpret_cast<const V*>(z + i);
    const V fv = *reinterpret_cast<const V*>(fz + i);
    V gv[M_PAD];
#pragma unroll
    for (int j = 0; j < M_PAD; ++j)  // every row's load in flight before the first use
      if ((keep >> j) & 1u) gv[j] = *reinterpret_cast<const V*>(Gb + j * n + i);
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const double g = double(T(fv.v[e] - zv.v[e]));  // the residual is formed in T
      gg += g * g;
      ff += double(fv.v[e]) * double(fv.v[e]);
#pragma unroll
      for (int j = 0; j < M_PAD; ++j)
        if ((keep >> j) & 1u) d[j] += g * double(gv[j].v[e]);
    }
  }

  __shared__ double s_part[kWarps][kNumSums];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  gg = warp_sum(gg);
  ff = warp_sum(ff);
#pragma unroll
  for (int j = 0; j < M_PAD; ++j)
    if ((keep >> j) & 1u) d[j] = warp_sum(d[j]);
  if (lane == 0) {
    s_part[warp][0] = gg;
    s_part[warp][1] = ff;
#pragma unroll
    for (int j = 0; j < M_PAD; ++j)
      if ((keep >> j) & 1u) s_part[warp][2 + j] = d[j];
  }
  __syncthreads();
  if (warp == 0 && (lane < 2 || (lane < kNumSums && ((keep >> (lane - 2)) & 1u)))) {
    double sum = 0.0;
    for (int w = 0; w < kWarps; ++w) sum += s_part[w][lane];
    a.part[(b * a.n_chunks + c) * kNumSums + lane] = sum;
  }
}

// Lane 0 of a warp only. Solves (gram_k + lam I) y = 1 (gram: row stride m, lower triangle read),
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
__global__ void __launch_bounds__(kDecideWarps * 32) decide_kernel(KernelArgs<T> a) {
  __shared__ double s_sum[kDecideWarps][kNumSums];
  __shared__ double s_L[kDecideWarps][kMaxHistory * kMaxHistory];
  __shared__ double s_W[kDecideWarps][kMaxHistory * kMaxHistory];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t b = int64_t(blockIdx.x) * kDecideWarps + warp;
  if (b >= a.B) return;  // the whole warp
  MixPlan* plan = a.plan + b;
  if (!a.s.active[b]) {  // frozen: mix leaves it alone (the whole warp read active first)
    __syncwarp();
    if (lane == 0) plan->flags = 0;
    return;
  }
  const int m = a.m;
  const int32_t count_in = a.count[b];
  const unsigned keep = keep_mask_of(count_in, m);
  if (lane < 2 || (lane < kNumSums && ((keep >> (lane - 2)) & 1u))) {
    double sum = 0.0;
    for (int64_t c = 0; c < a.n_chunks; ++c) sum += a.part[(b * a.n_chunks + c) * kNumSums + lane];
    s_sum[warp][lane] = sum;
  }
  __syncwarp();  // also: every lane has read active[b] and count[b] before lane 0 writes them
  if (lane != 0) return;

  const double* sums = s_sum[warp];
  const double gsq = sums[0];
  int flags = 0, slot = 0;
  unsigned mix_mask = 0u;
  double alpha_slot = 1.0;
  const Finished fin =
      finish_sample<true>(a.s, b, sqrt(gsq), sqrt(sums[1]), a.p.stop_rel, a.p.tol);
  if (fin.improved) flags |= kFlagImproved;
  if (fin.outcome == eqk::kLive) {
    flags |= kFlagLive;
    const bool restart = fin.metric > a.p.restart_growth * fin.best;
    const int32_t cnt = restart ? 0 : count_in;
    slot = cnt % m;
    const int k = min(cnt + 1, m);
    const unsigned others = restart ? 0u : keep;  // valid rows besides the slot
    double* gram = a.gram + b * m * m;
    for (int j = 0; j < m; ++j) {
      if ((others >> j) & 1u) {
        gram[slot * m + j] = sums[2 + j];
        gram[j * m + slot] = sums[2 + j];
      }
    }
    gram[slot * m + slot] = gsq;
    double alpha[kMaxHistory];
    const bool ok = solve_mixing_weights(gram, m, k, a.p.lam, s_L[warp], s_W[warp], alpha);
    a.count[b] = ok ? cnt + 1 : 0;
    if (ok) {  // else alpha = one-hot of the slot: z_out = z + beta g
      mix_mask = others;
      alpha_slot = alpha[slot];
      for (int j = 0; j < k; ++j) plan->alpha[j] = alpha[j];
    }
  }
  plan->flags = flags;
  plan->slot = slot;
  plan->mix_mask = mix_mask;
  plan->alpha_slot = alpha_slot;
}

template <typename T, int VEC, int M_PAD>
__global__ void __launch_bounds__(kThreads) mix_kernel(KernelArgs<T> a) {
  using V = Vec<T, VEC>;
  // Reverse order: dots streamed the last (sample, chunk) blocks last, so their z, fz and G are
  // the likeliest to be in L2 still.
  const uint32_t idx = gridDim.x - 1 - blockIdx.x;
  const int64_t b = idx / static_cast<uint32_t>(a.n_chunks);
  const int64_t c = idx % static_cast<uint32_t>(a.n_chunks);
  const MixPlan& plan = a.plan[b];
  const int flags = plan.flags;
  if (flags == 0) return;  // frozen on entry, or converged / diverged without improving
  const int64_t n = a.n, m = a.m;
  const int64_t lo = c * a.chunk, hi = min(n, lo + a.chunk);
  const T* z = a.z + b * n;
  const T* fz = a.fz + b * n;
  T* bz = a.s.best_z + b * n;
  const bool improved = (flags & kFlagImproved) != 0;
  if (!(flags & kFlagLive)) {  // converged or diverged this step: at most best_z changes
    for (int64_t i = lo + int64_t(threadIdx.x) * VEC; i < hi; i += int64_t(kThreads) * VEC)
      *reinterpret_cast<V*>(bz + i) = *reinterpret_cast<const V*>(z + i);
    return;
  }
  const unsigned mix_mask = plan.mix_mask;
  const int slot = plan.slot;
  const double alpha_slot = plan.alpha_slot;
  const double beta = a.p.beta;
  __shared__ double s_alpha[M_PAD];  // the weights, read by every thread (no registers held)
  if (threadIdx.x < M_PAD && ((mix_mask >> threadIdx.x) & 1u)) s_alpha[threadIdx.x] = plan.alpha[threadIdx.x];
  __syncthreads();
  T* Xb = a.X + b * m * n;
  T* Gb = a.G + b * m * n;
  T* zo = a.z_out + b * n;
  for (int64_t i = lo + int64_t(threadIdx.x) * VEC; i < hi; i += int64_t(kThreads) * VEC) {
    const V zv = load_last<T, VEC>(z + i);
    const V fv = load_last<T, VEC>(fz + i);
    V xv[M_PAD], gv[M_PAD];
#pragma unroll
    for (int j = 0; j < M_PAD; ++j) {  // every row's loads in flight before the first use
      if ((mix_mask >> j) & 1u) {
        xv[j] = load_last<T, VEC>(Xb + j * n + i);
        gv[j] = load_last<T, VEC>(Gb + j * n + i);
      }
    }
    V g, o;
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      g.v[e] = fv.v[e] - zv.v[e];
      double acc = alpha_slot * (double(zv.v[e]) + beta * double(g.v[e]));
#pragma unroll
      for (int j = 0; j < M_PAD; ++j)
        if ((mix_mask >> j) & 1u)
          acc += s_alpha[j] * (double(xv[j].v[e]) + beta * double(gv[j].v[e]));
      o.v[e] = T(acc);
    }
    if (improved) *reinterpret_cast<V*>(bz + i) = zv;
    *reinterpret_cast<V*>(Xb + slot * n + i) = zv;
    *reinterpret_cast<V*>(Gb + slot * n + i) = g;
    *reinterpret_cast<V*>(zo + i) = o;  // after every read of z[i..] (z_out may be z)
  }
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

template <typename T, int VEC, int M_PAD>
cudaError_t launch_all(const KernelArgs<T>& args, unsigned blocks, cudaStream_t stream) {
  dots_kernel<T, VEC, M_PAD><<<blocks, kThreads, 0, stream>>>(args);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const unsigned decide_blocks =
      static_cast<unsigned>((args.B + kDecideWarps - 1) / kDecideWarps);
  decide_kernel<T><<<decide_blocks, kDecideWarps * 32, 0, stream>>>(args);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  mix_kernel<T, VEC, M_PAD><<<blocks, kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

template <typename T, int VEC>
cudaError_t launch_m(const KernelArgs<T>& args, unsigned blocks, cudaStream_t stream) {
  if (args.m <= 4) return launch_all<T, VEC, 4>(args, blocks, stream);
  if (args.m <= 8) return launch_all<T, VEC, 8>(args, blocks, stream);
  return launch_all<T, VEC, kMaxHistory>(args, blocks, stream);
}

}  // namespace

int64_t anderson_chunk(int64_t B, int64_t n) {
  int64_t chunk = kChunkMax;
  while (chunk > kChunkMin && B * ((n + chunk - 1) / chunk) < kMinBlocks) chunk /= 2;
  return chunk;
}

int64_t anderson_workspace_bytes(int64_t B, int64_t n) {
  const int64_t n_chunks = n > 0 ? (n + anderson_chunk(B, n) - 1) / anderson_chunk(B, n) : 1;
  return B * n_chunks * kNumSums * int64_t(sizeof(double)) + B * int64_t(sizeof(MixPlan));
}

template <typename T>
cudaError_t launch_anderson_step(const T* z, const T* fz, T* z_out, StateView<T, T> s, T* X,
                                 T* G, double* gram, int32_t* count, void* workspace, int64_t B,
                                 int64_t n, int m, AndersonParams p, cudaStream_t stream) {
  if (m < 1 || m > kMaxHistory || B < 0 || n < 0 || B > 0x7fffffffLL) return cudaErrorInvalidValue;
  if (B == 0) return cudaSuccess;
  const int64_t chunk = anderson_chunk(B, n);
  const int64_t n_chunks = n > 0 ? (n + chunk - 1) / chunk : 1;
  if (B * n_chunks > 0x7fffffffLL) return cudaErrorInvalidValue;
  // The workspace: the partial sums, then the plans (8-byte aligned: the partials are doubles).
  double* part = static_cast<double*>(workspace);
  MixPlan* plan = reinterpret_cast<MixPlan*>(part + B * n_chunks * kNumSums);
  const KernelArgs<T> args{z, fz, z_out, s, X, G, gram, count, part, plan, B, n, chunk, n_chunks,
                           m, p};
  const unsigned blocks = static_cast<unsigned>(B * n_chunks);
  // 16-byte vectors when every row of every tensor starts on the 16-byte grid, else scalars.
  constexpr int kVec = 16 / sizeof(T);
  const size_t vb = kVec * sizeof(T);
  const bool vec = n % kVec == 0 && aligned(z, vb) && aligned(fz, vb) && aligned(z_out, vb) &&
                   aligned(s.best_z, vb) && aligned(X, vb) && aligned(G, vb);
  return vec ? launch_m<T, kVec>(args, blocks, stream) : launch_m<T, 1>(args, blocks, stream);
}

template cudaError_t launch_anderson_step<float>(const float*, const float*, float*,
                                                 StateView<float, float>, float*, float*,
                                                 double*, int32_t*, void*, int64_t, int64_t, int,
                                                 AndersonParams, cudaStream_t);
template cudaError_t launch_anderson_step<double>(const double*, const double*, double*,
                                                  StateView<double, double>, double*, double*,
                                                  double*, int32_t*, void*, int64_t, int64_t,
                                                  int, AndersonParams, cudaStream_t);

}  // namespace cuda
}  // namespace eqk

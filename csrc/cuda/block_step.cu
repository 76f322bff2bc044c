// Fused block-step epilogue, CUDA. Semantics: eqkernels/ops/block_step.py (block_step_ref);
// the CPU twin is csrc/cpu/block_step.cpp. Torch-free: only the CUDA runtime.
//
// One block per sample that is active on entry: every thread strides over n, reading z and
// f_out once and writing z_next once,
//   z_next = T((1 - damping) z + damping f_out + sigma eps)   (in W = float; double for double)
// while accumulating, in double, ||z_next - z||^2 and ||z_next||^2 of the stored values; warp
// shuffles + shared memory reduce them, and thread 0 does the bookkeeping.
// z_next may alias z: each element of z is read, and the same element of z_next written, by
// the same thread (its loads of a batch of elements come before its stores); no thread reads an
// element another thread writes. active is read by every thread at entry and written by thread 0
// only after a barrier.
// Rounding: the update uses __f*_rn / __d*_rn, never contracted into an FMA, so it rounds like
// the reference's separate mul/add kernels. The build does not pass --use_fast_math (it would
// flush float32 subnormals to zero, and turn logf/cosf into __logf/__cosf, whose absolute error
// near u = 1 can flip the sign of log u); the noise's log and cos are evaluated in double and
// rounded to float.
// The noise key comes from the device: every block reads the step counter and derives
// noise_key(seed, step + 1) (common/kernel_common.h); a second one-thread launch advances the
// counter after every block has read it. No host read of device memory, so a CUDA graph of K
// steps draws K different noise fields on every replay.
#include <cuda_bf16.h>

#include <cmath>

#include "block_step.cuh"

namespace eqk {
namespace cuda {
namespace {

constexpr int kMaxThreads = 512;  // block size for n >= 512 (a multiple of 32 below)
constexpr int kMaxWarps = kMaxThreads / 32;

// Element type T, compute type W: conversions, and mul/add rounded to W without contraction.
template <typename T>
struct Elem;
template <>
struct Elem<float> {
  using W = float;
  static __device__ __forceinline__ W to_w(float x) { return x; }
  static __device__ __forceinline__ float from_w(W x) { return x; }
  static __device__ __forceinline__ W mul(W a, W b) { return __fmul_rn(a, b); }
  static __device__ __forceinline__ W add(W a, W b) { return __fadd_rn(a, b); }
};
template <>
struct Elem<double> {
  using W = double;
  static __device__ __forceinline__ W to_w(double x) { return x; }
  static __device__ __forceinline__ double from_w(W x) { return x; }
  static __device__ __forceinline__ W mul(W a, W b) { return __dmul_rn(a, b); }
  static __device__ __forceinline__ W add(W a, W b) { return __dadd_rn(a, b); }
};
template <>
struct Elem<__nv_bfloat16> {
  using W = float;
  static __device__ __forceinline__ W to_w(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 from_w(W x) { return __float2bfloat16_rn(x); }
  static __device__ __forceinline__ W mul(W a, W b) { return __fmul_rn(a, b); }
  static __device__ __forceinline__ W add(W a, W b) { return __fadd_rn(a, b); }
};

template <typename T>
struct KernelArgs {
  const T* z;
  const T* f_out;
  T* z_next;
  StateView<T, typename ResidualOf<T>::type> s;
  const int64_t* step;  // read only here; launch_advance_counter advances it
  int64_t n;
  BlockStepParams p;
};

// ---- the noise stream of block_step.standard_normal_ref (lowbias32, noise_key: common/) ----

__device__ __forceinline__ float uniform(uint32_t counter, uint32_t key) {
  const uint32_t h = lowbias32(lowbias32(counter) ^ key);
  return __fmul_rn(__fadd_rn(__uint2float_rn(h >> 8), 0.5f), 1.0f / 16777216.0f);
}

// eps of flat index idx (mod 2^32): Box-Muller in float32, log and cos correctly rounded.
__device__ __forceinline__ float standard_normal(uint32_t idx, uint32_t key) {
  const float u0 = uniform(2u * idx, key);
  const float u1 = uniform(2u * idx + 1u, key);
  const float lg = static_cast<float>(log(static_cast<double>(u0)));
  const float theta = __fmul_rn(6.283185307179586f, u1);  // 2 pi rounded to float, like torch
  const float c = static_cast<float>(cos(static_cast<double>(theta)));
  return __fmul_rn(__fsqrt_rn(__fmul_rn(-2.0f, lg)), c);
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;  // complete in lane 0
}

template <typename T, bool NOISE>
__global__ void __launch_bounds__(kMaxThreads) block_step_kernel(KernelArgs<T> a) {
  using E = Elem<T>;
  using W = typename E::W;
  // Elements a thread loads before it stores: memory-level parallelism for the noiseless
  // (bandwidth-bound) step; the noisy one is bound by the double log/cos.
  constexpr int kUnroll = NOISE ? 2 : 8;
  const int64_t b = blockIdx.x;
  if (!a.s.active[b]) return;  // the same for the whole block
  const int64_t n = a.n;
  const T* z = a.z + b * n;  // z_next may alias it: no __restrict__ / read-only loads
  const T* f = a.f_out + b * n;
  T* out = a.z_next + b * n;
  // Scalars rounded to W once, as PyTorch does with a Python scalar times a W tensor.
  const W keep = W(1.0 - a.p.damping), lam = W(a.p.damping), sig = W(a.p.sigma);
  const uint32_t flat0 = static_cast<uint32_t>(b * n);  // flat index mod 2^32
  const uint32_t key = noise_key(a.p.seed, *a.step + 1);
  const int64_t stride = blockDim.x;

  double dd = 0.0, qq = 0.0;
  for (int64_t i0 = threadIdx.x; i0 < n; i0 += kUnroll * stride) {
    T zt[kUnroll], ft[kUnroll];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t i = i0 + k * stride;
      if (i < n) {
        zt[k] = z[i];
        ft[k] = f[i];
      }
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t i = i0 + k * stride;
      if (i < n) {
        const W zi = E::to_w(zt[k]);
        W v = E::add(E::mul(keep, zi), E::mul(lam, E::to_w(ft[k])));
        if (NOISE) v = E::add(v, E::mul(sig, W(standard_normal(flat0 + uint32_t(i), key))));
        const T t = E::from_w(v);
        out[i] = t;  // after this thread read z[i] (out may be z)
        const double q = static_cast<double>(E::to_w(t));
        const double d = q - static_cast<double>(zi);
        dd += d * d;
        qq += q * q;
      }
    }
  }

  __shared__ double s_part[kMaxWarps][2];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int n_warps = blockDim.x >> 5;  // blockDim.x is a multiple of 32
  dd = warp_sum(dd);
  qq = warp_sum(qq);
  if (lane == 0) {
    s_part[warp][0] = dd;
    s_part[warp][1] = qq;
  }
  __syncthreads();  // also: every thread has read active[b] before thread 0 writes it

  if (threadIdx.x == 0) {
    double sd = 0.0, sq = 0.0;
    for (int w = 0; w < n_warps; ++w) {
      sd += s_part[w][0];
      sq += s_part[w][1];
    }
    finish_sample<false>(a.s, b, sqrt(sd), sqrt(sq), a.p.stop_rel, a.p.tol);
  }
}

__global__ void advance_counter_kernel(int64_t* counter) { *counter += 1; }

}  // namespace

template <typename T>
cudaError_t launch_block_step(const T* z, const T* f_out, T* z_next,
                              StateView<T, typename ResidualOf<T>::type> s, int64_t* step,
                              int64_t B, int64_t n, BlockStepParams p, cudaStream_t stream) {
  if (B < 0 || n < 0 || B > 0x7fffffffLL) return cudaErrorInvalidValue;
  if (B > 0) {
    const KernelArgs<T> args{z, f_out, z_next, s, step, n, p};
    // Whole warps only (the reductions shuffle with a full mask); small n gets a small block.
    const int threads = n >= kMaxThreads ? kMaxThreads : static_cast<int>(((n + 31) / 32) * 32);
    const dim3 grid(static_cast<unsigned>(B));
    const dim3 block(threads > 0 ? threads : 32);
    if (p.sigma != 0.0)  // sigma == 0: the reference adds no noise term at all
      block_step_kernel<T, true><<<grid, block, 0, stream>>>(args);
    else
      block_step_kernel<T, false><<<grid, block, 0, stream>>>(args);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return launch_advance_counter(step, stream);  // every update advances the stream, B = 0 too
}

cudaError_t launch_advance_counter(int64_t* counter, cudaStream_t stream) {
  advance_counter_kernel<<<1, 1, 0, stream>>>(counter);
  return cudaGetLastError();
}

void compiled_constants(double out[6]) {
  out[0] = kRelEps;
  out[1] = kCholPivotRtol;
  out[2] = kMaxHistory;
  out[3] = kHashMul0;
  out[4] = kHashMul1;
  out[5] = kNoiseStepOffset;
}

template cudaError_t launch_block_step<float>(const float*, const float*, float*,
                                              StateView<float, float>, int64_t*, int64_t,
                                              int64_t, BlockStepParams, cudaStream_t);
template cudaError_t launch_block_step<double>(const double*, const double*, double*,
                                               StateView<double, double>, int64_t*, int64_t,
                                               int64_t, BlockStepParams, cudaStream_t);
template cudaError_t launch_block_step<__nv_bfloat16>(const __nv_bfloat16*,
                                                      const __nv_bfloat16*, __nv_bfloat16*,
                                                      StateView<__nv_bfloat16, float>, int64_t*,
                                                      int64_t, int64_t, BlockStepParams,
                                                      cudaStream_t);

}  // namespace cuda
}  // namespace eqk

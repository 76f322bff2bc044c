// Fused block-step epilogue, CUDA. Semantics: eqkernels/ops/block_step.py (block_step_ref);
// the CPU twin is csrc/cpu/block_step.cpp. Torch-free: only the CUDA runtime.
//
// Two launches:
//   update  one block per (sample active on entry, chunk of kChunk columns): every thread
//           loads kSweeps vectors of VEC elements of z and f_out (16-byte loads where the
//           row layout allows), then forms
//             z_next = T((1 - damping) z + damping f_out + sigma eps)   (W = float; double for
//           double), stores it, and accumulates in double ||z_next - z||^2 and ||z_next||^2 of
//           the stored values; the block's two sums go to workspace[sample, chunk].
//   finish  one thread per sample active on entry: the chunks' sums, in chunk order (so the
//           result does not depend on scheduling), then the bookkeeping (finish_sample); thread
//           0 advances the step counter (every update block has read it by then).
// Splitting rows into chunks keeps every SM busy whatever B is (B = 64 rows of 41472 are 384
// blocks, not 64) and makes the last wave short; 16-byte vectors and kSweeps of them in flight
// a thread give the memory-level parallelism the bandwidth needs.
// The noise: standard_normal_pair (common/kernel_common.h, the code the CPU kernel runs too),
// both Box-Muller outputs for the two elements of a pair. VEC >= 2 needs n even (every row
// starts on a pair); VEC = 1 (odd n, or an unaligned tensor) draws each element's pair alone.
// z_next may alias z: each element of z is read, and the same element of z_next written, by
// the same thread (its loads of a sweep come before its stores); no block touches another's
// elements. active is read here by the update blocks and written only by the finish kernel.
// Rounding: the update uses __f*_rn / __d*_rn, never contracted into an FMA, so it rounds like
// the reference's separate mul/add kernels; the noise spells its own roundings. The build does
// not pass --use_fast_math (it would flush float32 subnormals to zero).
// The noise key comes from the device: every block reads the step counter and derives
// noise_key(seed, step + 1); the finish kernel advances it. No host read of device memory, so a
// CUDA graph of K steps draws K different noise fields on every replay.
#include <cuda_bf16.h>

#include <cmath>
#include <type_traits>

#include "block_step.cuh"

namespace eqk {
namespace cuda {
namespace {

constexpr int kThreads = 256;  // update block size
constexpr int kWarps = kThreads / 32;
constexpr int kSweeps = 4;     // vectors a thread loads before it computes
// Columns of one update block: the largest of 32768 / 16384 / 8192 / 4096 that still gives
// kMinBlocks blocks (so every SM gets several, and the last wave is short), else 4096. Long
// chunks spread a block's fixed cost (index math, round keys, the reduction: ~220 instructions a
// thread) over more elements (32768: 128 a thread, under 2 instructions an element).
constexpr int64_t kChunkMin = 4096, kChunkMax = 32768;
constexpr int64_t kMinBlocks = 1024;
constexpr int kFinishThreads = 256;

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

// VEC elements of T, loaded and stored as one access of VEC * sizeof(T) bytes.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

// One vector store (as 32-bit words: nvcc split a struct of bfloat16 into 2-byte stores).
template <typename T, int VEC>
__device__ __forceinline__ void store_vec(T* p, const Vec<T, VEC>& o) {
  if constexpr (sizeof(o) == 16) {
    *reinterpret_cast<uint4*>(p) = *reinterpret_cast<const uint4*>(&o);
  } else if constexpr (sizeof(o) == 8) {
    *reinterpret_cast<uint2*>(p) = *reinterpret_cast<const uint2*>(&o);
  } else if constexpr (sizeof(o) == 4) {
    *reinterpret_cast<uint32_t*>(p) = *reinterpret_cast<const uint32_t*>(&o);
  } else {
    *reinterpret_cast<Vec<T, VEC>*>(p) = o;
  }
}

// The elements of a vector as W. bfloat16 pairs are unpacked on their 32-bit word (one shift
// or one mask an element; nvcc's per-element conversion took a byte permute and a shift).
template <typename T, int VEC>
__device__ __forceinline__ void unpack_vec(const Vec<T, VEC>& x, typename Elem<T>::W (&out)[VEC]) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value && VEC % 2 == 0) {
#pragma unroll
    for (int j = 0; j < VEC; j += 2) {
      const uint32_t w = *reinterpret_cast<const uint32_t*>(&x.v[j]);
      out[j] = __uint_as_float(w << 16);
      out[j + 1] = __uint_as_float(w & 0xffff0000u);
    }
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) out[j] = Elem<T>::to_w(x.v[j]);
  }
}

// Rounds new[j] (W) to T into `out`, and returns the rounded values as W in q (the norms are
// of the stored values). bfloat16 pairs round in one instruction (cvt.rn.bf16x2.f32).
template <typename T, int VEC>
__device__ __forceinline__ void round_vec(const typename Elem<T>::W (&nv)[VEC], Vec<T, VEC>& out,
                                          typename Elem<T>::W (&q)[VEC]) {
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    out.v[j] = Elem<T>::from_w(nv[j]);
    q[j] = Elem<T>::to_w(out.v[j]);
  }
}
template <int VEC>
__device__ __forceinline__ void round_vec_bf16(const float (&nv)[VEC],
                                               Vec<__nv_bfloat16, VEC>& out, float (&q)[VEC]) {
#pragma unroll
  for (int j = 0; j < VEC; j += 2) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(nv[j], nv[j + 1]);  // .x = nv[j]
    *reinterpret_cast<__nv_bfloat162*>(&out.v[j]) = h;
    const uint32_t w = *reinterpret_cast<const uint32_t*>(&h);
    q[j] = __uint_as_float(w << 16);  // a bfloat16 is the high half of its float
    q[j + 1] = __uint_as_float(w & 0xffff0000u);
  }
}
template <>
__device__ __forceinline__ void round_vec<__nv_bfloat16, 8>(const float (&nv)[8],
                                                             Vec<__nv_bfloat16, 8>& out,
                                                             float (&q)[8]) {
  round_vec_bf16<8>(nv, out, q);
}
template <>
__device__ __forceinline__ void round_vec<__nv_bfloat16, 2>(const float (&nv)[2],
                                                             Vec<__nv_bfloat16, 2>& out,
                                                             float (&q)[2]) {
  round_vec_bf16<2>(nv, out, q);
}

template <typename T>
struct KernelArgs {
  const T* z;
  const T* f_out;
  T* z_next;
  StateView<T, typename ResidualOf<T>::type> s;
  int64_t* step;  // read by the update blocks; advanced by the finish kernel
  double2* ws;    // (B, n_chunks) partial sums (||z_next - z||^2, ||z_next||^2)
  int64_t n;
  int64_t chunk;     // columns of one update block
  int64_t n_chunks;  // chunks of a row
  BlockStepParams p;
};

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;  // complete in lane 0
}

template <typename T, bool NOISE, int VEC>
__global__ void __launch_bounds__(kThreads) update_kernel(KernelArgs<T> a) {
  using E = Elem<T>;
  using W = typename E::W;
  using V = Vec<T, VEC>;
  // (B * n_chunks < 2^31: 32-bit division)
  const int64_t b = blockIdx.x / static_cast<uint32_t>(a.n_chunks);
  const int64_t chunk = blockIdx.x % static_cast<uint32_t>(a.n_chunks);
  if (!a.s.active[b]) return;  // the same for the whole block
  const int64_t n = a.n;
  const int64_t lo = chunk * a.chunk;
  const int64_t hi = min(n, lo + a.chunk);  // VEC divides n and the chunk: no vector straddles hi
  const T* z = a.z + b * n;                // z_next may alias it: no __restrict__ / ld.global.nc
  const T* f = a.f_out + b * n;
  T* out = a.z_next + b * n;
  // Scalars rounded to W once, as PyTorch does with a Python scalar times a W tensor.
  const W keep = W(1.0 - a.p.damping), lam = W(a.p.damping), sig = W(a.p.sigma);
  const uint32_t flat0 = static_cast<uint32_t>(b * n);  // flat index mod 2^32
  PhiloxKeys ks{};
  if (NOISE) ks = philox_keys(noise_key(a.p.seed, *a.step + 1));

  double dd = 0.0, qq = 0.0;
  for (int64_t i0 = lo + int64_t(threadIdx.x) * VEC; i0 < hi; i0 += kSweeps * kThreads * VEC) {
    V zt[kSweeps], ft[kSweeps];
#pragma unroll
    for (int k = 0; k < kSweeps; ++k) {
      const int64_t i = i0 + int64_t(k) * kThreads * VEC;
      if (i < hi) {
        zt[k] = *reinterpret_cast<const V*>(z + i);
        ft[k] = *reinterpret_cast<const V*>(f + i);
      }
    }
#pragma unroll
    for (int k = 0; k < kSweeps; ++k) {
      const int64_t i = i0 + int64_t(k) * kThreads * VEC;
      if (i < hi) {
        float eps[VEC];
        if (NOISE) {
          const uint32_t flat = flat0 + static_cast<uint32_t>(i);
          if (VEC == 1) {
            eps[0] = standard_normal(flat, ks);
          } else {  // flat is a multiple of VEC: VEC / 2 whole pairs, no wrap at 2^31 inside
#pragma unroll
            for (int j = 0; j < VEC / 2; ++j)
              standard_normal_pair((flat >> 1) + j, ks, eps[2 * j], eps[2 * j + 1]);
          }
        }
        W zw[VEC], fw[VEC], nv[VEC], q[VEC];
        unpack_vec<T, VEC>(zt[k], zw);
        unpack_vec<T, VEC>(ft[k], fw);
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          W v = E::add(E::mul(keep, zw[j]), E::mul(lam, fw[j]));
          if (NOISE) v = E::add(v, E::mul(sig, W(eps[j])));
          nv[j] = v;
        }
        V o;
        round_vec<T, VEC>(nv, o, q);
        store_vec(out + i, o);  // after this thread read z[i..] (out may be z)
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const double qd = static_cast<double>(q[j]);
          const double d = qd - static_cast<double>(zw[j]);
          dd += d * d;
          qq += qd * qd;
        }
      }
    }
  }

  __shared__ double s_part[kWarps][2];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  dd = warp_sum(dd);
  qq = warp_sum(qq);
  if (lane == 0) {
    s_part[warp][0] = dd;
    s_part[warp][1] = qq;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double sd = 0.0, sq = 0.0;
    for (int w = 0; w < kWarps; ++w) {
      sd += s_part[w][0];
      sq += s_part[w][1];
    }
    a.ws[blockIdx.x] = make_double2(sd, sq);  // blockIdx.x = b * n_chunks + chunk
  }
}

template <typename T>
__global__ void __launch_bounds__(kFinishThreads) finish_kernel(KernelArgs<T> a, int64_t B) {
  const int64_t b = int64_t(blockIdx.x) * kFinishThreads + threadIdx.x;
  if (b == 0) *a.step += 1;  // the update kernel, earlier on the stream, has read it
  if (b >= B || !a.s.active[b]) return;
  double sd = 0.0, sq = 0.0;
  for (int64_t c = 0; c < a.n_chunks; ++c) {
    const double2 part = a.ws[b * a.n_chunks + c];
    sd += part.x;
    sq += part.y;
  }
  finish_sample<false>(a.s, b, sqrt(sd), sqrt(sq), a.p.stop_rel, a.p.tol);
}

__global__ void advance_counter_kernel(int64_t* counter) { *counter += 1; }

bool aligned(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

template <typename T, int VEC>
cudaError_t launch_update(const KernelArgs<T>& args, unsigned blocks, cudaStream_t stream) {
  if (args.p.sigma != 0.0)  // sigma == 0: the reference adds no noise term at all
    update_kernel<T, true, VEC><<<blocks, kThreads, 0, stream>>>(args);
  else
    update_kernel<T, false, VEC><<<blocks, kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace

int64_t block_step_chunk(int64_t B, int64_t n) {
  int64_t chunk = kChunkMax;
  while (chunk > kChunkMin && B * ((n + chunk - 1) / chunk) < kMinBlocks) chunk /= 2;
  return chunk;
}

int64_t block_step_chunks(int64_t B, int64_t n) {
  return n > 0 ? (n + block_step_chunk(B, n) - 1) / block_step_chunk(B, n) : 1;
}

template <typename T>
cudaError_t launch_block_step(const T* z, const T* f_out, T* z_next,
                              StateView<T, typename ResidualOf<T>::type> s, int64_t* step,
                              double* workspace, int64_t B, int64_t n, BlockStepParams p,
                              cudaStream_t stream) {
  if (B < 0 || n < 0 || B > 0x7fffffffLL) return cudaErrorInvalidValue;
  if (B == 0) return launch_advance_counter(step, stream);  // every update advances the stream
  const int64_t n_chunks = block_step_chunks(B, n);
  if (B * n_chunks > 0x7fffffffLL) return cudaErrorInvalidValue;
  const KernelArgs<T> args{z,    f_out, z_next, s, step, reinterpret_cast<double2*>(workspace),
                           n,    block_step_chunk(B, n), n_chunks, p};
  const unsigned blocks = static_cast<unsigned>(B * n_chunks);
  // The widest vector (16 bytes) that divides every row and whose alignment all three tensors
  // have; 2 elements (a pair) otherwise; 1 for odd n.
  constexpr int kVecMax = 16 / sizeof(T);
  const auto fits = [&](int vec) {
    const size_t bytes = size_t(vec) * sizeof(T);
    return n % vec == 0 && aligned(z, bytes) && aligned(f_out, bytes) && aligned(z_next, bytes);
  };
  cudaError_t err;
  if (fits(kVecMax))
    err = launch_update<T, kVecMax>(args, blocks, stream);
  else if (fits(2))
    err = launch_update<T, 2>(args, blocks, stream);
  else
    err = launch_update<T, 1>(args, blocks, stream);
  if (err != cudaSuccess) return err;
  const unsigned finish_blocks = static_cast<unsigned>((B + kFinishThreads - 1) / kFinishThreads);
  finish_kernel<T><<<finish_blocks, kFinishThreads, 0, stream>>>(args, B);
  return cudaGetLastError();
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
                                              StateView<float, float>, int64_t*, double*,
                                              int64_t, int64_t, BlockStepParams, cudaStream_t);
template cudaError_t launch_block_step<double>(const double*, const double*, double*,
                                               StateView<double, double>, int64_t*, double*,
                                               int64_t, int64_t, BlockStepParams, cudaStream_t);
template cudaError_t launch_block_step<__nv_bfloat16>(const __nv_bfloat16*,
                                                      const __nv_bfloat16*, __nv_bfloat16*,
                                                      StateView<__nv_bfloat16, float>, int64_t*,
                                                      double*, int64_t, int64_t, BlockStepParams,
                                                      cudaStream_t);

}  // namespace cuda
}  // namespace eqk

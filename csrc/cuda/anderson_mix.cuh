// Fused Anderson step, CUDA: torch-free launcher (semantics: eqkernels/ops/anderson_mix.py,
// anderson_step_ref). The torch-facing wrapper is anderson_mix_binding.cpp.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "../common/kernel_common.h"

namespace eqk {
namespace cuda {

// Bytes of scratch one launch needs (the per-chunk partial sums and the per-sample mixing plans).
int64_t anderson_workspace_bytes(int64_t B, int64_t n);

// One Anderson step over B samples of size n with history m (1 <= m <= kMaxHistory), on
// `stream`. All arrays are contiguous device memory: z, fz, z_out, s.best_z (B, n); X, G
// (B, m, n); gram (B, m, m); the rest (B,); workspace: anderson_workspace_bytes(B, n) bytes,
// 8-byte aligned. z_out may be z. Returns the first launch error (cudaSuccess if none);
// cudaErrorInvalidValue for a bad m or a negative size.
template <typename T>
cudaError_t launch_anderson_step(const T* z, const T* fz, T* z_out, StateView<T, T> s, T* X,
                                 T* G, double* gram, int32_t* count, void* workspace, int64_t B,
                                 int64_t n, int m, AndersonParams p, cudaStream_t stream);

extern template cudaError_t launch_anderson_step<float>(const float*, const float*, float*,
                                                        StateView<float, float>, float*, float*,
                                                        double*, int32_t*, void*, int64_t,
                                                        int64_t, int, AndersonParams,
                                                        cudaStream_t);
extern template cudaError_t launch_anderson_step<double>(const double*, const double*, double*,
                                                         StateView<double, double>, double*,
                                                         double*, double*, int32_t*, void*,
                                                         int64_t, int64_t, int, AndersonParams,
                                                         cudaStream_t);

}  // namespace cuda
}  // namespace eqk

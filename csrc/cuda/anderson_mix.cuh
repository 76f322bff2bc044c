// Fused Anderson step, CUDA: torch-free launcher (semantics: eqkernels/ops/anderson_mix.py,
// anderson_step_ref). The torch-facing wrapper is anderson_mix_binding.cpp.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "../common/kernel_common.h"

namespace eqk {
namespace cuda {

// One Anderson step over B samples of size n with history m (1 <= m <= kMaxHistory), on
// `stream`. All arrays are contiguous device memory: z, fz, z_out, s.best_z (B, n); X, G
// (B, m, n); gram (B, m, m); the rest (B,). z_out may be z. Returns the launch error
// (cudaSuccess if none); cudaErrorInvalidValue for a bad m or a negative size.
template <typename T>
cudaError_t launch_anderson_step(const T* z, const T* fz, T* z_out, StateView<T, T> s, T* X,
                                 T* G, double* gram, int32_t* count, int64_t B, int64_t n, int m,
                                 AndersonParams p, cudaStream_t stream);

extern template cudaError_t launch_anderson_step<float>(const float*, const float*, float*,
                                                        StateView<float, float>, float*, float*,
                                                        double*, int32_t*, int64_t, int64_t, int,
                                                        AndersonParams, cudaStream_t);
extern template cudaError_t launch_anderson_step<double>(const double*, const double*, double*,
                                                         StateView<double, double>, double*,
                                                         double*, double*, int32_t*, int64_t,
                                                         int64_t, int, AndersonParams,
                                                         cudaStream_t);

}  // namespace cuda
}  // namespace eqk

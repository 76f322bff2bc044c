// Fused block-step epilogue, CUDA: torch-free launcher (semantics: eqkernels/ops/block_step.py,
// block_step_ref). The torch-facing wrapper is block_step_binding.cpp.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../common/kernel_common.h"

namespace eqk {
namespace cuda {

// Residual dtype for state of dtype T: double for double, float otherwise.
template <typename T>
struct ResidualOf {
  using type = float;
};
template <>
struct ResidualOf<double> {
  using type = double;
};

// The columns of one update block (block_step_chunk) and the chunks of a row of n elements
// (block_step_chunks) at batch size B: the workspace of a launch is
// B * block_step_chunks(B, n) * 2 doubles.
int64_t block_step_chunk(int64_t B, int64_t n);
int64_t block_step_chunks(int64_t B, int64_t n);

// One block-step epilogue over B samples of size n, on `stream`. All arrays are contiguous
// device memory: z, f_out, z_next (B, n); the state (B,); step (1,) int64, the noise step
// counter: this call draws the noise of key noise_key(p.seed, *step + 1) and then stores
// *step + 1 (in the second launch, after every block of the first has read it); workspace:
// B * block_step_chunks(B, n) * 2 doubles of scratch. z_next may be z. Nothing here reads device
// memory on the host, so the launches can be captured in a CUDA graph. Returns the first launch
// error (cudaSuccess if none); cudaErrorInvalidValue for a negative size or B >= 2^31.
template <typename T>
cudaError_t launch_block_step(const T* z, const T* f_out, T* z_next,
                              StateView<T, typename ResidualOf<T>::type> s, int64_t* step,
                              double* workspace, int64_t B, int64_t n, BlockStepParams p,
                              cudaStream_t stream);

// Adds 1 to *counter (one thread), on `stream`.
cudaError_t launch_advance_counter(int64_t* counter, cudaStream_t stream);

// The shared constants as nvcc compiled them (the layout of eqkernels/ops/constants.ALL):
// REL_EPS, CHOL_PIVOT_RTOL, MAX_HISTORY, HASH_MUL0, HASH_MUL1, NOISE_STEP_OFFSET.
void compiled_constants(double out[6]);

extern template cudaError_t launch_block_step<float>(const float*, const float*, float*,
                                                     StateView<float, float>, int64_t*, double*,
                                                     int64_t, int64_t, BlockStepParams,
                                                     cudaStream_t);
extern template cudaError_t launch_block_step<double>(const double*, const double*, double*,
                                                      StateView<double, double>, int64_t*,
                                                      double*, int64_t, int64_t, BlockStepParams,
                                                      cudaStream_t);
extern template cudaError_t launch_block_step<__nv_bfloat16>(
    const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*, StateView<__nv_bfloat16, float>,
    int64_t*, double*, int64_t, int64_t, BlockStepParams, cudaStream_t);

}  // namespace cuda
}  // namespace eqk

// Fused block-step epilogue, CUDA: torch-free launcher (semantics: eqkernels/ops/block_step.py,
// block_step_ref). The torch-facing wrapper is block_step_binding.cpp.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace eqk {
namespace cuda {

// Plain-old-data copy of eqk::BlockStepParams (that one lives in a torch header).
struct BlockStepParamsPOD {
  double damping;
  double sigma;   // 0: no noise term at all
  uint32_t key;   // noise key (block_step.noise_key)
  double tol;
  bool stop_rel;  // stop on the relative residual instead of the absolute one
};

// Residual dtype for state of dtype T: double for double, float otherwise.
template <typename T>
struct ResidualOf {
  using type = float;
};
template <>
struct ResidualOf<double> {
  using type = double;
};

// One block-step epilogue over B samples of size n, on `stream`. All arrays are contiguous
// device memory: z, f_out, z_next (B, n); the rest (B,). z_next may be z. Returns the launch
// error (cudaSuccess if none); cudaErrorInvalidValue for a negative size or B >= 2^31.
template <typename T>
cudaError_t launch_block_step(const T* z, const T* f_out, T* z_next, bool* active,
                              bool* converged, bool* diverged, int32_t* nstep,
                              typename ResidualOf<T>::type* abs_res,
                              typename ResidualOf<T>::type* rel_res, int64_t B, int64_t n,
                              BlockStepParamsPOD p, cudaStream_t stream);

extern template cudaError_t launch_block_step<float>(const float*, const float*, float*, bool*,
                                                     bool*, bool*, int32_t*, float*, float*,
                                                     int64_t, int64_t, BlockStepParamsPOD,
                                                     cudaStream_t);
extern template cudaError_t launch_block_step<double>(const double*, const double*, double*,
                                                      bool*, bool*, bool*, int32_t*, double*,
                                                      double*, int64_t, int64_t,
                                                      BlockStepParamsPOD, cudaStream_t);
extern template cudaError_t launch_block_step<__nv_bfloat16>(
    const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*, bool*, bool*, bool*, int32_t*,
    float*, float*, int64_t, int64_t, BlockStepParamsPOD, cudaStream_t);

}  // namespace cuda
}  // namespace eqk

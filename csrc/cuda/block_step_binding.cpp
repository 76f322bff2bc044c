// Torch side of the CUDA block-step epilogue: current stream, dtype dispatch, error check.
// Arguments were validated in csrc/bindings.cpp (same device, contiguous, shapes, dtypes).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "../ops.h"
#include "block_step.cuh"

namespace eqk {

namespace {

// T: the CUDA element type; S: the torch one of the same layout (c10::BFloat16 for
// __nv_bfloat16). R: the residual type.
template <typename T, typename S>
cudaError_t launch(const torch::Tensor& z, const torch::Tensor& f_out, torch::Tensor& z_next,
                   torch::Tensor& active, torch::Tensor& converged, torch::Tensor& diverged,
                   torch::Tensor& nstep, torch::Tensor& abs_res, torch::Tensor& rel_res,
                   const cuda::BlockStepParamsPOD& pod, cudaStream_t stream) {
  using R = typename cuda::ResidualOf<T>::type;
  static_assert(sizeof(T) == sizeof(S), "block_step: element types must share a layout");
  return cuda::launch_block_step<T>(
      reinterpret_cast<const T*>(z.data_ptr<S>()), reinterpret_cast<const T*>(f_out.data_ptr<S>()),
      reinterpret_cast<T*>(z_next.data_ptr<S>()), active.data_ptr<bool>(),
      converged.data_ptr<bool>(), diverged.data_ptr<bool>(), nstep.data_ptr<int32_t>(),
      abs_res.data_ptr<R>(), rel_res.data_ptr<R>(), z.size(0), z.size(1), pod, stream);
}

}  // namespace

void block_step_cuda(const torch::Tensor& z, const torch::Tensor& f_out, torch::Tensor& z_next,
                     torch::Tensor& active, torch::Tensor& converged, torch::Tensor& diverged,
                     torch::Tensor& nstep, torch::Tensor& abs_res, torch::Tensor& rel_res,
                     const BlockStepParams& p) {
  TORCH_CHECK(z.size(0) <= 0x7fffffffLL, "block_step: batch too large for the CUDA kernel, got B = ",
              z.size(0));
  const c10::cuda::CUDAGuard guard(z.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const cuda::BlockStepParamsPOD pod{p.damping, p.sigma, p.key, p.tol, p.stop_rel};
  cudaError_t err;
  switch (z.scalar_type()) {
    case torch::kFloat32:
      err = launch<float, float>(z, f_out, z_next, active, converged, diverged, nstep, abs_res,
                                 rel_res, pod, stream);
      break;
    case torch::kFloat64:
      err = launch<double, double>(z, f_out, z_next, active, converged, diverged, nstep, abs_res,
                                   rel_res, pod, stream);
      break;
    case torch::kBFloat16:
      err = launch<__nv_bfloat16, c10::BFloat16>(z, f_out, z_next, active, converged, diverged,
                                                 nstep, abs_res, rel_res, pod, stream);
      break;
    default:
      TORCH_CHECK(false, "block_step: z must be float32, float64 or bfloat16, got ",
                  z.scalar_type());
  }
  TORCH_CHECK(err == cudaSuccess, "block_step: CUDA kernel launch failed: ",
              cudaGetErrorString(err));
}

}  // namespace eqk

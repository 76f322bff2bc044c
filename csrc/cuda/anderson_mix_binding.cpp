// Torch side of the CUDA Anderson step: current stream, dtype dispatch, error check.
// Arguments were validated in csrc/bindings.cpp (same device, contiguous, shapes, dtypes).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "../ops.h"
#include "anderson_mix.cuh"

namespace eqk {

namespace {

template <typename T>
cudaError_t launch(const torch::Tensor& z, const torch::Tensor& fz, torch::Tensor& z_out,
                   torch::Tensor& active, torch::Tensor& converged, torch::Tensor& diverged,
                   torch::Tensor& nstep, torch::Tensor& abs_res, torch::Tensor& rel_res,
                   torch::Tensor& best_abs, torch::Tensor& best_rel, torch::Tensor& best_z,
                   torch::Tensor& X, torch::Tensor& G, torch::Tensor& gram, torch::Tensor& count,
                   const cuda::AndersonParamsPOD& pod, cudaStream_t stream) {
  return cuda::launch_anderson_step<T>(
      z.data_ptr<T>(), fz.data_ptr<T>(), z_out.data_ptr<T>(), active.data_ptr<bool>(),
      converged.data_ptr<bool>(), diverged.data_ptr<bool>(), nstep.data_ptr<int32_t>(),
      abs_res.data_ptr<T>(), rel_res.data_ptr<T>(), best_abs.data_ptr<T>(),
      best_rel.data_ptr<T>(), best_z.data_ptr<T>(), X.data_ptr<T>(), G.data_ptr<T>(),
      gram.data_ptr<double>(), count.data_ptr<int32_t>(), z.size(0), z.size(1),
      static_cast<int>(X.size(1)), pod, stream);
}

}  // namespace

void anderson_step_cuda(const torch::Tensor& z, const torch::Tensor& fz, torch::Tensor& z_out,
                        torch::Tensor& active, torch::Tensor& converged, torch::Tensor& diverged,
                        torch::Tensor& nstep, torch::Tensor& abs_res, torch::Tensor& rel_res,
                        torch::Tensor& best_abs, torch::Tensor& best_rel, torch::Tensor& best_z,
                        torch::Tensor& X, torch::Tensor& G, torch::Tensor& gram,
                        torch::Tensor& count, const AndersonParams& p) {
  const int64_t m = X.size(1);
  TORCH_CHECK(m >= 1 && m <= cuda::kMaxHistory, "anderson_step: history size m must be in [1, ",
              cuda::kMaxHistory, "], got ", m);
  TORCH_CHECK(z.size(0) <= 0x7fffffffLL, "anderson_step: batch too large for the CUDA kernel");
  const c10::cuda::CUDAGuard guard(z.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const cuda::AndersonParamsPOD pod{p.tol, p.stop_rel, p.beta, p.lam, p.restart_growth};
  cudaError_t err;
  if (z.scalar_type() == torch::kFloat64) {
    err = launch<double>(z, fz, z_out, active, converged, diverged, nstep, abs_res, rel_res,
                         best_abs, best_rel, best_z, X, G, gram, count, pod, stream);
  } else {
    TORCH_CHECK(z.scalar_type() == torch::kFloat32, "anderson_step: z must be float32 or float64");
    err = launch<float>(z, fz, z_out, active, converged, diverged, nstep, abs_res, rel_res,
                        best_abs, best_rel, best_z, X, G, gram, count, pod, stream);
  }
  TORCH_CHECK(err == cudaSuccess, "anderson_step: CUDA kernel launch failed: ",
              cudaGetErrorString(err));
}

}  // namespace eqk

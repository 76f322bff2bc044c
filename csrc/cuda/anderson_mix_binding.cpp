// CUDA implementation of eqk::anderson_step (schema: csrc/ops/anderson_mix.cpp): the tensors'
// device and its current stream, dtype dispatch, error check. The kernel: anderson_mix.cu.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "../ops.h"
#include "anderson_mix.cuh"
#include "cuda_errors.h"

namespace eqk {
namespace {

template <typename T>
cudaError_t launch(const at::Tensor& z, const at::Tensor& fz, at::Tensor& z_out,
                   at::Tensor& active, at::Tensor& converged, at::Tensor& diverged,
                   at::Tensor& nstep, at::Tensor& abs_res, at::Tensor& rel_res,
                   at::Tensor& best_abs, at::Tensor& best_rel, at::Tensor& best_z, at::Tensor& X,
                   at::Tensor& G, at::Tensor& gram, at::Tensor& count, const AndersonParams& p,
                   cudaStream_t stream) {
  const StateView<T, T> s{active.data_ptr<bool>(), converged.data_ptr<bool>(),
                          diverged.data_ptr<bool>(), nstep.data_ptr<int32_t>(),
                          abs_res.data_ptr<T>(),   rel_res.data_ptr<T>(),
                          best_abs.data_ptr<T>(),  best_rel.data_ptr<T>(),
                          best_z.data_ptr<T>()};
  // Scratch: partial sums and mixing plans (the caching allocator: no sync, graph-capturable).
  const int64_t ws_doubles = (cuda::anderson_workspace_bytes(z.size(0), z.size(1)) + 7) / 8;
  const at::Tensor ws = at::empty({ws_doubles}, z.options().dtype(at::kDouble));
  return cuda::launch_anderson_step<T>(z.data_ptr<T>(), fz.data_ptr<T>(), z_out.data_ptr<T>(), s,
                                       X.data_ptr<T>(), G.data_ptr<T>(), gram.data_ptr<double>(),
                                       count.data_ptr<int32_t>(), ws.data_ptr<double>(),
                                       z.size(0), z.size(1), static_cast<int>(X.size(1)), p,
                                       stream);
}

void anderson_step_cuda(const at::Tensor& z, const at::Tensor& fz, at::Tensor& z_out,
                        at::Tensor& active, at::Tensor& converged, at::Tensor& diverged,
                        at::Tensor& nstep, at::Tensor& abs_res, at::Tensor& rel_res,
                        at::Tensor& best_abs, at::Tensor& best_rel, at::Tensor& best_z,
                        at::Tensor& X, at::Tensor& G, at::Tensor& gram, at::Tensor& count,
                        double tol, bool stop_rel, double beta, double lam,
                        double restart_growth) {
  check_anderson_step(z, fz, z_out, active, converged, diverged, nstep, abs_res, rel_res,
                      best_abs, best_rel, best_z, X, G, gram, count);
  TORCH_CHECK_VALUE(z.size(0) <= 0x7fffffffLL,
                    "anderson_step: batch too large for the CUDA kernel, got B = ", z.size(0));
  const c10::cuda::CUDAGuard guard(z.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const AndersonParams p{tol, stop_rel, beta, lam, restart_growth};
  const cudaError_t err =
      z.scalar_type() == at::kDouble
          ? launch<double>(z, fz, z_out, active, converged, diverged, nstep, abs_res, rel_res,
                           best_abs, best_rel, best_z, X, G, gram, count, p, stream)
          : launch<float>(z, fz, z_out, active, converged, diverged, nstep, abs_res, rel_res,
                          best_abs, best_rel, best_z, X, G, gram, count, p, stream);
  check_launch(err, "anderson_step");
}

}  // namespace
}  // namespace eqk

TORCH_LIBRARY_IMPL(eqk, CUDA, m) { m.impl("anderson_step", &eqk::anderson_step_cuda); }

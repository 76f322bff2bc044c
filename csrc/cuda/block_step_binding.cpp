// CUDA implementation of eqk::block_step (schema: csrc/ops/block_step.cpp): the tensors'
// device and its current stream, dtype dispatch, error check. The kernels: block_step.cu.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "../ops.h"
#include "block_step.cuh"
#include "cuda_errors.h"

namespace eqk {
namespace {

// T: the CUDA element type; S: the torch one of the same layout (c10::BFloat16 for
// __nv_bfloat16). R: the residual type.
template <typename T, typename S>
cudaError_t launch(const at::Tensor& z, const at::Tensor& f_out, at::Tensor& z_next,
                   at::Tensor& active, at::Tensor& converged, at::Tensor& diverged,
                   at::Tensor& nstep, at::Tensor& abs_res, at::Tensor& rel_res, at::Tensor& step,
                   const BlockStepParams& p, cudaStream_t stream) {
  using R = typename cuda::ResidualOf<T>::type;
  static_assert(sizeof(T) == sizeof(S), "block_step: element types must share a layout");
  const StateView<T, R> s{active.data_ptr<bool>(), converged.data_ptr<bool>(),
                          diverged.data_ptr<bool>(), nstep.data_ptr<int32_t>(),
                          abs_res.data_ptr<R>(), rel_res.data_ptr<R>(), nullptr, nullptr,
                          nullptr};
  // Scratch for the per-chunk partial sums (the caching allocator: no sync, graph-capturable).
  const at::Tensor ws = at::empty({z.size(0) * cuda::block_step_chunks(z.size(0), z.size(1)) * 2},
                                  z.options().dtype(at::kDouble));
  return cuda::launch_block_step<T>(
      reinterpret_cast<const T*>(z.data_ptr<S>()), reinterpret_cast<const T*>(f_out.data_ptr<S>()),
      reinterpret_cast<T*>(z_next.data_ptr<S>()), s, step.data_ptr<int64_t>(),
      ws.data_ptr<double>(), z.size(0), z.size(1), p, stream);
}

void block_step_cuda(const at::Tensor& z, const at::Tensor& f_out, at::Tensor& z_next,
                     at::Tensor& active, at::Tensor& converged, at::Tensor& diverged,
                     at::Tensor& nstep, at::Tensor& abs_res, at::Tensor& rel_res,
                     at::Tensor& step, int64_t seed, double damping, double sigma, double tol,
                     bool stop_rel) {
  check_block_step(z, f_out, z_next, active, converged, diverged, nstep, abs_res, rel_res, step);
  TORCH_CHECK_VALUE(z.size(0) <= 0x7fffffffLL,
                    "block_step: batch too large for the CUDA kernel, got B = ", z.size(0));
  const c10::cuda::CUDAGuard guard(z.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const BlockStepParams p{damping, sigma, seed, tol, stop_rel};
  cudaError_t err;
  switch (z.scalar_type()) {
    case at::kFloat:
      err = launch<float, float>(z, f_out, z_next, active, converged, diverged, nstep, abs_res,
                                 rel_res, step, p, stream);
      break;
    case at::kDouble:
      err = launch<double, double>(z, f_out, z_next, active, converged, diverged, nstep, abs_res,
                                   rel_res, step, p, stream);
      break;
    default:  // bfloat16 (check_block_step admits no other)
      err = launch<__nv_bfloat16, c10::BFloat16>(z, f_out, z_next, active, converged, diverged,
                                                 nstep, abs_res, rel_res, step, p, stream);
  }
  check_launch(err, "block_step");
}

}  // namespace
}  // namespace eqk

TORCH_LIBRARY_IMPL(eqk, CUDA, m) { m.impl("block_step", &eqk::block_step_cuda); }

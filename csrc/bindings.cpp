// The one pybind11 module, eqkernels._C: checks arguments once, then dispatches by device.
#include "ops.h"

namespace {

void check_anderson_args(const std::vector<torch::Tensor>& ts) {
  const auto device = ts[0].device();
  for (const auto& t : ts) {
    TORCH_CHECK(t.device() == device, "anderson_step: all tensors must be on ", device,
                ", got one on ", t.device());
    TORCH_CHECK(t.is_contiguous(), "anderson_step: all tensors must be contiguous");
  }
}

// Returns the number of samples still active after the step, or -1 where counting them would
// cost a device sync (CUDA).
int64_t anderson_step(const torch::Tensor& z, const torch::Tensor& fz, torch::Tensor z_out,
                   torch::Tensor active, torch::Tensor converged, torch::Tensor diverged,
                   torch::Tensor nstep, torch::Tensor abs_res, torch::Tensor rel_res,
                   torch::Tensor best_abs, torch::Tensor best_rel, torch::Tensor best_z,
                   torch::Tensor X, torch::Tensor G, torch::Tensor gram, torch::Tensor count,
                   double tol, bool stop_rel, double beta, double lam, double restart_growth) {
  check_anderson_args({z, fz, z_out, active, converged, diverged, nstep, abs_res, rel_res,
                       best_abs, best_rel, best_z, X, G, gram, count});
  const auto B = z.size(0), n = z.size(1), m = X.size(1);
  TORCH_CHECK(z.dim() == 2 && fz.sizes() == z.sizes() && z_out.sizes() == z.sizes() &&
                  best_z.sizes() == z.sizes(),
              "anderson_step: z, fz, z_out, best_z must all be (B, n)");
  TORCH_CHECK(X.dim() == 3 && X.size(0) == B && X.size(2) == n && G.sizes() == X.sizes(),
              "anderson_step: X and G must be (B, m, n)");
  TORCH_CHECK(gram.dim() == 3 && gram.size(0) == B && gram.size(1) == m && gram.size(2) == m &&
                  gram.scalar_type() == torch::kFloat64,
              "anderson_step: gram must be (B, m, m) float64");
  for (const auto& t : {fz, z_out, best_z, X, G, abs_res, rel_res, best_abs, best_rel})
    TORCH_CHECK(t.scalar_type() == z.scalar_type(), "anderson_step: dtype mismatch, expected ",
                z.scalar_type());
  TORCH_CHECK(z.scalar_type() == torch::kFloat32 || z.scalar_type() == torch::kFloat64,
              "anderson_step: z must be float32 or float64");
  for (const auto& t : {active, converged, diverged})
    TORCH_CHECK(t.scalar_type() == torch::kBool && t.numel() == B, "anderson_step: masks must be (B,) bool");
  for (const auto& t : {nstep, count})
    TORCH_CHECK(t.scalar_type() == torch::kInt32 && t.numel() == B,
                "anderson_step: nstep/count must be (B,) int32");
  const eqk::AndersonParams p{tol, stop_rel, beta, lam, restart_growth};
  if (z.is_cuda()) {
#ifdef EQK_WITH_CUDA
    eqk::anderson_step_cuda(z, fz, z_out, active, converged, diverged, nstep, abs_res, rel_res,
                            best_abs, best_rel, best_z, X, G, gram, count, p);
    return -1;
#else
    TORCH_CHECK(false, "eqkernels was built without CUDA kernels");
    return -1;
#endif
  } else {
    return eqk::anderson_step_cpu(z, fz, z_out, active, converged, diverged, nstep, abs_res, rel_res,
                           best_abs, best_rel, best_z, X, G, gram, count, p);
  }
}

// Returns the number of samples still active after the step, or -1 on CUDA (no sync).
int64_t block_step(const torch::Tensor& z, const torch::Tensor& f_out, torch::Tensor z_next,
                   torch::Tensor active, torch::Tensor converged, torch::Tensor diverged,
                   torch::Tensor nstep, torch::Tensor abs_res, torch::Tensor rel_res,
                   double damping, double sigma, int64_t key, double tol, bool stop_rel) {
  const std::vector<torch::Tensor> all{z, f_out, z_next, active, converged, diverged,
                                       nstep, abs_res, rel_res};
  for (const auto& t : all) {
    TORCH_CHECK(t.device() == z.device(), "block_step: all tensors must be on z's device ",
                z.device(), ", got one on ", t.device());
    TORCH_CHECK(t.is_contiguous(), "block_step: all tensors must be contiguous");
  }
  TORCH_CHECK(z.dim() == 2, "block_step: z must be (B, n), got ", z.sizes());
  TORCH_CHECK(f_out.sizes() == z.sizes() && z_next.sizes() == z.sizes(),
              "block_step: f_out and z_next must have z's shape ", z.sizes());
  TORCH_CHECK(f_out.scalar_type() == z.scalar_type() && z_next.scalar_type() == z.scalar_type(),
              "block_step: f_out and z_next must have z's dtype ", z.scalar_type());
  const auto B = z.size(0);
  for (const auto& t : {active, converged, diverged})
    TORCH_CHECK(t.scalar_type() == torch::kBool && t.dim() == 1 && t.size(0) == B,
                "block_step: active/converged/diverged must be (B,) bool with B = ", B);
  TORCH_CHECK(nstep.scalar_type() == torch::kInt32 && nstep.dim() == 1 && nstep.size(0) == B,
              "block_step: nstep must be (B,) int32");
  const auto res_dtype = z.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  for (const auto& t : {abs_res, rel_res})
    TORCH_CHECK(t.scalar_type() == res_dtype && t.dim() == 1 && t.size(0) == B,
                "block_step: abs_res/rel_res must be (B,) ", res_dtype);
  TORCH_CHECK(key >= 0 && key <= 0xffffffffLL, "block_step: key must be a uint32, got ", key);
  const eqk::BlockStepParams p{damping, sigma, static_cast<uint32_t>(key), tol, stop_rel};
  if (z.is_cuda()) {
#ifdef EQK_WITH_CUDA
    eqk::block_step_cuda(z, f_out, z_next, active, converged, diverged, nstep, abs_res, rel_res, p);
    return -1;
#else
    TORCH_CHECK(false, "eqkernels was built without CUDA kernels");
    return -1;
#endif
  }
  return eqk::block_step_cpu(z, f_out, z_next, active, converged, diverged, nstep, abs_res,
                             rel_res, p);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "eqkernels compiled kernels (C++ CPU, and CUDA where built)";
#ifdef EQK_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.def("anderson_step", &anderson_step, "One fused Anderson step (see eqkernels/ops/anderson_mix.py)");
  m.def("block_step", &block_step, "One fused block-step epilogue (see eqkernels/ops/block_step.py)");
}

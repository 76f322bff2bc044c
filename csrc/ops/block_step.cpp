// The block-step epilogue op: schema, argument check and Meta (fake) kernel.
// Semantics: eqkernels/ops/block_step.py (block_step_ref). CPU implementation:
// csrc/cpu/block_step.cpp; CUDA: csrc/cuda/block_step_binding.cpp. Triton (Python) implements
// the same schema as eqk::block_step_triton (eqkernels/ops/triton/block_step.py).
#include "checks.h"

namespace eqk {

void check_block_step(const at::Tensor& z, const at::Tensor& f_out, const at::Tensor& z_next,
                      const at::Tensor& active, const at::Tensor& converged,
                      const at::Tensor& diverged, const at::Tensor& nstep,
                      const at::Tensor& abs_res, const at::Tensor& rel_res,
                      const at::Tensor& step) {
  constexpr const char* op = "block_step";
  TORCH_CHECK_VALUE(z.dim() == 2, op, ": z must be a (B, n) tensor, got shape ", z.sizes());
  const auto dt = z.scalar_type();
  TORCH_CHECK_VALUE(dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16, op,
                    ": z must be torch.float32, torch.float64 or torch.bfloat16, got ",
                    dtype_name(dt));
  checks::like(op, "f_out", f_out, "z", z);
  checks::like(op, "z_next", z_next, "z", z);
  const int64_t B = z.size(0);
  checks::vec(op, "active", active, B, at::kBool);
  checks::vec(op, "converged", converged, B, at::kBool);
  checks::vec(op, "diverged", diverged, B, at::kBool);
  checks::vec(op, "nstep", nstep, B, at::kInt);
  const auto res = dt == at::kDouble ? at::kDouble : at::kFloat;
  checks::vec(op, "abs_res", abs_res, B, res);
  checks::vec(op, "rel_res", rel_res, B, res);
  checks::vec(op, "step", step, 1, at::kLong);
  checks::placement(op,
                    {{"z", &z}, {"f_out", &f_out}, {"z_next", &z_next}, {"active", &active},
                     {"converged", &converged}, {"diverged", &diverged}, {"nstep", &nstep},
                     {"abs_res", &abs_res}, {"rel_res", &rel_res}, {"step", &step}},
                    z);
}

namespace {

// Shapes are the inputs' (everything is mutated in place): the fake kernel only checks.
void block_step_meta(const at::Tensor& z, const at::Tensor& f_out, at::Tensor& z_next,
                     at::Tensor& active, at::Tensor& converged, at::Tensor& diverged,
                     at::Tensor& nstep, at::Tensor& abs_res, at::Tensor& rel_res,
                     at::Tensor& step, int64_t seed, double damping, double sigma, double tol,
                     bool stop_rel) {
  check_block_step(z, f_out, z_next, active, converged, diverged, nstep, abs_res, rel_res, step);
}

}  // namespace

}  // namespace eqk

TORCH_LIBRARY_FRAGMENT(eqk, m) {
  m.def(
      "block_step(Tensor z, Tensor f_out, Tensor(a!) z_next, Tensor(b!) active, "
      "Tensor(c!) converged, Tensor(d!) diverged, Tensor(e!) nstep, Tensor(f!) abs_res, "
      "Tensor(g!) rel_res, Tensor(h!) step, int seed, float damping, float sigma, float tol, "
      "bool stop_rel) -> ()");
}

TORCH_LIBRARY_IMPL(eqk, Meta, m) { m.impl("block_step", &eqk::block_step_meta); }

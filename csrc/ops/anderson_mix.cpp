// The Anderson step op: schema, argument check and Meta (fake) kernel.
// Semantics: eqkernels/ops/anderson_mix.py (anderson_step_ref). CPU implementation:
// csrc/cpu/anderson_mix.cpp; CUDA: csrc/cuda/anderson_mix_binding.cpp. Triton (Python)
// implements the same schema as eqk::anderson_step_triton (eqkernels/ops/triton/anderson_mix.py).
#include "checks.h"

namespace eqk {

void check_anderson_step(const at::Tensor& z, const at::Tensor& fz, const at::Tensor& z_out,
                         const at::Tensor& active, const at::Tensor& converged,
                         const at::Tensor& diverged, const at::Tensor& nstep,
                         const at::Tensor& abs_res, const at::Tensor& rel_res,
                         const at::Tensor& best_abs, const at::Tensor& best_rel,
                         const at::Tensor& best_z, const at::Tensor& X, const at::Tensor& G,
                         const at::Tensor& gram, const at::Tensor& count) {
  constexpr const char* op = "anderson_step";
  TORCH_CHECK_VALUE(z.dim() == 2, op, ": z must be a (B, n) tensor, got shape ", z.sizes());
  const auto dt = z.scalar_type();
  TORCH_CHECK_VALUE(dt == at::kFloat || dt == at::kDouble, op,
                    ": z must be torch.float32 or torch.float64, got ", dtype_name(dt));
  const int64_t B = z.size(0), n = z.size(1);
  TORCH_CHECK_VALUE(X.dim() == 3 && X.size(0) == B && X.size(2) == n, op,
                    ": X must be a (B, m, n) = (", B, ", m, ", n, ") tensor, got shape ",
                    X.sizes());
  const int64_t m = X.size(1);
  TORCH_CHECK_VALUE(m >= 1 && m <= kMaxHistory, op, ": history size m = X.shape[1] must be in [1, ",
                    kMaxHistory, "], got ", m);
  checks::like(op, "fz", fz, "z", z);
  checks::like(op, "z_out", z_out, "z", z);
  checks::like(op, "best_z", best_z, "z", z);
  TORCH_CHECK_VALUE(X.scalar_type() == dt, op, ": X must have z's dtype ", dtype_name(dt),
                    ", got ", dtype_name(X.scalar_type()));
  checks::like(op, "G", G, "X", X);
  TORCH_CHECK_VALUE(gram.dim() == 3 && gram.size(0) == B && gram.size(1) == m &&
                        gram.size(2) == m && gram.scalar_type() == at::kDouble,
                    op, ": gram must be a (", B, ", ", m, ", ", m,
                    ") torch.float64 tensor, got shape ", gram.sizes(), " and dtype ",
                    dtype_name(gram.scalar_type()));
  checks::vec(op, "active", active, B, at::kBool);
  checks::vec(op, "converged", converged, B, at::kBool);
  checks::vec(op, "diverged", diverged, B, at::kBool);
  checks::vec(op, "nstep", nstep, B, at::kInt);
  checks::vec(op, "count", count, B, at::kInt);
  checks::vec(op, "abs_res", abs_res, B, dt);
  checks::vec(op, "rel_res", rel_res, B, dt);
  checks::vec(op, "best_abs", best_abs, B, dt);
  checks::vec(op, "best_rel", best_rel, B, dt);
  checks::placement(op,
                    {{"z", &z}, {"fz", &fz}, {"z_out", &z_out}, {"active", &active},
                     {"converged", &converged}, {"diverged", &diverged}, {"nstep", &nstep},
                     {"abs_res", &abs_res}, {"rel_res", &rel_res}, {"best_abs", &best_abs},
                     {"best_rel", &best_rel}, {"best_z", &best_z}, {"X", &X}, {"G", &G},
                     {"gram", &gram}, {"count", &count}},
                    z);
}

namespace {

void anderson_step_meta(const at::Tensor& z, const at::Tensor& fz, at::Tensor& z_out,
                        at::Tensor& active, at::Tensor& converged, at::Tensor& diverged,
                        at::Tensor& nstep, at::Tensor& abs_res, at::Tensor& rel_res,
                        at::Tensor& best_abs, at::Tensor& best_rel, at::Tensor& best_z,
                        at::Tensor& X, at::Tensor& G, at::Tensor& gram, at::Tensor& count,
                        double tol, bool stop_rel, double beta, double lam,
                        double restart_growth) {
  check_anderson_step(z, fz, z_out, active, converged, diverged, nstep, abs_res, rel_res,
                      best_abs, best_rel, best_z, X, G, gram, count);
}

}  // namespace

}  // namespace eqk

TORCH_LIBRARY_FRAGMENT(eqk, m) {
  m.def(
      "anderson_step(Tensor z, Tensor fz, Tensor(a!) z_out, Tensor(b!) active, "
      "Tensor(c!) converged, Tensor(d!) diverged, Tensor(e!) nstep, Tensor(f!) abs_res, "
      "Tensor(g!) rel_res, Tensor(h!) best_abs, Tensor(i!) best_rel, Tensor(j!) best_z, "
      "Tensor(k!) X, Tensor(l!) G, Tensor(m!) gram, Tensor(n!) count, float tol, bool stop_rel, "
      "float beta, float lam, float restart_growth) -> ()");
}

TORCH_LIBRARY_IMPL(eqk, Meta, m) { m.impl("anderson_step", &eqk::anderson_step_meta); }

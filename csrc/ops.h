// Torch-facing declarations of the fused ops: each op's argument check (run by every one of its
// implementations: CPU, CUDA, Meta) and its per-device implementations. Each op's schema and
// its Meta (fake) kernel are in csrc/ops/<op>.cpp; its CPU implementation is registered in
// csrc/cpu/<op>.cpp, its CUDA one in csrc/cuda/<op>_binding.cpp (EQK_WITH_CUDA builds only).
// The messages of the checks are the Python dispatcher's, word for word (eqkernels/ops/<op>.py;
// tests/test_ops_registration.py compares them).
#pragma once
#include <torch/extension.h>

#include "common/kernel_common.h"

namespace eqk {

// One fused block-step epilogue (eqkernels/ops/block_step.py, block_step_ref), in place on
// z_next (may alias z), the state tensors and the step counter.
//   z, f_out, z_next: (B, n) float32 / float64 / bfloat16, one dtype, contiguous
//   active, converged, diverged: (B,) bool   nstep: (B,) int32
//   abs_res, rel_res: (B,) float64 for float64 z, else float32   step: (1,) int64
void check_block_step(const at::Tensor& z, const at::Tensor& f_out, const at::Tensor& z_next,
                      const at::Tensor& active, const at::Tensor& converged,
                      const at::Tensor& diverged, const at::Tensor& nstep,
                      const at::Tensor& abs_res, const at::Tensor& rel_res,
                      const at::Tensor& step);

// One fused Anderson step (eqkernels/ops/anderson_mix.py, anderson_step_ref), in place on z_out
// (may alias z) and on the state / history tensors.
//   z, fz, z_out, best_z: (B, n)  X, G: (B, m, n)  -- float32 or float64, contiguous
//   gram: (B, m, m) float64   count, nstep: (B,) int32
//   active, converged, diverged: (B,) bool   abs_res, rel_res, best_abs, best_rel: (B,) z.dtype
void check_anderson_step(const at::Tensor& z, const at::Tensor& fz, const at::Tensor& z_out,
                         const at::Tensor& active, const at::Tensor& converged,
                         const at::Tensor& diverged, const at::Tensor& nstep,
                         const at::Tensor& abs_res, const at::Tensor& rel_res,
                         const at::Tensor& best_abs, const at::Tensor& best_rel,
                         const at::Tensor& best_z, const at::Tensor& X, const at::Tensor& G,
                         const at::Tensor& gram, const at::Tensor& count);

// The CPU Anderson step bound to one solve's state (eqkernels/ops/anderson_mix.py,
// bind_anderson_step). The state and history tensors are checked once, here, and held; each
// call takes the bound iterate z and a new fz, runs eqk::anderson_step's CPU kernel in place
// (z_out = z) and returns how many samples are still active. The eager solver loop uses it
// instead of torch.ops.eqk.anderson_step: one pybind11 call per step instead of boxing 16
// tensors through the dispatcher, which costs more than the kernel itself at small B.
// (Version counters of the held tensors are not bumped: they belong to the solver.)
class AndersonStepCpu {
 public:
  AndersonStepCpu(at::Tensor z, at::Tensor active, at::Tensor converged, at::Tensor diverged,
                  at::Tensor nstep, at::Tensor abs_res, at::Tensor rel_res, at::Tensor best_abs,
                  at::Tensor best_rel, at::Tensor best_z, at::Tensor X, at::Tensor G,
                  at::Tensor gram, at::Tensor count, double tol, bool stop_rel, double beta,
                  double lam, double restart_growth);
  // z must be the bound iterate; fz: z's shape and dtype, contiguous, on the CPU.
  int64_t operator()(const at::Tensor& z, const at::Tensor& fz);

 private:
  at::Tensor z_, active_, converged_, diverged_, nstep_, abs_res_, rel_res_, best_abs_,
      best_rel_, best_z_, X_, G_, gram_, count_;
  AndersonParams p_;
};

// "torch.float32" etc., as Python prints a dtype (the check messages match the Python ones).
std::string dtype_name(at::ScalarType t);

}  // namespace eqk

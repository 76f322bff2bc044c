// Declarations of every op the extension exposes, one per fused kernel.
// The CPU versions live in csrc/cpu/, the CUDA ones in csrc/cuda/ (EQK_WITH_CUDA builds only).
#pragma once
#include <torch/extension.h>

namespace eqk {

// One fused Anderson step, in place on z_out and on the state/history tensors. The CPU version
// returns the number of samples still active afterwards (the CUDA one does not: it would sync).
// Semantics: eqkernels/ops/anderson_mix.py (anderson_step_ref is the reference).
//   z, fz, z_out, best_z: (B, n)  X, G: (B, m, n)  -- float32 or float64, contiguous
//   gram: (B, m, m) float64   count, nstep: (B,) int32
//   active, converged, diverged: (B,) bool   abs_res, rel_res, best_abs, best_rel: (B,) z.dtype
struct AndersonParams {
  double tol;
  bool stop_rel;
  double beta;
  double lam;
  double restart_growth;
};

int64_t anderson_step_cpu(const torch::Tensor& z, const torch::Tensor& fz, torch::Tensor& z_out,
                       torch::Tensor& active, torch::Tensor& converged, torch::Tensor& diverged,
                       torch::Tensor& nstep, torch::Tensor& abs_res, torch::Tensor& rel_res,
                       torch::Tensor& best_abs, torch::Tensor& best_rel, torch::Tensor& best_z,
                       torch::Tensor& X, torch::Tensor& G, torch::Tensor& gram,
                       torch::Tensor& count, const AndersonParams& p);

#ifdef EQK_WITH_CUDA
void anderson_step_cuda(const torch::Tensor& z, const torch::Tensor& fz, torch::Tensor& z_out,
                        torch::Tensor& active, torch::Tensor& converged, torch::Tensor& diverged,
                        torch::Tensor& nstep, torch::Tensor& abs_res, torch::Tensor& rel_res,
                        torch::Tensor& best_abs, torch::Tensor& best_rel, torch::Tensor& best_z,
                        torch::Tensor& X, torch::Tensor& G, torch::Tensor& gram,
                        torch::Tensor& count, const AndersonParams& p);
#endif

}  // namespace eqk

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

// One fused block-step epilogue (eqkernels/ops/block_step.py, block_step_ref), in place on
// z_next (may alias z) and on the state tensors; the CPU version returns the samples still active.
//   z, f_out, z_next: (B, n) float32 / float64 / bfloat16, one dtype, contiguous
//   active, converged, diverged: (B,) bool   nstep: (B,) int32
//   abs_res, rel_res: (B,) float64 for float64 z, else float32
struct BlockStepParams {
  double damping;
  double sigma;
  uint32_t key;
  double tol;
  bool stop_rel;
};

int64_t block_step_cpu(const torch::Tensor& z, const torch::Tensor& f_out, torch::Tensor& z_next,
                       torch::Tensor& active, torch::Tensor& converged, torch::Tensor& diverged,
                       torch::Tensor& nstep, torch::Tensor& abs_res, torch::Tensor& rel_res,
                       const BlockStepParams& p);

#ifdef EQK_WITH_CUDA
void block_step_cuda(const torch::Tensor& z, const torch::Tensor& f_out, torch::Tensor& z_next,
                     torch::Tensor& active, torch::Tensor& converged, torch::Tensor& diverged,
                     torch::Tensor& nstep, torch::Tensor& abs_res, torch::Tensor& rel_res,
                     const BlockStepParams& p);

void anderson_step_cuda(const torch::Tensor& z, const torch::Tensor& fz, torch::Tensor& z_out,
                        torch::Tensor& active, torch::Tensor& converged, torch::Tensor& diverged,
                        torch::Tensor& nstep, torch::Tensor& abs_res, torch::Tensor& rel_res,
                        torch::Tensor& best_abs, torch::Tensor& best_rel, torch::Tensor& best_z,
                        torch::Tensor& X, torch::Tensor& G, torch::Tensor& gram,
                        torch::Tensor& count, const AndersonParams& p);
#endif

}  // namespace eqk

// Fused Anderson step, CUDA: torch-free launcher (semantics: eqkernels/ops/anderson_mix.py,
// anderson_step_ref). The torch-facing wrapper is anderson_mix_binding.cpp.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace eqk {
namespace cuda {

// Largest history the kernel supports (solvers.anderson.MAX_HISTORY).
constexpr int kMaxHistory = 16;

// Plain-old-data copy of eqk::AndersonParams (that one lives in a torch header).
struct AndersonParamsPOD {
  double tol;
  bool stop_rel;  // stop on the relative residual instead of the absolute one
  double beta;
  double lam;
  double restart_growth;
};

// One Anderson step over B samples of size n with history m (1 <= m <= kMaxHistory), on
// `stream`. All arrays are contiguous device memory: z, fz, z_out, best_z (B, n); X, G (B, m, n);
// gram (B, m, m); the rest (B,). z_out may be z. Returns the launch error (cudaSuccess if none);
// cudaErrorInvalidValue for a bad m or a negative size.
template <typename T>
cudaError_t launch_anderson_step(const T* z, const T* fz, T* z_out, bool* active, bool* converged,
                                 bool* diverged, int32_t* nstep, T* abs_res, T* rel_res,
                                 T* best_abs, T* best_rel, T* best_z, T* X, T* G, double* gram,
                                 int32_t* count, int64_t B, int64_t n, int m, AndersonParamsPOD p,
                                 cudaStream_t stream);

extern template cudaError_t launch_anderson_step<float>(
    const float*, const float*, float*, bool*, bool*, bool*, int32_t*, float*, float*, float*,
    float*, float*, float*, float*, double*, int32_t*, int64_t, int64_t, int, AndersonParamsPOD,
    cudaStream_t);
extern template cudaError_t launch_anderson_step<double>(
    const double*, const double*, double*, bool*, bool*, bool*, int32_t*, double*, double*,
    double*, double*, double*, double*, double*, double*, int32_t*, int64_t, int64_t, int,
    AndersonParamsPOD, cudaStream_t);

}  // namespace cuda
}  // namespace eqk

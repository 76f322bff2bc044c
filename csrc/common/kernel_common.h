// What the CPU and CUDA kernels of every fused op share. Torch-free (only the C++ standard
// library and, under nvcc, the CUDA runtime's qualifiers), so both csrc/cpu/*.cpp and the
// torch-free csrc/cuda/*.cu include it.
//   - the constants that must agree with Python, Triton and each other (copies of
//     eqkernels/ops/constants.py; eqkernels._C.constants() exposes them and
//     tests/test_ops_constants.py asserts they are equal);
//   - the noise stream's hash and step key (eqkernels/ops/block_step.py states it bit by bit);
//   - the op parameter structs, defined once;
//   - the per-sample state view and the per-sample "finish" bookkeeping, host and device.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define EQK_HD __host__ __device__ __forceinline__
#else
#define EQK_HD inline
#endif

namespace eqk {

// ---- constants (eqkernels/ops/constants.py) ----
constexpr double kRelEps = 1e-9;           // REL_EPS
constexpr double kCholPivotRtol = 1e-12;   // CHOL_PIVOT_RTOL
constexpr int kMaxHistory = 16;            // MAX_HISTORY
constexpr uint32_t kHashMul0 = 0x7feb352dU;  // HASH_MUL[0]
constexpr uint32_t kHashMul1 = 0x846ca68bU;  // HASH_MUL[1]
constexpr uint32_t kNoiseStepOffset = 0x9e3779b9U;  // NOISE_STEP_OFFSET

// ---- the noise stream ----
// Wellons' lowbias32 mixer; all arithmetic mod 2^32.
EQK_HD uint32_t lowbias32(uint32_t x) {
  x ^= x >> 16;
  x *= kHashMul0;
  x ^= x >> 15;
  x *= kHashMul1;
  x ^= x >> 16;
  return x;
}

// Key of update number `step` (1-based) of a run seeded with `seed`: block_step.noise_key.
// seed and step are taken mod 2^32, as the Python version does.
EQK_HD uint32_t noise_key(int64_t seed, int64_t step) {
  return lowbias32(lowbias32(static_cast<uint32_t>(seed)) ^
                   lowbias32(static_cast<uint32_t>(step) + kNoiseStepOffset));
}

// ---- op parameters (the scalars of each op's schema) ----
struct BlockStepParams {
  double damping;
  double sigma;   // 0: no noise term at all
  int64_t seed;   // the key of this call is noise_key(seed, *step + 1); the op stores *step + 1
  double tol;
  bool stop_rel;  // stop on the relative residual instead of the absolute one
};

struct AndersonParams {
  double tol;
  bool stop_rel;
  double beta;
  double lam;
  double restart_growth;
};

// ---- per-sample state (eqkernels.ops.tracking.SolveState), as raw pointers ----
// T: the state's element type (best_z); R: the residuals' type. The block step has no best_*
// (nullptr there).
template <typename T, typename R>
struct StateView {
  bool* active;
  bool* converged;
  bool* diverged;
  int32_t* nstep;
  R* abs_res;
  R* rel_res;
  R* best_abs;
  R* best_rel;
  T* best_z;
};

EQK_HD bool is_finite(double x) {
#if defined(__CUDA_ARCH__)
  return isfinite(x);
#else
  return std::isfinite(x);
#endif
}

enum Outcome : int { kLive = 0, kConverged = 1, kDiverged = 2 };

struct Finished {
  int outcome;    // Outcome
  bool improved;  // the metric beat the best so far (TRACK_BEST only)
  double best;    // the stop-mode best after this step, as stored (rounded to R)
  double metric;  // the stop-mode residual of this step
};

// The bookkeeping of one step of sample b whose residual is absv, with reference norm `norm`
// (||z_next|| for the block step, ||f(z)|| for Anderson): count the step, store the residuals,
// flag a non-finite one as diverged, (TRACK_BEST) keep the best residuals, flag a stop-mode
// residual below tol as converged; either flag deactivates the sample. The caller copies
// best_z when `improved` (a row copy is the caller's loop). Semantics: tracking.py.
template <bool TRACK_BEST, typename T, typename R>
EQK_HD Finished finish_sample(const StateView<T, R>& s, int64_t b, double absv, double norm,
                              bool stop_rel, double tol) {
  const double rel = absv / (norm + kRelEps);
  s.nstep[b] += 1;
  s.abs_res[b] = R(absv);
  s.rel_res[b] = R(rel);
  const double metric = stop_rel ? rel : absv;
  Finished f{kLive, false, 0.0, metric};
  if (!is_finite(absv) || !is_finite(norm)) {
    s.diverged[b] = true;
    s.active[b] = false;
    f.outcome = kDiverged;
    return f;
  }
  if (TRACK_BEST) {
    f.best = stop_rel ? double(s.best_rel[b]) : double(s.best_abs[b]);
    if (metric < f.best) {
      f.improved = true;
      s.best_abs[b] = R(absv);
      s.best_rel[b] = R(rel);
      f.best = stop_rel ? double(s.best_rel[b]) : double(s.best_abs[b]);
    }
  }
  if (metric < tol) {
    s.converged[b] = true;
    s.active[b] = false;
    f.outcome = kConverged;
  }
  return f;
}

}  // namespace eqk

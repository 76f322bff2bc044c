// The batch loop every CPU kernel shares: samples are independent, so one step per sample,
// OpenMP over the batch when the work pays for the fork/join.
#pragma once
#include <cstdint>

namespace eqk {

// Runs step(b) for b in [0, B) (in parallel if `parallel`) and returns how many samples are
// still active afterwards: the solver's "all done?" test, free here, where a separate torch
// reduction would cost a dispatch.
template <typename Step>
int64_t for_each_sample(int64_t B, bool parallel, const bool* active, Step step) {
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t b = 0; b < B; ++b) step(b);
  int64_t n_active = 0;
  for (int64_t b = 0; b < B; ++b) n_active += active[b];
  return n_active;
}

}  // namespace eqk

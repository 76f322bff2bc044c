// The batch loop every CPU kernel shares: samples are independent, so one step per sample,
// OpenMP over the batch when the work pays for the fork/join.
#pragma once
#include <cstdint>

namespace eqk {

// Runs step(b) for b in [0, B), in parallel if `parallel`. (The active count is not returned:
// an op's schema has no host-side output, and the solver loop reads the flags on the device.)
template <typename Step>
void for_each_sample(int64_t B, bool parallel, const bool* /*active*/, Step step) {
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t b = 0; b < B; ++b) step(b);
}

}  // namespace eqk

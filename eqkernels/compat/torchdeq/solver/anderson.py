"""torchdeq.solver.anderson: anderson_solver on eqkernels' fused Anderson step."""
from __future__ import annotations

import warnings

from eqkernels.compat.torchdeq.solver._run import ignored, run
from eqkernels.solvers import Anderson
from eqkernels.solvers.anderson import MAX_HISTORY


def anderson_solver(func, x0, max_iter=50, tol=1e-3, stop_mode="abs", indexing=None, m=6,
                    lam=1e-4, tau=1.0, return_final=False, stop_rule="sample", **kwargs):
    """Anderson acceleration over the last m iterates with ridge lam and mixing damping tau
    (torchdeq's signature and defaults). Returns (z, states at `indexing`, SolverStat).

    The returned state is f(z) at the lowest-residual z (torchdeq's choice).
    eqkernels' Anderson also restarts a sample whose residual grows past 10x its best.
    m above 16 (the fused kernels' limit) runs with m=16 and a warning. stop_rule: "sample"
    | "batch" (see solver/_run.py). Other keyword arguments are ignored with a warning."""
    ignored("anderson_solver", kwargs)
    if m > MAX_HISTORY:
        warnings.warn(f"anderson_solver: m={m} is above eqkernels' limit of {MAX_HISTORY}; "
                      f"running with m={MAX_HISTORY}", stacklevel=2)
        m = MAX_HISTORY
    # torchdeq records no residual for its two start-up evaluations: its traces hold
    # max_iter - 1 columns, the first for step 3.
    return run(Anderson(m=int(m), lam=lam, beta=tau), func, x0, max_iter=max_iter, tol=tol,
               stop_mode=stop_mode, indexing=indexing, return_final=return_final,
               stop_rule=stop_rule, name="anderson_solver", trace_width=max_iter - 1,
               trace_skip=2, image=lambda z, fz: fz)


__all__ = ["anderson_solver"]

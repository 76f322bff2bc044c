"""torchdeq.solver.broyden: broyden_solver on eqkernels' Broyden (the same good-Broyden
update, per-sample stopping)."""
from __future__ import annotations

import warnings

from eqkernels.compat.torchdeq.solver._run import ignored, run
from eqkernels.solvers import Broyden


def broyden_solver(func, x0, max_iter=50, tol=1e-3, stop_mode="abs", indexing=None,
                   LBFGS_thres=None, ls=False, return_final=False, stop_rule="sample",
                   **kwargs):
    """Broyden's method on f(z) - z (torchdeq's signature and defaults): max_iter steps after
    the evaluation at x0 (max_iter + 1 evaluations of f, as torchdeq), memory of LBFGS_thres
    secant pairs (None: all). Returns (z, states at `indexing`, SolverStat).

    ls=True (a line search) is not implemented here: it runs without one, with a warning.
    stop_rule: "sample" | "batch" (see solver/_run.py). Other keyword arguments are ignored
    with a warning."""
    ignored("broyden_solver", kwargs)
    if ls:
        warnings.warn("broyden_solver: ls=True (line search) is not implemented in "
                      "eqkernels; running without it (torchdeq's default)", stacklevel=2)
    # torchdeq evaluates f at x0 before its first step and counts steps after it.
    return run(Broyden(m=None if LBFGS_thres is None else int(LBFGS_thres)), func, x0,
               max_iter=max_iter + 1 if max_iter > 0 else 0, tol=tol, stop_mode=stop_mode,
               indexing=indexing, return_final=return_final, stop_rule=stop_rule,
               name="broyden_solver", trace_width=max_iter + 1, trace_skip=1, step_offset=1,
               no_progress_stop=True)


__all__ = ["broyden_solver"]

"""torchdeq.solver.fp_iter: fixed_point_iter and simple_fixed_point_iter."""
from __future__ import annotations

import torch

from eqkernels.compat.torchdeq.solver._run import ignored, run
from eqkernels.compat.torchdeq.solver.stat import SolverStat
from eqkernels.solvers import FixedPoint


def fixed_point_iter(func, x0, max_iter=50, tol=1e-3, stop_mode="abs", indexing=None, tau=1.0,
                     return_final=False, stop_rule="sample", **kwargs):
    """Damped fixed-point iteration z <- tau f(z) + (1 - tau) z (torchdeq's signature and
    defaults); the residual is that step's length, ||tau (f(z) - z)||, as in torchdeq.
    Returns (z, states at `indexing`, SolverStat): z is the step taken from the
    lowest-residual iterate (torchdeq's choice). stop_rule: "sample" | "batch"
    (see solver/_run.py). Other keyword arguments are ignored with a warning."""
    ignored("fixed_point_iter", kwargs)
    # torchdeq's residual is the damped step tau (f(z) - z): iterate the damped map itself.
    damped = func if tau == 1 else (lambda z: tau * func(z) + (1 - tau) * z)
    return run(FixedPoint(), damped, x0, max_iter=max_iter, tol=tol, stop_mode=stop_mode,
               indexing=indexing, return_final=return_final, stop_rule=stop_rule,
               name="fixed_point_iter", image=lambda z, fz: fz)


def _damped(func, x, tau):
    fx = func(x)
    if tau == 1.0:
        return fx
    if torch.is_tensor(x):
        return tau * fx + (1 - tau) * x
    return [tau * a + (1 - tau) * b for a, b in zip(fx, x)]


def simple_fixed_point_iter(func, x0, max_iter=50, tau=1.0, indexing=None, **kwargs):
    """Exactly max_iter steps z <- tau f(z) + (1 - tau) z with no residual tracking (fast);
    x0 may be a tensor or a list of tensors (func maps lists to lists). Returns (the last
    iterate, the iterates at the `indexing` steps, SolverStat of the final step with nstep =
    max_iter). tol / stop_mode are accepted and unused, as in torchdeq."""
    ignored("simple_fixed_point_iter", kwargs, allowed=("tol", "stop_mode", "stop_rule"))
    indexing = [int(k) for k in (indexing or [])]
    states = []
    x = fx = x0
    for k in range(int(max_iter)):
        x = fx
        fx = _damped(func, x, tau)
        if k + 1 in indexing:
            states.append(fx)
    return fx, states, SolverStat.from_final_step(x, fx, max_iter)


__all__ = ["fixed_point_iter", "simple_fixed_point_iter"]

"""torchdeq.solver.utils: batch_flatten, solver_stat_from_final_step, dummy_solver_stat."""
from __future__ import annotations

from eqkernels.compat.torchdeq.solver.stat import SolverStat


def batch_flatten(x):
    """(B, ...) -> (B, n); a 0-D or 1-D tensor is a batch of scalars: (numel, 1)."""
    return x.flatten(start_dim=1) if x.dim() >= 2 else x.reshape(x.numel(), 1)


def solver_stat_from_final_step(z, fz, nstep=0):
    """SolverStat of a final step fz = f(z): residuals (B,), (B, 1) traces, nstep for all."""
    return SolverStat.from_final_step(z, fz, nstep=nstep)


def dummy_solver_stat():
    """A SolverStat of placeholders (-1)."""
    return SolverStat()


__all__ = ["batch_flatten", "solver_stat_from_final_step", "dummy_solver_stat"]

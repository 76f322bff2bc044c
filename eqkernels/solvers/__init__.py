"""Batched fixed-point solvers with per-sample stopping: fixed_point, anderson, broyden,
and damped (the fused, optionally noisy, long-run loop)."""
from eqkernels.solvers.anderson import anderson
from eqkernels.solvers.base import DivergenceError, SolverInfo
from eqkernels.solvers.broyden import broyden
from eqkernels.solvers.damped import damped
from eqkernels.solvers.fixed_point import fixed_point

SOLVERS = {"fixed_point": fixed_point, "anderson": anderson, "broyden": broyden,
           "damped": damped}


def get_solver(name):
    """The solver function called `name`; raises ValueError listing the choices."""
    if name not in SOLVERS:
        raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {name!r}")
    return SOLVERS[name]


__all__ = ["anderson", "broyden", "damped", "fixed_point", "get_solver", "SOLVERS", "SolverInfo",
           "DivergenceError"]

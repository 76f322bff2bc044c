"""Batched fixed-point solvers with per-sample stopping: fixed_point, anderson, broyden,
and damped (the fused, optionally noisy, long-run loop).

Each is an options object (`Anderson(m=5)`, ...) run by one driver (`solve`) with one
`SolveOptions`, and a function of the same name (`anderson(f, z0, ...)`) doing both.
`SegmentRunner` runs any capturable K-step loop body as replays of CUDA graphs (the damped
solver's graph mode; looped models' reasoning loops)."""
from eqkernels.solvers.anderson import Anderson, anderson
from eqkernels.solvers.base import DivergenceError, SolverInfo
from eqkernels.solvers.broyden import Broyden, broyden
from eqkernels.solvers.damped import Damped, damped
from eqkernels.solvers.driver import SolveOptions, solve
from eqkernels.solvers.fixed_point import FixedPoint, fixed_point
from eqkernels.solvers.segments import SegmentRunner
from eqkernels.solvers.state import SolverState

SOLVERS = {"fixed_point": fixed_point, "anderson": anderson, "broyden": broyden,
           "damped": damped}
SOLVER_CLASSES = {"fixed_point": FixedPoint, "anderson": Anderson, "broyden": Broyden,
                  "damped": Damped}


def get_solver(name):
    """The solver function called `name`; raises ValueError listing the choices."""
    if name not in SOLVERS:
        raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {name!r}")
    return SOLVERS[name]


def as_solver(solver, **kwargs):
    """A solver object: `solver` itself, or SOLVER_CLASSES[solver](**kwargs) for a name."""
    if isinstance(solver, str):
        if solver not in SOLVER_CLASSES:
            raise ValueError(f"solver must be one of {sorted(SOLVER_CLASSES)} or a solver object, "
                             f"got {solver!r}")
        cls = SOLVER_CLASSES[solver]
        try:
            return cls(**kwargs)
        except TypeError as err:
            if "unexpected keyword" not in str(err):
                raise
            import dataclasses
            known = [f.name for f in dataclasses.fields(cls)]
            bad = sorted(set(kwargs) - set(known))
            raise ValueError(f"solver {solver!r} has no option(s) {bad}; its options are {known}"
                             ) from None
    if kwargs:
        raise ValueError(f"solver options {sorted(kwargs)} go into the solver object itself "
                         f"when one is given ({type(solver).__name__})")
    if not (hasattr(solver, "init") and hasattr(solver, "bind")):
        raise TypeError(f"solver must be a name or a solver object (init and bind), "
                        f"got {type(solver).__name__}")
    return solver


__all__ = ["anderson", "broyden", "damped", "fixed_point", "get_solver", "as_solver", "SOLVERS",
           "SOLVER_CLASSES", "SolverInfo", "DivergenceError", "Anderson", "Broyden", "FixedPoint",
           "Damped", "SolveOptions", "SolverState", "solve", "SegmentRunner"]

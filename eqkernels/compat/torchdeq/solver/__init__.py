"""torchdeq.solver on eqkernels: the solver functions with torchdeq's signatures, and the
registry get_deq reads f_solver / b_solver from.

    z, states, info = get_solver("anderson")(f, z0, max_iter=30, tol=1e-4)
    register_solver("newton", newton_solver)        # then get_deq(f_solver="newton")
    register_solver("anderson3", eqk.Anderson(m=3))  # an eqkernels solver object works too

A registered function is called as torchdeq calls one:
solver(func, x0, max_iter=, tol=, stop_mode=, indexing=, **solver_kwargs) -> (z, list of
states at the `indexing` steps, info dict). An eqkernels solver object (anything with
init / bind, e.g. eqk.Anderson(m=3), eqk.Broyden(m=8)) is run step by step with eqkernels'
per-sample tracking and gives the same outputs (solver/_run.py).
"""
from __future__ import annotations

from eqkernels.compat.torchdeq.solver._run import ignored, run
from eqkernels.compat.torchdeq.solver.anderson import anderson_solver
from eqkernels.compat.torchdeq.solver.broyden import broyden_solver
from eqkernels.compat.torchdeq.solver.fp_iter import fixed_point_iter, simple_fixed_point_iter
from eqkernels.compat.torchdeq.solver.stat import SolverStat
from eqkernels.compat.torchdeq.solver.utils import solver_stat_from_final_step


def solver_function(solver, name=None):
    """A torchdeq-signature solver function running an eqkernels solver object."""
    if not (hasattr(solver, "init") and hasattr(solver, "bind")):
        raise TypeError(f"solver must be an eqkernels solver object (init / bind), got "
                        f"{type(solver).__name__}")
    label = name or getattr(solver, "name", type(solver).__name__)

    def solve(func, x0, max_iter=50, tol=1e-3, stop_mode="abs", indexing=None,
              return_final=False, stop_rule="sample", **kwargs):
        ignored(label, kwargs)
        return run(solver, func, x0, max_iter=max_iter, tol=tol, stop_mode=stop_mode,
                   indexing=indexing, return_final=return_final, stop_rule=stop_rule,
                   name=label)
    solve.__name__ = solve.__qualname__ = f"{label}_solver"
    solve.__doc__ = f"{solver!r} as a torchdeq solver function."
    solve.accepts_stop_rule = True
    return solve


_solvers = {
    "anderson": anderson_solver,
    "broyden": broyden_solver,
    "fixed_point_iter": fixed_point_iter,
    "simple_fixed_point_iter": simple_fixed_point_iter,
}
for _fn in (anderson_solver, broyden_solver, fixed_point_iter, simple_fixed_point_iter):
    _fn.accepts_stop_rule = True


def get_solver(key):
    """The solver function registered as `key` (torchdeq's four or a registered one)."""
    if not isinstance(key, str) or key not in _solvers:
        raise ValueError(f"solver must be one of the registered solvers {sorted(_solvers)}, "
                         f"got {key!r} (add one with register_solver)")
    return _solvers[key]


def register_solver(solver_type, solver):
    """Register `solver` under the name solver_type, for get_solver and for get_deq's
    f_solver / b_solver: a function with torchdeq's solver signature, or an eqkernels
    solver object (eqk.Anderson(m=3), ...)."""
    if not isinstance(solver_type, str) or not solver_type:
        raise TypeError(f"solver_type must be a non-empty str, got {solver_type!r}")
    if hasattr(solver, "init") and hasattr(solver, "bind"):
        solver = solver_function(solver, name=solver_type)
    elif not callable(solver):
        raise TypeError(f"solver must be a solver function or an eqkernels solver object, "
                        f"got {type(solver).__name__}")
    _solvers[solver_type] = solver


__all__ = ["register_solver", "get_solver", "solver_stat_from_final_step", "anderson_solver",
           "broyden_solver", "fixed_point_iter", "simple_fixed_point_iter", "SolverStat",
           "solver_function"]

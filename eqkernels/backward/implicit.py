"""Implicit (IFT) backward: gradients through z* = f(z*, x) without storing the solve.

The returned tensor is f(z*) with one recorded application of f. A hook on it
replaces the incoming gradient v by the solution of the adjoint fixed point
g = J_f(z*)^T g + v, solved by the same solver machinery (per-sample stopping, no
graph kept across iterations), so memory does not grow with the iteration count.
"""
from __future__ import annotations

import torch


def implicit(f, z_star, *, adjoint_solver, adjoint_kwargs=None, adjoint_options=None,
             on_info=None):
    """f: (B, n) -> (B, n) recorded by autograd; z_star: (B, n) solution (detached).

    adjoint_solver: a solver object (eqk.Anderson(), ...) run by eqk.solve with
    adjoint_options (an eqk.SolveOptions), or a function like eqk.anderson called as
    adjoint_solver(g_map, v, **adjoint_kwargs).
    on_info(info): called with the adjoint solve's SolverInfo after each backward.
    """
    z_star = z_star.detach().requires_grad_()
    fz = f(z_star)

    solving = [False]  # the VJPs below re-enter this hook (fz is their output): pass through

    def solve_adjoint(v):
        if solving[0] or v is None:  # None: no gradient flows in (e.g. gradcheck's zero outputs)
            return v
        solving[0] = True
        try:
            return _solve(v)
        finally:
            solving[0] = False

    def _solve(v):
        def adjoint_map(g):
            vjp, = torch.autograd.grad(fz, z_star, g.to(fz.dtype), retain_graph=True)
            return vjp + v

        v0 = v.detach().clone()
        if hasattr(adjoint_solver, "bind"):
            from eqkernels.solvers.driver import solve
            g, info = solve(adjoint_map, v0, adjoint_solver, adjoint_options)
        else:
            g, info = adjoint_solver(adjoint_map, v0, **(adjoint_kwargs or {}))
        if on_info is not None:
            on_info(info)
        return g.to(v.dtype)

    fz.register_hook(solve_adjoint)
    return fz

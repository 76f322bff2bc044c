"""torchdeq.grad: backward_factory, the gradient functors a DEQ applies to its solver states.

    produce = backward_factory(grad_type=3, tau=0.5)            # phantom gradient, 3 steps
    produce = backward_factory("ift", b_solver=get_solver("anderson"),
                               b_solver_kwargs=dict(max_iter=40, tol=1e-6))
    z_out = produce(deq_module, func, z_star, writer=None)       # a list of tensors

func is called as func(z, tau=1.0) (torchdeq's wrappers, utils/layer_utils.py). IFT returns
[f(z*)] whose gradient is replaced in the backward by the solution g of g = J_f(z*)^T g + v,
solved from g = 0 by b_solver (a torchdeq-signature solver function) with b_solver_kwargs;
writer(info) receives that solve's statistics. hook_ift gives the same gradient here (both
are eqkernels.backward.implicit: a hook on f(z*), no graph kept across adjoint steps).
"""
from __future__ import annotations

import torch

from eqkernels.backward import implicit


def make_pair(target, source):
    """source aligned to target's length: itself if as long, or its one entry repeated."""
    if len(target) == len(source):
        return list(source)
    if len(source) == 1:
        return [source[0]] * len(target)
    raise ValueError(f"Unable to align the arg sequence: {len(source)} values (grad) for "
                     f"{len(target)} sampled states; give 1 or {len(target)}")


def _ift(b_solver, b_solver_kwargs):
    if not callable(b_solver):
        raise TypeError(f"IFT needs a b_solver function, got {type(b_solver).__name__}")

    def ift_grad(trainer, func, z_pred, writer=None, **kwargs):
        if not torch.is_tensor(z_pred):
            raise TypeError("IFT needs the state as one tensor; with a list of states use a "
                            "solver with statistics (not simple_fixed_point_iter) or phantom "
                            "gradients")

        def adjoint(g_map, v0):
            g, _, info = b_solver(g_map, torch.zeros_like(v0), **b_solver_kwargs)
            return g, info
        if not torch.is_grad_enabled():
            return [func(z_pred.detach())]
        return [implicit(func, z_pred, adjoint_solver=adjoint, on_info=writer)]
    return ift_grad


def _phantom(steps, tau, sup_gap, sup_loc):
    sup_loc = list(sup_loc or [])

    def phantom_grad(trainer, func, z_pred, **kwargs):
        z_out = []
        for i in range(1, steps + 1):
            z_pred = func(z_pred, tau=tau)
            if (sup_gap > 0 and i % sup_gap == 0) or (sup_gap <= 0 and i in sup_loc):
                z_out.append(z_pred)
        if sup_gap <= 0:
            z_out.append(z_pred)
        return z_out
    return phantom_grad


def backward_factory(grad_type="ift", hook_ift=False, b_solver=None, b_solver_kwargs=None,
                     sup_gap=-1, sup_loc=None, tau=1.0, **grad_factory_kwargs):
    """A gradient functor (trainer, func, z_pred, writer=None) -> list of tensors.

    grad_type: "ift" (implicit differentiation with b_solver) or an int k >= 1 (phantom
    gradient: k damped steps z <- tau f(z) + (1 - tau) z from z_pred, returning every
    sup_gap-th state if sup_gap > 0, else the states at the steps in sup_loc and the last).
    Extra keyword arguments are ignored, as in torchdeq."""
    if grad_type == "ift":
        return _ift(b_solver, dict(b_solver_kwargs or {}))
    if isinstance(grad_type, bool) or not isinstance(grad_type, int) or grad_type < 1:
        raise ValueError(f"grad_type must be 'ift' or an int >= 1 (phantom-gradient steps), "
                         f"got {grad_type!r}")
    if not 0 < tau <= 1:
        raise ValueError(f"tau (phantom-gradient damping) must be in (0, 1], got {tau!r}")
    return _phantom(grad_type, tau, sup_gap, sup_loc)


__all__ = ["backward_factory"]

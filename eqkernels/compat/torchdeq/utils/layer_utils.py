"""torchdeq.utils.layer_utils: the map f as the solvers see it (deq_decorator).

A DEQ's func takes z (a tensor) or *zs (a list of tensors, MDEQ-style). deq_decorator wraps
it as torchdeq does:
  tensor z                      -> DEQWrapper: f(z), z unchanged;
  list z, no_stat=False         -> MDEQWrapper: the solvers see one (B, n) vector (each
                                   tensor flattened per sample and concatenated);
  list z, no_stat=True          -> SpeedyMDEQWrapper: the list itself (only
                                   simple_fixed_point_iter, which keeps no statistics).
Every wrapper is called as wrapper(z, tau=1.0) -> tau f(z) + (1 - tau) z (the damped map
phantom gradients use), and has list2vec / vec2list / detach.
"""
from __future__ import annotations

import torch


def _flat(z):
    return z.flatten(start_dim=1) if z.dim() >= 2 else z.reshape(z.numel(), 1)


def _damp(new, old, tau):
    return new if tau == 1.0 else tau * new + (1 - tau) * old


class DEQWrapper:
    def __init__(self, func, z_init):
        self.func = func

    def list2vec(self, z):
        return z

    def vec2list(self, z):
        return z

    def detach(self, z):
        return z.detach()

    def __call__(self, z, tau=1.0):
        return _damp(self.func(z), z, tau)


class MDEQWrapper:
    def __init__(self, func, z_init):
        self.func = func
        self.shapes = [z.shape for z in z_init]
        self.sizes = [_flat(z).shape[1] for z in z_init]

    def list2vec(self, z_list):
        return torch.cat([_flat(z) for z in z_list], dim=1)

    def vec2list(self, z):
        return [part.reshape(shape) for part, shape in
                zip(torch.split(z, self.sizes, dim=1), self.shapes)]

    def detach(self, z):
        return z.detach()

    def __call__(self, z, tau=1.0):
        out = self.list2vec(self.func(*self.vec2list(z)))
        return _damp(out, z, tau)


class SpeedyMDEQWrapper(DEQWrapper):
    def detach(self, z_list):
        return [z.detach() for z in z_list]

    def __call__(self, z_list, tau=1.0):
        out = self.func(*z_list)
        return [_damp(new, old, tau) for new, old in zip(out, z_list)]


def deq_decorator(func, z_init=None, no_stat=True):
    """(wrapped func, z as the solver sees it) for a tensor or a list/tuple of tensors."""
    if torch.is_tensor(z_init):
        return DEQWrapper(func, z_init), z_init
    if not isinstance(z_init, (list, tuple)) or not z_init or \
            not all(torch.is_tensor(z) for z in z_init):
        raise TypeError(f"z_init must be a tensor or a list/tuple of tensors, got "
                        f"{type(z_init).__name__}")
    if no_stat:
        return SpeedyMDEQWrapper(func, z_init), list(z_init)
    wrapped = MDEQWrapper(func, z_init)
    return wrapped, wrapped.list2vec(z_init)


__all__ = ["DEQWrapper", "MDEQWrapper", "SpeedyMDEQWrapper", "deq_decorator"]

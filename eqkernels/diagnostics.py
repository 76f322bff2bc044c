"""Diagnostics of a solve: spectral radius of J_f at the fixed point."""
from __future__ import annotations

import torch


def spectral_radius(f, z, *, n_iter=20, seed=0):
    """Power-iteration estimate of rho(J_f(z)) per sample.

    f: (B, n) -> (B, n), applied sample-wise (a block that mixes samples, e.g. BatchNorm
    in training mode, makes the per-sample Jacobians meaningless).
    z: (B, n). Returns (B,) float tensor. Uses VJPs (rho(J^T) = rho(J)).
    """
    if not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"n_iter must be an int >= 1, got {n_iter!r}")
    gen = torch.Generator(device=z.device).manual_seed(seed)
    with torch.enable_grad():
        zr = z.detach().requires_grad_()
        fz = f(zr)
        v = torch.randn(z.shape, generator=gen, device=z.device, dtype=z.dtype)
        v = v / v.norm(dim=1, keepdim=True)
        estimate = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
        for _ in range(n_iter):
            w, = torch.autograd.grad(fz, zr, v.to(fz.dtype), retain_graph=True)
            w = w.to(z.dtype)
            estimate = w.norm(dim=1)
            v = w / estimate.clamp_min(torch.finfo(z.dtype).tiny)[:, None]
    return estimate.detach()

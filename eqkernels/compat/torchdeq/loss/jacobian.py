"""torchdeq.loss.jacobian: jac_reg (Hutchinson estimate of ||J||_F^2) and power_method."""
from __future__ import annotations

import torch

from eqkernels.regularization import jac_reg_from_outputs


def jac_reg(f0, z0, vecs=1, create_graph=True):
    """||J||_F^2 / z0.numel() of J = df0/dz0 estimated with `vecs` Gaussian probes; a scalar
    tensor. f0 = f(z0) must have been computed from z0 (which requires grad)."""
    if not (torch.is_tensor(z0) and z0.requires_grad):
        raise ValueError("jac_reg: z0 must be a tensor that requires grad, with f0 = f(z0) "
                         "computed from it")
    return jac_reg_from_outputs(f0, z0, n_probes=vecs, create_graph=create_graph)


def power_method(f0, z0, n_iters=100):
    """Largest |eigenvalue| of J = df0/dz0 per sample by power iteration on VJPs;
    returns (eigenvector like z0, (B,) |eigenvalue|)."""
    if isinstance(n_iters, bool) or not isinstance(n_iters, int) or n_iters < 1:
        raise ValueError(f"n_iters must be an int >= 1, got {n_iters!r}")
    vec = torch.randn_like(z0)
    B = vec.shape[0]
    value = None
    for i in range(n_iters):
        vjp, = torch.autograd.grad(f0, z0, vec, retain_graph=i < n_iters - 1)
        flat_v, flat_j = vec.reshape(B, -1), vjp.reshape(B, -1)
        value = (flat_j * flat_v).sum(1) / flat_v.square().sum(1)
        vec = (flat_j / flat_j.norm(dim=1, keepdim=True).clamp_min(1e-30)).reshape_as(z0)
    return vec, value.abs()


__all__ = ["jac_reg", "power_method"]

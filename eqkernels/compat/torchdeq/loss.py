"""torchdeq.loss on eqkernels: jac_reg, power_method, fp_correction."""
from __future__ import annotations

import torch

from eqkernels.backward.supervision import fp_correction as _fp_correction
from eqkernels.regularization import jac_reg_from_outputs


def jac_reg(f0, z0, vecs=1, create_graph=True):
    """Hutchinson estimate of ||J||_F^2 / z0.numel() from f0 = f(z0) (z0 requiring grad),
    with `vecs` Gaussian probes; a scalar tensor (torchdeq's jac_reg)."""
    if not (isinstance(z0, torch.Tensor) and z0.requires_grad):
        raise ValueError("jac_reg: z0 must be a tensor that requires grad, with f0 = f(z0) "
                         "computed from it")
    return jac_reg_from_outputs(f0, z0, n_probes=vecs, create_graph=create_graph)


def power_method(f0, z0, n_iters=100):
    """Largest |eigenvalue| of J = df0/dz0 per sample by power iteration on VJPs;
    returns (eigenvector like z0, (B,) |eigenvalue|) as torchdeq's power_method."""
    if not isinstance(n_iters, int) or n_iters < 1:
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


# The weight functions' own keyword arguments (torchdeq's names); others are errors here.
_WEIGHT_KWARGS = {"exp": {"gamma"}, "linear": {"gamma", "bias"}, "const": {"c"}}


def fp_correction(crit, args, weight_func="exp", return_loss_values=False, **kwargs):
    """sum_k w_k crit(*args_k) over the states (fixed-point correction, torchdeq's);
    eqkernels.backward.supervision.fp_correction after checking the weight options.

    args: a tuple whose entries are lists (one per state, e.g. deq's z_out) or single
    values used for every state; w_k: "exp" gamma^(n-k-1) | "linear" | "const" | callable."""
    if isinstance(weight_func, str) and weight_func in _WEIGHT_KWARGS:
        unknown = sorted(set(kwargs) - _WEIGHT_KWARGS[weight_func])
        if unknown:
            raise TypeError(f"fp_correction: unknown arguments {unknown} for weight_func "
                            f"{weight_func!r}; known: {sorted(_WEIGHT_KWARGS[weight_func])}")
    return _fp_correction(crit, args, weight_func=weight_func,
                          return_loss_values=return_loss_values, **kwargs)


__all__ = ["jac_reg", "power_method", "fp_correction"]

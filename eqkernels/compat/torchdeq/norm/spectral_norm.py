"""torchdeq.norm.spectral_norm: SpectralNorm, W = W_orig * min(clip_value, g / sigma).

torchdeq's semantics and layout: sigma = u^T W v from power-iteration vectors u, v drawn at
random when the norm is applied (no warm-up), and n_power_iterations steps each time
reset_norm runs in training mode (none in eval). So at first sigma underestimates
sigma_max and ||W||_2 exceeds target_norm (about 1.5 after one step on a random 64x64
matrix), as in torchdeq; eqk.apply_norm instead warms up with 15 steps. Parameters
`<name>_orig`, `<name>_g` (learnable per-channel scale), buffers `<name>_u`, `<name>_v`;
`module.<name>` is a plain tensor attribute, the raw weight until the first reset_norm.
The arithmetic is eqkernels.nn.norm's.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import Parameter
from torch.nn import functional as F

from eqkernels.compat.torchdeq.norm.weight_norm import as_lists
from eqkernels.nn.norm import (NORMED_LAYERS, out_channel_dim, power_iteration, rescale,
                               weight_matrix)


class SpectralNorm:
    _target_modules = {cls: ("weight", out_channel_dim(cls)) for cls in NORMED_LAYERS}

    def __init__(self, names, dims, learn_scale: bool = True, target_norm: float = 1.0,
                 clip: bool = False, clip_value: float = 1.0, n_power_iterations: int = 1,
                 eps: float = 1e-12):
        if isinstance(n_power_iterations, bool) or not isinstance(n_power_iterations, int) \
                or n_power_iterations < 1:
            raise ValueError(f"n_power_iterations must be an int >= 1, got "
                             f"{n_power_iterations!r}")
        self.names, self.dims = names, dims
        self.learn_scale, self.target_norm = learn_scale, target_norm
        self.clip, self.clip_value = clip, clip_value
        self.n_power_iterations, self.eps = n_power_iterations, eps

    def compute_weight(self, module, do_power_iteration, name, dim):
        """The normalised weight; with do_power_iteration, n_power_iterations steps first
        (they update the buffers u, v in place)."""
        weight = getattr(module, name + "_orig")
        u, v = getattr(module, name + "_u"), getattr(module, name + "_v")
        mat = weight_matrix(weight, dim)
        if do_power_iteration:
            with torch.no_grad():
                new_u, new_v = power_iteration(mat, u, v, self.n_power_iterations, self.eps)
                u.copy_(new_u)
                v.copy_(new_v)
        # later resets change u, v in place: the graph must hold these values
        u = u.clone(memory_format=torch.contiguous_format)
        v = v.clone(memory_format=torch.contiguous_format)
        sigma = torch.dot(u, mat.mv(v))
        scale = getattr(module, name + "_g") if self.learn_scale else self.target_norm
        return rescale(weight, sigma, scale, self.clip, self.clip_value)

    @classmethod
    def overwrite_kwargs(cls, args, learn_scale, target_norm, clip, clip_value,
                         n_power_iterations):
        """The args entries norm_no_scale, norm_target_norm, norm_clip, norm_clip_value and
        sn_n_power_iters win."""
        return (not args.get("norm_no_scale", not learn_scale),
                args.get("norm_target_norm", target_norm), args.get("norm_clip", clip),
                args.get("norm_clip_value", clip_value),
                args.get("sn_n_power_iters", n_power_iterations))

    @classmethod
    def apply(cls, module, deq_args=None, names=None, dims=None, learn_scale=True,
              target_norm=1.0, clip=False, clip_value=1.0, n_power_iterations=1, eps=1e-12):
        """Re-parametrise module's weights `names` (default: by its registered type) in place;
        returns the SpectralNorm that reset_norm calls."""
        from eqkernels.compat.torchdeq.utils.config import DEQConfig
        if names is None or dims is None:
            names, dims = cls._target_modules[type(module)]
        names, dims = as_lists(names, dims)
        fn = cls(names, dims, *cls.overwrite_kwargs(DEQConfig(deq_args), learn_scale,
                                                     target_norm, clip, clip_value,
                                                     n_power_iterations), eps=eps)
        for name, dim in zip(names, dims):
            weight = module._parameters.get(name)
            if not isinstance(weight, nn.Parameter):
                raise TypeError(f"SpectralNorm: {type(module).__name__}.{name} is not a "
                                f"parameter of the module")
            h, w = weight_matrix(weight.detach(), dim).shape
            # torchdeq's draws, in its order: the same seed gives the same u, v
            u = F.normalize(weight.new_empty(h).normal_(0, 1), dim=0, eps=fn.eps)
            v = F.normalize(weight.new_empty(w).normal_(0, 1), dim=0, eps=fn.eps)
            delattr(module, name)
            module.register_parameter(name + "_orig", weight)
            setattr(module, name, weight.data)
            if fn.learn_scale:
                keep = [1] * weight.dim()
                keep[dim] = h
                module.register_parameter(name + "_g", Parameter(
                    torch.full(keep, float(fn.target_norm), dtype=weight.dtype,
                               device=weight.device)))
            module.register_buffer(name + "_u", u)
            module.register_buffer(name + "_v", v)
        return fn

    def __call__(self, module):
        """Recompute the normalised weights once (reset_norm); power iteration in training."""
        for name, dim in zip(self.names, self.dims):
            setattr(module, name, self.compute_weight(module, module.training, name, dim))

    def remove(self, module):
        """Bake the normalised weights (no power-iteration step) into plain parameters."""
        for name, dim in zip(self.names, self.dims):
            with torch.no_grad():
                weight = self.compute_weight(module, False, name, dim)
            delattr(module, name)
            delattr(module, name + "_u")
            delattr(module, name + "_v")
            if self.learn_scale:
                delattr(module, name + "_g")
            delattr(module, name + "_orig")
            module.register_parameter(name, Parameter(weight.detach()))


__all__ = ["SpectralNorm"]

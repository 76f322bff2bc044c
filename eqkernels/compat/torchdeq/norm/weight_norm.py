"""torchdeq.norm.weight_norm: WeightNorm, W = v * min(clip_value, g / ||v||) per output channel.

torchdeq's layout, so checkpoints move both ways: the raw weight is the parameter
`<name>_v`, the learnable scale `<name>_g` (shaped like the per-channel norm), and
`module.<name>` is a plain tensor attribute recomputed by reset_norm (the program may even
assign to it, as IGNN does). The arithmetic is eqkernels.nn.norm's.
"""
from __future__ import annotations

from torch import nn
from torch.nn import Parameter

from eqkernels.nn.norm import NORMED_LAYERS, channel_norm, out_channel_dim, rescale


def as_lists(names, dims):
    names = [names] if isinstance(names, str) else list(names)
    dims = [dims] if isinstance(dims, int) else list(dims)
    if len(names) != len(dims):
        raise ValueError(f"names and dims must have the same length, got {names} and {dims}")
    return names, dims


class WeightNorm:
    _target_modules = {cls: ("weight", out_channel_dim(cls)) for cls in NORMED_LAYERS}

    def __init__(self, names, dims, learn_scale: bool = True, target_norm: float = 1.0,
                 clip: bool = False, clip_value: float = 1.0):
        self.names, self.dims = names, dims
        self.learn_scale, self.target_norm = learn_scale, target_norm
        self.clip, self.clip_value = clip, clip_value

    def compute_weight(self, module, name, dim):
        """The normalised weight from module.<name>_v (and <name>_g)."""
        v = getattr(module, name + "_v")
        scale = getattr(module, name + "_g") if self.learn_scale else self.target_norm
        return rescale(v, channel_norm(v, dim), scale, self.clip, self.clip_value)

    @classmethod
    def overwrite_kwargs(cls, args, learn_scale, target_norm, clip, clip_value):
        """The args entries norm_no_scale, norm_target_norm, norm_clip, norm_clip_value win."""
        return (not args.get("norm_no_scale", not learn_scale),
                args.get("norm_target_norm", target_norm), args.get("norm_clip", clip),
                args.get("norm_clip_value", clip_value))

    @classmethod
    def apply(cls, module, deq_args=None, names=None, dims=None, learn_scale=True,
              target_norm=1.0, clip=False, clip_value=1.0):
        """Re-parametrise module's weights `names` (default: by its registered type) in place;
        returns the WeightNorm that reset_norm calls."""
        from eqkernels.compat.torchdeq.utils.config import DEQConfig
        if names is None or dims is None:
            names, dims = cls._target_modules[type(module)]
        names, dims = as_lists(names, dims)
        fn = cls(names, dims, *cls.overwrite_kwargs(DEQConfig(deq_args), learn_scale,
                                                     target_norm, clip, clip_value))
        for name, dim in zip(names, dims):
            weight = module._parameters.get(name)
            if not isinstance(weight, nn.Parameter):
                raise TypeError(f"WeightNorm: {type(module).__name__}.{name} is not a "
                                f"parameter of the module")
            del module._parameters[name]
            if fn.learn_scale:
                module.register_parameter(name + "_g", Parameter(channel_norm(weight, dim).data))
            module.register_parameter(name + "_v", Parameter(weight.data))
            setattr(module, name, fn.compute_weight(module, name, dim))
        return fn

    def __call__(self, module):
        """Recompute the normalised weights once (reset_norm)."""
        for name, dim in zip(self.names, self.dims):
            setattr(module, name, self.compute_weight(module, name, dim))

    def remove(self, module):
        """Bake the normalised weights back into plain parameters."""
        for name, dim in zip(self.names, self.dims):
            weight = self.compute_weight(module, name, dim).detach()
            delattr(module, name)
            if self.learn_scale:
                del module._parameters[name + "_g"]
            del module._parameters[name + "_v"]
            module.register_parameter(name, Parameter(weight))


__all__ = ["WeightNorm"]

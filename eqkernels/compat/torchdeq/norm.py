"""torchdeq.norm on eqkernels.nn.norm: apply_norm / reset_norm / remove_norm.

apply_norm(model, norm_type, prefix_filter_out, filter_out, args, **norm_kwargs) takes
torchdeq's names; the args keys norm_type, norm_no_scale, norm_target_norm, norm_clip,
norm_clip_value and sn_n_power_iters win over the keyword arguments, as in torchdeq.
The normalised weights are computed once per reset (eqk.DEQ resets at every forward; with
the compat deq(f, z0) call reset_deq / reset_norm as torchdeq scripts do), and a cached
weight is refreshed by itself after a backward or an optimizer step.
"""
from __future__ import annotations

from eqkernels.nn import norm as _norm
from eqkernels.nn.norm import remove_norm, reset_norm
from eqkernels.compat.torchdeq._options import OPTIONS, to_dict

_KWARGS = ("learn_scale", "target_norm", "clip", "clip_value", "n_power_iterations", "eps")
_ARGS = {"norm_target_norm": "target_norm", "norm_clip": "clip",
         "norm_clip_value": "clip_value", "sn_n_power_iters": "n_power_iterations"}


def apply_norm(model, norm_type="weight_norm", prefix_filter_out=None, filter_out=None,
               args=None, **norm_kwargs):
    """Normalise every Linear / Conv / ConvTranspose weight of model (torchdeq's apply_norm)."""
    unknown = sorted(set(norm_kwargs) - set(_KWARGS))
    if unknown:
        raise TypeError(f"apply_norm: unknown keyword arguments {unknown}; known: {list(_KWARGS)}"
                        f" (names / dims: only 'weight' on the registered layer types here)")
    config = to_dict(args)
    options = dict(norm_kwargs)
    norm_type = config.get("norm_type", norm_type)
    if "norm_no_scale" in config:
        options["learn_scale"] = not config["norm_no_scale"]
    for key, ours in _ARGS.items():
        if key in config:
            options[ours] = config[key]
    if norm_type == "none":
        return model
    if norm_type != "spectral_norm":
        options.pop("n_power_iterations", None)
        options.pop("eps", None)
    _norm.apply_norm(model, norm_type, filter_out=filter_out,
                     prefix_filter_out=prefix_filter_out, **options)
    return model


assert set(_ARGS) | {"norm_type", "norm_no_scale"} <= set(OPTIONS)

__all__ = ["apply_norm", "reset_norm", "remove_norm"]

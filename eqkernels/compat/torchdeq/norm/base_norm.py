"""torchdeq.norm.base_norm: apply_norm / reset_norm / remove_norm and the registries.

apply_norm(model, norm_type, prefix_filter_out, filter_out, args, **norm_kwargs) re-
parametrises, in place, the weights of every module whose type is registered for the norm
(torchdeq matches exact types: Linear, Conv1-3d, ConvTranspose1-3d; register_norm_module
adds others, e.g. a module holding its own weight matrices); the args entries norm_type,
norm_no_scale, norm_target_norm, norm_clip, norm_clip_value, sn_n_power_iters win over the
keyword arguments. reset_norm(model) recomputes every normalised weight once: call it before
each forward, as torchdeq programs do.

Never silently: apply_norm warns when it normalised nothing although the model holds weight
matrices (a module type nobody registered), and when it skips a subclass of a registered type.
"""
from __future__ import annotations

import inspect
import warnings

from eqkernels.compat.torchdeq.norm.spectral_norm import SpectralNorm
from eqkernels.compat.torchdeq.norm.weight_norm import WeightNorm
from eqkernels.nn import norm as _eqk_norm

_norm_class = {"weight_norm": WeightNorm, "spectral_norm": SpectralNorm}


def register_norm(norm_type, norm_class):
    """Register a normalisation class (torchdeq's protocol: a `_target_modules` dict
    {module type: (names, dims)}, apply(module, deq_args=, **kwargs) -> callable fn with
    fn(module) recomputing and fn.remove(module)) for apply_norm(norm_type=...)."""
    if not isinstance(norm_type, str) or not norm_type:
        raise TypeError(f"norm_type must be a non-empty str, got {norm_type!r}")
    if not hasattr(norm_class, "apply") or not isinstance(
            getattr(norm_class, "_target_modules", None), dict):
        raise TypeError("norm_class must have apply() and a _target_modules dict")
    _norm_class[norm_type] = norm_class


def register_norm_module(module_class, norm_type, names="weight", dims=0):
    """Normalise the parameters `names` (a str or list) of every `module_class` module over
    `dims` (the output-channel dimension of each) when apply_norm runs with norm_type."""
    if norm_type not in _norm_class:
        raise ValueError(f"norm_type must be one of the registered norms "
                         f"{sorted(_norm_class)}, got {norm_type!r}")
    _norm_class[norm_type]._target_modules[module_class] = (names, dims)


def _check_norm_kwargs(norm_class, norm_kwargs):
    params = inspect.signature(norm_class.apply).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    known = sorted(set(params) - {"cls", "module", "deq_args"})
    unknown = sorted(set(norm_kwargs) - set(known))
    if unknown:
        raise TypeError(f"apply_norm: unknown keyword arguments {unknown} for "
                        f"{norm_class.__name__}; known: {known}")


def _unnormalised(model, skip):
    """'name (Type): param shape, ...' of modules holding their own >= 2-D parameters."""
    found = []
    for name, module in model.named_modules():
        if skip(name):
            continue
        params = [f"{p} {tuple(t.shape)}" for p, t in module.named_parameters(recurse=False)
                  if t.dim() >= 2]
        if params:
            found.append(f"{name or '<model>'} ({type(module).__name__}: {', '.join(params)})")
    return found


def apply_norm(model, norm_type="weight_norm", prefix_filter_out=None, filter_out=None,
               args=None, **norm_kwargs):
    """Normalise the weights of model's registered module types in place; returns model.
    norm_type: "weight_norm" | "spectral_norm" | "none" | a registered one; modules whose
    qualified name starts with a prefix_filter_out entry or contains a filter_out entry are
    skipped; norm_kwargs: learn_scale, target_norm, clip, clip_value (+ n_power_iterations,
    eps for spectral_norm), or the registered class's."""
    from eqkernels.compat.torchdeq.utils.config import DEQConfig
    config = DEQConfig(args)
    config.update(**norm_kwargs)
    norm_type = config.get("norm_type", norm_type)
    if norm_type == "none":
        return model
    if norm_type not in _norm_class:
        raise ValueError(f"norm_type must be 'none' or one of the registered norms "
                         f"{sorted(_norm_class)}, got {norm_type!r} (add one with register_norm)")
    norm_class = _norm_class[norm_type]
    _check_norm_kwargs(norm_class, norm_kwargs)
    prefixes = _eqk_norm.name_list(prefix_filter_out, "prefix_filter_out")
    parts = _eqk_norm.name_list(filter_out, "filter_out")

    def skip(name):
        return any(name.startswith(p) for p in prefixes) or any(s in name for s in parts)

    targets = norm_class._target_modules
    done, subclasses = 0, []
    for name, module in list(model.named_modules()):
        if skip(name) or hasattr(module, "_deq_norm"):
            continue
        if type(module) in targets:
            module._deq_norm = norm_class.apply(module, deq_args=config, **norm_kwargs)
            done += 1
        elif isinstance(module, tuple(t for t in targets if isinstance(t, type))):
            subclasses.append(f"{name} ({type(module).__name__})")
    if subclasses:
        warnings.warn(f"apply_norm({norm_type!r}): skipped {', '.join(subclasses)}: subclasses "
                      f"of a registered type are not normalised (torchdeq matches exact types);"
                      f" register_norm_module(cls, {norm_type!r}) includes them", stacklevel=2)
    if not done:
        left = _unnormalised(model, skip)
        if left:
            warnings.warn(f"apply_norm({norm_type!r}) normalised nothing: no module of a type "
                          f"registered for it. Left unnormalised: {'; '.join(left)}. "
                          f"register_norm_module(ModuleClass, {norm_type!r}, names=[...], "
                          f"dims=[...]) normalises a module's own parameters", stacklevel=2)
    return model


def reset_norm(model):
    """Recompute every normalised weight in model once (one power-iteration step each for
    spectral_norm in training mode); also resets eqkernels' own norms (eqk.apply_norm)."""
    for module in model.modules():
        if hasattr(module, "_deq_norm"):
            module._deq_norm(module)
    _eqk_norm.reset_norm(model)
    return model


def remove_norm(model):
    """Bake the normalised weights back into plain parameters."""
    for module in model.modules():
        if hasattr(module, "_deq_norm"):
            module._deq_norm.remove(module)
            del module._deq_norm
    return model


__all__ = ["apply_norm", "reset_norm", "remove_norm", "register_norm", "register_norm_module"]

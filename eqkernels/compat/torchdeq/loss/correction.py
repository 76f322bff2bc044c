"""torchdeq.loss.correction: fixed-point correction with a registry of weight functions."""
from __future__ import annotations

from eqkernels.backward.supervision import WEIGHT_FUNCS
from eqkernels.backward.supervision import fp_correction as _fp_correction

# name -> w(n, k, **kwargs); torchdeq's three (eqkernels' definitions) and registered ones.
_weight_funcs = dict(WEIGHT_FUNCS)
# The built-in weight functions' keyword arguments; others are errors here (torchdeq ignores
# them for "exp" / "linear": a misspelt gama= would silently do nothing).
_BUILTIN_KWARGS = {"exp": {"gamma"}, "linear": {"gamma", "bias"}, "const": {"c"}}


def register_weight_func(name, func):
    """Register w(n, k, **kwargs) -> weight of the k-th of n states, for
    fp_correction(..., weight_func=name)."""
    if not callable(func):
        raise TypeError(f"func must be callable (n, k) -> float, got {type(func).__name__}")
    _weight_funcs[name] = func


def fp_correction(crit, args, weight_func="exp", return_loss_values=False, **kwargs):
    """sum_k w(n, k) crit(*args_k) over the states converging to the fixed point.

    args: a tuple whose entries are lists (one per state, e.g. deq's z_out) or single values
    used for every state (a list is indexed k mod its length); weight_func: "exp" (gamma^(n-k-1),
    gamma 0.8) | "linear" | "const" | a registered name | a callable. Returns the loss, and
    with return_loss_values also the per-state losses (floats)."""
    if isinstance(weight_func, str):
        if weight_func not in _weight_funcs:
            raise ValueError(f"weight_func must be one of {sorted(_weight_funcs)} or a "
                             f"callable, got {weight_func!r} (add one with register_weight_func)")
        known = _BUILTIN_KWARGS.get(weight_func) if _weight_funcs[weight_func] is \
            WEIGHT_FUNCS.get(weight_func) else None
        if known is not None and set(kwargs) - known:
            raise TypeError(f"fp_correction: unknown arguments {sorted(set(kwargs) - known)} "
                            f"for weight_func {weight_func!r}; known: {sorted(known)}")
        weight_func = _weight_funcs[weight_func]
    elif not callable(weight_func):
        raise TypeError(f"weight_func must be a name or a callable, got "
                        f"{type(weight_func).__name__}")
    return _fp_correction(crit, args, weight_func=weight_func,
                          return_loss_values=return_loss_values, **kwargs)


__all__ = ["fp_correction", "register_weight_func"]

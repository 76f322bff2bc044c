"""Multi-state supervision (fixed-point correction), following torchdeq's definitions.

- `supervision_steps(max_iter, n_states, indexing)`: the solver steps whose states are
  supervised (torchdeq's DEQIndexing._compute_f_iter): with n_states > 1, n = min(max_iter,
  n_states) evenly spaced steps ending at max_iter (delta = max_iter // n; if n divides
  max_iter: delta, 2 delta, ..., else max_iter - (n-1-k) delta); otherwise [*indexing, max_iter].
- `phantom_states(f, z, steps, damping, sup_gap, sup_loc)`: torchdeq's phantom gradient with
  its supervision points: z_{i+1} = (1 - damping) z_i + damping f(z_i) for `steps` steps from
  z (detached); returns [z_k for k % sup_gap == 0] if sup_gap > 0, else [z_k for k in sup_loc]
  + [z_steps] if sup_loc, else [z_steps].
- `fp_correction(crit, args, weight_func="exp", **kw)`: sum_k w(n, k) crit(*args_k) over the
  aligned arguments (a list argument is indexed k mod its length, anything else is shared);
  weights w(n, k): "exp" gamma^(n-k-1) (gamma 0.8), "linear" 1 - (n-k-1)/n gamma + bias
  (gamma 0.9, bias 0), "const" c (c 1), or a callable (n, k, **kw) -> float.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Union


def supervision_steps(max_iter: int, n_states: int = 1,
                      indexing: Optional[Sequence[int]] = None) -> List[int]:
    if n_states > 1:
        n = max(min(max_iter, n_states), 1)
        delta = max_iter // n
        if max_iter % n == 0:
            return [(k + 1) * delta for k in range(n)]
        return [max_iter - (n - k - 1) * delta for k in range(n)]
    return [*(indexing or []), max_iter]


def phantom_states(f, z, *, steps: int, damping: float, sup_gap: int = -1,
                   sup_loc: Optional[Sequence[int]] = None, with_final: bool = False):
    """The supervised states of one phantom unroll (list); with_final also its last state
    (which sup_gap may leave out): (states, z_steps)."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"phantom steps must be an int >= 1, got {steps!r}")
    if not 0 < damping <= 1:
        raise ValueError(f"phantom damping must be in (0, 1], got {damping!r}")
    z = z.detach()
    out = []
    sup_loc = list(sup_loc or [])
    for i in range(1, steps + 1):
        z = (1 - damping) * z + damping * f(z) if damping != 1 else f(z)
        if (sup_gap > 0 and i % sup_gap == 0) or (sup_gap <= 0 and i in sup_loc):
            out.append(z)
    if sup_gap <= 0:
        out.append(z)
    return (out, z) if with_final else out


def _w_exp(n, k, gamma=0.8, **_):
    return gamma ** (n - k - 1)


def _w_linear(n, k, gamma=0.9, bias=0.0, **_):
    return 1 - (n - k - 1) / n * gamma + bias


def _w_const(n, k, c=1.0, **_):
    return c


WEIGHT_FUNCS = {"exp": _w_exp, "linear": _w_linear, "const": _w_const}


def fp_correction(crit: Callable, args: Sequence, weight_func: Union[str, Callable] = "exp",
                  return_loss_values: bool = False, **kwargs):
    """Weighted sum of crit over a sequence of states converging to the fixed point.

    crit(*args_k) -> scalar tensor; args: e.g. (info.states, target); weight_func: "exp" |
    "linear" | "const" | callable(n, k, **kwargs). Returns the loss (and, with
    return_loss_values, the list of per-state losses as floats: a host sync each).
    """
    if isinstance(weight_func, str):
        if weight_func not in WEIGHT_FUNCS:
            raise ValueError(f"weight_func must be one of {sorted(WEIGHT_FUNCS)} or a callable, "
                             f"got {weight_func!r}")
        weight_func = WEIGHT_FUNCS[weight_func]
    elif not callable(weight_func):
        raise TypeError(f"weight_func must be a name or a callable, got {type(weight_func).__name__}")
    aligned = [list(a) if isinstance(a, (list, tuple)) else [a] for a in args]
    if not aligned:
        raise ValueError("fp_correction needs at least one argument sequence")
    n = max(len(a) for a in aligned)
    if any(len(a) == 0 for a in aligned):
        raise ValueError("fp_correction: an argument list is empty")
    loss, values = 0.0, []
    for k in range(n):
        term = crit(*[a[k % len(a)] for a in aligned])
        loss = loss + weight_func(n, k, **kwargs) * term
        if return_loss_values:
            values.append(float(term))
    return (loss, values) if return_loss_values else loss

"""torchdeq 0.1.0's DEQ options: names, argparse declarations and defaults in one table.

Every name here is accepted by get_deq (and add_deq_args declares it); a name that is not
here is an error, not silently ignored. `USED_BY` says which part of the package reads an
option; the "user" ones are torchdeq options its core does not read either (the training
script does: gamma for fp_correction, jac_loss_* for jac_reg, sradius_mode for deq(...)).
"""
from __future__ import annotations

import argparse
import difflib

SOLVERS = ("anderson", "broyden", "fixed_point_iter", "simple_fixed_point_iter")
CORES = ("indexing", "sliced")

# name: (argparse keyword arguments, used by)
OPTIONS = {
    "f_solver": (dict(type=str, default="fixed_point_iter", choices=SOLVERS,
                      help="forward solver"), "core"),
    "b_solver": (dict(type=str, default="fixed_point_iter", choices=SOLVERS,
                      help="backward (IFT adjoint) solver"), "core"),
    "f_max_iter": (dict(type=int, default=40, help="max f evaluations of the forward solve"),
                   "core"),
    "b_max_iter": (dict(type=int, default=40, help="max iterations of the backward solve"),
                   "core"),
    "f_tol": (dict(type=float, default=1e-3, help="forward stopping tolerance"), "core"),
    "b_tol": (dict(type=float, default=1e-6, help="backward stopping tolerance"), "core"),
    "f_stop_mode": (dict(type=str, default="abs", choices=("abs", "rel"),
                         help="forward residual: abs or rel"), "core"),
    "b_stop_mode": (dict(type=str, default="abs", choices=("abs", "rel"),
                         help="backward residual: abs or rel"), "core"),
    "eval_factor": (dict(type=float, default=1.0,
                         help="test-time max iterations = f_max_iter * eval_factor"), "core"),
    "eval_f_max_iter": (dict(type=int, default=0,
                             help="test-time max iterations (overrides eval_factor if > 0)"),
                        "core"),
    "norm_type": (dict(type=str, default="weight_norm",
                       choices=("none", "weight_norm", "spectral_norm"),
                       help="W <- W * min(norm_clip_value, target / ||W||)"), "norm"),
    "norm_no_scale": (dict(action="store_true", help="no learnable scale"), "norm"),
    "norm_clip": (dict(action="store_true", help="clip the factor at norm_clip_value"), "norm"),
    "norm_clip_value": (dict(type=float, default=1.0, help="upper bound of the factor"), "norm"),
    "norm_target_norm": (dict(type=float, default=1.0, help="target norm (fixed scale)"),
                         "norm"),
    "sn_n_power_iters": (dict(type=int, default=1, help="power iterations per reset"), "norm"),
    "core": (dict(type=str, default="sliced", choices=CORES, help="training graph"), "core"),
    "ift": (dict(action="store_true", help="implicit differentiation"), "core"),
    "hook_ift": (dict(action="store_true", help="IFT by a backward hook (same as ift here)"),
                 "core"),
    "n_states": (dict(type=int, default=1, help="states returned for fixed-point correction"),
                 "core"),
    "indexing": (dict(type=int, nargs="+", default=[], help="solver steps of those states"),
                 "core"),
    "gamma": (dict(type=float, default=0.8, help="fixed-point correction decay"), "user"),
    "grad": (dict(type=int, nargs="+", default=[1], help="phantom-gradient steps"), "core"),
    "tau": (dict(type=float, default=1.0, help="phantom-gradient damping"), "core"),
    "sup_gap": (dict(type=int, default=-1, help="return every sup_gap phantom steps"), "core"),
    "sup_loc": (dict(type=int, nargs="+", default=[], help="phantom steps to return"), "core"),
    "jac_loss_weight": (dict(type=float, default=0.0, help="Jacobian regularisation weight"),
                        "user"),
    "jac_loss_freq": (dict(type=float, default=0.0, help="Jacobian regularisation frequency"),
                      "user"),
    "jac_incremental": (dict(type=int, default=0, help="raise jac_loss_weight every N steps"),
                        "user"),
    "sradius_mode": (dict(action="store_true", help="spectral radius at validation"), "user"),
}
# get_deq's own keyword arguments besides the table (torchdeq's DEQBase signature).
EXTRA_KWARGS = {"no_stat": None}
DEFAULTS = {name: (kw.get("default", False) if kw.get("action") != "store_true" else False)
            for name, (kw, _) in OPTIONS.items()}
# An unknown key that starts like a DEQ option is a typo, not the program's own option.
_DEQ_PREFIXES = ("f_", "b_", "norm_", "sn_", "jac_", "eval_", "sup_", "n_states", "hook_")


def to_dict(args) -> dict:
    """A dict from None | dict | argparse.Namespace | any object with __dict__ (as torchdeq)."""
    if args is None:
        return {}
    if isinstance(args, dict):
        return dict(args)
    if isinstance(args, argparse.Namespace):
        return dict(vars(args))
    if hasattr(args, "config") and isinstance(getattr(args, "config"), dict):  # a DEQConfig
        return dict(args.config)
    if hasattr(args, "__dict__"):
        return dict(vars(args))
    raise TypeError(f"args must be None, a dict, an argparse.Namespace or an object with "
                    f"attributes, got {type(args).__name__}")


def _suggest(name, known):
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(config: dict, from_kwargs: set, known, where: str) -> None:
    """Unknown keyword arguments are errors. Unknown keys of an args object are the
    program's own options (lr, epochs, ...) unless they look like a misspelt DEQ option."""
    known = list(known)
    for name in config:
        if name in known:
            continue
        if name in from_kwargs:
            raise TypeError(f"{where}: unknown option {name!r}{_suggest(name, known)}; "
                            f"known: {', '.join(sorted(known))}")
        hint = _suggest(name, known)
        if hint or name.startswith(_DEQ_PREFIXES):
            raise ValueError(f"{where}: args has {name!r}, which is not a torchdeq option"
                             f"{hint}; rename it or drop it from the args passed in")

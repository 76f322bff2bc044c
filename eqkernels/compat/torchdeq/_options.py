"""torchdeq 0.1.0's DEQ options: names, argparse declarations and defaults in one table, and
how a configuration is read.

Reading follows torchdeq: get_deq(args, **kwargs) reads the names it knows from `args` (an
argparse.Namespace, a dict, a DEQConfig or any object with attributes) and ignores the
program's own (lr, eval_n_layer, eval_interval, ...). What is stricter here: a KEYWORD
argument passed directly that is no option (`get_deq(f_max_iters=10)`) is a TypeError with a
suggestion -- torchdeq would ignore it silently.

eqkernels' own option (not torchdeq's, not declared by add_deq_args):
  stop_rule: "sample" (default; each sample stops once its residual is below tol) |
             "batch" (torchdeq's rule: every sample iterates until all are below tol).
"""
from __future__ import annotations

import argparse
import difflib
import warnings

# name: argparse keyword arguments, as torchdeq's add_deq_args declares them -- except that
# no option has `choices` (torchdeq restricts --b_solver): a solver, norm or core registered
# by the program must parse. get_deq checks the values instead.
OPTIONS = {
    "f_solver": dict(type=str, default="fixed_point_iter",
                     help="forward solver: anderson, broyden, fixed_point_iter, "
                          "simple_fixed_point_iter or a registered one"),
    "b_solver": dict(type=str, default="fixed_point_iter",
                     help="backward solver: anderson, broyden, fixed_point_iter, "
                          "simple_fixed_point_iter or a registered one"),
    "f_max_iter": dict(type=int, default=40,
                       help="max number of function evaluations (NFE) of the forward solver"),
    "b_max_iter": dict(type=int, default=40,
                       help="max number of function evaluations (NFE) of the backward solver"),
    "f_tol": dict(type=float, default=1e-3, help="forward solver stopping criterion"),
    "b_tol": dict(type=float, default=1e-6, help="backward solver stopping criterion"),
    "f_stop_mode": dict(type=str, default="abs", help="forward residual: abs or rel"),
    "b_stop_mode": dict(type=str, default="abs", help="backward residual: abs or rel"),
    "eval_factor": dict(type=float, default=1.0,
                        help="test-time max iterations = f_max_iter * eval_factor"),
    "eval_f_max_iter": dict(type=int, default=0,
                            help="test-time max iterations (overrides eval_factor if > 0)"),
    "norm_type": dict(type=str, default="weight_norm",
                      help="W <- W * min(norm_clip_value, target_norm / norm): none, "
                           "weight_norm, spectral_norm or a registered one"),
    "norm_no_scale": dict(action="store_true", help="no learnable target_norm"),
    "norm_clip": dict(action="store_true",
                      help="clip the factor target_norm / norm at norm_clip_value"),
    "norm_clip_value": dict(type=float, default=1.0, help="upper bound of the factor"),
    "norm_target_norm": dict(type=float, default=1.0,
                             help="target norm when it is not learned"),
    "sn_n_power_iters": dict(type=int, default=1,
                             help="power iterations per reset (spectral_norm)"),
    "core": dict(type=str, default="sliced", help="training graph: indexing or sliced"),
    "ift": dict(action="store_true", help="implicit differentiation"),
    "hook_ift": dict(action="store_true", help="implicit differentiation by a backward hook"),
    "n_states": dict(type=int, default=1,
                     help="number of loss terms (uniformly spaced solver states)"),
    "indexing": dict(type=int, nargs="+", default=[], help="solver steps of the states"),
    "gamma": dict(type=float, default=0.8, help="fixed-point correction decay"),
    "grad": dict(type=int, nargs="+", default=[1], help="steps of phantom gradient"),
    "tau": dict(type=float, default=1.0, help="damping of the phantom gradient"),
    "sup_gap": dict(type=int, default=-1, help="sample every sup_gap phantom steps"),
    "sup_loc": dict(type=int, nargs="+", default=[], help="phantom steps to sample"),
    "jac_loss_weight": dict(type=float, default=0.0,
                            help="Jacobian regularisation loss weight"),
    "jac_loss_freq": dict(type=float, default=0.0,
                          help="frequency of the Jacobian regularisation"),
    "jac_incremental": dict(type=int, default=0,
                            help="raise jac_loss_weight by 0.1 every this many steps"),
    "sradius_mode": dict(action="store_true", help="spectral radius during validation"),
}
# Keyword arguments of torchdeq's DEQ classes that add_deq_args does not declare.
CLASS_KWARGS = ("no_stat",)
# eqkernels' own options (module doc).
EXTENSIONS = {"stop_rule": "sample"}
STOP_RULES = ("sample", "batch")
KNOWN = tuple(OPTIONS) + CLASS_KWARGS + tuple(EXTENSIONS)


def to_dict(args) -> dict:
    """A copy of the configuration as a dict: None | dict | argparse.Namespace | DEQConfig |
    any object with attributes (torchdeq warns for that last kind, and so does this)."""
    if args is None:
        return {}
    if isinstance(args, dict):
        return dict(args)
    if isinstance(args, argparse.Namespace):
        return dict(vars(args))
    config = getattr(args, "config", None)
    if isinstance(config, dict) and type(args).__name__ == "DEQConfig":
        return dict(config)
    if hasattr(args, "__dict__"):
        warnings.warn(f"Unrecognized config type: {type(args)}. Processed using get_attr.",
                      stacklevel=3)
        return dict(vars(args))
    raise TypeError(f"args must be None, a dict, an argparse.Namespace, a DEQConfig or an "
                    f"object with attributes, got {type(args).__name__}")


def suggest(name, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_kwargs(kwargs, known, where: str) -> None:
    """Keyword arguments passed directly must be known options (a typo is an error)."""
    for name in kwargs:
        if name not in known:
            raise TypeError(f"{where}: unknown option {name!r}{suggest(name, known)}; "
                            f"known: {', '.join(sorted(known))}")


def read(args=None, kwargs=None, *, where="get_deq", strict=True) -> dict:
    """args (any config object) updated with kwargs, as torchdeq's DEQConfig; with strict,
    unknown keyword arguments are errors. The program's own names in args stay (ignored)."""
    kwargs = dict(kwargs or {})
    if strict:
        check_kwargs(kwargs, KNOWN, where)
    config = to_dict(args)
    config.update(kwargs)
    return config

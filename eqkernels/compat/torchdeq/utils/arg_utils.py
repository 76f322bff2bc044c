"""torchdeq.utils.arg_utils: add_deq_args."""
from __future__ import annotations

from eqkernels.compat.torchdeq._options import OPTIONS


def add_deq_args(parser):
    """Declare torchdeq's DEQ options (--f_solver, --f_max_iter, --ift, ...) on an
    argparse.ArgumentParser with torchdeq's types and defaults; returns the parser.
    No option has `choices`: solvers, norms and cores a program registers must parse."""
    for name, kwargs in OPTIONS.items():
        parser.add_argument(f"--{name}", **kwargs)
    return parser


__all__ = ["add_deq_args"]

"""torchdeq.utils: add_deq_args (the argparse options of torchdeq 0.1.0)."""
from __future__ import annotations

from eqkernels.compat.torchdeq._options import OPTIONS


def add_deq_args(parser):
    """Declare torchdeq's DEQ options (--f_solver, --f_max_iter, --ift, ...) on an
    argparse.ArgumentParser, with torchdeq's defaults; returns the parser."""
    for name, (kwargs, _) in OPTIONS.items():
        parser.add_argument(f"--{name}", **kwargs)
    return parser


__all__ = ["add_deq_args"]

"""torchdeq 0.1.0's API on eqkernels: run torchdeq code by changing its imports.

    import eqkernels.compat.torchdeq as torchdeq            # was: import torchdeq
    from eqkernels.compat.torchdeq import get_deq, apply_norm, reset_norm, add_deq_args

get_deq(args / **kwargs) -> deq; deq(func, z_init) -> (list of states, info dict);
add_deq_args(parser); apply_norm / reset_norm / remove_norm; variational dropout;
jac_reg / power_method / fp_correction; reset_deq. Submodules mirror torchdeq's
(`.core`, `.norm`, `.dropout`, `.loss`, `.utils`). Options torchdeq does not have are
errors here (torchdeq ignores them): a misspelt `f_max_iters=` fails at get_deq.
"""
from eqkernels.compat.torchdeq.core import DEQ, get_deq, reset_deq
from eqkernels.compat.torchdeq.dropout import (VariationalDropout, VariationalDropout1d,
                                               VariationalDropout2d, VariationalDropout3d,
                                               VariationalDropToken1d, VariationalDropToken2d,
                                               VariationalDropToken3d, reset_dropout)
from eqkernels.compat.torchdeq.loss import fp_correction, jac_reg, power_method
from eqkernels.compat.torchdeq.norm import apply_norm, remove_norm, reset_norm
from eqkernels.compat.torchdeq.utils import add_deq_args

__all__ = ["DEQ", "get_deq", "reset_deq", "add_deq_args", "apply_norm", "reset_norm",
           "remove_norm", "VariationalDropout", "VariationalDropout1d", "VariationalDropout2d",
           "VariationalDropout3d", "VariationalDropToken1d", "VariationalDropToken2d",
           "VariationalDropToken3d", "reset_dropout", "jac_reg", "power_method",
           "fp_correction"]

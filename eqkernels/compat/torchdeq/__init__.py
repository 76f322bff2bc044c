"""torchdeq 0.1.0's API on eqkernels: run torchdeq code by changing its imports.

    import eqkernels.compat.torchdeq as torchdeq            # was: import torchdeq
    from eqkernels.compat.torchdeq.norm import apply_norm   # was: from torchdeq.norm import ...

Every module and function of torchdeq's documentation and of its deq-zoo programs, with
torchdeq's signatures and defaults: core (get_deq, reset_deq, register_deq, DEQBase,
DEQIndexing, DEQSliced), solver (get_solver, register_solver, solver_stat_from_final_step,
anderson_solver, broyden_solver, fixed_point_iter, simple_fixed_point_iter, SolverStat),
norm (apply_norm, reset_norm, remove_norm, register_norm, register_norm_module, WeightNorm,
SpectralNorm), dropout (variational dropout, reset_dropout), loss (fp_correction,
register_weight_func, jac_reg, power_method), grad (backward_factory), utils (add_deq_args,
mem_gc, mixed_init, DEQConfig). The solves run on eqkernels' solvers. Where the behaviour
differs from torchdeq's, the README's table of differences says how; a keyword option that
is no torchdeq option is an error here (torchdeq ignores it).
"""
from eqkernels.compat.torchdeq import core, dropout, grad, loss, norm, solver, utils
# torchdeq's top level also carries these submodules (a side effect of its star imports)
from eqkernels.compat.torchdeq.loss import correction, jacobian
from eqkernels.compat.torchdeq.norm import base_norm, spectral_norm, weight_norm
from eqkernels.compat.torchdeq.utils import arg_utils, config, init, layer_utils, mem
from eqkernels.compat.torchdeq.core import get_deq, register_deq, reset_deq
from eqkernels.compat.torchdeq.dropout import (VariationalDropout, VariationalDropout1d,
                                               VariationalDropout2d, VariationalDropout3d,
                                               VariationalDropToken1d, VariationalDropToken2d,
                                               VariationalDropToken3d, reset_dropout)
from eqkernels.compat.torchdeq.loss import (fp_correction, jac_reg, power_method,
                                            register_weight_func)
from eqkernels.compat.torchdeq.norm import (apply_norm, register_norm, register_norm_module,
                                            remove_norm, reset_norm)
from eqkernels.compat.torchdeq.solver import (get_solver, register_solver,
                                              solver_stat_from_final_step)
from eqkernels.compat.torchdeq.utils import add_deq_args, mem_gc, mixed_init

__all__ = ["get_deq", "reset_deq", "register_deq", "add_deq_args", "apply_norm", "reset_norm",
           "remove_norm", "register_norm", "register_norm_module", "get_solver",
           "register_solver", "solver_stat_from_final_step", "VariationalDropout",
           "VariationalDropout1d", "VariationalDropout2d", "VariationalDropout3d",
           "VariationalDropToken1d", "VariationalDropToken2d", "VariationalDropToken3d",
           "reset_dropout", "fp_correction", "register_weight_func", "jac_reg",
           "power_method", "mem_gc", "mixed_init", "core", "dropout", "grad", "loss", "norm",
           "solver", "utils"]

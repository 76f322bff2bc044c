"""eqkernels: fused kernels and a layer API for implicit (deep-equilibrium) models.

    import eqkernels as eqk
    deq = eqk.DEQ(block, solver="anderson", max_iter=50, tol=1e-4, backward="implicit")
    z, info = deq(x)

`eqk.backends()` says which kernel backends this install has; missing ones fall
back to the plain-PyTorch reference, never to an import error.
"""
from eqkernels._backends import backends
from eqkernels.backward import fp_correction
from eqkernels.diagnostics import spectral_radius
from eqkernels.ops.looped import LoopedUpdate
from eqkernels.nn import DEQ, apply_spectral_norm, apply_weight_norm, remove_norm
from eqkernels.nn import (VariationalDropout, VariationalDropout1d, VariationalDropout2d,
                          apply_norm, reset_dropout, reset_norm)
from eqkernels.regularization import jacobian_reg
from eqkernels.solvers import DivergenceError, SolverInfo, anderson, broyden, damped, fixed_point
from eqkernels.solvers import (Anderson, Broyden, Damped, FixedPoint, SolveOptions, SolverState,
                               solve)

__version__ = "0.1.0"

__all__ = ["DEQ", "LoopedUpdate", "backends", "anderson", "broyden", "damped", "fixed_point", "SolverInfo",
           "DivergenceError", "spectral_radius", "apply_weight_norm", "apply_spectral_norm",
           "remove_norm", "__version__", "apply_norm", "reset_norm", "reset_dropout",
           "VariationalDropout", "VariationalDropout1d", "VariationalDropout2d", "jacobian_reg"]

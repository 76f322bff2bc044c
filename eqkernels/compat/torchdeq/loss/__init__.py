"""torchdeq.loss: fp_correction, register_weight_func, jac_reg, power_method."""
from eqkernels.compat.torchdeq.loss.correction import fp_correction, register_weight_func
from eqkernels.compat.torchdeq.loss.jacobian import jac_reg, power_method

__all__ = ["fp_correction", "register_weight_func", "jac_reg", "power_method"]

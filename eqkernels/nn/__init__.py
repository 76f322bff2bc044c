"""Layer API: the DEQ module and norm helpers for its block."""
from eqkernels.nn.deq import DEQ
from eqkernels.nn.norm import apply_spectral_norm, apply_weight_norm, remove_norm

__all__ = ["DEQ", "apply_spectral_norm", "apply_weight_norm", "remove_norm"]

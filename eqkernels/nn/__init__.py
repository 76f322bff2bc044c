"""Layer API: the DEQ module, norm helpers for its block, and a token mixer for blocks."""
from eqkernels.nn.attention import SelfAttention
from eqkernels.nn.deq import DEQ
from eqkernels.nn.norm import apply_spectral_norm, apply_weight_norm, remove_norm

__all__ = ["DEQ", "SelfAttention", "apply_spectral_norm", "apply_weight_norm", "remove_norm"]

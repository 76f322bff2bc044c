"""torchdeq.norm on eqkernels: apply_norm, reset_norm, remove_norm, register_norm,
register_norm_module, and the classes WeightNorm / SpectralNorm (torchdeq's parameter
layout: torchdeq checkpoints load, and ours load into torchdeq)."""
from eqkernels.compat.torchdeq.norm.base_norm import (apply_norm, register_norm,
                                                      register_norm_module, remove_norm,
                                                      reset_norm)
from eqkernels.compat.torchdeq.norm.spectral_norm import SpectralNorm
from eqkernels.compat.torchdeq.norm.weight_norm import WeightNorm

__all__ = ["apply_norm", "reset_norm", "remove_norm", "register_norm", "register_norm_module",
           "WeightNorm", "SpectralNorm"]

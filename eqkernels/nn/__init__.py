"""Layer API: the DEQ module, norm helpers for its block, a token mixer for blocks, and the
looped-transformer blocks (SwiGLU, LoopedTransformerStack over fused ops; LoopedAttentionStack)."""
from eqkernels.nn.attention import SelfAttention
from eqkernels.nn.deq import DEQ
from eqkernels.nn.looped_attention import (AttentionLayerWeights, LoopedAttentionLayer,
                                           LoopedAttentionStack)
from eqkernels.nn.looped_transformer import (LayerWeights, LoopedTransformerLayer,
                                             LoopedTransformerStack, SwiGLU, rms_norm,
                                             swiglu_inner_width)
from eqkernels.nn.dropout import (VariationalDropout, VariationalDropout1d,
                                  VariationalDropout2d, VariationalDropout3d,
                                  VariationalDropToken1d, VariationalDropToken2d,
                                  VariationalDropToken3d, reset_dropout)
from eqkernels.nn.norm import (apply_norm, apply_spectral_norm, apply_weight_norm, remove_norm,
                               reset_norm)

__all__ = ["DEQ", "SelfAttention", "SwiGLU", "LoopedTransformerStack", "LoopedTransformerLayer",
           "LayerWeights", "LoopedAttentionStack", "LoopedAttentionLayer", "AttentionLayerWeights",
           "swiglu_inner_width", "rms_norm", "apply_spectral_norm", "apply_weight_norm",
           "remove_norm", "apply_norm", "reset_norm", "reset_dropout", "VariationalDropout",
           "VariationalDropout1d", "VariationalDropout2d", "VariationalDropout3d",
           "VariationalDropToken1d", "VariationalDropToken2d", "VariationalDropToken3d"]

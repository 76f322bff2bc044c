"""A looped (weight-tied) transformer whose tokens mix by self-attention: EqR's block with
`mlp_t: false` (its Maze model), post-norm layers on latents h: (B, L, C):

    h <- norm_C(h + attn(h))       attn: multi-head self-attention (eqk.nn.SelfAttention), RoPE
                                   over the L tokens ("rope") or a height x width board
                                   ("rope2d"), or no positions ("none"); no bias
    h <- norm_C(h + mlp(h))        mlp: SwiGLU over the C channels

Both RMSNorms run over C and have no learned weight (EqR's rms_norm, in float32). Parameter
names: layers.{i}.attn.qkv_proj.weight (3C, C), rows [q heads | k heads | v heads];
layers.{i}.attn.o_proj.weight (C, C); layers.{i}.mlp.gate_up_proj.weight (2I, C);
layers.{i}.mlp.down_proj.weight (C, I) (an EqR checkpoint's `self_attn.` is our `attn.`).

The same two-call interface as LoopedTransformerStack: `w = stack.weights(dtype)` casts the
matrices once per forward and readies the rotary tables on the parameters' device;
`stack.apply(h, w)` runs the layers in plain PyTorch (attention through
F.scaled_dot_product_attention), which autograd records and torch.compile traces without a
graph break. There is no fused chain for this block: its attention is SDPA's kernel.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence

import torch
from torch import nn

from eqkernels.nn.attention import ROPE_BASE, SelfAttention
from eqkernels.nn.looped_transformer import SwiGLU, _swiglu_channels, rms_norm

__all__ = ["LoopedAttentionLayer", "LoopedAttentionStack", "AttentionLayerWeights"]


class AttentionLayerWeights(NamedTuple):
    """One attention layer's matrices in the latents' dtype, made once per forward."""
    attn: tuple              # SelfAttention.cast_weights: (qkv, qkv bias, out, out bias)
    gate_up: torch.Tensor    # (2I, C) mlp.gate_up_proj.weight
    down: torch.Tensor       # (C, I)  mlp.down_proj.weight


class LoopedAttentionLayer(nn.Module):
    """h <- norm_C(h + attn(h)); h <- norm_C(h + mlp(h)) on h: (B, L, hidden)."""

    def __init__(self, hidden: int, heads: int, expansion: float, eps: float, *,
                 pos_encoding: str = "none", seq_len: Optional[int] = None,
                 board: Optional[Sequence[int]] = None, rope_base: float = ROPE_BASE):
        super().__init__()
        self.eps = float(eps)
        self.attn = SelfAttention(hidden, heads, bias=False, pos_encoding=pos_encoding,
                                  seq_len=seq_len, board=board, rope_base=rope_base)
        self.mlp = SwiGLU(hidden, expansion)

    def weights(self, dtype: torch.dtype) -> AttentionLayerWeights:
        """This layer's matrices in `dtype`; also builds the rotary tables on the parameters'
        device (once), so that a compiled or captured call never builds them."""
        if self.attn.rotary is not None:
            wide = torch.float64 if dtype == torch.float64 else torch.float32
            self.attn.rotary.tables(self.mlp.down_proj.weight.device, wide)
        cast = (lambda w: w if w.dtype == dtype else w.to(dtype))
        return AttentionLayerWeights(self.attn.cast_weights(dtype),
                                     cast(self.mlp.gate_up_proj.weight),
                                     cast(self.mlp.down_proj.weight))

    def apply(self, h: torch.Tensor, w: AttentionLayerWeights) -> torch.Tensor:
        """The layer in plain PyTorch, rounding to h's dtype after each op (EqR's eager math)."""
        h = rms_norm(h + self.attn(h, w.attn), self.eps)
        return rms_norm(h + _swiglu_channels(h, w.gate_up, w.down), self.eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.apply(h, self.weights(h.dtype))


class LoopedAttentionStack(nn.Module):
    """`layers` post-norm attention / channel-MLP layers on latents (B, seq_len, hidden).

    heads: attention heads (hidden % heads == 0; "rope2d" needs hidden / heads % 4 == 0);
    expansion: the SwiGLU width factor; eps: the RMSNorms' epsilon; pos_encoding, seq_len,
    board, rope_base: as eqk.nn.SelfAttention ("rope" needs seq_len, "rope2d" a board of
    seq_len cells). seq_len is the token count every call must have.
    """

    def __init__(self, layers: int, hidden: int, heads: int, expansion: float = 4.0,
                 eps: float = 1e-5, *, pos_encoding: str = "none", seq_len: Optional[int] = None,
                 board: Optional[Sequence[int]] = None, rope_base: float = ROPE_BASE):
        super().__init__()
        for name, v in (("layers", layers), ("hidden", hidden), ("heads", heads)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        if board is not None and seq_len is not None and board[0] * board[1] != seq_len:
            raise ValueError(f"board {board[0]}x{board[1]} has {board[0] * board[1]} cells, "
                             f"seq_len is {seq_len}")
        self.seq_len, self.hidden, self.eps = seq_len, hidden, float(eps)
        self.layers = nn.ModuleList(
            LoopedAttentionLayer(hidden, heads, expansion, eps, pos_encoding=pos_encoding,
                                 seq_len=seq_len, board=board, rope_base=rope_base)
            for _ in range(layers))

    def weights(self, dtype: torch.dtype) -> List[AttentionLayerWeights]:
        """Per-layer weights in `dtype`, cast once per forward and reused by its updates."""
        return [layer.weights(dtype) for layer in self.layers]

    def apply(self, h: torch.Tensor, weights: List[AttentionLayerWeights]) -> torch.Tensor:
        """blocks(h) in plain PyTorch (autograd records it). h: (B, seq_len, hidden) in the
        weights' dtype. Returns a new tensor."""
        for layer, w in zip(self.layers, weights):
            h = layer.apply(h, w)
        return h

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.apply(h, self.weights(h.dtype))

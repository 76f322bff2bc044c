"""Multi-head self-attention with rotary position embeddings (RoPE), a token mixer for
weight-tied blocks: looped transformers, the Sudoku reasoner's attention option, EqR's Maze model.

Positions (`pos_encoding`), as EqR's models/layers.py defines them:
  "none"   no positions.
  "rope"   1-D, token p of `seq_len`. The head dim d splits into halves x1 = x[:d/2],
           x2 = x[d/2:] ("rotate half", not interleaved pairs); with angle
           a_i = p * base^(-2i/d), i < d/2:
               x1_i' = x1_i cos a_i - x2_i sin a_i,   x2_i' = x2_i cos a_i + x1_i sin a_i.
  "rope2d" a height x width board, token p = row * width + col (row-major). The first half
           of the head dim is rotated by `row` and the second half by `col`, each as 1-D RoPE
           of dimension d/2 (so d must be a multiple of 4).
  base = 10000 (EqR's rope_theta). Every token has a position: EqR has no prefix tokens.
Precision, EqR's: the angle tables are built in float32 exactly as EqR builds them
(inv_freq = 1 / base ** (arange(0, d, 2) / d), angle = position * inv_freq, then cos / sin,
on the CPU), so an EqR checkpoint sees the same tables. q and k are rotated in float32
(float64 for float64 inputs) and cast back to their dtype, as EqR's apply_rotary_pos_emb does
for bf16 latents. The tables are not buffers: `module.to(torch.bfloat16)` cannot round them.
Attention: softmax(q k^T / sqrt(d)) v per head, not causal, through
F.scaled_dot_product_attention, so flash / cuDNN / memory-efficient kernels run on a GPU.
Parameters, EqR's Attention with num_key_value_heads = heads (an EqR checkpoint's
`self_attn.qkv_proj.weight` / `self_attn.o_proj.weight` load as they are):
  qkv_proj.weight (3 * width, width): rows [q heads | k heads | v heads], d rows per head;
  o_proj.weight (width, width); biases only with bias=True (EqR has none).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

POS_ENCODINGS = ("none", "rope", "rope2d")
ROPE_BASE = 10000.0


def rotary_tables(head_dim: int, length: int, base: float = ROPE_BASE,
                  dtype: torch.dtype = torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
    """1-D RoPE tables (cos, sin) for positions 0..length-1: each (length, head_dim) in
    `dtype`, computed on the CPU. float32 gives EqR's RotaryEmbedding tables bit for bit;
    float64 the exact angles (to float64 rounding)."""
    if head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim must be even and >= 2 for rotary embeddings, got {head_dim}")
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=dtype) / head_dim))
    angles = torch.outer(torch.arange(length, dtype=dtype), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)   # the same angle for x1_i and x2_i
    return angles.cos(), angles.sin()


def board_rotary_tables(head_dim: int, height: int, width: int, base: float = ROPE_BASE,
                        dtype: torch.dtype = torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
    """2-D RoPE tables (cos, sin), each (height * width, head_dim), row-major tokens: the
    first head_dim/2 columns are the row's 1-D table, the rest the column's (EqR's
    RotaryEmbedding2D, laid out per token)."""
    if head_dim < 4 or head_dim % 4:
        raise ValueError(f"head_dim must be a multiple of 4 for 2-D rotary embeddings, got "
                         f"{head_dim}")
    rows = rotary_tables(head_dim // 2, height, base, dtype)
    cols = rotary_tables(head_dim // 2, width, base, dtype)
    r = torch.arange(height).repeat_interleave(width)
    c = torch.arange(width).repeat(height)
    return tuple(torch.cat((row_t[r], col_t[c]), dim=-1) for row_t, col_t in zip(rows, cols))


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 groups: int = 1) -> torch.Tensor:
    """Rotate x (B, L, ..., d) by per-token tables cos, sin (L, d); returns x's dtype.

    groups=1: 1-D RoPE (rotate halves of d); groups=2: 2-D RoPE (rotate halves within each
    half of d). Computed in cos's dtype: x*cos + rotate(x)*sin, the order EqR computes it in.
    """
    L, d = cos.shape
    if x.shape[1] != L or x.shape[-1] != d:
        raise ValueError(f"x must be (B, {L}, ..., {d}) for these tables, got {tuple(x.shape)}")
    shape = (L,) + (1,) * (x.dim() - 3) + (d,)
    wide = x.to(cos.dtype)
    x1, x2 = wide.unflatten(-1, (groups, 2, d // (2 * groups))).unbind(-2)
    rotated = torch.stack((-x2, x1), dim=-2).flatten(-3)
    return (wide * cos.view(shape) + rotated * sin.view(shape)).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """RoPE of one layout: `rotate(x)` for x (B, L, ..., head_dim), L = seq_len or H * W.

    pos_encoding: "rope" (needs seq_len) or "rope2d" (needs board = (height, width)).
    Tables are built once on the CPU in float32 (EqR's) and cached per device and compute
    dtype (float32, or float64 for float64 inputs).
    """

    def __init__(self, head_dim: int, pos_encoding: str, seq_len: Optional[int] = None,
                 board: Optional[Sequence[int]] = None, base: float = ROPE_BASE):
        super().__init__()
        if not isinstance(base, (int, float)) or not math.isfinite(base) or base <= 1:
            raise ValueError(f"base must be a finite number > 1, got {base!r}")
        if pos_encoding == "rope":
            if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
                raise ValueError(f"pos_encoding 'rope' needs seq_len, an int >= 1, got {seq_len!r}")
            cos, sin = rotary_tables(head_dim, seq_len, base)
            self.groups, self.board = 1, None
        elif pos_encoding == "rope2d":
            if board is None or len(board) != 2 or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in board):
                raise ValueError(f"pos_encoding 'rope2d' needs board = (height, width), ints >= 1, "
                                 f"got {board!r}")
            self.board = (board[0], board[1])
            cos, sin = board_rotary_tables(head_dim, *self.board, base=base)
            self.groups = 2
        else:
            raise ValueError(f"RotaryEmbedding pos_encoding must be 'rope' or 'rope2d', got "
                             f"{pos_encoding!r}")
        self.pos_encoding, self.head_dim, self.base = pos_encoding, head_dim, base
        self.seq_len = cos.shape[0]
        self._tables: Dict[tuple, Tuple[torch.Tensor, torch.Tensor]] = {
            ("cpu", torch.float32): (cos, sin)}

    def tables(self, device, dtype=torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (seq_len, head_dim), on `device` in `dtype`."""
        key = (str(torch.device(device)), dtype)
        if key not in self._tables:
            cos, sin = self._tables[("cpu", torch.float32)]
            self._tables[key] = tuple(t.to(device=device, dtype=dtype) for t in (cos, sin))
        return self._tables[key]

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, seq_len, ..., head_dim) rotated, in x's dtype (computed in float32, float64
        for float64 x)."""
        if x.shape[1] != self.seq_len:
            where = (f"a {self.board[0]}x{self.board[1]} board" if self.board
                     else f"seq_len {self.seq_len}")
            raise ValueError(f"{self.pos_encoding} is set up for {where} ({self.seq_len} tokens), "
                             f"got {x.shape[1]} tokens")
        wide = torch.float64 if x.dtype == torch.float64 else torch.float32
        cos, sin = self.tables(x.device, wide)
        return apply_rotary(x, cos, sin, self.groups)

    def extra_repr(self) -> str:
        where = f"board={self.board}" if self.board else f"seq_len={self.seq_len}"
        return f"{self.pos_encoding}, head_dim={self.head_dim}, {where}, base={self.base:g}"


class SelfAttention(nn.Module):
    """Multi-head self-attention over all tokens: (B, L, width) -> (B, L, width).

    pos_encoding: "none" (default), "rope" (1-D, needs seq_len) or "rope2d" (needs
    board = (height, width), L = height * width); rope_base: EqR's rope_theta.
    forward(h, weights=None): h float32, bfloat16 or float64; `weights` from
    cast_weights(h.dtype), cast once and reused across the calls of a loop (default: cast
    on each call). Output in h's dtype.
    """

    def __init__(self, width: int, heads: int, bias: bool = True, *, pos_encoding: str = "none",
                 seq_len: Optional[int] = None, board: Optional[Sequence[int]] = None,
                 rope_base: float = ROPE_BASE):
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        if pos_encoding not in POS_ENCODINGS:
            raise ValueError(f"pos_encoding must be one of {POS_ENCODINGS}, got {pos_encoding!r}")
        self.heads = heads
        self.head_dim = width // heads
        self.pos_encoding = pos_encoding
        self.qkv_proj = nn.Linear(width, 3 * width, bias=bias)
        self.o_proj = nn.Linear(width, width, bias=bias)
        self.rotary = (None if pos_encoding == "none" else
                       RotaryEmbedding(self.head_dim, pos_encoding, seq_len, board, rope_base))

    def cast_weights(self, dtype: torch.dtype) -> tuple:
        """(qkv weight, qkv bias, out weight, out bias) in `dtype` (biases None without bias)."""
        return tuple(None if t is None else t if t.dtype == dtype else t.to(dtype)
                     for t in (self.qkv_proj.weight, self.qkv_proj.bias,
                               self.o_proj.weight, self.o_proj.bias))

    def forward(self, h: torch.Tensor, weights: Optional[tuple] = None) -> torch.Tensor:
        B, L, width = h.shape
        w_qkv, b_qkv, w_o, b_o = self.cast_weights(h.dtype) if weights is None else weights
        qkv = F.linear(h, w_qkv, b_qkv).view(B, L, 3, self.heads, self.head_dim)
        if self.rotary is None:
            q, k = qkv[:, :, 0], qkv[:, :, 1]
        else:
            q, k = self.rotary.rotate(qkv[:, :, :2]).unbind(2)
        mixed = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                               qkv[:, :, 2].transpose(1, 2))
        return F.linear(mixed.transpose(1, 2).reshape(B, L, width), w_o, b_o)

"""Multi-head self-attention, a token mixer for weight-tied blocks (looped transformers,
the Sudoku reasoner's attention option)."""
import torch
from torch import nn
from torch.nn import functional as F


class SelfAttention(nn.Module):
    """Multi-head self-attention over all tokens: (B, L, width) -> (B, L, width)."""

    def __init__(self, width: int, heads: int, bias: bool = True):
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.heads = heads
        self.qkv_proj = nn.Linear(width, 3 * width, bias=bias)
        self.o_proj = nn.Linear(width, width, bias=bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, L, width = h.shape
        q, k, v = self.qkv_proj(h).view(B, L, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v)
        return self.o_proj(mixed.transpose(1, 2).reshape(B, L, width))

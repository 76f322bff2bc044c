"""Sudoku equilibrium reasoner: a small weight-tied block iterated to task-conditioned attractors.

Shape of the recipe (Equilibrium Reasoner / HRM family):
  x = embed(tokens) * sqrt(hidden); latents z_H, z_L: (B, 81, hidden), random starts.
  One update of a latent z with injection u:
      z <- (1 - damping) z + damping * blocks(z + u) + noise_std * eps
  which is exactly eqkernels' fused block-step epilogue (eqkernels.ops.block_step).
  One reasoning step = H_cycles rounds of { L_cycles updates of z_L with u = z_H + x,
  then one update of z_H with u = z_L }. Outputs: lm_head(z_H) per cell, and a halting
  head on z_H's first token.
  blocks = `layers` post-norm layers: h <- norm(h + SwiGLU over the 81 tokens),
  h <- norm(h + SwiGLU over hidden); norm = RMSNorm without scale, eps 1e-5, in float32.

Inference runs every update through the fused op, in place (no autograd, no per-update
allocation of z); the gradient-carrying updates of training use the same formula in
plain PyTorch so autograd sees them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from eqkernels.nn import SelfAttention
from eqkernels.ops.block_step import noise_key, resolve_block_step
from eqkernels.ops.tracking import SolveState
from sudoku.tokens import CELLS as SEQ_LEN, VOCAB_SIZE as VOCAB



@dataclass
class ReasonerConfig:
    hidden: int = 512
    layers: int = 2
    expansion: float = 4.0
    H_cycles: int = 3
    L_cycles: int = 6
    damping: float = 0.95
    noise_std: float = 0.01
    rms_eps: float = 1e-5
    attention: bool = False   # token mixing by self-attention instead of the token-axis MLP
    heads: int = 8
    vocab: int = VOCAB
    seq_len: int = SEQ_LEN

    def to_dict(self) -> dict:
        return asdict(self)


def swiglu_inner_width(width: int, expansion: float) -> int:
    """round(expansion * width * 2/3), rounded up to a multiple of 256 (1536 for 512, 256 for 81)."""
    inner = round(expansion * width * 2 / 3)
    return -(-inner // 256) * 256


def rms_norm(h: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm without a learned scale, computed in float32, returned in h's dtype."""
    h32 = h.float()
    return (h32 * torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + eps)).to(h.dtype)


class SwiGLU(nn.Module):
    def __init__(self, width: int, expansion: float):
        super().__init__()
        inner = swiglu_inner_width(width, expansion)
        self.gate_up_proj = nn.Linear(width, 2 * inner, bias=False)  # gate half, then up half
        self.down_proj = nn.Linear(inner, width, bias=False)

    def forward(self, h):
        gate, up = self.gate_up_proj(h).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class ReasonerLayer(nn.Module):
    """h <- norm(h + token mixing(h)); h <- norm(h + SwiGLU over hidden)."""

    def __init__(self, cfg: ReasonerConfig):
        super().__init__()
        self.eps = cfg.rms_eps
        if cfg.attention:
            self.attn = SelfAttention(cfg.hidden, cfg.heads, bias=False)
        else:
            self.mlp_t = SwiGLU(cfg.seq_len, cfg.expansion)  # mixes the 81 cells, per channel
        self.mlp = SwiGLU(cfg.hidden, cfg.expansion)

    def forward(self, h):
        if hasattr(self, "attn"):
            mixed = self.attn(h)
        else:
            mixed = self.mlp_t(h.transpose(1, 2)).transpose(1, 2)
        h = rms_norm(h + mixed, self.eps)
        return rms_norm(h + self.mlp(h), self.eps)


class ReasonerStack(nn.Module):
    def __init__(self, cfg: ReasonerConfig):
        super().__init__()
        self.layers = nn.ModuleList(ReasonerLayer(cfg) for _ in range(cfg.layers))

    def forward(self, h):
        for layer in self.layers:
            h = layer(h)
        return h


class SudokuReasoner(nn.Module):
    """`logits, q_logits, carry = model(tokens, carry=None, steps=1)`.

    tokens: (B, 81) int64 in [0, vocab). carry: (z_H, z_L) from a previous call (detached),
    or None for fresh random starts. steps: reasoning steps to run. Returns logits
    (B, 81, vocab), halting logits (B, 2) and the new carry.
    grad: "none" (inference: every update fused and in place), "last" (the recipe's 1-step
    gradient: only the last z_L update and the z_H update are recorded by autograd), or an
    int k >= 1 (the last k rounds recorded whole: a truncated unroll).
    """

    def __init__(self, cfg: Optional[ReasonerConfig] = None):
        super().__init__()
        self.cfg = cfg = cfg or ReasonerConfig()
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.hidden)
        nn.init.normal_(self.embed_tokens.weight, std=1.0 / math.sqrt(cfg.hidden))
        self.L_level = ReasonerStack(cfg)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)
        self.q_head = nn.Linear(cfg.hidden, 2, bias=True)

    # ---- pieces -----------------------------------------------------------------------
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.shape[1] != self.cfg.seq_len:
            raise ValueError(f"tokens must be (B, {self.cfg.seq_len}), got {tuple(tokens.shape)}")
        if tokens.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"tokens must be integer, got {tokens.dtype}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.cfg.vocab):
            raise ValueError(f"tokens must lie in [0, {self.cfg.vocab})")
        return self.embed_tokens(tokens) * math.sqrt(self.cfg.hidden)

    def initial_carry(self, batch: int, device=None, generator=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Fresh random starts: truncated normal (std 1, cut at +-2) z_H, z_L."""
        shape = (batch, self.cfg.seq_len, self.cfg.hidden)
        z = torch.randn((2,) + shape, device=device, generator=generator).clamp_(-2.0, 2.0)
        return z[0].clone(), z[1].clone()

    def heads(self, z_H: torch.Tensor):
        return self.lm_head(z_H.to(self.lm_head.weight.dtype)), self.q_head(z_H[:, 0].to(self.q_head.weight.dtype))

    # ---- the loop -----------------------------------------------------------------------
    def forward(self, tokens, carry=None, steps: int = 1, grad: str = "last", seed: Optional[int] = None):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        rounds = steps * self.cfg.H_cycles
        recorded = {"none": 0, "last": 1}.get(grad, grad)
        if not isinstance(recorded, int) or not 0 <= recorded <= rounds:
            raise ValueError(f"grad must be 'none', 'last' or an int in [1, {rounds}], got {grad!r}")
        x = self.embed(tokens)
        B = x.shape[0]
        if carry is None:
            carry = self.initial_carry(B, x.device)
        z_H, z_L = (c.detach().float().contiguous().clone() for c in carry)
        runner = _FusedUpdates(self, z_H, seed)
        with torch.no_grad():
            for _ in range(rounds - recorded):
                runner.round(z_H, z_L, x.detach())
        for _ in range(recorded):
            z_H, z_L = self._recorded_round(z_H, z_L, x, one_step=grad == "last")
        logits, q_logits = self.heads(z_H)
        return logits, q_logits, (z_H.detach(), z_L.detach())

    def _recorded_round(self, z_H, z_L, x, one_step):
        """One round as plain PyTorch ops, for autograd; one_step: the first L_cycles - 1
        updates carry no gradient (the recipe's 1-step gradient)."""
        cfg = self.cfg
        with torch.set_grad_enabled(torch.is_grad_enabled() and not one_step):
            for _ in range(cfg.L_cycles - 1):
                z_L = self._update(z_L, z_H + x)
        z_L = self._update(z_L, z_H + x)
        z_H = self._update(z_H, z_L)
        return z_H, z_L

    def _update(self, z, inj):
        f_out = self.L_level((z + inj).to(self.embed_tokens.weight.dtype)).float()
        out = (1 - self.cfg.damping) * z + self.cfg.damping * f_out
        if self.cfg.noise_std:
            out = out + self.cfg.noise_std * torch.randn_like(out)
        return out


class _FusedUpdates:
    """Runs updates through the fused epilogue, in place on the latents."""

    def __init__(self, model: SudokuReasoner, like: torch.Tensor, seed: Optional[int]):
        self.model = model
        self.B = like.shape[0]
        self.backend, self.step = resolve_block_step(like.device)
        # tol 0: never "converged" (halting is decided per reasoning step by the caller);
        # a sample whose latent turns NaN/Inf is frozen by the op and stays flagged here.
        self.state = SolveState.start(like.new_zeros(self.B, 1))
        self.seed = int(torch.randint(2**31 - 1, ()).item()) if seed is None else seed
        self.count = 0

    def update(self, z, inj):
        cfg = self.model.cfg
        f_out = self.model.L_level((z + inj).to(self.model.embed_tokens.weight.dtype))
        self.count += 1
        flat = z.view(self.B, -1)
        self.step(flat, f_out.float().reshape(self.B, -1), flat, self.state,
                  damping=cfg.damping, sigma=cfg.noise_std, key=noise_key(self.seed, self.count),
                  tol=0.0, stop_mode="abs")

    def round(self, z_H, z_L, x):
        for _ in range(self.model.cfg.L_cycles):
            self.update(z_L, z_H + x)
        self.update(z_H, z_L)

    @property
    def last_step_norm(self) -> torch.Tensor:
        """(B,) ||z_next - z|| of the latest update (z_H's, after a round)."""
        return self.state.abs_res

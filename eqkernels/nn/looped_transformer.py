"""Building blocks of looped (weight-tied) transformers over fused ops: SwiGLU MLPs and a stack
of post-norm MLP-mixer layers, with the damped update of a looped model folded in.

A layer (EqR's Sudoku block, TRM's / HRM's MLP variant) on h: (B, T, C):

    h <- norm_T(h + mlp_t(h))      mlp_t: SwiGLU over the T tokens, per channel; the RMSNorm
                                   runs over the T tokens (EqR's mlp_t)
    h <- norm_C(h + mlp(h))        mlp: SwiGLU over the C channels, RMSNorm over C

RMSNorms have no learned weight. The parameter names are EqR's, so its checkpoints load
unchanged: layers.{i}.mlp_t.gate_up_proj.weight (2I_t, T), layers.{i}.mlp_t.down_proj.weight
(T, I_t), layers.{i}.mlp.gate_up_proj.weight (2I, C), layers.{i}.mlp.down_proj.weight (C, I).

Two ways to run a stack on latents of one forward (weights cast once: `w = stack.weights(dtype)`):

    h = stack.apply(h, w)                          # plain PyTorch, autograd records it
    stack.update_(upd, z, inj, w)                  # z <- (1-l) z + l blocks(z + inj) + s eps

update_ (kernels="fused") is the fused chain, about three kernels a layer:
token_mix (z + inj folded into its load) -> swiglu_gate_up -> down_residual_sumsq ->
token_mix (the previous norm over C folded in as a per-row scale) -> ... ->
LoopedUpdate.normed (the last norm and the update in one pass). No host syncs and no
data-dependent allocation: CUDA-graph capturable and torch.compile(fullgraph=True)-traceable.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from eqkernels.ops.swiglu import down_residual_sumsq, prepare_gate_up, swiglu_gate_up
from eqkernels.ops.token_mix import PackedTokenWeights, prepare_token_mix, token_mix

__all__ = ["SwiGLU", "LoopedTransformerLayer", "LoopedTransformerStack", "LayerWeights",
           "swiglu_inner_width", "rms_norm", "KERNELS"]

KERNELS = ("fused", "eager")


def swiglu_inner_width(width: int, expansion: float) -> int:
    """round(expansion * width * 2/3), rounded up to a multiple of 256 (EqR's rule: 1536 for
    width 512 at expansion 4, 256 for the 81 Sudoku cells)."""
    inner = round(expansion * width * 2 / 3)
    return -(-inner // 256) * 256


def rms_norm(h: torch.Tensor, eps: float, dim: int = -1) -> torch.Tensor:
    """RMSNorm without a learned weight over `dim`, computed in float32 (float64 stays
    float64), returned in h's dtype (EqR's eager norm)."""
    if dim in (-1, h.dim() - 1):
        if h.dtype == torch.float64:
            return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
        return F.rms_norm(h, (h.shape[-1],), eps=eps)  # upcasts bf16 internally
    wide = h if h.dtype == torch.float64 else h.float()
    return (wide * torch.rsqrt(wide.pow(2).mean(dim, keepdim=True) + eps)).to(h.dtype)


class SwiGLU(nn.Module):
    """silu(x W_gate^T) * (x W_up^T) W_down^T over the last axis of width `width`.

    Parameters (EqR's names): gate_up_proj.weight (2I, width), the I gate rows then the I up
    rows; down_proj.weight (width, I); no bias; I = swiglu_inner_width(width, expansion).
    """

    def __init__(self, width: int, expansion: float):
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be an int >= 1, got {width!r}")
        if not expansion > 0:
            raise ValueError(f"expansion must be > 0, got {expansion!r}")
        self.width = width
        self.inner = swiglu_inner_width(width, expansion)
        self.gate_up_proj = nn.Linear(width, 2 * self.inner, bias=False)
        self.down_proj = nn.Linear(self.inner, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., width) -> (..., width), in x's dtype (the weights cast to it)."""
        w_gu, w_d = (p.to(x.dtype) for p in (self.gate_up_proj.weight, self.down_proj.weight))
        return _swiglu_channels(x, w_gu, w_d)


def _glu(gate, up):
    a = F.silu(gate)
    return a.mul_(up) if not torch.is_grad_enabled() else a * up  # in place: no autograd


def _swiglu_channels(h, w_gate_up, w_down):
    """SwiGLU over the last axis: (..., C) -> (..., C)."""
    gate, up = F.linear(h, w_gate_up).chunk(2, dim=-1)
    return F.linear(_glu(gate, up), w_down)


def _swiglu_tokens(h, w_gate_up, w_down):
    """SwiGLU over the token axis without transposing h: W @ h[b] for h (B, T, C), as one
    batched GEMM whose weight has batch stride 0 (no copies of h, contiguous results)."""
    B = h.shape[0]
    gate, up = torch.bmm(w_gate_up.expand(B, -1, -1), h).chunk(2, dim=1)
    return torch.bmm(w_down.expand(B, -1, -1), _glu(gate, up))


class LayerWeights(NamedTuple):
    """One layer's matrices in the latents' dtype, made once per forward."""
    t_gate_up: torch.Tensor  # (2I_t, T) mlp_t.gate_up_proj.weight
    t_down: torch.Tensor     # (T, I_t)  mlp_t.down_proj.weight
    gate_up: torch.Tensor    # (2I, C)   mlp.gate_up_proj.weight (prepare_gate_up's layout)
    down: torch.Tensor       # (C, I)    mlp.down_proj.weight
    t_packed: Optional[PackedTokenWeights] = None  # token_mix's kernel layout (fused path)


class LoopedTransformerLayer(nn.Module):
    """h <- norm_T(h + mlp_t(h)); h <- norm_C(h + mlp(h)) on h: (B, seq_len, hidden)."""

    def __init__(self, seq_len: int, hidden: int, expansion: float, eps: float):
        super().__init__()
        self.eps = float(eps)
        self.mlp_t = SwiGLU(seq_len, expansion)  # mixes the seq_len tokens, per channel
        self.mlp = SwiGLU(hidden, expansion)

    def weights(self, dtype: torch.dtype) -> LayerWeights:
        """This layer's matrices in `dtype` (cast once, reused by every update of a forward),
        and on CUDA the token MLP's packed copy the fused kernel reads (under no_grad: a
        constant of the forward; apply() uses the parameters' casts, which autograd records)."""
        def cast(w):
            return w if w.dtype == dtype else w.to(dtype)
        t_gu, t_d = cast(self.mlp_t.gate_up_proj.weight), cast(self.mlp_t.down_proj.weight)
        packed = None
        if t_gu.device.type == "cuda" and dtype != torch.float64:
            with torch.no_grad():
                packed = prepare_token_mix(t_gu, t_d)
        return LayerWeights(t_gu, t_d, prepare_gate_up(cast(self.mlp.gate_up_proj.weight)),
                            cast(self.mlp.down_proj.weight), packed)

    def apply(self, h: torch.Tensor, w: LayerWeights) -> torch.Tensor:
        """The layer in plain PyTorch (EqR's eager math, rounding to h's dtype after each op)."""
        h = rms_norm(h + _swiglu_tokens(h, w.t_gate_up, w.t_down), self.eps, dim=1)
        return rms_norm(h + _swiglu_channels(h, w.gate_up, w.down), self.eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.apply(h, self.weights(h.dtype))


class LoopedTransformerStack(nn.Module):
    """`layers` post-norm token-MLP / channel-MLP layers on latents (B, seq_len, hidden).

    layers: number of layers; seq_len: T, the tokens mlp_t mixes; hidden: C; expansion: the
    SwiGLU width factor (I = swiglu_inner_width(width, expansion)); eps: the RMSNorms' epsilon.
    Submodules: layers[i].mlp_t, layers[i].mlp (SwiGLU), EqR's parameter names.
    """

    def __init__(self, layers: int, seq_len: int, hidden: int, expansion: float = 4.0,
                 eps: float = 1e-5):
        super().__init__()
        for name, v in (("layers", layers), ("seq_len", seq_len), ("hidden", hidden)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        self.seq_len, self.hidden, self.eps = seq_len, hidden, float(eps)
        self.layers = nn.ModuleList(LoopedTransformerLayer(seq_len, hidden, expansion, eps)
                                    for _ in range(layers))

    def weights(self, dtype: torch.dtype) -> List[LayerWeights]:
        """Per-layer prepared weights in `dtype`: cast once per forward, reused by every update
        of that forward (inside autograd when the parameters require grad)."""
        return [layer.weights(dtype) for layer in self.layers]

    def apply(self, h: torch.Tensor, weights: List[LayerWeights]) -> torch.Tensor:
        """blocks(h) in plain PyTorch (the eager / reference path; autograd records it).
        h: (B, seq_len, hidden) in the weights' dtype. Returns a new tensor."""
        for layer, w in zip(self.layers, weights):
            h = layer.apply(h, w)
        return h

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.apply(h, self.weights(h.dtype))

    def tile_candidates(self, batch: int, dtype: torch.dtype,
                        device=None) -> Dict[str, List[tuple]]:
        """The Triton tile configurations worth timing for this stack's ops on latents
        (batch, seq_len, hidden) of `dtype` on `device` (a tuning sweep):
        {"token_mix": [...], "gate_up": [...], "down": [...]}, each list's first the default.
        Time update_(..., tiles={op: one of them, ...}) or the op alone with tiles=; {} where
        Triton is not importable."""
        try:
            from eqkernels.ops.triton import swiglu as tsw
            from eqkernels.ops.triton import token_mix as ttm
        except ImportError:
            return {}
        device = torch.device(device) if device is not None else next(self.parameters()).device
        arch = ttm.arch_of(device)
        layer = self.layers[0]
        T, C, I_t, I = self.seq_len, self.hidden, layer.mlp_t.inner, layer.mlp.inner
        M = batch * T
        return {"token_mix": ttm.candidate_tiles(batch, T, C, I_t, dtype, arch),
                "gate_up": tsw.gate_up_candidates(M, C, I, dtype, arch),
                "down": tsw.down_candidates(M, I, C, dtype, arch)}

    def _check(self, z: torch.Tensor, inj: Optional[torch.Tensor]) -> None:
        if z.dim() != 3 or tuple(z.shape[1:]) != (self.seq_len, self.hidden):
            raise ValueError(f"z must be a (B, {self.seq_len}, {self.hidden}) tensor, got shape "
                             f"{tuple(z.shape)}")
        if inj is not None and (inj.shape != z.shape or inj.dtype != z.dtype):
            raise ValueError(f"inj must have z's shape {tuple(z.shape)} and dtype {z.dtype}, "
                             f"got {tuple(inj.shape)} and {inj.dtype}")

    def update_(self, upd, z: torch.Tensor, inj: Optional[torch.Tensor],
                weights: List[LayerWeights], kernels: str = "fused", *, backend: str = "auto",
                tiles: Optional[Dict[str, Sequence[int]]] = None,
                variant: str = "fused") -> torch.Tensor:
        """z <- (1 - damping) z + damping * blocks(z + inj) + noise_std * eps, in place on z;
        returns z. Not recorded by autograd (training records apply() instead).

        upd: an eqk.LoopedUpdate (its damping, noise stream, step counter, step norms and
        divergence flags, as upd(z, f_out)); z: (B, seq_len, hidden) contiguous; inj: z's
        shape and dtype, or None; weights: self.weights(z.dtype).
        kernels: "fused" (the fused chain, about three kernels a layer; on CPU tensors its ops
        run their PyTorch references) or "eager" (upd(z, apply(z + inj, weights))).
        Fused chain only: backend ("auto", "triton", "reference") of the block ops (the update's
        own backend is upd's); tiles: {"token_mix" | "gate_up" | "down": tile configuration}
        for a tuning sweep (eqkernels.ops.triton.*.candidate_tiles / gate_up_candidates /
        down_candidates); variant: the SwiGLU GEMMs' variant, "fused" or "cublas".
        """
        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")
        self._check(z, inj)
        with torch.no_grad():
            if kernels == "eager":
                return upd(z, self.apply(z if inj is None else z + inj, weights))
            tiles = tiles or {}
            h, sumsq = z, None
            for i, w in enumerate(weights):
                # the previous layer's norm over C, deferred into this load (in_sumsq)
                h = token_mix(h, w.t_gate_up, w.t_down, eps=self.eps,
                              inj=inj if i == 0 else None, in_sumsq=sumsq, backend=backend,
                              tiles=tiles.get("token_mix", ()), packed=w.t_packed)
                a = swiglu_gate_up(h, w.gate_up, backend=backend, variant=variant,
                                   tiles=tiles.get("gate_up", ()))
                h, sumsq = down_residual_sumsq(a, w.down, h, backend=backend, variant=variant,
                                               tiles=tiles.get("down", ()))
            return upd.normed(z, h, sumsq, self.eps)

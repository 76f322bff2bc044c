"""Token-mixing sublayer of a looped transformer in one op: a SwiGLU MLP along the token axis,
the residual add and an RMSNorm over the tokens, on the (B, T, C) layout with no transposes.

For every sample b and channel c (x[b] is a (T, C) slab, the MLP mixes its T rows):

    x      = (h + inj) * in_scale[..., None]       (inj and in_scale optional, applied on load)
    g, u   = W_gate @ x[b],  W_up @ x[b]            (W_gate, W_up: the two (I, T) halves of
                                                     w_gate_up, gate rows first)
    y[b]   = x[b] + W_down @ (silu(g) * u)          (W_down: (T, I))
    out[b] = y[b] * rsqrt(mean over t of y[b, t, c]^2 + eps)   (no learned weight)

This is EqR's `mlp_t` sublayer followed by its post-norm over the tokens
(python/sudoku/model.py: rms_norm(h + _swiglu_tokens(h, ...), eps, dim=1)). `inj` lets the
first layer of a block read z + injection without materialising the sum; `in_scale` lets it
apply the previous layer's deferred RMSNorm over C (rsqrt(sumsq / C + eps) per row, see
eqkernels.ops.swiglu.down_residual_sumsq) as it loads.

Precision: the reference computes everything in float32 (float64 for float64 h) and rounds
once, to h's dtype. The Triton kernel accumulates in float32 too; its GEMM operands are in h's
dtype (the (B, T, C) input after inj/in_scale, and silu(g) * u before the down GEMM, are
rounded to bfloat16 for bfloat16 h: tensor-core operands), the residual is kept in float32.
float32 GEMMs are full float32 (no TF32), as PyTorch's default.

`token_mix` is the dispatcher: one argument check for every backend, then the backend: the
Triton kernel (torch.ops.eqk.token_mix_triton) on CUDA tensors, the reference elsewhere.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch.nn import functional as F

from eqkernels import _backends
from eqkernels.ops import _looped_checks

__all__ = ["token_mix", "token_mix_ref", "resolve_token_mix", "BACKENDS"]

BACKENDS = ("triton", "reference")  # the backends that implement this op


def _wide(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def token_mix_ref(h: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor, *,
                  eps: float, inj: Optional[torch.Tensor] = None,
                  in_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Plain-PyTorch token mixing (see the module docstring), computed in float32 (float64 for
    float64 h) and rounded once to h's dtype.

    h: (B, T, C); w_gate_up: (2I, T) (gate rows, then up rows); w_down: (T, I), h's dtype;
    inj: h's shape and dtype or None; in_scale: (B, T) (or (B*T,)) float32 (float64 for float64
    h) or None. Returns (B, T, C) in h's dtype.
    """
    wide = _wide(h.dtype)
    x = h.to(wide)
    if inj is not None:
        x = x + inj.to(wide)
    if in_scale is not None:
        x = x * in_scale.to(wide).reshape(h.shape[:2])[..., None]
    gate, up = torch.matmul(w_gate_up.to(wide), x).chunk(2, dim=1)  # (B, I, C) each
    y = x + torch.matmul(w_down.to(wide), F.silu(gate) * up)
    return (y * torch.rsqrt(y.pow(2).mean(1, keepdim=True) + eps)).to(h.dtype)


def _reference(h, w_gate_up, w_down, *, eps, inj, in_scale, tiles):
    return token_mix_ref(h, w_gate_up, w_down, eps=eps, inj=inj, in_scale=in_scale)


_IMPLEMENTATIONS = {"reference": _reference}


@torch.compiler.assume_constant_result  # resolved at trace time under torch.compile
def resolve_token_mix(device: torch.device, backend: str = "auto") -> str:
    """The backend token_mix runs on for tensors on `device`: "triton" on CUDA when Triton is
    there, else "reference" (CPU tensors: always the reference unless asked for "triton")."""
    return _backends.pick("token_mix", device, backend,
                          among=tuple(n for n in BACKENDS if n in _IMPLEMENTATIONS))


def token_mix(h: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor, *, eps: float,
              inj: Optional[torch.Tensor] = None, in_scale: Optional[torch.Tensor] = None,
              backend: str = "auto", tiles: Sequence[int] = ()) -> torch.Tensor:
    """out = rms_norm over T of (x + W_down (silu(W_gate x) * W_up x)), x = (h + inj) * in_scale,
    per sample and channel (see the module docstring).

    h: (B, T, C) float32 / bfloat16 (float64 too on the reference backend), contiguous;
    w_gate_up: (2I, T), gate rows then up rows; w_down: (T, I); both in h's dtype.
    inj: optional, h's shape and dtype, added on load. in_scale: optional (B, T) float32 per-row
    scale applied on load (float64 for float64 h). eps: the norm's epsilon.
    backend: "auto", "triton" or "reference". tiles: a Triton tile configuration from
    eqkernels.ops.triton.token_mix.candidate_tiles (empty: the default for the shape).
    Returns (B, T, C) in h's dtype. Not differentiable (the eager path is for training).
    """
    _looped_checks.token_mix(h, w_gate_up, w_down, inj, in_scale, eps)
    name = resolve_token_mix(h.device, backend)
    return _IMPLEMENTATIONS[name](h, w_gate_up, w_down, eps=float(eps), inj=inj,
                                  in_scale=in_scale, tiles=tuple(tiles))

"""Token-mixing sublayer of a looped transformer in one op: a SwiGLU MLP along the token axis,
the residual add and an RMSNorm over the tokens, on the (B, T, C) layout with no transposes.

For every sample b and channel c (x[b] is a (T, C) slab, the MLP mixes its T rows):

    x      = (h + inj) * in_scale[..., None]       (inj and in_scale optional, applied on load;
                                                     in_scale = rsqrt(in_sumsq / C + eps) when
                                                     given as in_sumsq)
    g, u   = W_gate @ x[b],  W_up @ x[b]            (W_gate, W_up: the two (I, T) halves of
                                                     w_gate_up, gate rows first)
    y[b]   = x[b] + W_down @ (silu(g) * u)          (W_down: (T, I))
    out[b] = y[b] * rsqrt(mean over t of y[b, t, c]^2 + eps)   (no learned weight)

This is EqR's `mlp_t` sublayer followed by its post-norm over the tokens
(python/reasoner/model.py: rms_norm(h + _swiglu_tokens(h, ...), eps, dim=1)). `inj` lets the
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

import importlib
from typing import NamedTuple, Optional, Sequence

import torch
from torch.nn import functional as F

from eqkernels import _backends
from eqkernels.ops import _looped_checks

__all__ = ["token_mix", "token_mix_ref", "resolve_token_mix", "prepare_token_mix",
           "PackedTokenWeights", "token_chunks", "BACKENDS"]

BACKENDS = ("triton", "reference")  # the backends that implement this op
# The Triton kernel keeps the (T x channel tile) slab and its products in registers: beyond 256
# tokens it no longer fits at any useful tile (auto then runs the reference).
MAX_T_TRITON = 256


def _wide(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def token_chunks(T: int):
    """(T_A, T_B): how the kernel pads T tokens on chip: the power of two T_A <= T, plus the next
    power of two covering the rest (0 if none); each at least 16 (a tensor-core K / N step).
    81 -> (64, 32): 96 rows, not 128."""
    T_A = max(16, 1 << (T.bit_length() - 1))
    rest = T - T_A
    T_B = 0 if rest <= 0 else max(16, 1 << (rest - 1).bit_length())
    return T_A, T_B


class PackedTokenWeights(NamedTuple):
    """The token MLP's weights as the Triton kernel reads them (prepare_token_mix)."""
    gate_up_t: torch.Tensor  # (T_PAD, 2I): [W_gate^T | W_up^T], rows >= T zero
    down_t: torch.Tensor     # (I, T_PAD): W_down^T, columns >= T zero


def prepare_token_mix(w_gate_up: torch.Tensor, w_down: torch.Tensor) -> PackedTokenWeights:
    """Transposed, zero-padded copies of the token MLP's weights (T padded to T_A + T_B,
    token_chunks): the kernel then loads aligned, unmasked, vectorised weight chunks. Make it
    once per forward (LoopedTransformerStack.weights does) and pass it as token_mix(...,
    packed=); 2 I T + I T elements, a few hundred KB."""
    T = w_gate_up.shape[1]
    T_pad = sum(token_chunks(T))
    gu = torch.zeros(T_pad, w_gate_up.shape[0], dtype=w_gate_up.dtype, device=w_gate_up.device)
    gu[:T] = w_gate_up.t()
    d = torch.zeros(w_down.shape[1], T_pad, dtype=w_down.dtype, device=w_down.device)
    d[:, :T] = w_down.t()
    return PackedTokenWeights(gu, d)


def token_mix_ref(h: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor, *,
                  eps: float, inj: Optional[torch.Tensor] = None,
                  in_scale: Optional[torch.Tensor] = None,
                  in_sumsq: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Plain-PyTorch token mixing (see the module docstring), computed in float32 (float64 for
    float64 h) and rounded once to h's dtype.

    h: (B, T, C); w_gate_up: (2I, T) (gate rows, then up rows); w_down: (T, I), h's dtype;
    inj: h's shape and dtype or None; in_scale: (B, T) (or (B*T,)) float32 (float64 for float64
    h) or None; in_sumsq: instead of in_scale, the rows' sums of squares over C (in_scale =
    rsqrt(in_sumsq / C + eps)). Returns (B, T, C) in h's dtype.
    """
    wide = _wide(h.dtype)
    if in_sumsq is not None:
        in_scale = torch.rsqrt(in_sumsq.to(wide) / h.shape[-1] + eps)
    x = h.to(wide)
    if inj is not None:
        x = x + inj.to(wide)
    if in_scale is not None:
        x = x * in_scale.to(wide).reshape(h.shape[:2])[..., None]
    B = x.shape[0]
    # W @ x[b] as one batched GEMM whose weight has batch stride 0 (no copies)
    gate, up = torch.bmm(w_gate_up.to(wide).expand(B, -1, -1), x).chunk(2, dim=1)
    y = x + torch.bmm(w_down.to(wide).expand(B, -1, -1), F.silu(gate) * up)
    return (y * torch.rsqrt(y.pow(2).mean(1, keepdim=True) + eps)).to(h.dtype)


def _reference(h, w_gate_up, w_down, *, eps, inj, in_scale, in_sumsq, tiles, packed):
    return token_mix_ref(h, w_gate_up, w_down, eps=eps, inj=inj, in_scale=in_scale,
                         in_sumsq=in_sumsq)


def _triton(h, w_gate_up, w_down, *, eps, inj, in_scale, in_sumsq, tiles, packed):
    if packed is None:
        packed = prepare_token_mix(w_gate_up, w_down)
    scale = in_sumsq if in_sumsq is not None else in_scale
    # torch.ops, not the Triton module's names: nothing to import inside a torch.compile trace
    return torch.ops.eqk.token_mix_triton(h, packed.gate_up_t, packed.down_t, inj, scale,
                                          in_sumsq is not None, eps, list(tiles))


def _triton_supports(h: torch.Tensor) -> bool:
    return h.dtype != torch.float64 and h.shape[1] <= MAX_T_TRITON


_IMPLEMENTATIONS = {"triton": _triton, "reference": _reference}


@torch.compiler.assume_constant_result  # resolved at trace time under torch.compile
def resolve_token_mix(device: torch.device, backend: str = "auto") -> str:
    """The backend token_mix runs on for tensors on `device`: "triton" on CUDA when Triton is
    there, else "reference" (CPU tensors: always the reference unless asked for "triton")."""
    name = _backends.pick("token_mix", device, backend,
                          among=tuple(n for n in BACKENDS if n in _IMPLEMENTATIONS))
    if name == "triton":  # registers torch.ops.eqk.token_mix_triton (here: never in a trace)
        importlib.import_module("eqkernels.ops.triton.token_mix")
    return name


def token_mix(h: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor, *, eps: float,
              inj: Optional[torch.Tensor] = None, in_scale: Optional[torch.Tensor] = None,
              backend: str = "auto", tiles: Sequence[int] = (),
              packed: Optional[PackedTokenWeights] = None,
              in_sumsq: Optional[torch.Tensor] = None) -> torch.Tensor:
    """out = rms_norm over T of (x + W_down (silu(W_gate x) * W_up x)), x = (h + inj) * in_scale,
    per sample and channel (see the module docstring).

    h: (B, T, C) float32 / bfloat16 (float64 too on the reference backend), contiguous;
    w_gate_up: (2I, T), gate rows then up rows; w_down: (T, I); both in h's dtype.
    inj: optional, h's shape and dtype, added on load. in_scale: optional (B, T) float32 per-row
    scale applied on load (float64 for float64 h). eps: the norm's epsilon.
    backend: "auto", "triton" or "reference". tiles: a Triton tile configuration from
    eqkernels.ops.triton.token_mix.candidate_tiles (empty: the default for the shape).
    packed: prepare_token_mix(w_gate_up, w_down), made once per forward (else the Triton
    backend makes it on every call; the reference ignores it). in_sumsq: instead of in_scale,
    the previous layer's per-row sums of squares over C as down_residual_sumsq returns them
    (in_scale = rsqrt(in_sumsq / C + eps), computed as loaded: no kernel of its own).
    Returns (B, T, C) in h's dtype. Not differentiable (the eager path is for training).
    """
    if in_scale is not None and in_sumsq is not None:
        raise ValueError("token_mix: pass in_scale or in_sumsq, not both")
    _looped_checks.token_mix(h, w_gate_up, w_down, inj,
                             in_sumsq if in_sumsq is not None else in_scale, eps,
                             "in_sumsq" if in_sumsq is not None else "in_scale")
    name = resolve_token_mix(h.device, backend)
    if name == "triton" and backend == "auto" and not _triton_supports(h):
        name = "reference"  # float64 (tests), or more tokens than the kernel keeps on chip
    return _IMPLEMENTATIONS[name](h, w_gate_up, w_down, eps=float(eps), inj=inj,
                                  in_scale=in_scale, in_sumsq=in_sumsq, tiles=tuple(tiles),
                                  packed=packed)

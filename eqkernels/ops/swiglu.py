"""Channel SwiGLU of a looped transformer as two GEMMs with fused epilogues.

    a            = silu(x W_gate^T) * (x W_up^T)                    swiglu_gate_up
    out, sumsq   = residual + a W_down^T,  sum over C of out^2      down_residual_sumsq

w_gate_up is EqR's `gate_up_proj.weight`, (2I, C): the I gate rows, then the I up rows;
w_down is `down_proj.weight`, (C, I). Only the (M, I) product `a` is written by the first
GEMM (never gate and up). The second writes `out`, the post-residual latent before the
norm, and each row's sum of squares of out AS STORED (after rounding to out's dtype: what the
next consumer scales, and what F.rms_norm would see). The RMSNorm over C (no learned weight in
EqR) is then the per-row scale rsqrt(sumsq / C + eps), applied by the next consumer as it loads
(token_mix's in_scale, or LoopedUpdate.normed): the normalised latent is never written.

Precision: float32 accumulation; the reference computes in float32 (float64 for float64
inputs) and rounds once to the inputs' dtype. sumsq is float32 (float64 for float64 inputs).
float32 GEMMs are full float32 (no TF32). Leading dimensions are free: x (..., C) -> a (..., I).

Variants of the Triton backend (`variant=`): "fused", the GEMM with the epilogue in one
kernel; "cublas", torch.matmul (cuBLAS) followed by one fused Triton elementwise kernel (the
SiLU*up, or the residual add and sum of squares), kept so the GPU suite can time both.
"""
from __future__ import annotations

import importlib
from typing import Sequence, Tuple

import torch
from torch.nn import functional as F

from eqkernels import _backends
from eqkernels.ops import _looped_checks

__all__ = ["swiglu_gate_up", "swiglu_gate_up_ref", "down_residual_sumsq",
           "down_residual_sumsq_ref", "prepare_gate_up", "resolve_swiglu", "BACKENDS",
           "VARIANTS"]

BACKENDS = ("triton", "reference")  # the backends that implement these ops
VARIANTS = ("fused", "cublas")


def _wide(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def prepare_gate_up(w_gate_up: torch.Tensor) -> torch.Tensor:
    """The gate/up weight as the kernels read it, made once per forward: EqR's (2I, C) layout
    itself, contiguous. (The Triton GEMM runs the gate and up halves as two dots into two
    accumulators of one layout, so each thread already holds both halves of its outputs; no
    interleaved copy is needed.)"""
    return w_gate_up.contiguous()


def swiglu_gate_up_ref(x: torch.Tensor, w_gate_up: torch.Tensor) -> torch.Tensor:
    """a = silu(x W_gate^T) * (x W_up^T) in float32 (float64 for float64 x), in x's dtype.

    x: (..., C); w_gate_up: (2I, C), gate rows then up rows. Returns (..., I)."""
    wide = _wide(x.dtype)
    gate, up = F.linear(x.to(wide), w_gate_up.to(wide)).chunk(2, dim=-1)
    return (F.silu(gate) * up).to(x.dtype)


def down_residual_sumsq_ref(a: torch.Tensor, w_down: torch.Tensor,
                            residual: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """out = residual + a W_down^T (float32 arithmetic, rounded once to residual's dtype) and
    sumsq = per-row sum of out^2 as stored, float32 (float64 for float64 inputs).

    a: (..., I); w_down: (C, I); residual: (..., C). Returns (out (..., C), sumsq (...,))."""
    wide = _wide(residual.dtype)
    out = (residual.to(wide) + F.linear(a.to(wide), w_down.to(wide))).to(residual.dtype)
    return out, out.to(wide).pow(2).sum(-1)


def _gate_up_reference(x, w_gate_up, *, variant, tiles):
    return swiglu_gate_up_ref(x, w_gate_up)


def _down_reference(a, w_down, residual, *, variant, tiles):
    return down_residual_sumsq_ref(a, w_down, residual)


# torch.ops, not the Triton module's names: nothing to import inside a torch.compile trace
def _gate_up_triton(x, w_gate_up, *, variant, tiles):
    return torch.ops.eqk.swiglu_gate_up_triton(x, w_gate_up, variant == "cublas", list(tiles))


def _down_triton(a, w_down, residual, *, variant, tiles):
    return torch.ops.eqk.down_residual_sumsq_triton(a, w_down, residual, variant == "cublas",
                                                    list(tiles))


_GATE_UP = {"triton": _gate_up_triton, "reference": _gate_up_reference}
_DOWN = {"triton": _down_triton, "reference": _down_reference}


@torch.compiler.assume_constant_result  # resolved at trace time under torch.compile
def resolve_swiglu(device: torch.device, backend: str = "auto") -> str:
    """The backend both SwiGLU ops run on for tensors on `device`: "triton" on CUDA when Triton
    is there, else "reference" (CPU tensors: the reference unless asked for "triton")."""
    name = _backends.pick("swiglu", device, backend,
                          among=tuple(n for n in BACKENDS if n in _GATE_UP))
    if name == "triton":  # registers torch.ops.eqk.*_triton (here: never in a trace)
        importlib.import_module("eqkernels.ops.triton.swiglu")
    return name


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def swiglu_gate_up(x: torch.Tensor, w_gate_up: torch.Tensor, *, backend: str = "auto",
                   variant: str = "fused", tiles: Sequence[int] = ()) -> torch.Tensor:
    """a = silu(x W_gate^T) * (x W_up^T), (..., I) in x's dtype, float32 accumulation.

    x: (..., C) float32 / bfloat16 (float64 on the reference backend), contiguous;
    w_gate_up: (2I, C) in x's dtype, gate rows then up rows (EqR's gate_up_proj.weight; see
    prepare_gate_up). backend: "auto", "triton" or "reference"; variant: "fused" or "cublas"
    (Triton backend); tiles: a tile configuration from
    eqkernels.ops.triton.swiglu.candidate_tiles (empty: the default for the shape).
    Not differentiable (the eager path is for training).
    """
    _looped_checks.swiglu_gate_up(x, w_gate_up)
    _check_variant(variant)
    name = resolve_swiglu(x.device, backend)
    if name == "triton" and backend == "auto" and x.dtype == torch.float64:
        name = "reference"  # float64: the reference's (tests)
    return _GATE_UP[name](x, w_gate_up, variant=variant, tiles=tuple(tiles))


def down_residual_sumsq(a: torch.Tensor, w_down: torch.Tensor, residual: torch.Tensor, *,
                        backend: str = "auto", variant: str = "fused",
                        tiles: Sequence[int] = ()) -> Tuple[torch.Tensor, torch.Tensor]:
    """(out, sumsq): out = residual + a W_down^T, (..., C) in residual's dtype; sumsq (...,)
    float32 = per-row sum of squares of out as stored (float64 for float64 inputs).

    a: (..., I); w_down: (C, I) (EqR's down_proj.weight); residual: (..., C); one dtype,
    float32 / bfloat16 (float64 on the reference backend), contiguous. The RMSNorm over C is
    then the per-row scale rsqrt(sumsq / C + eps), applied by the next consumer.
    backend / variant / tiles: as swiglu_gate_up's. Not differentiable.
    """
    _looped_checks.down_residual_sumsq(a, w_down, residual)
    _check_variant(variant)
    name = resolve_swiglu(a.device, backend)
    if name == "triton" and backend == "auto" and a.dtype == torch.float64:
        name = "reference"
    return _DOWN[name](a, w_down, residual, variant=variant, tiles=tuple(tiles))

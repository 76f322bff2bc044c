"""Argument checks of the looped-transformer block ops (token_mix, swiglu_gate_up,
down_residual_sumsq, rmsnorm_update), run once per call by the dispatchers and by the Triton
ops (which can be called directly and index raw memory): every backend rejects the same inputs
with the same ValueError, naming the argument and what was expected. Leaf module: torch only.
"""
from __future__ import annotations

import torch

from eqkernels.ops._checks import STATE_DTYPES, residual_dtype, shape, update_state

DTYPES = STATE_DTYPES  # float32 and bfloat16 everywhere; float64 for the reference and tests


def _dtype(op: str, name: str, t: torch.Tensor) -> None:
    if t.dtype not in DTYPES:
        raise ValueError(f"{op}: {name} must be torch.float32, torch.bfloat16 or torch.float64, "
                         f"got {t.dtype}")


def _same_dtype(op: str, name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.dtype != ref.dtype:
        raise ValueError(f"{op}: {name} must have {ref_name}'s dtype {ref.dtype}, got {t.dtype}")


def _matrix(op: str, name: str, t: torch.Tensor, rows, cols, what: str) -> None:
    """t is a 2-D (rows, cols) matrix; None leaves a size free."""
    if t.dim() != 2 or (rows is not None and t.shape[0] != rows) or (
            cols is not None and t.shape[1] != cols):
        raise ValueError(f"{op}: {name} must be a {what} matrix, got shape {shape(t)}")


def _placement(op: str, named, ref_name: str, ref: torch.Tensor) -> None:
    """Every tensor on ref's device, and contiguous (the kernels index raw memory)."""
    for name, t in named:
        if t is None:
            continue
        if t.device != ref.device:
            raise ValueError(f"{op}: {name} must be on {ref_name}'s device {ref.device}, got "
                             f"{t.device}")
        if not t.is_contiguous():
            raise ValueError(f"{op}: {name} must be contiguous")


def _row_vector(op: str, name: str, t: torch.Tensor, rows_shape, dtype) -> None:
    """t holds one value per row: shaped rows_shape or flat, of `dtype`."""
    rows = 1
    for s in rows_shape:
        rows *= s
    if tuple(t.shape) not in (tuple(rows_shape), (rows,)) or t.dtype != dtype:
        raise ValueError(f"{op}: {name} must be a {tuple(rows_shape)} (or ({rows},)) {dtype} "
                         f"tensor, got shape {shape(t)} and dtype {t.dtype}")


def _eps(op: str, eps) -> None:
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise ValueError(f"{op}: eps must be a float >= 0, got {eps!r}")


def _token_inputs(op, h, inj, in_scale, eps, scale_name="in_scale") -> None:
    """token_mix's h, inj, in_scale (or in_sumsq: `scale_name`) and eps."""
    if inj is not None:
        if inj.shape != h.shape:
            raise ValueError(f"{op}: inj must have h's shape {shape(h)}, got {shape(inj)}")
        _same_dtype(op, "inj", inj, "h", h)
    if in_scale is not None:
        _row_vector(op, scale_name, in_scale, h.shape[:2], residual_dtype(h.dtype))
    _eps(op, eps)


def _token_h(op, h) -> None:
    if h.dim() != 3:
        raise ValueError(f"{op}: h must be a (B, T, C) tensor, got shape {shape(h)}")
    _dtype(op, "h", h)


def token_mix(h, w_gate_up, w_down, inj, in_scale, eps, scale_name="in_scale") -> None:
    op = "token_mix"
    _token_h(op, h)
    T = h.shape[1]
    if w_gate_up.dim() != 2 or w_gate_up.shape[0] % 2 or w_gate_up.shape[1] != T:
        raise ValueError(f"{op}: w_gate_up must be a (2I, T) = (2I, {T}) matrix (gate rows, "
                         f"then up rows), got shape {shape(w_gate_up)}")
    _matrix(op, "w_down", w_down, T, w_gate_up.shape[0] // 2,
            f"(T, I) = ({T}, {w_gate_up.shape[0] // 2})")
    _same_dtype(op, "w_gate_up", w_gate_up, "h", h)
    _same_dtype(op, "w_down", w_down, "h", h)
    _token_inputs(op, h, inj, in_scale, eps, scale_name)
    _placement(op, [("h", h), ("w_gate_up", w_gate_up), ("w_down", w_down), ("inj", inj),
                    (scale_name, in_scale)], "h", h)


def token_mix_packed(h, gate_up_t, down_t, T_pad, inj, in_scale, eps,
                     scale_name="in_scale") -> None:
    """token_mix's check on the packed weights (gate_up_t (T_pad, 2I), down_t (I, T_pad))."""
    op = "token_mix"
    _token_h(op, h)
    if gate_up_t.dim() != 2 or gate_up_t.shape[0] != T_pad or gate_up_t.shape[1] % 2:
        raise ValueError(f"{op}: packed gate_up_t must be a (T_pad, 2I) = ({T_pad}, 2I) matrix "
                         f"(prepare_token_mix), got shape {shape(gate_up_t)}")
    _matrix(op, "packed down_t", down_t, gate_up_t.shape[1] // 2, T_pad,
            f"(I, T_pad) = ({gate_up_t.shape[1] // 2}, {T_pad}) (prepare_token_mix)")
    _same_dtype(op, "packed gate_up_t", gate_up_t, "h", h)
    _same_dtype(op, "packed down_t", down_t, "h", h)
    _token_inputs(op, h, inj, in_scale, eps, scale_name)
    _placement(op, [("h", h), ("packed gate_up_t", gate_up_t), ("packed down_t", down_t),
                    ("inj", inj), (scale_name, in_scale)], "h", h)


def swiglu_gate_up(x, w_gate_up) -> None:
    op = "swiglu_gate_up"
    if x.dim() < 1:
        raise ValueError(f"{op}: x must be a (..., C) tensor, got a scalar")
    _dtype(op, "x", x)
    C = x.shape[-1]
    if w_gate_up.dim() != 2 or w_gate_up.shape[0] % 2 or w_gate_up.shape[1] != C:
        raise ValueError(f"{op}: w_gate_up must be a (2I, C) = (2I, {C}) matrix (gate rows, "
                         f"then up rows), got shape {shape(w_gate_up)}")
    _same_dtype(op, "w_gate_up", w_gate_up, "x", x)
    _placement(op, [("x", x), ("w_gate_up", w_gate_up)], "x", x)


def down_residual_sumsq(a, w_down, residual) -> None:
    op = "down_residual_sumsq"
    if a.dim() < 1:
        raise ValueError(f"{op}: a must be a (..., I) tensor, got a scalar")
    _dtype(op, "a", a)
    if residual.dim() != a.dim() or residual.shape[:-1] != a.shape[:-1]:
        raise ValueError(f"{op}: residual must be a (..., C) tensor with a's leading shape "
                         f"{shape(a)[:-1]}..., got shape {shape(residual)}")
    C, I = residual.shape[-1], a.shape[-1]
    _matrix(op, "w_down", w_down, C, I, f"(C, I) = ({C}, {I})")
    _same_dtype(op, "w_down", w_down, "a", a)
    _same_dtype(op, "residual", residual, "a", a)
    _placement(op, [("a", a), ("w_down", w_down), ("residual", residual)], "a", a)


def rmsnorm_update(z, r, sumsq, z_next, active, converged, diverged, nstep, abs_res, rel_res,
                   step, eps) -> None:
    """The normed update's check: z (B, ..., C) like block_step's, r and z_next like z, sumsq
    one value per row of C."""
    op = "rmsnorm_update"
    if z.dim() < 2:
        raise ValueError(f"{op}: z must be a (B, ..., C) tensor, got shape {shape(z)}")
    _dtype(op, "z", z)
    for name, t in (("r", r), ("z_next", z_next)):
        if t.shape != z.shape:
            raise ValueError(f"{op}: {name} must have z's shape {shape(z)}, got {shape(t)}")
        _same_dtype(op, name, t, "z", z)
    _row_vector(op, "sumsq", sumsq, z.shape[:-1], residual_dtype(z.dtype))
    update_state(op, z, active, converged, diverged, nstep, abs_res, rel_res, step)
    _eps(op, eps)
    _placement(op, [("z", z), ("r", r), ("sumsq", sumsq), ("z_next", z_next),
                    ("active", active), ("converged", converged), ("diverged", diverged),
                    ("nstep", nstep), ("abs_res", abs_res), ("rel_res", rel_res),
                    ("step", step)], "z", z)

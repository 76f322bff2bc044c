"""Argument checks of the fused ops, run once per call by the dispatcher, before any backend.

The compiled ops (torch.ops.eqk.*) run the same checks in C++ (csrc/ops/checks.h), since they
can be called directly and index raw memory; both raise ValueError with the same message, word
for word (tests/test_ops_registration.py compares them), so every backend rejects the same
inputs alike. Leaf module: torch only.
"""
from __future__ import annotations

import torch


def shape(t: torch.Tensor) -> str:
    return str(list(t.shape))  # "[3, 4]", as C++ prints t.sizes()


def vec(op: str, name: str, t: torch.Tensor, length: int, dtype: torch.dtype) -> None:
    """t is (length,) of dtype `dtype`."""
    if not (t.dim() == 1 and t.shape[0] == length and t.dtype == dtype):
        raise ValueError(f"{op}: {name} must be a ({length},) {dtype} tensor, got shape "
                         f"{shape(t)} and dtype {t.dtype}")


def like(op: str, name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """t has ref's shape and dtype."""
    if t.shape != ref.shape:
        raise ValueError(f"{op}: {name} must have {ref_name}'s shape {shape(ref)}, got {shape(t)}")
    if t.dtype != ref.dtype:
        raise ValueError(f"{op}: {name} must have {ref_name}'s dtype {ref.dtype}, got {t.dtype}")


def placement(op: str, named, ref: torch.Tensor) -> None:
    """Every tensor on ref's device, and contiguous (the kernels index raw memory)."""
    for name, t in named:
        if t.device != ref.device:
            raise ValueError(f"{op}: {name} must be on z's device {ref.device}, got {t.device}")
        if not t.is_contiguous():
            raise ValueError(f"{op}: {name} must be contiguous")


STATE_DTYPES = (torch.float32, torch.float64, torch.bfloat16)  # the block step's z dtypes


def residual_dtype(z_dtype: torch.dtype) -> torch.dtype:
    """Dtype of the block step's per-sample residuals for state of dtype z_dtype."""
    return torch.float64 if z_dtype == torch.float64 else torch.float32


def update_state(op: str, z, active, converged, diverged, nstep, abs_res, rel_res,
                 step) -> None:
    """The per-sample state of a damped update of z (B, ...): flags, step counts, residuals in
    residual_dtype(z.dtype), and the (1,) int64 noise step counter."""
    B = z.shape[0]
    for name, t in (("active", active), ("converged", converged), ("diverged", diverged)):
        vec(op, name, t, B, torch.bool)
    vec(op, "nstep", nstep, B, torch.int32)
    for name, t in (("abs_res", abs_res), ("rel_res", rel_res)):
        vec(op, name, t, B, residual_dtype(z.dtype))
    vec(op, "step", step, 1, torch.int64)


def block_step(z, f_out, z_next, active, converged, diverged, nstep, abs_res, rel_res,
               step) -> None:
    """eqk::block_step's argument check (csrc/ops/block_step.cpp, word for word)."""
    op = "block_step"
    if z.dim() != 2:
        raise ValueError(f"{op}: z must be a (B, n) tensor, got shape {shape(z)}")
    if z.dtype not in STATE_DTYPES:
        raise ValueError(f"{op}: z must be torch.float32, torch.float64 or torch.bfloat16, "
                         f"got {z.dtype}")
    like(op, "f_out", f_out, "z", z)
    like(op, "z_next", z_next, "z", z)
    update_state(op, z, active, converged, diverged, nstep, abs_res, rel_res, step)
    placement(op, [("z", z), ("f_out", f_out), ("z_next", z_next), ("active", active),
                   ("converged", converged), ("diverged", diverged), ("nstep", nstep),
                   ("abs_res", abs_res), ("rel_res", rel_res), ("step", step)], z)


def anderson_step(z, fz, z_out, active, converged, diverged, nstep, abs_res, rel_res,
                  best_abs, best_rel, best_z, X, G, gram, count, max_history: int) -> None:
    """eqk::anderson_step's argument check (csrc/ops/anderson_mix.cpp, word for word)."""
    op = "anderson_step"
    if z.dim() != 2:
        raise ValueError(f"{op}: z must be a (B, n) tensor, got shape {shape(z)}")
    if z.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{op}: z must be torch.float32 or torch.float64, got {z.dtype}")
    B, n = z.shape
    if not (X.dim() == 3 and X.shape[0] == B and X.shape[2] == n):
        raise ValueError(f"{op}: X must be a (B, m, n) = ({B}, m, {n}) tensor, got shape "
                         f"{shape(X)}")
    m = X.shape[1]
    if not 1 <= m <= max_history:
        raise ValueError(f"{op}: history size m = X.shape[1] must be in [1, {max_history}], "
                         f"got {m}")
    like(op, "fz", fz, "z", z)
    like(op, "z_out", z_out, "z", z)
    like(op, "best_z", best_z, "z", z)
    if X.dtype != z.dtype:
        raise ValueError(f"{op}: X must have z's dtype {z.dtype}, got {X.dtype}")
    like(op, "G", G, "X", X)
    if not (gram.dim() == 3 and tuple(gram.shape) == (B, m, m) and gram.dtype == torch.float64):
        raise ValueError(f"{op}: gram must be a ({B}, {m}, {m}) torch.float64 tensor, got shape "
                         f"{shape(gram)} and dtype {gram.dtype}")
    for name, t in (("active", active), ("converged", converged), ("diverged", diverged)):
        vec(op, name, t, B, torch.bool)
    vec(op, "nstep", nstep, B, torch.int32)
    vec(op, "count", count, B, torch.int32)
    for name, t in (("abs_res", abs_res), ("rel_res", rel_res), ("best_abs", best_abs),
                    ("best_rel", best_rel)):
        vec(op, name, t, B, z.dtype)
    placement(op, [("z", z), ("fz", fz), ("z_out", z_out), ("active", active),
                   ("converged", converged), ("diverged", diverged), ("nstep", nstep),
                   ("abs_res", abs_res), ("rel_res", rel_res), ("best_abs", best_abs),
                   ("best_rel", best_rel), ("best_z", best_z), ("X", X), ("G", G),
                   ("gram", gram), ("count", count)], z)

"""The damped block-step update with the block's last RMSNorm folded in.

A looped transformer's block ends in an RMSNorm over C with no learned weight (EqR's post-norm
layers); its GEMM epilogue (eqkernels.ops.swiglu.down_residual_sumsq) writes the pre-norm
output r and each row's sum of squares. This op is eqkernels.ops.block_step with

    f_out = r * rsqrt(sumsq / C + eps)          (per row of C; computed on the fly)

so the normalised block output is never written: for every sample b active on entry,

    z_next = (1 - damping) z + damping * f_out + sigma * eps
    abs_res = ||z_next - z||,  rel_res = abs_res / (||z_next|| + REL_EPS)
    nstep += 1; a non-finite norm marks the sample diverged, a stop-mode residual below tol
    marks it converged; either one deactivates it (inactive samples are left untouched),

with block_step's noise stream (the same counter-based eps, the same step counter: a call draws
noise_key(seed, step + 1) and advances step on the device) and its precision (arithmetic in
float32, float64 for float64 z; norms of the stored values). It equals
block_step(z, rms_norm(r), ...) except that f_out is not rounded to z's dtype first.

z, r, z_next: (B, ..., C) of one dtype (z_next may alias z); sumsq: one value per row of C,
(B, ...) or flat, float32 (float64 for float64 z).

`rmsnorm_update` is the dispatcher. Backends: "triton" (one fused kernel, CUDA, or interpreted
on CPU), "cpp" / "cuda" (f_out = the normed r in z's dtype by PyTorch ops, then block_step's
compiled kernel: CPU keeps the speed of the unfused path), "reference" (plain PyTorch).
"""
from __future__ import annotations

import importlib
from typing import Optional, Sequence

import torch

from eqkernels import _backends
from eqkernels.ops import _looped_checks
from eqkernels.ops.block_step import block_step_ref, resolve_block_step
from eqkernels.ops.tracking import STOP_MODES, SolveState

__all__ = ["rmsnorm_update", "rmsnorm_update_ref", "normed_block_output", "resolve_rmsnorm_update",
           "BACKENDS"]

BACKENDS = ("triton", "cpp", "cuda", "reference")  # fastest first


def _wide(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def normed_block_output(r: torch.Tensor, sumsq: torch.Tensor, eps: float,
                        dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """f_out = r * rsqrt(sumsq / C + eps) per row of C, computed in float32 (float64 for
    float64 r), returned in `dtype` (default: the wide dtype, unrounded)."""
    wide = _wide(r.dtype)
    scale = torch.rsqrt(sumsq.to(wide).reshape(r.shape[:-1]) / r.shape[-1] + eps)
    f = r.to(wide) * scale[..., None]
    return f if dtype is None else f.to(dtype)


def check_args(z, r, sumsq, z_next, state: SolveState, step: torch.Tensor, eps: float) -> None:
    _looped_checks.rmsnorm_update(z, r, sumsq, z_next, state.active, state.converged,
                                  state.diverged, state.nstep, state.abs_res, state.rel_res,
                                  step, eps)


def rmsnorm_update_ref(z, r, sumsq, z_next, state: SolveState, *, eps: float, damping: float,
                       sigma: float, tol: float, stop_mode: str, step: torch.Tensor,
                       seed: int = 0) -> None:
    """Plain-PyTorch normed update, in place on z_next, state and step (see the module
    docstring): block_step_ref on the unrounded f_out."""
    B = z.shape[0]
    f = normed_block_output(r, sumsq, eps)
    block_step_ref(z.view(B, -1), f.view(B, -1), z_next.view(B, -1), state, damping=damping,
                   sigma=sigma, tol=tol, stop_mode=stop_mode, step=step, seed=seed)


def _reference(z, r, sumsq, z_next, state, *, eps, damping, sigma, tol, stop_mode, step, seed,
               tiles=()):
    rmsnorm_update_ref(z, r, sumsq, z_next, state, eps=eps, damping=damping, sigma=sigma,
                       tol=tol, stop_mode=stop_mode, step=step, seed=seed)


def _composed(backend):
    _, fused = resolve_block_step(torch.device("cpu" if backend == "cpp" else "cuda"), backend)

    def run(z, r, sumsq, z_next, state, *, eps, damping, sigma, tol, stop_mode, step, seed,
            tiles=()):
        B = z.shape[0]
        f = normed_block_output(r, sumsq, eps, z.dtype)
        fused(z.view(B, -1), f.view(B, -1), z_next.view(B, -1), state, damping=damping,
              sigma=sigma, tol=tol, stop_mode=stop_mode, step=step, seed=seed)
    return run


def _triton(z, r, sumsq, z_next, state, *, eps, damping, sigma, tol, stop_mode, step, seed,
            tiles=()):
    # torch.ops, not the Triton module's names: nothing to import inside a torch.compile trace
    torch.ops.eqk.rmsnorm_update_triton(z, r, sumsq, z_next, state.active, state.converged,
                                        state.diverged, state.nstep, state.abs_res,
                                        state.rel_res, step, int(seed), float(damping),
                                        float(sigma), float(tol), stop_mode == "rel",
                                        float(eps), list(tiles))


def _triton_registered():
    importlib.import_module("eqkernels.ops.triton.rmsnorm_update")  # registers the op
    return _triton


_IMPLEMENTATIONS = {"triton": _triton_registered, "reference": lambda: _reference,
                    "cpp": lambda: _composed("cpp"), "cuda": lambda: _composed("cuda")}


@torch.compiler.assume_constant_result  # resolved at trace time under torch.compile
def _pick(device: torch.device, backend: str) -> str:
    return _backends.pick("rmsnorm_update", device, backend,
                          among=tuple(n for n in BACKENDS if n in _IMPLEMENTATIONS))


def resolve_rmsnorm_update(device: torch.device, backend: str = "auto"):
    """(backend name, update function) for tensors on `device`; resolve once per run.

    The function is fn(z, r, sumsq, z_next, state, *, eps, damping, sigma, tol, stop_mode,
    step, seed, tiles=()) -> None, in place (the arguments of rmsnorm_update_ref; tiles: the
    Triton backend's (BLOCK_R, BLOCK_C, P, num_warps), kernel_config's default if empty)."""
    name = _pick(device, backend)
    return name, _IMPLEMENTATIONS[name]()


def rmsnorm_update(z, r, sumsq, z_next, state: SolveState, *, eps: float, damping: float,
                   sigma: float, tol: float, stop_mode: str, step: torch.Tensor, seed: int = 0,
                   backend: str = "auto", tiles: Sequence[int] = ()) -> str:
    """One normed update on the chosen backend, in place; returns the backend's name.
    tiles: the Triton backend's (BLOCK_R, BLOCK_C, P, num_warps) (P = 0: automatic split;
    eqkernels.ops.triton.rmsnorm_update.kernel_config), for a tuning sweep."""
    if stop_mode not in STOP_MODES:
        raise ValueError(f"stop_mode must be one of {STOP_MODES}, got {stop_mode!r}")
    check_args(z, r, sumsq, z_next, state, step, eps)
    name, fn = resolve_rmsnorm_update(z.device, backend)
    fn(z, r, sumsq, z_next, state, eps=float(eps), damping=damping, sigma=sigma, tol=tol,
       stop_mode=stop_mode, step=step, seed=seed, tiles=tuple(tiles))
    return name

"""Per-sample convergence bookkeeping shared by every solver step op.

One solver step, for each sample that is still active, measures the residual
g = f(z) - z, counts the step, flags divergence (non-finite residual), keeps the
lowest-residual iterate, and freezes the sample once its residual is below tol.
The fused kernels do exactly this inside their own pass; `track_residual_ref`
is the plain-PyTorch statement of it that they are tested against.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from eqkernels.ops.constants import REL_EPS  # noqa: F401  (re-exported: tracking.REL_EPS)

STOP_MODES = ("abs", "rel")


@dataclass
class SolveState:
    """Per-sample solver state; every tensor has leading dimension B.

    active:    (B,) bool   still iterating
    converged: (B,) bool   residual went below tol
    diverged:  (B,) bool   residual became NaN/Inf (the sample is frozen, never returned as NaN)
    nstep:     (B,) int32  f evaluations consumed by the sample
    abs_res, rel_res:   (B,) z.dtype  residual at the sample's latest step
    best_abs, best_rel: (B,) z.dtype  residual of the lowest-residual iterate so far
    best_z:    (B, n) z.dtype  the lowest-residual iterate (what the solver returns)
    """

    active: torch.Tensor
    converged: torch.Tensor
    diverged: torch.Tensor
    nstep: torch.Tensor
    abs_res: torch.Tensor
    rel_res: torch.Tensor
    best_abs: torch.Tensor
    best_rel: torch.Tensor
    best_z: torch.Tensor

    @classmethod
    def start(cls, z0: torch.Tensor) -> "SolveState":
        """Fresh state for z0: (B, n) float32/float64; best_z starts as z0 so it is never garbage."""
        B = z0.shape[0]
        dev, dt = z0.device, z0.dtype
        inf = torch.full((B,), float("inf"), device=dev, dtype=dt)
        return cls(
            active=torch.ones(B, dtype=torch.bool, device=dev),
            converged=torch.zeros(B, dtype=torch.bool, device=dev),
            diverged=torch.zeros(B, dtype=torch.bool, device=dev),
            nstep=torch.zeros(B, dtype=torch.int32, device=dev),
            abs_res=inf.clone(),
            rel_res=inf.clone(),
            best_abs=inf.clone(),
            best_rel=inf.clone(),
            best_z=z0.clone(),
        )


def track_residual_ref(z, fz, state: SolveState, tol: float, stop_mode: str):
    """Bookkeeping of one step, in place on `state`.

    z, fz: (B, n). Returns (live, g, metric):
      live:   (B,) bool, samples that must still take an update this step
      g:      (B, n) residual fz - z in z.dtype
      metric: (B,) float64 stop-mode residual (abs or rel), computed in float64
    """
    act = state.active.clone()
    g = fz - z
    abs64 = g.double().norm(dim=1)
    fz_norm64 = fz.double().norm(dim=1)
    rel64 = abs64 / (fz_norm64 + REL_EPS)
    state.nstep += act.to(state.nstep.dtype)
    state.abs_res.copy_(torch.where(act, abs64.to(z.dtype), state.abs_res))
    state.rel_res.copy_(torch.where(act, rel64.to(z.dtype), state.rel_res))

    finite = torch.isfinite(abs64) & torch.isfinite(fz_norm64)
    newly_diverged = act & ~finite
    state.diverged |= newly_diverged
    act &= finite

    metric = abs64 if stop_mode == "abs" else rel64
    best_metric = (state.best_abs if stop_mode == "abs" else state.best_rel).double()
    improved = act & (metric < best_metric)
    state.best_abs.copy_(torch.where(improved, abs64.to(z.dtype), state.best_abs))
    state.best_rel.copy_(torch.where(improved, rel64.to(z.dtype), state.best_rel))
    state.best_z.copy_(torch.where(improved[:, None], z, state.best_z))

    newly_converged = act & (metric < tol)
    state.converged |= newly_converged
    live = act & ~newly_converged
    state.active.copy_(live)
    return live, g, metric


def best_metric_of(state: SolveState, stop_mode: str) -> torch.Tensor:
    """(B,) float64 stop-mode residual of the best iterate."""
    return (state.best_abs if stop_mode == "abs" else state.best_rel).double()

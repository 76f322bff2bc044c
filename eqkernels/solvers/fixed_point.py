"""Damped Picard iteration: z <- (1 - damping) z + damping f(z), per-sample stopping."""
from __future__ import annotations

import torch

from eqkernels.ops.tracking import track_residual_ref
from eqkernels.solvers.base import iterate


def fixed_point(f, z0, *, max_iter=50, tol=1e-4, stop_mode="abs", damping=1.0,
                check_every=None, on_diverge="warn", trajectory=False, progress=False, backend="auto"):
    """Solve z = f(z). f: (B, n) -> (B, n); z0: (B, n). Returns (z, SolverInfo)."""
    if not 0 < damping <= 1:
        raise ValueError(f"damping must be in (0, 1], got {damping!r}")

    def step(z, fz, state):
        live, g, _ = track_residual_ref(z, fz, state, tol, stop_mode)
        z.copy_(torch.where(live[:, None], z + damping * g, z))

    return iterate(f, z0, lambda z0: ("reference", step), solver="fixed_point", max_iter=max_iter, tol=tol,
                   stop_mode=stop_mode, check_every=check_every, on_diverge=on_diverge,
                   trajectory=trajectory, progress=progress)

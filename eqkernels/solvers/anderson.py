"""Anderson acceleration (type II), one fused `anderson_step` per iteration."""
from __future__ import annotations

from eqkernels.ops.anderson_mix import AndersonHistory, resolve_anderson_step
from eqkernels.solvers.base import iterate

MAX_HISTORY = 16  # the fused kernels keep the small system on the stack / in registers


def anderson(f, z0, *, max_iter=50, tol=1e-4, stop_mode="abs", m=6, lam=1e-4, beta=1.0,
             restart_growth=10.0, check_every=None, on_diverge="warn", trajectory=False, progress=False,
             backend="auto"):
    """Solve z = f(z) by Anderson mixing over the last m iterates.

    f: (B, n) -> (B, n); z0: (B, n) float32/float64.
    lam: ridge added to the m x m Gram matrix; beta: mixing damping (1 = undamped);
    restart_growth: a sample whose residual exceeds this multiple of its best so far
    restarts its history with a damped fixed-point step (float('inf') disables it).
    backend: "auto" | "reference" | "cpp" | "triton" | "cuda" for the fused step.
    Returns (z, SolverInfo); info.backend names the backend that ran.
    """
    if not isinstance(m, int) or not 1 <= m <= MAX_HISTORY:
        raise ValueError(f"m must be an int in [1, {MAX_HISTORY}], got {m!r}")
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    if not 0 < beta <= 1:
        raise ValueError(f"beta must be in (0, 1], got {beta!r}")
    if not restart_growth > 1:
        raise ValueError(f"restart_growth must be > 1 (or inf), got {restart_growth!r}")

    def make_step(z0):
        hist = AndersonHistory.empty(z0, m)
        name, fused_step = resolve_anderson_step(z0.device, backend)
        params = dict(tol=tol, stop_mode=stop_mode, beta=beta, lam=lam,
                      restart_growth=restart_growth)

        def step(z, fz, state):
            return fused_step(z, fz, z, state, hist, **params)
        return name, step

    return iterate(f, z0, make_step, solver="anderson", max_iter=max_iter, tol=tol,
                   stop_mode=stop_mode, check_every=check_every, on_diverge=on_diverge,
                   trajectory=trajectory, progress=progress)

"""Damped (optionally noisy) iteration driven by the fused block-step epilogue.

    z <- (1 - damping) z + damping f(z) + noise_std * eps,   eps ~ N(0, I) per step

This is the loop of looped / equilibrium-reasoning models that run a block for a
fixed, large number of steps (up to 40,000): the update, the noise, the per-sample
step size ||z_next - z|| and the halting mask are one fused op, z is updated in
place, and nothing is kept per step, so memory does not depend on max_iter.

The residual is the step size ||z_next - z|| (damping * ||f(z) - z|| without
noise), and the iterate returned is the last one: with noise there is no
meaningful "best" iterate. A sample whose iterate turns NaN/Inf is frozen and
flagged; what is returned for it is a snapshot taken at most SNAPSHOT_EVERY steps
before, never the non-finite row (the snapshot costs 1/SNAPSHOT_EVERY of a copy per
step, not a copy per step). Noise is reproducible: step t of a run draws the
counter-based stream noise_key(seed, t) (see eqkernels.ops.block_step).
"""
from __future__ import annotations

import torch

from eqkernels.ops.block_step import noise_key, residual_dtype, resolve_block_step
from eqkernels.ops.tracking import SolveState
from eqkernels.solvers.base import iterate

SNAPSHOT_EVERY = 16


def damped(f, z0, *, max_iter=50, tol=1e-4, stop_mode="abs", damping=1.0, noise_std=0.0,
           seed=0, check_every=None, on_diverge="warn", trajectory=False, progress=False,
           backend="auto"):
    """Solve / run z = f(z) by damped iteration. f: (B, n) -> (B, n); z0: (B, n).

    damping in (0, 1]; noise_std >= 0 (0 = deterministic); seed: int for the noise.
    Returns (z, SolverInfo) with z the last iterate; info.backend names the backend.
    """
    if not 0 < damping <= 1:
        raise ValueError(f"damping must be in (0, 1], got {damping!r}")
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")

    snapshot = z0.clone()  # last finite iterate of each sample, at most SNAPSHOT_EVERY old

    def make_step(z0):
        name, fused_step = resolve_block_step(z0.device, backend)
        counter = [0]

        def step(z, fz, state):
            counter[0] += 1
            if counter[0] % SNAPSHOT_EVERY == 0:  # device-side, no sync
                snapshot.copy_(torch.where(state.diverged[:, None], snapshot, z))
            return fused_step(z, fz, z, state, damping=damping, sigma=noise_std,
                              key=noise_key(seed, counter[0]), tol=tol, stop_mode=stop_mode)
        return name, step

    # The op keeps residuals in float32 or wider, whatever z's dtype.
    state = SolveState.start(z0.new_zeros(z0.shape[0], 1, dtype=residual_dtype(z0.dtype)))
    z, info = iterate(f, z0, make_step, solver="damped", max_iter=max_iter, tol=tol,
                      stop_mode=stop_mode, check_every=check_every, on_diverge=on_diverge,
                      trajectory=trajectory, progress=progress, returns="last", state=state)
    return torch.where(info.diverged[:, None], snapshot, z), info

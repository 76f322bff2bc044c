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

Batch compaction (compact_below=q): once fewer than a fraction q of the samples still
runs, the loop goes on with the live ones only, so the block stops paying for halted
samples. f must then offer f.restrict(rows) -> the map of those rows (the DEQ layer's
does). The noise of a compacted run is drawn at the samples' new batch positions.
"""
from __future__ import annotations

import torch

from eqkernels.ops.block_step import noise_key, residual_dtype, resolve_block_step
from eqkernels.ops.tracking import SolveState
from eqkernels.solvers.base import SolverInfo, _report_divergence, iterate

SNAPSHOT_EVERY = 16


def damped(f, z0, *, max_iter=50, tol=1e-4, stop_mode="abs", damping=1.0, noise_std=0.0,
           seed=0, check_every=None, on_diverge="warn", trajectory=False, progress=False,
           backend="auto", compact_below=None):
    """Solve / run z = f(z) by damped iteration. f: (B, n) -> (B, n); z0: (B, n).

    damping in (0, 1]; noise_std >= 0 (0 = deterministic); seed: int for the noise.
    compact_below: None, or a fraction in (0, 1) of live samples below which the batch is
    compacted (needs f.restrict; not with trajectory=True).
    Returns (z, SolverInfo) with z the last iterate; info.backend names the backend.
    """
    if not 0 < damping <= 1:
        raise ValueError(f"damping must be in (0, 1], got {damping!r}")
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    options = dict(max_iter=max_iter, tol=tol, stop_mode=stop_mode, damping=damping,
                   noise_std=noise_std, seed=seed, check_every=check_every, progress=progress,
                   backend=backend)
    if compact_below is None:
        return _run(f, z0, on_diverge=on_diverge, trajectory=trajectory, **options)
    if not 0 < compact_below < 1:
        raise ValueError(f"compact_below must be in (0, 1) or None, got {compact_below!r}")
    if not callable(getattr(f, "restrict", None)):
        raise TypeError("compact_below needs f.restrict(rows) -> the map of those batch rows "
                        "(eqkernels.DEQ provides it); a plain function cannot be compacted")
    if trajectory:
        raise ValueError("compact_below cannot be combined with trajectory=True")
    return _run_compacting(f, z0, compact_below, on_diverge, options)


def _run_compacting(f, z0, compact_below, on_diverge, options):
    """Phases of _run, each on the samples still live after the one before."""
    B = z0.shape[0]
    z_out = z0.clone()
    rows = torch.arange(B, device=z0.device)
    done_steps, max_iter, info_out = 0, options["max_iter"], None
    while True:
        phase = dict(options, max_iter=max_iter - done_steps)
        z, info = _run(f, z0, on_diverge="ignore", trajectory=False, step_offset=done_steps,
                       stop_below=compact_below, **phase)
        if info_out is None:
            info_out = _empty_info(info, B)
        z_out[rows] = z
        for name in ("abs_residual", "rel_residual", "converged", "diverged"):
            getattr(info_out, name)[rows] = getattr(info, name)
        info_out.nstep[rows] += info.nstep
        done_steps += info.extra["steps"]
        live = (~(info.converged | info.diverged)).nonzero().squeeze(1)
        if not info.extra["stopped_below"] or live.numel() == 0 or done_steps >= max_iter:
            break
        rows, z0, f = rows[live], z[live], f.restrict(live)
        info_out.extra["compactions"].append((done_steps, live.numel()))
    _report_divergence(info_out, on_diverge)
    return z_out, info_out


def _empty_info(like: SolverInfo, B: int) -> SolverInfo:
    def full(t):
        return torch.zeros((B,) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
    return SolverInfo(nstep=full(like.nstep), abs_residual=full(like.abs_residual),
                      rel_residual=full(like.rel_residual), converged=full(like.converged),
                      diverged=full(like.diverged), solver=like.solver, backend=like.backend,
                      extra=dict(compactions=[]))  # (iteration, live samples kept)


def _run(f, z0, *, max_iter, tol, stop_mode, damping, noise_std, seed, check_every, on_diverge,
         trajectory, progress, backend, step_offset=0, stop_below=None):
    snapshot = z0.clone()  # last finite iterate of each sample, at most SNAPSHOT_EVERY old

    def make_step(z0):
        name, fused_step = resolve_block_step(z0.device, backend)
        counter = [step_offset]

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
                      trajectory=trajectory, progress=progress, returns="last", state=state,
                      stop_below=stop_below)
    return torch.where(info.diverged[:, None], snapshot, z), info

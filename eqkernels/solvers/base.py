"""The iteration loop every solver shares, its options, and what it reports.

A solver is a `make_step(z0)` that sets up its own state (history, ...) and returns
(backend name, `step(z, fz, state)`); the step advances z in place for the samples
still active in `state`. This loop evaluates f and calls the step. A step that
learns for free how many samples are still active (the C++ kernel counts them as it
goes) returns that number; otherwise it returns None and the loop asks the device
only every `check_every` steps, since on a GPU each ask is a host sync.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from eqkernels.ops.tracking import STOP_MODES, SolveState
from eqkernels.solvers.trajectory import TrajectoryRecorder

ON_DIVERGE = ("warn", "raise", "ignore")
# How often the loop looks at the device for "all samples done". On the CPU the
# look is free; on a GPU each one is a host sync, so it is amortised.
DEFAULT_CHECK_EVERY = {"cpu": 1, "cuda": 16}
# The progress bar's live-sample count and median residual cost a host sync: at most
# this often (seconds), and only at a check step.
PROGRESS_REFRESH_S = 0.5


class DivergenceError(FloatingPointError):
    """Raised (with on_diverge="raise") when some sample's residual became NaN/Inf."""


@dataclass
class SolverInfo:
    """What a solve did, per sample (leading dimension B).

    nstep: (B,) int32 f evaluations used; abs_residual, rel_residual: (B,) residual of the
    returned iterate (for "damped": its last step size ||z_T - z_(T-1)||); converged, diverged: (B,) bool; trajectory: (T, B) abs residual after
    the steps listed in trajectory_steps (every step for short runs; evenly thinned to at
    most 1024 rows for long ones), or None; spectral_radius: (B,) estimate of rho(J_f) at
    z*, when asked for.
    """

    nstep: torch.Tensor
    abs_residual: torch.Tensor
    rel_residual: torch.Tensor
    converged: torch.Tensor
    diverged: torch.Tensor
    solver: str
    backend: str
    trajectory: Optional[torch.Tensor] = None
    trajectory_steps: Optional[torch.Tensor] = None
    spectral_radius: Optional[torch.Tensor] = None
    extra: dict = field(default_factory=dict)
    rel_trajectory: Optional[torch.Tensor] = None  # (T, B) rel residual, rows as trajectory
    captured: Optional[list] = None  # SolveOptions.capture: (B, n) best iterate after each step
    states: Optional[list] = None  # DEQ multi-state supervision: the supervised states (grad)

    # torchdeq's names for the same facts, so its users find theirs (info.abs_lowest or
    # info["abs_lowest"]); its traces are (B, T), ours (T, B).
    @property
    def abs_lowest(self):
        return self.abs_residual

    @property
    def rel_lowest(self):
        return self.rel_residual

    @property
    def abs_trace(self):
        return None if self.trajectory is None else self.trajectory.T

    @property
    def rel_trace(self):
        return None if self.rel_trajectory is None else self.rel_trajectory.T

    @property
    def sradius(self):
        return self.spectral_radius

    def __getitem__(self, name: str):
        if not isinstance(name, str) or name.startswith("_") or not hasattr(self, name):
            raise KeyError(f"SolverInfo has no field {name!r}")
        return getattr(self, name)

    def keys(self):
        return ["nstep", "abs_lowest", "rel_lowest", "abs_trace", "rel_trace", "sradius",
                "converged", "diverged"]

    def summary(self) -> str:
        B = self.nstep.numel()
        return (f"{self.solver} [{self.backend}]: {int(self.converged.sum())}/{B} converged, "
                f"{int(self.diverged.sum())} diverged, nstep median "
                f"{int(self.nstep.median())} max {int(self.nstep.max())}, "
                f"max abs residual {float(self.abs_residual.max()):.3e}")


def validate_options(z0, *, max_iter, tol, stop_mode, check_every, on_diverge):
    if not isinstance(z0, torch.Tensor) or z0.dim() != 2:
        raise ValueError(f"z0 must be a (B, n) tensor, got "
                         f"{tuple(z0.shape) if isinstance(z0, torch.Tensor) else type(z0).__name__}")
    if z0.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"z0 must be float32 or float64 (solver state), got {z0.dtype}")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    if stop_mode not in STOP_MODES:
        raise ValueError(f"stop_mode must be one of {STOP_MODES}, got {stop_mode!r}")
    if check_every is not None and (not isinstance(check_every, int) or check_every < 1):
        raise ValueError(f"check_every must be an int >= 1 or None, got {check_every!r}")
    if on_diverge not in ON_DIVERGE:
        raise ValueError(f"on_diverge must be one of {ON_DIVERGE}, got {on_diverge!r}")


def iterate(f: Callable, z0: torch.Tensor, make_step: Callable, *, solver: str, max_iter: int,
            tol: float, stop_mode: str = "abs", check_every: Optional[int] = None,
            on_diverge: str = "warn", trajectory: bool = False, progress: bool = False,
            returns: str = "best", state: Optional[SolveState] = None,
            stop_below: Optional[float] = None):
    """Run `step` until every sample has converged or diverged, or max_iter.

    f: (B, n) -> (B, n); z0: (B, n) float32/float64.
    make_step(z0) -> (backend name, step); step(z, fz, state) -> samples still active
    or None, advances z in place.
    returns: "best" (each sample's lowest-residual iterate, its residual in info) or "last"
    (the final iterate, e.g. of a noisy run, with its last measured residual).
    state: a SolveState to use (a solver whose residuals are not in z's dtype makes its own).
    progress: show a tqdm bar (step, live samples, median residual).
    stop_below: also stop once fewer than this fraction of the B samples is still active
    (info.extra["stopped_below"] says so), so a caller can compact the batch and go on.
    Returns (z, info): z (B, n); info.extra["steps"] is the number of iterations run.
    """
    validate_options(z0, max_iter=max_iter, tol=tol, stop_mode=stop_mode,
                     check_every=check_every, on_diverge=on_diverge)
    if returns not in ("best", "last"):
        raise ValueError(f"returns must be 'best' or 'last', got {returns!r}")
    if check_every is None:
        check_every = DEFAULT_CHECK_EVERY.get(z0.device.type, 16)
    backend, step = make_step(z0)
    z = z0.clone(memory_format=torch.contiguous_format)  # the kernels need a dense row layout
    state = SolveState.start(z) if state is None else state
    recorder = TrajectoryRecorder() if trajectory else None
    bar = _ProgressBar(solver, max_iter) if progress else None
    stopped_below = False
    it = 0
    for it in range(1, max_iter + 1):
        fz = _evaluate(f, z)
        n_active = step(z, fz, state)
        del fz  # the block's output is dead now: do not hold it across the next call
        if recorder is not None:
            recorder.record(it, state.abs_res)
        if n_active is not None:
            done = n_active == 0
        elif it % check_every == 0 or it == max_iter:
            if stop_below is None:
                done = not bool(state.active.any())
            else:  # the same one sync, but the count is needed
                n_active = int(state.active.sum())
                done = n_active == 0
        else:
            continue
        if bar is not None:
            bar.update(it, state, n_active)
        if done:
            break
        if stop_below is not None and n_active < stop_below * z.shape[0]:
            stopped_below = True
            break
    if bar is not None:
        bar.close(state)
    rows, steps = recorder.result() if recorder is not None else (None, None)
    best = returns == "best"
    info = SolverInfo(nstep=state.nstep, abs_residual=state.best_abs if best else state.abs_res,
                      rel_residual=state.best_rel if best else state.rel_res,
                      converged=state.converged, diverged=state.diverged, solver=solver,
                      backend=backend, trajectory=rows, trajectory_steps=steps,
                      extra=dict(steps=it, stopped_below=stopped_below))
    _report_divergence(info, on_diverge)
    return (state.best_z if best else z), info


class _ProgressBar:
    """tqdm bar over iterations; its postfix costs a sync, so it refreshes at most every
    PROGRESS_REFRESH_S seconds, and only when the loop checks for completion anyway."""

    def __init__(self, solver: str, max_iter: int):
        from eqkernels.progress import progress_bar  # tqdm on a terminal, plain lines in a log
        self.bar = progress_bar(total=max_iter, desc=solver, unit="step", leave=True)
        self.shown = 0
        self.last_refresh = 0.0

    def update(self, it: int, state: SolveState, n_active: Optional[int]) -> None:
        self.bar.update(it - self.shown)
        self.shown = it
        now = time.monotonic()
        if now - self.last_refresh >= PROGRESS_REFRESH_S:
            self.last_refresh = now
            self._postfix(state, n_active)

    def _postfix(self, state, n_active):
        live = int(state.active.sum()) if n_active is None else n_active
        self.bar.set_postfix(live=f"{live}/{state.active.numel()}",
                             median_res=f"{float(state.abs_res.float().median()):.2e}",
                             refresh=False)

    def close(self, state: SolveState) -> None:
        self._postfix(state, None)
        self.bar.close()


def _evaluate(f, z):
    fz = f(z)
    if not isinstance(fz, torch.Tensor) or fz.shape != z.shape:
        raise ValueError(f"f(z) must return a tensor of shape {tuple(z.shape)}, got "
                         f"{tuple(fz.shape) if isinstance(fz, torch.Tensor) else type(fz).__name__}")
    # The block may run in low precision; solver state stays in z's dtype.
    return fz.to(z.dtype).contiguous()


def _report_divergence(info: SolverInfo, on_diverge: str) -> None:
    if on_diverge == "ignore":
        return
    d = info.diverged
    if d.device.type == "cpu" and not d.requires_grad and 1 not in d.numpy().tobytes():
        return  # the common case, without a torch reduction
    n_bad = int(d.sum())
    if n_bad == 0:
        return
    msg = (f"{info.solver}: {n_bad} of {info.diverged.numel()} samples produced NaN/Inf; they "
           f"were frozen and an earlier finite iterate of theirs is returned "
           f"(info.diverged marks them)")
    if on_diverge == "raise":
        raise DivergenceError(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=4)

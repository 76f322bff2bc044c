"""What every solve reports (SolverInfo), and the pieces of the driver loop (driver.py)
that are not the loop itself: the check cadence, the progress bar, divergence reports."""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Optional

import torch

from eqkernels.ops.tracking import SolveState

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

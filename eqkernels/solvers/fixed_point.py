"""Damped Picard iteration: z <- (1 - damping) z + damping f(z), per-sample stopping."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from eqkernels.ops.tracking import SolveState, track_residual_ref
from eqkernels.solvers.state import SolverState


@dataclass(frozen=True)
class FixedPoint:
    """Plain (damped) fixed-point iteration in PyTorch; damping in (0, 1]. No buffers."""

    damping: float = 1.0
    backend: str = "auto"  # accepted for a uniform signature; it runs in PyTorch
    name = "fixed_point"

    def __post_init__(self):
        if not 0 < self.damping <= 1:
            raise ValueError(f"damping must be in (0, 1], got {self.damping!r}")

    def init(self, z0) -> SolverState:
        z = z0.detach().clone(memory_format=torch.contiguous_format)
        return SolverState(z=z, track=SolveState.start(z), solver=self.name)

    def bind(self, state: SolverState, options):
        track, tol, mode, damping = state.track, options.tol, options.stop_mode, self.damping

        def step(z, fz):
            live, g, _ = track_residual_ref(z, fz, track, tol, mode)
            z.copy_(torch.where(live[:, None], z + damping * g, z))
        return "reference", step

    def step(self, z, fz, state: SolverState, options):
        return self.bind(state, options)[1](z, fz)


def fixed_point(f, z0, *, max_iter=50, tol=1e-4, stop_mode="abs", damping=1.0,
                check_every=None, on_diverge="warn", trajectory=False, progress=False, backend="auto",
                **driver):
    """Solve z = f(z). f: (B, n) -> (B, n); z0: (B, n). Returns (z, SolverInfo).
    driver: further eqk.solve arguments (state=, return_state=, compact_below=, ...)."""
    from eqkernels.solvers.driver import SolveOptions, solve
    return solve(f, z0, FixedPoint(damping=damping, backend=backend),
                 SolveOptions(max_iter=max_iter, tol=tol, stop_mode=stop_mode,
                              check_every=check_every, on_diverge=on_diverge,
                              trajectory=trajectory, progress=progress), **driver)

"""Anderson acceleration (type II), one fused `anderson_step` per iteration."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from eqkernels.ops.anderson_mix import AndersonHistory, bind_anderson_step
from eqkernels.ops.tracking import SolveState
from eqkernels.solvers.state import SolverState

MAX_HISTORY = 16  # the fused kernels keep the small system on the stack / in registers


@dataclass(frozen=True)
class Anderson:
    """Anderson mixing over the last m iterates.

    m: history size in [1, 16]; lam: ridge added to the m x m Gram matrix; beta: mixing
    damping in (0, 1] (1 = undamped); restart_growth: a sample whose residual exceeds this
    multiple of its best so far restarts its history with a damped fixed-point step
    (float('inf') disables it); backend: "auto" | "reference" | "cpp" | "triton" | "cuda".
    State buffers: X, G (B, m, n) z.dtype, gram (B, m, m) float64, count (B,) int32.
    """

    m: int = 6
    lam: float = 1e-4
    beta: float = 1.0
    restart_growth: float = 10.0
    backend: str = "auto"
    name = "anderson"

    def __post_init__(self):
        if isinstance(self.m, bool) or not isinstance(self.m, int) or not 1 <= self.m <= MAX_HISTORY:
            raise ValueError(f"m must be an int in [1, {MAX_HISTORY}], got {self.m!r}")
        if not self.lam >= 0:
            raise ValueError(f"lam must be >= 0, got {self.lam!r}")
        if not 0 < self.beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {self.beta!r}")
        if not self.restart_growth > 1:
            raise ValueError(f"restart_growth must be > 1 (or inf), got {self.restart_growth!r}")
        if not isinstance(self.backend, str):
            raise TypeError(f"backend must be a str, got {type(self.backend).__name__}")

    def init(self, z0) -> SolverState:
        """Fresh state for z0: (B, n) float32/float64 (copied to a contiguous working iterate)."""
        z = z0.detach().clone(memory_format=torch.contiguous_format)
        hist = AndersonHistory.empty(z, self.m)
        return SolverState(z=z, track=SolveState.start(z),
                           buffers=dict(X=hist.X, G=hist.G, gram=hist.gram, count=hist.count),
                           solver=self.name)

    def bind(self, state: SolverState, options):
        """(backend name, step(z, fz) -> live count or None) for this state, resolved once."""
        b = state.buffers
        hist = AndersonHistory(X=b["X"], G=b["G"], gram=b["gram"], count=b["count"])
        # step(z, fz): in place on the state's iterate, which the driver passes as z
        return bind_anderson_step(state.z, state.track, hist, tol=options.tol,
                                  stop_mode=options.stop_mode, beta=self.beta, lam=self.lam,
                                  restart_growth=self.restart_growth, backend=self.backend)

    def step(self, z, fz, state: SolverState, options):
        """One step in place on state (z must be state.z, its iterate); returns None."""
        if z is not state.z:
            raise ValueError("z must be state.z (the step advances the state's iterate in place)")
        return self.bind(state, options)[1](z, fz)


def anderson(f, z0, *, max_iter=50, tol=1e-4, stop_mode="abs", m=6, lam=1e-4, beta=1.0,
             restart_growth=10.0, check_every=None, on_diverge="warn", trajectory=False, progress=False,
             backend="auto", **driver):
    """Solve z = f(z) by Anderson mixing over the last m iterates (see `Anderson`).

    f: (B, n) -> (B, n); z0: (B, n) float32/float64.
    driver: further eqk.solve arguments (state=, return_state=, compact_below=, capture=,
    returns=). Returns (z, SolverInfo); info.backend names the backend that ran.
    """
    from eqkernels.solvers.driver import SolveOptions, solve
    solver = Anderson(m=m, lam=lam, beta=beta, restart_growth=restart_growth, backend=backend)
    return solve(f, z0, solver, SolveOptions(max_iter=max_iter, tol=tol, stop_mode=stop_mode,
                                             check_every=check_every, on_diverge=on_diverge,
                                             trajectory=trajectory, progress=progress), **driver)

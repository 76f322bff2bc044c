"""`Damped`: the options object of the fused damped / noisy loop (eqk.damped).

The loop itself lives in damped.py (the fused block-step epilogue, its noise counter
and snapshots); this object only carries its options so `DEQ(solver=eqk.Damped(...))`
and `eqk.solve(f, z0, eqk.Damped(...), options)` work like the other solvers. Its state
stays inside the fused loop: no state=, return_state, or capture.
"""
from __future__ import annotations

from dataclasses import dataclass

from eqkernels.solvers.damped import GRAPH_STEPS


@dataclass(frozen=True)
class Damped:
    """z <- (1 - damping) z + damping f(z) + noise_std * eps; damping in (0, 1],
    noise_std >= 0, seed: int for the noise stream; backend, cuda_graph and graph_steps as
    for eqk.damped (which validates those)."""

    damping: float = 1.0
    noise_std: float = 0.0
    seed: int = 0
    backend: str = "auto"
    cuda_graph: bool = False
    graph_steps: int = GRAPH_STEPS
    name = "damped"

    def __post_init__(self):
        if not 0 < self.damping <= 1:
            raise ValueError(f"damping must be in (0, 1], got {self.damping!r}")
        if not self.noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__}")

    def run(self, f, z0, options):
        """eqk.damped with these options and the driver's `options` (returns: always last)."""
        from eqkernels.solvers.damped import damped
        if options.capture:
            raise ValueError("solver 'damped' does not support capture (multi-state supervision); "
                             "use fixed_point with damping instead")
        return damped(f, z0, max_iter=options.max_iter, tol=options.tol,
                      stop_mode=options.stop_mode, damping=self.damping,
                      noise_std=self.noise_std, seed=self.seed, check_every=options.check_every,
                      on_diverge=options.on_diverge, trajectory=options.trajectory,
                      progress=options.progress, backend=self.backend,
                      compact_below=options.compact_below, cuda_graph=self.cuda_graph,
                      graph_steps=self.graph_steps)

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

The noise key comes from a (1,) int64 step counter on the device, which the fused op reads
and advances; no per-step Python int reaches the kernel. The counter starts at the state's
step count, so a run resumed from a saved SolverState (eqk.solve(..., state=)) draws the
noise an uninterrupted run would have drawn.

`Damped` is the options object (the driver eqk.solve runs it, like every solver);
`damped(f, z0, ...)` builds it and SolveOptions and calls the driver.

CUDA-graph mode (cuda_graph=True): the driver runs the loop in segments of K = graph_steps
steps of block + fused update on static buffers (the working iterate, the state, the
counter, the snapshot), captured as CUDA graphs (see segments.py); the all-done flag is read
once per segment; compaction happens only at segment boundaries (a compacted batch is a new
shape: captured anew). info.extra["cuda_graph"] says whether it was captured, and if not why.
Iterates, residuals and nstep equal the eager loop's bit for bit; only info.extra["steps"]
rounds up to a whole segment (frozen samples are untouched by the extra steps).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from eqkernels.ops.block_step import new_step_counter, residual_dtype, resolve_block_step
from eqkernels.ops.tracking import SolveState
from eqkernels.solvers.state import SolverState

SNAPSHOT_EVERY = 16
GRAPH_STEPS = 16       # K: steps per captured segment (default)


@dataclass(frozen=True)
class Damped:
    """z <- (1 - damping) z + damping f(z) + noise_std * eps.

    damping in (0, 1]; noise_std >= 0 (0 = deterministic); seed: int for the noise stream;
    backend: "auto" | "reference" | "cpp" | "triton" | "cuda"; cuda_graph: run in segments of
    graph_steps steps, captured as CUDA graphs on a CUDA device (not with trajectory,
    progress or capture, which look at every step). The returned iterate is the last one
    (SolveOptions.returns does not apply: a noisy run has no meaningful best iterate), and
    info's residuals are the last step sizes.
    State buffers: snapshot (B, n), each sample's last finite iterate.
    """

    damping: float = 1.0
    noise_std: float = 0.0
    seed: int = 0
    backend: str = "auto"
    cuda_graph: bool = False
    graph_steps: int = GRAPH_STEPS
    name = "damped"
    tracks_best = False          # the driver returns the last iterate and residuals
    segment_period = SNAPSHOT_EVERY  # a segment's snapshots depend on its first step mod this

    def __post_init__(self):
        if not 0 < self.damping <= 1:
            raise ValueError(f"damping must be in (0, 1], got {self.damping!r}")
        if not self.noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__}")
        if not isinstance(self.backend, str):
            raise TypeError(f"backend must be a str, got {type(self.backend).__name__}")
        if isinstance(self.graph_steps, bool) or not isinstance(self.graph_steps, int) \
                or self.graph_steps < 1:
            raise ValueError(f"graph_steps must be an int >= 1, got {self.graph_steps!r}")

    @property
    def segment_steps(self):
        """K for the driver's segment mode (CUDA graphs), or None for step-by-step."""
        return self.graph_steps if self.cuda_graph else None

    def init(self, z0) -> SolverState:
        """Fresh state for z0: (B, n) float32/float64. The op keeps residuals in float32 or
        wider; no best iterate is kept (its (B, 1) placeholder is never read)."""
        z = z0.detach().clone(memory_format=torch.contiguous_format)
        track = SolveState.start(z.new_zeros(z.shape[0], 1, dtype=residual_dtype(z.dtype)))
        return SolverState(z=z, track=track, buffers=dict(snapshot=z.clone()), solver=self.name)

    def bind(self, state: SolverState, options):
        """(backend name, step(z, fz) -> None). The step reads state.steps, which the driver
        sets to the number of the step being run, for the snapshot cadence."""
        if options.capture:
            raise ValueError("solver 'damped' does not support capture (multi-state "
                             "supervision); use fixed_point with damping instead")
        name, fused_step = resolve_block_step(state.z.device, self.backend)
        # the device copy the kernel reads and advances; starts at the steps already run
        counter = new_step_counter(state.z.device, state.steps)
        track, snapshot = state.track, state.buffers["snapshot"]
        params = dict(damping=self.damping, sigma=self.noise_std, step=counter, seed=self.seed,
                      tol=options.tol, stop_mode=options.stop_mode)

        def step(z, fz):
            if state.steps % SNAPSHOT_EVERY == 0:  # device-side, no sync
                snapshot.copy_(torch.where(track.diverged[:, None], snapshot, z))
            fused_step(z, fz, z, track, **params)
        return name, step

    def step(self, z, fz, state: SolverState, options):
        """One step in place on state (z must be state.z); counts it in state.steps (the
        noise and the snapshot cadence follow it)."""
        if z is not state.z:
            raise ValueError("z must be state.z (the step advances the state's iterate in place)")
        step = self.bind(state, options)[1]
        state.steps += 1
        return step(z, fz)

    def finalize(self, state: SolverState, z):
        """What the driver returns: a diverged sample's last finite snapshot, never NaN/Inf."""
        return torch.where(state.track.diverged[:, None], state.buffers["snapshot"], z)


def damped(f, z0, *, max_iter=50, tol=1e-4, stop_mode="abs", damping=1.0, noise_std=0.0,
           seed=0, check_every=None, on_diverge="warn", trajectory=False, progress=False,
           backend="auto", compact_below=None, cuda_graph=False, graph_steps=GRAPH_STEPS,
           **driver):
    """Solve / run z = f(z) by damped iteration (see `Damped`). f: (B, n) -> (B, n); z0: (B, n).

    compact_below: None, or a fraction in (0, 1) of live samples below which the batch is
    compacted (needs f.restrict; not with trajectory=True).
    cuda_graph: segments of graph_steps steps, captured as CUDA graphs on a CUDA device;
    check_every is then graph_steps.
    driver: further eqk.solve arguments (state=, return_state=).
    Returns (z, SolverInfo) with z the last iterate; info.backend names the backend.
    """
    from eqkernels.solvers.driver import SolveOptions, solve
    solver = Damped(damping=damping, noise_std=noise_std, seed=seed, backend=backend,
                    cuda_graph=cuda_graph, graph_steps=graph_steps)
    return solve(f, z0, solver, SolveOptions(
        max_iter=max_iter, tol=tol, stop_mode=stop_mode, check_every=check_every,
        on_diverge=on_diverge, trajectory=trajectory, progress=progress,
        compact_below=compact_below), **driver)

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
and advances; no per-step Python int reaches the kernel.

CUDA-graph mode (cuda_graph=True): the loop runs in segments of K = graph_steps steps of
block + fused update on static buffers (the working iterate, the state, the counter, the
snapshot). On a CUDA device each segment shape is run once eagerly (the warm-up a capture
needs), then captured once into a CUDA graph and replayed; the all-done flag is read once
per segment (one host sync per K steps); compaction happens only at segment boundaries (a
compacted batch is a new shape: captured anew; at most GRAPH_CACHE_SIZE graphs are kept,
the oldest evicted). If capture fails (a block that syncs, allocates from the host, ...),
the run goes on eagerly and info.extra["cuda_graph"] says why. On a CPU the same segments
run uncaptured (tested there; the capture itself is checked by scripts/gpu_suite.sh).
Iterates, residuals and nstep equal the eager loop's bit for bit; only info.extra["steps"]
rounds up to a whole segment (frozen samples are untouched by the extra steps).
"""
from __future__ import annotations

from collections import OrderedDict

import torch

from eqkernels.ops.block_step import new_step_counter, residual_dtype, resolve_block_step
from eqkernels.ops.tracking import SolveState
from eqkernels.solvers.base import SolverInfo, _report_divergence, iterate, validate_options

SNAPSHOT_EVERY = 16
GRAPH_STEPS = 16       # K: steps per captured segment (default)
GRAPH_CACHE_SIZE = 4   # captured segments kept per run (shape x length x snapshot phase)


def damped(f, z0, *, max_iter=50, tol=1e-4, stop_mode="abs", damping=1.0, noise_std=0.0,
           seed=0, check_every=None, on_diverge="warn", trajectory=False, progress=False,
           backend="auto", compact_below=None, cuda_graph=False, graph_steps=GRAPH_STEPS):
    """Solve / run z = f(z) by damped iteration. f: (B, n) -> (B, n); z0: (B, n).

    damping in (0, 1]; noise_std >= 0 (0 = deterministic); seed: int for the noise.
    compact_below: None, or a fraction in (0, 1) of live samples below which the batch is
    compacted (needs f.restrict; not with trajectory=True).
    cuda_graph: run in segments of graph_steps steps, captured as CUDA graphs on a CUDA
    device (see the module docstring); check_every is then graph_steps; not with
    trajectory=True or progress=True (both look at every step).
    Returns (z, SolverInfo) with z the last iterate; info.backend names the backend.
    """
    if not 0 < damping <= 1:
        raise ValueError(f"damping must be in (0, 1], got {damping!r}")
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if cuda_graph:
        if not isinstance(graph_steps, int) or graph_steps < 1:
            raise ValueError(f"graph_steps must be an int >= 1, got {graph_steps!r}")
        if trajectory or progress:
            raise ValueError("cuda_graph=True cannot be combined with trajectory=True or "
                             "progress=True (both look at every step)")
    options = dict(max_iter=max_iter, tol=tol, stop_mode=stop_mode, damping=damping,
                   noise_std=noise_std, seed=seed, check_every=check_every, progress=progress,
                   backend=backend, graph_steps=graph_steps if cuda_graph else None)
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
        if "cuda_graph" in info.extra:
            info_out.extra.setdefault("cuda_graph", []).append(info.extra["cuda_graph"])
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
         trajectory, progress, backend, graph_steps=None, step_offset=0, stop_below=None):
    if graph_steps is not None:
        return _run_segments(f, z0, max_iter=max_iter, tol=tol, stop_mode=stop_mode,
                             damping=damping, noise_std=noise_std, seed=seed,
                             on_diverge=on_diverge, backend=backend, K=graph_steps,
                             step_offset=step_offset, stop_below=stop_below)
    snapshot = z0.clone(memory_format=torch.contiguous_format)  # last finite iterate per sample

    def make_step(z0):
        name, fused_step = resolve_block_step(z0.device, backend)
        counter = new_step_counter(z0.device, step_offset)  # the device copy the kernel reads
        host_count = [step_offset]  # the snapshot cadence only

        def step(z, fz, state):
            host_count[0] += 1
            if host_count[0] % SNAPSHOT_EVERY == 0:  # device-side, no sync
                snapshot.copy_(torch.where(state.diverged[:, None], snapshot, z))
            return fused_step(z, fz, z, state, damping=damping, sigma=noise_std, step=counter,
                              seed=seed, tol=tol, stop_mode=stop_mode)
        return name, step

    # The op keeps residuals in float32 or wider, whatever z's dtype.
    state = SolveState.start(z0.new_zeros(z0.shape[0], 1, dtype=residual_dtype(z0.dtype)))
    z, info = iterate(f, z0, make_step, solver="damped", max_iter=max_iter, tol=tol,
                      stop_mode=stop_mode, check_every=check_every, on_diverge=on_diverge,
                      trajectory=trajectory, progress=progress, returns="last", state=state,
                      stop_below=stop_below)
    return torch.where(info.diverged[:, None], snapshot, z), info


def _capture_graph(fn):
    """Records fn() into a CUDA graph (nothing runs); returns an object with .replay()."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


class SegmentRunner:
    """Runs body(k, base) -- k steps, the first being step base + 1 -- eagerly, or (capture)
    as a replay of a CUDA graph recorded per key (k, base % SNAPSHOT_EVERY): the first
    segment of a key runs eagerly (the warm-up of lazy initialisations a capture needs), the
    second captures it, every later one replays. A failed capture switches the runner to
    eager for good, keeping the reason. At most `cache_size` graphs are kept."""

    def __init__(self, body, capture: bool, reason: str, cache_size: int = GRAPH_CACHE_SIZE):
        self.body, self.capture, self.reason = body, capture, reason
        self.cache: OrderedDict = OrderedDict()
        self.cache_size = cache_size
        self.warm: set = set()
        self.captures = self.replays = self.eager_segments = self.evictions = 0

    def run(self, k: int, base: int) -> None:
        key = (k, base % SNAPSHOT_EVERY)
        if self.capture and key in self.cache:
            self.cache.move_to_end(key)
            self.cache[key].replay()
            self.replays += 1
            return
        if self.capture and key in self.warm:
            try:
                graph = _capture_graph(lambda: self.body(k, base))
            except Exception as err:  # noqa: BLE001 -- any failure: go on eagerly, say why
                self.capture = False
                self.reason = f"eager: capture failed ({type(err).__name__}: {err})"
            else:
                self.captures += 1
                self.cache[key] = graph
                if len(self.cache) > self.cache_size:
                    self.cache.popitem(last=False)
                    self.evictions += 1
                graph.replay()
                self.replays += 1
                return
        self.warm.add(key)
        self.body(k, base)
        self.eager_segments += 1

    def describe(self) -> str:
        counts = (f"{self.captures} captures, {self.replays} replays, {self.eager_segments} "
                  f"eager segments, {self.evictions} evictions")
        return f"captured ({counts})" if self.capture else f"{self.reason} ({counts})"


def _run_segments(f, z0, *, max_iter, tol, stop_mode, damping, noise_std, seed, on_diverge,
                  backend, K, step_offset=0, stop_below=None):
    """The loop of _run in segments of K steps (CUDA-graph mode); same iterates and state."""
    validate_options(z0, max_iter=max_iter, tol=tol, stop_mode=stop_mode, check_every=None,
                     on_diverge=on_diverge)
    device = z0.device
    name, fused_step = resolve_block_step(device, backend)
    # Static buffers: every captured segment reads and writes these, and only these.
    z = z0.clone(memory_format=torch.contiguous_format)
    snapshot = z.clone()
    state = SolveState.start(z0.new_zeros(z0.shape[0], 1, dtype=residual_dtype(z0.dtype)))
    counter = new_step_counter(device, step_offset)

    def body(k, base):
        for j in range(k):
            if (base + j + 1) % SNAPSHOT_EVERY == 0:  # the eager loop's snapshot cadence
                snapshot.copy_(torch.where(state.diverged[:, None], snapshot, z))
            fz = f(z)
            if not isinstance(fz, torch.Tensor) or fz.shape != z.shape:
                raise ValueError(f"f(z) must return a tensor of shape {tuple(z.shape)}, got "
                                 f"{tuple(fz.shape) if isinstance(fz, torch.Tensor) else type(fz)}")
            fused_step(z, fz.to(z.dtype).contiguous(), z, state, damping=damping,
                       sigma=noise_std, step=counter, seed=seed, tol=tol, stop_mode=stop_mode)

    capture = device.type == "cuda"
    runner = SegmentRunner(body, capture, "captured" if capture
                           else f"eager: not a CUDA device ({device.type})")
    it, stopped_below = 0, False
    while it < max_iter:
        k = min(K, max_iter - it)
        runner.run(k, step_offset + it)
        it += k
        if stop_below is None:  # the one host sync of the segment
            if not bool(state.active.any()):
                break
        else:
            n_active = int(state.active.sum())
            if n_active == 0:
                break
            if n_active < stop_below * z.shape[0]:
                stopped_below = True
                break
    info = SolverInfo(nstep=state.nstep, abs_residual=state.abs_res, rel_residual=state.rel_res,
                      converged=state.converged, diverged=state.diverged, solver="damped",
                      backend=name, extra=dict(steps=it, stopped_below=stopped_below,
                                               cuda_graph=runner.describe(),
                                               segments=runner))
    _report_divergence(info, on_diverge)
    return torch.where(info.diverged[:, None], snapshot, z), info

"""One options object and one driver loop for every solver object.

    solver = eqk.Anderson(m=5)                       # the solver's own options, validated
    options = eqk.SolveOptions(max_iter=100, tol=1e-6)
    z, info = eqk.solve(f, z0, solver, options)
    z, info, state = eqk.solve(f, z0, solver, options, return_state=True)
    z, info = eqk.solve(f, None, solver, options, state=state)   # resume: same iterates

A solver object has `name`, `init(z0) -> SolverState` and `bind(state, options) ->
(backend, step)`, where `step(z, fz)` advances z in place for the samples still active
and returns how many are still active when it knows for free (the bound C++ CPU kernel
counts as it goes), else None; `step(z, fz, state, options)` is the same as one call.
While a step runs, state.steps is the number of that step (all calls together).
Optional, for solvers that need them: `tracks_best = False` (return the last iterate and
residuals whatever options.returns says), `finalize(state, z) -> z` (the iterate to
return), `segment_steps` (K: run in K-step segments, captured as CUDA graphs on a GPU;
see segments.py) and `segment_period`.

The loop does no per-step allocation and no per-step reduction of its own: it evaluates
f, calls the pre-bound step, and asks the device "all done?" only every check_every
steps (on a GPU each ask is a host sync) unless the step already said; in segment mode,
once per segment.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from eqkernels.ops.tracking import STOP_MODES
from eqkernels.solvers.base import (DEFAULT_CHECK_EVERY, ON_DIVERGE, SolverInfo, _ProgressBar,
                                    _report_divergence)
from eqkernels.solvers.segments import SegmentRunner
from eqkernels.solvers.state import SolverState
from eqkernels.solvers.trajectory import TrajectoryRecorder

RETURNS = ("best", "last")


@dataclass(frozen=True)
class SolveOptions:
    """Options of the driver loop, the same for every solver.

    max_iter: f evaluations this call may make (a resumed run counts on from its state).
    tol, stop_mode ("abs" | "rel"): a sample stops once its residual is below tol.
    check_every: steps between "all done?" checks (None: 1 on CPU, 16 on CUDA).
    on_diverge: "warn" | "raise" | "ignore" when a sample's residual turns NaN/Inf.
    trajectory: record abs and rel residuals per step (bounded memory, see trajectory.py).
    progress: a progress bar (step, live samples, median residual).
    returns: "best" (each sample's lowest-residual iterate) or "last" (the final iterate).
    compact_below: None, or a fraction in (0, 1): once fewer live samples than this fraction
      of the current batch remain, go on with the live rows only (f must offer
      f.restrict(rows); eqk.DEQ's map does).
    capture: steps (1-based, counted in this call) after which each sample's best iterate is
      copied out (info.captured, same order); a step the run did not reach gets the final
      best iterate (a stopped sample's iterate does not change after it stops).
    """

    max_iter: int = 50
    tol: float = 1e-4
    stop_mode: str = "abs"
    check_every: Optional[int] = None
    on_diverge: str = "warn"
    trajectory: bool = False
    progress: bool = False
    returns: str = "best"
    compact_below: Optional[float] = None
    capture: Tuple[int, ...] = ()

    def __post_init__(self):
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ValueError(f"max_iter must be an int >= 1, got {self.max_iter!r}")
        if not isinstance(self.tol, (int, float)) or not self.tol > 0:
            raise ValueError(f"tol must be > 0, got {self.tol!r}")
        if self.stop_mode not in STOP_MODES:
            raise ValueError(f"stop_mode must be one of {STOP_MODES}, got {self.stop_mode!r}")
        if self.check_every is not None and (not isinstance(self.check_every, int)
                                             or self.check_every < 1):
            raise ValueError(f"check_every must be an int >= 1 or None, got {self.check_every!r}")
        if self.on_diverge not in ON_DIVERGE:
            raise ValueError(f"on_diverge must be one of {ON_DIVERGE}, got {self.on_diverge!r}")
        if self.returns not in RETURNS:
            raise ValueError(f"returns must be one of {RETURNS}, got {self.returns!r}")
        if self.compact_below is not None and not 0 < self.compact_below < 1:
            raise ValueError(f"compact_below must be in (0, 1) or None, got {self.compact_below!r}")
        capture = tuple(self.capture)
        if not all(isinstance(k, int) and k >= 1 for k in capture):
            raise ValueError(f"capture must be steps (ints >= 1), got {self.capture!r}")
        object.__setattr__(self, "capture", capture)
        if self.compact_below is not None and (self.trajectory or capture):
            raise ValueError("compact_below cannot be combined with trajectory=True or capture")

    def replace(self, **changes) -> "SolveOptions":
        return dataclasses.replace(self, **changes)


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(SolveOptions))


def check_z0(z0) -> None:
    if not isinstance(z0, torch.Tensor) or z0.dim() != 2:
        raise ValueError(f"z0 must be a (B, n) tensor, got "
                         f"{tuple(z0.shape) if isinstance(z0, torch.Tensor) else type(z0).__name__}")
    if z0.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"z0 must be float32 or float64 (solver state), got {z0.dtype}")


def solve(f, z0: Optional[torch.Tensor], solver, options: Optional[SolveOptions] = None, *,
          state: Optional[SolverState] = None, return_state: bool = False, **option_changes):
    """Solve z = f(z) with `solver` (an object such as eqk.Anderson(), or a name).

    f: (B, n) -> (B, n); z0: (B, n) float32/float64, or None with state= (resume / warm
    start from a SolverState). option_changes override fields of `options`.
    Returns (z, info), or (z, info, state) with return_state (the state after the last
    step: pass it back as state= to go on exactly where this call stopped).
    """
    if isinstance(solver, str) or not hasattr(solver, "bind"):
        from eqkernels.solvers import as_solver
        solver = as_solver(solver)
    options = SolveOptions() if options is None else options
    if not isinstance(options, SolveOptions):
        raise TypeError(f"options must be an eqk.SolveOptions, got {type(options).__name__}")
    if option_changes:
        options = options.replace(**option_changes)
    if state is None:
        check_z0(z0)
        state = solver.init(z0)
    else:
        if z0 is not None:
            raise ValueError("pass either z0 or state=, not both (state carries the iterate)")
        if not isinstance(state, SolverState):
            raise TypeError(f"state must be a SolverState, got {type(state).__name__}")
        if state.solver != solver.name:
            raise ValueError(f"state was made by solver {state.solver!r}, not {solver.name!r}")
    z, info = _run(f, state, solver, options)
    if return_state:  # the caller may go on with state: do not let info alias it
        info = dataclasses.replace(info, nstep=info.nstep.clone(),
                                   abs_residual=info.abs_residual.clone(),
                                   rel_residual=info.rel_residual.clone(),
                                   converged=info.converged.clone(),
                                   diverged=info.diverged.clone())
        return z.clone(), info, state
    return z, info


def _evaluate(f, z):
    """f(z) as the step needs it: z's shape, dtype and a dense layout. The common case (a
    plain tensor that already fits) costs three attribute checks; anything else goes to
    _conform, which raises or converts."""
    fz = f(z)
    if type(fz) is not torch.Tensor or fz.shape != z.shape or fz.dtype is not z.dtype \
            or not fz.is_contiguous():
        fz = _conform(fz, z)
    return fz


def _conform(fz, z):
    """f's output checked (once per shape/dtype surprise) and brought to z's dtype/layout."""
    if not isinstance(fz, torch.Tensor) or fz.shape != z.shape:
        raise ValueError(f"f(z) must return a tensor of shape {tuple(z.shape)}, got "
                         f"{tuple(fz.shape) if isinstance(fz, torch.Tensor) else type(fz).__name__}")
    # The block may run in low precision; solver state stays in z's dtype.
    return fz.to(z.dtype).contiguous()


def _numpy_view(t: torch.Tensor):
    return t.numpy() if t.device.type == "cpu" and not t.requires_grad else None


def _segment_runner(f, state: SolverState, step, solver) -> SegmentRunner:
    """The runner of K-step segments of f + step on state's (static) buffers."""
    z = state.z

    def body(k, base):
        for j in range(k):
            state.steps = base + j + 1
            step(z, _evaluate(f, z))
    capture = z.device.type == "cuda"
    return SegmentRunner(body, capture, "captured" if capture
                         else f"eager: not a CUDA device ({z.device.type})",
                         period=getattr(solver, "segment_period", 1))


def _run(f, state: SolverState, solver, opt: SolveOptions):
    full = state
    rows = None  # global row indices of `state` within `full` once compacted
    if opt.compact_below is not None and not callable(getattr(f, "restrict", None)):
        raise TypeError("compact_below needs f.restrict(rows) -> the map of those batch rows "
                        "(eqkernels.DEQ provides it); a plain function cannot be compacted")
    K = getattr(solver, "segment_steps", None)
    if K is not None and (opt.trajectory or opt.progress or opt.capture):
        raise ValueError(f"solver {solver.name!r} with cuda_graph=True cannot be combined with "
                         f"trajectory=True, progress=True or capture (they look at every step)")
    backend, step = solver.bind(state, opt)
    z, track = state.z, state.track
    check_every = opt.check_every or DEFAULT_CHECK_EVERY.get(z.device.type, 16)
    recorders = (TrajectoryRecorder(), TrajectoryRecorder()) if opt.trajectory else None
    bar = _ProgressBar(solver.name, opt.max_iter) if opt.progress else None
    capture = {k: i for i, k in enumerate(opt.capture)}
    captured = [None] * len(opt.capture)
    compact = opt.compact_below
    compactions = []
    runners = [] if K is None else [_segment_runner(f, state, step, solver)]
    offset = state.steps
    # On the CPU "any sample active?" reads the flags through a NumPy view of the same
    # memory: no torch op per step (its dispatch costs more than the look itself).
    active_np = _numpy_view(track.active)
    it = 0
    while it < opt.max_iter:
        if K is None:  # one step
            it += 1
            state.steps = offset + it
            # the block's output is dead after the step: nothing holds it across the next call
            n_active = step(z, _evaluate(f, z))
            if recorders is not None:
                recorders[0].record(offset + it, track.abs_res)
                recorders[1].record(offset + it, track.rel_res)
            if capture and it in capture:
                captured[capture[it]] = track.best_z.clone()
            if n_active is None and it % check_every and it != opt.max_iter:
                continue
        else:  # one segment of up to K steps, then its one check
            k = min(K, opt.max_iter - it)
            runners[-1].run(k, offset + it)
            it += k
            state.steps = offset + it
            n_active = None
        if n_active is None:
            if compact is None:
                # bool flags are bytes 0/1: one bytes search beats a torch or NumPy reduction
                done = (1 not in active_np.tobytes()) if active_np is not None \
                    else not bool(track.active.any())
            else:  # the same one sync, but the count is needed
                n_active = int(track.active.sum())
                done = n_active == 0
        else:
            done = n_active == 0
        if bar is not None:
            bar.update(it, track, n_active)
        if done:
            break
        if compact is not None and n_active < compact * z.shape[0] and it < opt.max_iter:
            live = track.active.nonzero().squeeze(1)
            if rows is None:
                rows = torch.arange(full.batch_size, device=z.device)
            else:
                full.put_(rows, state)
            state, rows, f = state.take(live), rows[live], f.restrict(live)
            compactions.append((offset + it, live.numel()))
            backend, step = solver.bind(state, opt)
            z, track = state.z, state.track
            active_np = _numpy_view(track.active)
            if K is not None:
                runners.append(_segment_runner(f, state, step, solver))
    state.steps = offset + it
    if rows is not None:
        full.put_(rows, state)
        state, track = full, full.track
    if bar is not None:
        bar.close(track)
    for i, c in enumerate(captured):
        if c is None:
            captured[i] = track.best_z.clone()
    best = opt.returns == "best" and getattr(solver, "tracks_best", True)
    abs_rows, steps = recorders[0].result() if recorders is not None else (None, None)
    rel_rows = recorders[1].result()[0] if recorders is not None else None
    extra = dict(steps=it, total_steps=state.steps, compactions=compactions)
    if runners:
        graphs = [r.describe() for r in runners]
        extra.update(cuda_graph=graphs[0] if len(graphs) == 1 else graphs, segments=runners[-1])
    info = SolverInfo(nstep=track.nstep, abs_residual=track.best_abs if best else track.abs_res,
                      rel_residual=track.best_rel if best else track.rel_res,
                      converged=track.converged, diverged=track.diverged, solver=solver.name,
                      backend=backend, trajectory=abs_rows, trajectory_steps=steps,
                      rel_trajectory=rel_rows, extra=extra)
    if opt.capture:
        info.captured = captured
    _report_divergence(info, opt.on_diverge)
    z_out = track.best_z if best else state.z
    finalize = getattr(solver, "finalize", None)
    return (z_out if finalize is None else finalize(state, z_out)), info

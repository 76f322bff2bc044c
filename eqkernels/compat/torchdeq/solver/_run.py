"""Run an eqkernels solver object (eqk.Anderson(), eqk.Broyden(), ...) as a torchdeq solver
function: func on tensors shaped like x0 in, (z, indexing_list, SolverStat) out.

The steps are eqkernels' (its bound step, per-sample tracking, NaN freezing); this loop adds
what torchdeq's callers read: a residual trace per step, the step of each sample's best
iterate, the states at the `indexing` steps, and the stopping rule:
  stop_rule="sample": a sample stops once its residual is below tol; the solve ends when
                      every sample has stopped (eqkernels' rule, the default);
  stop_rule="batch":  every sample iterates until all current residuals are below tol at
                      once (torchdeq's rule); broyden also ends after 30 steps without
                      progress near tol, as torchdeq's does.
Step k is the k-th evaluation of f (torchdeq's indexing counts f evaluations too).
"""
from __future__ import annotations

import warnings

import torch

from eqkernels.compat.torchdeq._options import STOP_RULES
from eqkernels.compat.torchdeq.solver.stat import SolverStat
from eqkernels.compat.torchdeq.solver.utils import batch_flatten
from eqkernels.solvers import SolveOptions

TRACE_INIT = 1e8  # torchdeq's traces and lowest values start at this placeholder
_NEVER = 5e-324  # a tolerance no residual gets below: samples stay active (batch rule)
_NO_PROGRESS_STEPS = 30  # torchdeq's broyden: steps looked back on, and the 3 tol / 1.3 test


def ignored(solver_name, kwargs, allowed=()):
    """Warn about solver keyword arguments torchdeq's solver ignores too (solver_kwargs)."""
    extra = sorted(set(kwargs) - set(allowed))
    if extra:
        what = f"{extra[0]!r} is not an option" if len(extra) == 1 else \
            f"{', '.join(map(repr, extra))} are not options"
        warnings.warn(f"{solver_name}: {what} of torchdeq's {solver_name}; ignored, as "
                      f"torchdeq ignores it", stacklevel=3)


def check_mode(stop_mode, tol, stop_rule):
    if stop_mode not in ("abs", "rel"):
        raise ValueError(f"stop_mode must be 'abs' or 'rel', got {stop_mode!r}")
    if not isinstance(tol, (int, float)) or not tol > 0:
        raise ValueError(f"tol must be a number > 0, got {tol!r}")
    if stop_rule not in STOP_RULES:
        raise ValueError(f"stop_rule must be one of {STOP_RULES}, got {stop_rule!r}")


def empty_stat(B, device, dtype):
    """What torchdeq reports for a solve of 0 steps: 1e8 residuals, nstep 0."""
    init = torch.full((B,), TRACE_INIT, device=device, dtype=dtype)
    return SolverStat(abs_lowest=init, rel_lowest=init.clone(), abs_trace=init[:, None],
                      rel_trace=init[:, None].clone(), nstep=torch.zeros(B, device=device))


def _trace(rows, lowest, width, B, device, dtype):
    """(B, width): 1e8, the recorded rows, then the lowest value (torchdeq's padding)."""
    cols = [torch.full((B,), TRACE_INIT, device=device, dtype=dtype)] + rows[:width - 1]
    cols += [lowest] * (width - len(cols))
    return torch.stack(cols, dim=1)


def run(solver, func, x0, *, max_iter, tol, stop_mode, indexing=None, return_final=False,
        stop_rule="sample", name="solver", trace_width=None, trace_skip=0, step_offset=0,
        no_progress_stop=False, image=None):
    """Solve z = func(z) from x0 with `solver` (an object with init / bind).

    x0: (B, ...) tensor (0-D / 1-D: a batch of scalars); func maps tensors shaped like x0.
    max_iter: f evaluations; trace_width: T of the traces (default max_iter + 1);
    trace_skip: first steps left out of the traces (torchdeq's anderson does not record its
    two start-up evaluations, its broyden not the one at x0); step_offset: subtracted from a
    step to give nstep (broyden counts its steps after the evaluation at x0).
    Returns (z like x0, states at the indexing steps that were reached -- or [z] if none
    was --, SolverStat)."""
    if not torch.is_tensor(x0):
        raise TypeError(f"{name}: x0 must be a tensor, got {type(x0).__name__} (a list of "
                        f"states is solved packed, or by simple_fixed_point_iter)")
    check_mode(stop_mode, tol, stop_rule)
    max_iter = int(max_iter)
    shape, dtype = x0.shape, x0.dtype
    flat = batch_flatten(x0.detach())
    B = flat.shape[0]
    sdtype = flat.dtype if flat.dtype in (torch.float32, torch.float64) else torch.float32
    indexing = [int(k) for k in (indexing or [])]

    def out(z):
        return z.reshape(shape).to(dtype)

    if max_iter <= 0:  # torchdeq returns x0 untouched (deq-inr's "skip the solver")
        return x0, ([x0] if indexing else []), empty_stat(B, x0.device, sdtype)

    def f(z):
        fz = func(out(z))
        if not torch.is_tensor(fz) or fz.numel() != z.numel():
            raise ValueError(f"{name}: func must return a tensor shaped like x0 "
                             f"{tuple(shape)}, got "
                             f"{tuple(fz.shape) if torch.is_tensor(fz) else type(fz).__name__}")
        return fz.reshape(B, -1).to(sdtype).contiguous()

    batch = stop_rule == "batch" or return_final
    options = SolveOptions(max_iter=max_iter, tol=_NEVER if batch else float(tol),
                           stop_mode=stop_mode)
    state = solver.init(flat.to(sdtype))
    _, step = solver.bind(state, options)
    z, track = state.z, state.track
    best_of = (lambda: track.best_abs) if stop_mode == "abs" else (lambda: track.best_rel)
    current = track.abs_res if stop_mode == "abs" else track.rel_res
    best_step = torch.zeros(B, device=z.device)
    best_img = last_img = z.clone() if image is not None else None
    abs_rows, rel_rows, states = [], [], []

    def returned():  # the iterate returned now (and at the indexing steps)
        if image is not None:
            return last_img if return_final else best_img
        return z if return_final else track.best_z

    for k in range(1, max_iter + 1):
        before = best_of().clone()
        fz = f(z)
        if image is not None:
            last_img = image(z, fz)
        n_active = step(z, fz)
        improved = best_of() < before
        best_step = torch.where(improved, float(k), best_step)
        if image is not None:
            best_img = torch.where(improved[:, None], last_img, best_img)
        abs_rows.append(track.abs_res.clone())
        rel_rows.append(track.rel_res.clone())
        if k in indexing:
            states.append(out(returned().clone()))
        if return_final:
            continue
        if not batch:
            if (n_active == 0) if n_active is not None else not bool(track.active.any()):
                break
        elif float(current.max()) < tol:
            break
        elif no_progress_stop and k - 1 > _NO_PROGRESS_STEPS:
            recent = torch.stack(abs_rows[-_NO_PROGRESS_STEPS:] if stop_mode == "abs"
                                 else rel_rows[-_NO_PROGRESS_STEPS:])
            spread = recent.amax(dim=1) / recent.amin(dim=1)
            if float(current.max()) < 3 * tol and float(spread.max()) < 1.3:
                break
    if bool(track.diverged.any()):
        warnings.warn(f"{name}: {int(track.diverged.sum())} of {B} samples produced NaN/Inf; "
                      f"they were frozen and an earlier finite iterate of theirs is returned",
                      RuntimeWarning, stacklevel=3)
    z_out = out(returned().clone())
    if indexing and not states:
        states = [z_out]
    # torchdeq's lowest values: each residual's own minimum over the steps (NaN never wins)
    # (amin: min(dim=0) with indices costs milliseconds on a small (T, B) CPU tensor)
    abs_low = torch.stack(abs_rows).nan_to_num(nan=TRACE_INIT).amin(dim=0).clamp(max=TRACE_INIT)
    rel_low = torch.stack(rel_rows).nan_to_num(nan=TRACE_INIT).amin(dim=0).clamp(max=TRACE_INIT)
    width = max(1, max_iter + 1 if trace_width is None else trace_width)
    stat = SolverStat(
        abs_lowest=abs_low, rel_lowest=rel_low,
        abs_trace=_trace(abs_rows[trace_skip:], abs_low, width, B, z.device, sdtype),
        rel_trace=_trace(rel_rows[trace_skip:], rel_low, width, B, z.device, sdtype),
        nstep=(best_step - step_offset).clamp(min=0))
    return z_out, states, stat


__all__ = ["run", "ignored", "empty_stat", "check_mode", "TRACE_INIT"]

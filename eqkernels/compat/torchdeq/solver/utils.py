"""torchdeq.solver.utils: the helpers a torchdeq-style solver is written with (batch_flatten,
init_solver_info, update_state, batch_masked_mixing, solver_stat_from_info) and the
statistics constructors (solver_stat_from_final_step, dummy_solver_stat). A solver written
on them runs here unchanged and can be registered with register_solver."""
from __future__ import annotations

import torch

from eqkernels.compat.torchdeq.solver.stat import SolverStat

_INIT_LOSS = 1e8


def batch_flatten(x):
    """(B, ...) -> (B, n); a 0-D or 1-D tensor is a batch of scalars: (numel, 1)."""
    return x.flatten(start_dim=1) if x.dim() >= 2 else x.reshape(x.numel(), 1)


def init_solver_info(bsz, device, init_loss=_INIT_LOSS):
    """(trace_dict, lowest_dict, lowest_step_dict) for 'abs' and 'rel': traces start with
    [init_loss (bsz,)], lowest values at init_loss, steps at 0."""
    full = lambda v: torch.full((bsz,), float(v), device=device)  # noqa: E731
    return ({"abs": [full(init_loss)], "rel": [full(init_loss)]},
            {"abs": full(init_loss), "rel": full(init_loss)},
            {"abs": full(0), "rel": full(0)})


def batch_masked_mixing(mask, mask_var, orig_var):
    """mask_var where mask (B,) is set, orig_var elsewhere (mask aligned to the leading dim)."""
    ref = mask_var if torch.is_tensor(mask_var) else orig_var
    if not torch.is_tensor(ref):
        raise ValueError("Either mask_var or orig_var should be a tensor")
    aligned = mask.reshape(mask.shape[0], *[1] * (ref.dim() - 1))
    return aligned * mask_var + ~aligned * orig_var


def update_state(lowest_xest, x_est, nstep, stop_mode, abs_diff, rel_diff, trace_dict,
                 lowest_dict, lowest_step_dict, return_final=False):
    """Record one step's residuals in the traces and keep each sample's lowest ones (and,
    for stop_mode, its iterate); returns the lowest-residual iterate so far."""
    diffs = {"abs": abs_diff, "rel": rel_diff}
    trace_dict["abs"].append(abs_diff)
    trace_dict["rel"].append(rel_diff)
    for mode in ("rel", "abs"):
        is_lowest = (diffs[mode] < lowest_dict[mode]) | bool(return_final)
        if mode == stop_mode:
            lowest_xest = batch_masked_mixing(is_lowest, x_est, lowest_xest).clone().detach()
        lowest_dict[mode] = batch_masked_mixing(is_lowest, diffs[mode], lowest_dict[mode])
        lowest_step_dict[mode] = batch_masked_mixing(is_lowest, nstep, lowest_step_dict[mode])
    return lowest_xest


def solver_stat_from_info(stop_mode, lowest_dict, trace_dict, lowest_step_dict):
    """SolverStat from the dicts init_solver_info / update_state maintain."""
    return SolverStat.from_solver_info(stop_mode, lowest_dict, trace_dict, lowest_step_dict)


def solver_stat_from_final_step(z, fz, nstep=0):
    """SolverStat of a final step fz = f(z): residuals (B,), (B, 1) traces, nstep for all."""
    return SolverStat.from_final_step(z, fz, nstep=nstep)


def dummy_solver_stat():
    """A SolverStat of placeholders (-1)."""
    return SolverStat()


__all__ = ["batch_flatten", "init_solver_info", "batch_masked_mixing", "update_state",
           "solver_stat_from_info", "solver_stat_from_final_step", "dummy_solver_stat"]

"""torchdeq.solver.stat: SolverStat, the dict of solver statistics deq(...) returns as info.

Keys (B = batch size):
  abs_lowest, rel_lowest: (B,) lowest ||f(z) - z|| and ||f(z) - z|| / ||f(z)|| reached;
  abs_trace, rel_trace:   (B, T) those residuals along the solver steps (torchdeq's layout:
                          a first column 1e8, then one column per recorded step, padded with
                          the lowest value up to T -- max_iter + 1 for fixed_point_iter and
                          broyden, max_iter - 1 for anderson);
  nstep:                  (B,) float, the step at which the returned iterate was reached;
  sradius:                spectral radius estimate (B,) in eval with sradius_mode, else a
                          placeholder.
Missing keys get torchdeq's placeholders: tensor([-1.]) and, for the traces, tensor([[-1.]]).
"""
from __future__ import annotations

import torch


class SolverStat(dict):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for key in ("abs_lowest", "rel_lowest", "nstep", "sradius"):
            self.setdefault(key, torch.tensor([-1.0]))
        for key in ("abs_trace", "rel_trace"):
            self.setdefault(key, torch.tensor([[-1.0]]))

    @classmethod
    def from_solver_info(cls, stop_mode, lowest_dict, trace_dict, lowest_step_dict):
        """From the per-mode dicts of a torchdeq-style solver (solver/utils.py)."""
        return cls(abs_lowest=lowest_dict["abs"], rel_lowest=lowest_dict["rel"],
                   abs_trace=torch.stack(trace_dict["abs"], dim=1),
                   rel_trace=torch.stack(trace_dict["rel"], dim=1),
                   nstep=lowest_step_dict[stop_mode])

    @classmethod
    def from_final_step(cls, z, fz, nstep=0):
        """Statistics of one final step fz = f(z) (tensors or lists of tensors, (B, ...));
        traces are (B, 1), nstep = nstep for every sample."""
        def flat(t):  # (B, n); a 0-D / 1-D tensor is a batch of scalars
            return t.flatten(start_dim=1) if t.dim() >= 2 else t.reshape(t.numel(), 1)
        if not torch.is_tensor(z):
            z = torch.cat([flat(t) for t in z], dim=1)
            fz = torch.cat([flat(t) for t in fz], dim=1)
        z, fz = flat(z), flat(fz)
        abs_lowest = (fz - z).norm(dim=1)
        rel_lowest = abs_lowest / (fz.norm(dim=1) + 1e-8)
        return cls(abs_lowest=abs_lowest, rel_lowest=rel_lowest,
                   abs_trace=abs_lowest[:, None], rel_trace=rel_lowest[:, None],
                   nstep=torch.full((z.shape[0],), float(nstep), device=z.device))


__all__ = ["SolverStat"]

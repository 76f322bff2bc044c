"""A solve's explicit state: what a run needs to be compacted, warm-started, saved and resumed.

Everything per sample has leading dimension B, so one `take(rows)` serves every solver:

    z:        (B, n)  the current iterate (the solver advances it in place)
    track:    SolveState: active / converged / diverged flags, nstep, residuals, best iterate
    buffers:  the solver's own memory, each tensor (B, ...): Anderson's history X, G, gram,
              count; Broyden's secant pairs U, V, ...; empty for fixed_point
    steps:    iterations the driver loop has run on this state (all calls together)
    solver:   name of the solver that made it (a state only resumes with that solver)

A run resumed from a saved state makes exactly the iterates of an uninterrupted run: the
state holds all the loop carries from one step to the next.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Dict

import torch

from eqkernels.ops.tracking import SolveState

_TRACK_FIELDS = tuple(f.name for f in fields(SolveState))


@dataclass
class SolverState:
    z: torch.Tensor
    track: SolveState
    buffers: Dict[str, torch.Tensor] = field(default_factory=dict)
    steps: int = 0
    solver: str = ""

    @property
    def batch_size(self) -> int:
        return self.z.shape[0]

    def take(self, rows) -> "SolverState":
        """The state of batch rows `rows` ((k,) int64 indices or (B,) bool mask); copies."""
        if isinstance(rows, torch.Tensor) and rows.dtype == torch.bool:
            if rows.shape != (self.batch_size,):
                raise ValueError(f"rows as a mask must have shape ({self.batch_size},), "
                                 f"got {tuple(rows.shape)}")
            rows = rows.nonzero().squeeze(1)
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.z.device)
        return SolverState(
            z=self.z[rows].contiguous(),
            track=SolveState(**{k: getattr(self.track, k)[rows].contiguous()
                                for k in _TRACK_FIELDS}),
            buffers={k: v[rows].contiguous() for k, v in self.buffers.items()},
            steps=self.steps, solver=self.solver)

    def put_(self, rows: torch.Tensor, part: "SolverState") -> None:
        """Write `part` (the state of batch rows `rows`, e.g. from take) back in place."""
        self.z[rows] = part.z
        for k in _TRACK_FIELDS:
            getattr(self.track, k)[rows] = getattr(part.track, k)
        for k, v in self.buffers.items():
            v[rows] = part.buffers[k]
        self.steps = part.steps

    def warm_start(self, *, keep_history: bool = True) -> "SolverState":
        """A fresh solve starting at this state's iterate: tracking (flags, nstep, residuals,
        best iterate) reset; the solver's history kept (keep_history) or cleared."""
        z = self.z.clone()
        buffers = ({k: v.clone() for k, v in self.buffers.items()} if keep_history
                   else {k: torch.zeros_like(v) for k, v in self.buffers.items()})
        track = SolveState.start(z) if self.track.abs_res.dtype == z.dtype else \
            SolveState.start(z.new_zeros(z.shape[0], 1, dtype=self.track.abs_res.dtype))
        track.best_z = z.clone()
        return SolverState(z=z, track=track, buffers=buffers, steps=0, solver=self.solver)

    def state_dict(self) -> dict:
        """Plain dict of tensors and numbers (torch.save-able)."""
        return {"z": self.z, "track": {k: getattr(self.track, k) for k in _TRACK_FIELDS},
                "buffers": dict(self.buffers), "steps": self.steps, "solver": self.solver}

    @classmethod
    def from_state_dict(cls, d: dict) -> "SolverState":
        missing = {"z", "track", "buffers", "steps", "solver"} - set(d)
        if missing:
            raise ValueError(f"state dict is missing {sorted(missing)}")
        return cls(z=d["z"], track=SolveState(**d["track"]), buffers=dict(d["buffers"]),
                   steps=int(d["steps"]), solver=str(d["solver"]))

    def to(self, device) -> "SolverState":
        mv = lambda t: t.to(device)
        return SolverState(z=mv(self.z), track=SolveState(**{k: mv(getattr(self.track, k))
                                                             for k in _TRACK_FIELDS}),
                           buffers={k: mv(v) for k, v in self.buffers.items()},
                           steps=self.steps, solver=self.solver)

"""Residual trajectory with memory bounded independently of max_iter.

A 40,000-step solve cannot keep one (B,) residual per step. The recorder keeps at
most `capacity` rows: it starts by recording every step, and each time the buffer
fills it drops every other row and doubles its stride. So a run of any length ends
with between capacity/2 and capacity evenly spaced rows, and `steps` says which
iteration each row was taken at. Recording is a device-side copy: no host sync.
"""
from __future__ import annotations

import torch

DEFAULT_CAPACITY = 1024


class TrajectoryRecorder:
    def __init__(self, capacity: int = DEFAULT_CAPACITY):
        if capacity < 2 or capacity % 2:
            raise ValueError(f"trajectory capacity must be an even int >= 2, got {capacity!r}")
        self.capacity = capacity
        self.stride = 1
        self.rows = None  # (capacity, B) buffer, allocated on the first record
        self.steps = []   # iteration number of each kept row
        self._next = self.stride  # next iteration to record

    def record(self, step: int, values: torch.Tensor) -> None:
        """Offer the (B,) residual after iteration `step` (1-based, increasing)."""
        if step < self._next:
            return
        if self.rows is None:
            self.rows = torch.empty((self.capacity,) + tuple(values.shape), dtype=values.dtype,
                                    device=values.device)
        if len(self.steps) == self.capacity:  # full: keep every other row, double the stride
            kept = self.rows[1::2].clone()
            self.rows[: len(kept)].copy_(kept)
            self.steps = self.steps[1::2]
            self.stride *= 2
            if step % self.stride:
                self._next = step + self.stride - step % self.stride
                return
        self.rows[len(self.steps)].copy_(values)
        self.steps.append(step)
        self._next = step + self.stride

    def result(self):
        """((T, B) residuals, (T,) int64 iteration numbers), or (None, None) if empty."""
        if not self.steps:
            return None, None
        T = len(self.steps)
        return self.rows[:T].clone(), torch.tensor(self.steps, dtype=torch.int64)

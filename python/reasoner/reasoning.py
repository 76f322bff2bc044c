"""The reasoning loop of evaluation: every start run for up to `depth` reasoning steps, with
per-start adaptive halting, on device buffers of fixed shape, in segments.

One reasoning step of the batch (`_Loop.step`) runs the model's step in place, then updates,
on the device and for the starts still running, the bookkeeping the evaluation reads: the
latent change of z_H, its window of the last RESIDUAL_WINDOW changes, the predicted board and
how many steps it has not changed, the steps used, and the halting decision (board stable for
`patience` steps and mean windowed change below `halt_tol`). A halted start is frozen: its
records stop changing, even while its row still runs in the batch. Nothing in a step reads
the device from the host.

Steps run in segments of K (`segment_steps`). After a segment the host reads the halting
flags once and compacts the halted starts out of the batch when the running ones are fewer
than `compact_below` of it (the update object keeps the rows that still run, so their noise is
drawn at their new batch positions). With `graphs` on a CUDA device each segment is one CUDA
graph, captured once per (batch size, K) by eqk.solvers.SegmentRunner and replayed; the
eager loop runs the same segments uncaptured, so for the same K and compact_below both draw
the same noise stream and give the same numbers bit for bit. K = 1 with compaction on any
halt (the eager default) is the loop without segments.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from eqkernels.solvers import SegmentRunner

RESIDUAL_WINDOW = 3
GRAPH_SEGMENT_STEPS = 8     # reasoning steps per captured CUDA graph (one flag read each)
GRAPH_COMPACT_BELOW = 0.75  # with graphs: compact once a quarter of the batch has halted
                            # (each new batch size is a new capture)


@dataclass
class StepRecord:
    """One reasoning step of every start (n = examples x breadth). The tensors are the run's
    buffers, rewritten by a later step: copy what you keep.
    pred: (n, seq_len) predicted tokens (a halted start keeps its last); residual: (n,) mean latent
    change per element of z_H over the last RESIDUAL_WINDOW steps; running: (n,) bool, still
    reasoning after this step; steps_used: (n,); change: (n,) float32 this step's latent
    change per element of z_H (0 where the start did not run the step; inf for a start whose
    latent turned NaN/Inf); diverged: (n,) bool, the start's latent turned NaN/Inf (the fused
    update froze it; its infinite change keeps it from ever reading as settled); ran: (n,)
    bool, the starts that ran the step. boundary: the host read the halting flags after this step (the last
    step of a segment): host-side reads of these records cost nothing extra there."""
    t: int
    pred: torch.Tensor
    residual: torch.Tensor
    running: torch.Tensor
    steps_used: torch.Tensor
    change: torch.Tensor
    diverged: torch.Tensor
    ran: torch.Tensor
    boundary: bool = True


class _Loop:
    """The run's device state: batch buffers (the m rows still in the batch, global indices
    `idx`) and per-start records (all n starts), plus K slots of per-step records."""

    def __init__(self, model, tokens, starts, seed, *, K, full_depth, halt_tol, patience):
        dev = tokens.device
        self.model, self.K = model, K
        self.full_depth, self.halt_tol, self.patience = full_depth, halt_tol, patience
        n = tokens.shape[0]
        self.h, self.l = (t.to(device=dev, dtype=model.cfg.dtype).contiguous().clone()
                          for t in starts)
        self.x = model.embed(tokens)
        self.weights = model.L_level.weights(model.cfg.dtype)
        self.upd = model.new_update(n, dev, seed)
        self.path = model.kernel_path(dev)[0]
        self.idx = torch.arange(n, device=dev)
        self.t = torch.zeros((), dtype=torch.long, device=dev)  # steps run (a device count)
        self.window = torch.zeros(n, RESIDUAL_WINDOW, device=dev)  # latest z_H changes
        self.last_pred = model.heads(self.h)[0].argmax(-1)
        self.stable = torch.zeros(n, dtype=torch.long, device=dev)
        self.running = torch.ones(n, dtype=torch.bool, device=dev)
        self.steps_used = torch.zeros(n, dtype=torch.long, device=dev)
        self.diverged = torch.zeros(n, dtype=torch.bool, device=dev)
        self.slots = dict(pred=self.last_pred.new_empty((K,) + self.last_pred.shape),
                          residual=self.window.new_empty(K, n), running=self.running.new_empty(K, n),
                          steps_used=self.steps_used.new_empty(K, n),
                          change=self.window.new_empty(K, n), ran=self.running.new_empty(K, n),
                          diverged=self.running.new_empty(K, n))
        self.per_element = math.sqrt(self.h[0].numel())  # change per element of z_H

    @property
    def rows(self) -> int:
        return self.idx.shape[0]

    def step(self, j: int) -> None:
        """One reasoning step of the batch and its bookkeeping, recorded in slot j."""
        idx, h = self.idx, self.h
        before = h.clone()
        self.model.reasoning_step(self.upd, h, self.l, self.x, self.weights, self.path)
        self.t += 1
        change = (h.float() - before.float()).flatten(1).norm(dim=1) / self.per_element
        # The fused update freezes a latent that turns NaN/Inf (zero change, flagged):
        # an infinite change keeps such a start from ever reading as settled.
        change = change.masked_fill(self.upd.diverged, math.inf)
        self.diverged[idx] = self.diverged[idx] | self.upd.diverged
        run = self.running[idx]
        win = self.window[idx]
        self.window[idx] = torch.where(run[:, None], torch.cat([win[:, 1:], change[:, None]], 1), win)
        pred = self.model.heads(h)[0].argmax(-1)
        last = self.last_pred[idx]
        stable = self.stable[idx]
        stable = torch.where(run, torch.where((pred == last).all(dim=1), stable + 1, 0), stable)
        self.stable[idx] = stable
        self.last_pred[idx] = torch.where(run[:, None], pred, last)
        self.steps_used[idx] += run.long()
        if not self.full_depth:
            done = run & (stable >= self.patience) & (self.t >= RESIDUAL_WINDOW) & \
                (self.window[idx].mean(dim=1) < self.halt_tol)
            self.running[idx] = run & ~done
        self._record(j, change, run)

    def idle(self, j: int) -> None:
        """Slot j of a step no start runs (every start has halted)."""
        self._record(j, None, None)

    def _record(self, j, change, run):
        s = self.slots
        s["pred"][j].copy_(self.last_pred)
        s["residual"][j].copy_(self.window.mean(dim=1))
        s["running"][j].copy_(self.running)
        s["steps_used"][j].copy_(self.steps_used)
        s["diverged"][j].copy_(self.diverged)
        s["change"][j].zero_()
        s["ran"][j].zero_()
        if change is not None:
            s["change"][j][self.idx] = torch.where(run, change, 0.0)
            s["ran"][j][self.idx] = run

    def record(self, t: int, j: int, boundary: bool) -> StepRecord:
        s = self.slots
        return StepRecord(t, s["pred"][j], s["residual"][j], s["running"][j], s["steps_used"][j],
                          s["change"][j], s["diverged"][j], s["ran"][j], boundary)

    def compact(self, compact_below: float) -> bool:
        """At a segment boundary (one host read): drop the halted rows from the batch when
        the running ones are fewer than compact_below of it; True when the batch changed."""
        run = self.running[self.idx]
        alive = int(run.sum())
        if alive == self.rows or (alive and alive >= compact_below * self.rows):
            return False
        keep = run.nonzero().squeeze(1)
        self.idx = self.idx[keep]
        self.h, self.l = self.h[keep].contiguous(), self.l[keep].contiguous()
        self.x = self.x[keep].contiguous()
        self.upd.take(keep)
        return True


@torch.no_grad()
def reasoning_steps(model, tokens: torch.Tensor, starts, *, depth: int, full_depth: bool = False,
                    halt_tol: float = 0.02, patience: int = 5, seed: int = 0,
                    graphs: Optional[bool] = None, segment_steps: Optional[int] = None,
                    compact_below: Optional[float] = None) -> Iterator[StepRecord]:
    """Run every start for up to `depth` reasoning steps; yield a StepRecord after each.

    model: a reasoner.model.Reasoner (its kernel path: model.kernel_path). tokens: (n, seq_len); starts:
    (z_H, z_L), each (n, seq_len, hidden). One eqk.LoopedUpdate (seed `seed`) draws the noise of
    the whole run. graphs: capture each segment as a CUDA graph (None: on for a CUDA device
    when the model's kernel path is not "eager"; on a CPU segments always run uncaptured).
    segment_steps: K, steps between host reads of the halting flags (default 1, or
    GRAPH_SEGMENT_STEPS with graphs). compact_below: see the module docstring (default: any
    halted start is compacted out with K = 1, else GRAPH_COMPACT_BELOW). Each batch size a
    compaction makes is a new capture (graphs) or a new compile (the compile path, static
    shapes: prefer "fused", or full_depth, for adaptive runs on the compile path).
    """
    model.eval()
    device = tokens.device
    if graphs is None:
        graphs = device.type == "cuda" and model.kernel_path(device)[0] != "eager"
    K = segment_steps if segment_steps is not None else (GRAPH_SEGMENT_STEPS if graphs else 1)
    if not isinstance(K, int) or K < 1:
        raise ValueError(f"segment_steps must be an int >= 1, got {segment_steps!r}")
    if compact_below is None:
        compact_below = 1.0 if K == 1 else GRAPH_COMPACT_BELOW
    if not 0 < compact_below <= 1:
        raise ValueError(f"compact_below must be in (0, 1], got {compact_below!r}")
    loop = _Loop(model, tokens, starts, seed, K=K, full_depth=full_depth, halt_tol=halt_tol,
                 patience=patience)

    def body(k: int, base: int) -> None:
        for j in range(k):
            loop.step(j)

    def new_runner() -> SegmentRunner:
        capture = graphs and device.type == "cuda"
        return SegmentRunner(body, capture, "captured" if capture else
                             "eager: graphs off" if not graphs else f"eager: not a CUDA device ({device.type})")

    runner = new_runner()
    t = 0
    while t < depth:
        k = min(K, depth - t)
        if loop.rows:
            runner.run(k, t)
        else:
            for j in range(k):
                loop.idle(j)
        for j in range(k):
            yield loop.record(t + j + 1, j, boundary=j == k - 1)
        t += k
        if loop.rows and not full_depth and loop.compact(compact_below):
            runner = new_runner()  # new batch buffers: new graphs

"""Depth and breadth test-time scaling of the reasoner, for any task.

Every example runs for up to `depth` reasoning steps (each H_cycles x (L_cycles + 1) block
applications: depth 1,000 at the Sudoku recipe's 3 x 7 is 21,000 applications per latent
pair, over 40,000 block calls per start) from `breadth` random starts, all in one batch.
At log-spaced depths the task's metrics are scored three ways of turning the breadth starts
into one answer (vote, lowest_residual, pass@B; reasoner.report).
Adaptive compute (default): a start whose predicted answer has not changed for
`patience` steps and whose latent change is below `halt_tol` stops and is compacted out
of the batch; `full_depth=True` runs everything to the end for a fair comparison. The
report includes the distribution of steps used. The update noise sets a floor on the latent
change (sqrt(2) sigma per element, 0.014 at sigma 0.01), so halt_tol must lie above it;
the defaults (0.02, 5 steps) kept a small CPU Sudoku model within 0.02 board accuracy of full
depth with a sixth of the steps.

`reasoning_steps()` (reasoner.reasoning) is the loop (a generator of per-step predictions and
residuals, one eqk.LoopedUpdate noise stream for the run, CUDA graphs on a GPU);
`reasoner.report.score()` turns per-depth snapshots into the report; `evaluate()` joins them
(and shards over torch.distributed ranks). The report adds what the attractor view
predicts: per depth, the mean final latent change of the starts whose answer is right vs
wrong, and (with ratings) the reasoning steps used against the example's rating.

Invalid answers count as wrong: nothing is repaired afterwards by a classical solver.
Under torchrun the examples are sharded over the ranks (gloo on CPU, NCCL on GPUs) and the
results all-gathered; every rank reports the same numbers as one process would.
"""
from __future__ import annotations

import math
import warnings
from typing import List, Optional, Tuple

import torch

from eqkernels.progress import progress_bar
from reasoner.distributed import dist_info, gather
from reasoner.model import Reasoner
from reasoner.reasoning import RESIDUAL_WINDOW, StepRecord, reasoning_steps  # noqa: F401 (public here)
from reasoner.report import (DepthResult, EvalReport, aggregate, log_spaced_depths,  # noqa: F401
                             score)
from reasoner.task import Task

def evaluate(model: Reasoner, questions: torch.Tensor, answers: torch.Tensor, *, depth: int,
             breadth: int = 1, full_depth: bool = False, halt_tol: float = 0.02,
             patience: int = 5, depths: Optional[List[int]] = None, seed: int = 0,
             progress: bool = False, ratings: Optional[torch.Tensor] = None,
             task: Optional[Task] = None, board: Optional[Tuple[int, int]] = None) -> EvalReport:
    """questions, answers: (P, seq_len) tokens of the task (the model's seq_len); ratings:
    (P,) or None; task: scores the predictions (reasoner.task.Task; default the base task:
    board exact match and the accuracy over the cells the question does not give); board:
    the data's (height, width) grid, for a task whose scoring needs it (mazes)."""
    task = task or Task()
    if depth < 1 or breadth < 1:
        raise ValueError(f"depth and breadth must be >= 1, got {depth}, {breadth}")
    if questions.shape != answers.shape or questions.dim() != 2:
        raise ValueError(f"questions and answers must both be (P, {model.cfg.seq_len}), got "
                         f"{tuple(questions.shape)} and {tuple(answers.shape)}")
    if questions.shape[0] == 0:
        raise ValueError(f"no {task.example}s to evaluate")
    noise_floor = math.sqrt(2.0) * model.cfg.noise_std
    if not full_depth and halt_tol <= noise_floor:
        warnings.warn(f"halt_tol {halt_tol:g} is at or below the noise floor of the latent "
                      f"change (sqrt(2) * noise_std = {noise_floor:.3g}): starts will rarely "
                      f"stop early", stacklevel=2)
    device = next(model.parameters()).device
    # Under torch.distributed each rank takes examples rank, rank + world, ...; the random
    # starts are drawn for all examples on every rank, so a start does not depend on the split.
    rank, world = dist_info()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    all_starts = model.initial_carry(questions.shape[0] * breadth, device="cpu", generator=gen)
    mine = torch.arange(rank, questions.shape[0], world)
    rows = (mine[:, None] * breadth + torch.arange(breadth)).flatten()
    questions, answers = questions[mine], answers[mine]
    tokens = questions.to(device).repeat_interleave(breadth, dim=0)
    starts = tuple(t[rows] for t in all_starts)
    marks = sorted(set(depths or log_spaced_depths(depth)) | {depth})
    bar = progress_bar(total=depth, desc=f"eval breadth {breadth}", unit="step") if progress else None
    sums, snapshots, rec = [], [], None
    for rec in reasoning_steps(model, tokens, starts, depth=depth, full_depth=full_depth,
                               halt_tol=halt_tol, patience=patience, seed=seed + rank):
        # Summed on the device: the host reads the loop's buffers only at snapshots and at
        # the loop's segment boundaries (once per captured graph).
        sums.append(torch.stack([rec.change.sum(dtype=torch.float64), rec.ran.sum().double()]))
        if bar is not None:
            bar.update(1)
            if rec.boundary:
                bar.set_postfix(running=int(rec.running.sum()), refresh=False)
        if rec.t in marks:  # copies: the records are live buffers
            snapshots.append((rec.t, rec.pred.to("cpu", copy=True), rec.residual.to("cpu", copy=True)))
    if bar is not None:
        bar.close()
    residual_sums = [(s, int(c)) for s, c in torch.stack(sums).tolist() if c] if sums else []
    local = dict(snapshots=snapshots, answers=answers.cpu(), questions=questions.cpu(),
                 steps_used=rec.steps_used.cpu(), residual_sums=residual_sums,
                 diverged=int(rec.diverged.sum()),
                 ratings=None if ratings is None else ratings[mine].cpu())
    parts = gather(local, world)
    merged = [(t, torch.cat([p["snapshots"][k][1] for p in parts]),
               torch.cat([p["snapshots"][k][2] for p in parts]))
              for k, (t, _, _) in enumerate(snapshots)]
    steps = max(len(p["residual_sums"]) for p in parts)
    by_step = []
    for t in range(steps):
        got = [p["residual_sums"][t] for p in parts if t < len(p["residual_sums"])]
        by_step.append(sum(s for s, _ in got) / max(sum(c for _, c in got), 1))
    report = score(merged, torch.cat([p["questions"] for p in parts]),
                   torch.cat([p["answers"] for p in parts]), breadth, task,
                   steps_used=torch.cat([p["steps_used"] for p in parts]), residual_by_step=by_step,
                   ratings=None if ratings is None else torch.cat([p["ratings"] for p in parts]),
                   board=board)
    report.diverged = sum(p["diverged"] for p in parts)
    if report.diverged:
        warnings.warn(report.diverged_note(), stacklevel=2)
    return report

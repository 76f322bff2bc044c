"""Depth and breadth test-time scaling of the Sudoku reasoner.

Every puzzle runs for up to `depth` reasoning steps (each H_cycles x (L_cycles + 1) block
applications: depth 1,000 at the default 3 x 7 is 21,000 applications per latent pair,
over 40,000 block calls per start) from `breadth` random starts, all in one batch.
At log-spaced depths it scores three ways of turning the breadth starts into one board:
  vote             the board predicted by most starts (ties: the lower residual);
  lowest_residual  the board of the start whose latent moved least, by the mean change of
                   z_H per element over the last 3 steps;
  pass@B           solved if any start's board is right.
Adaptive compute (default): a start whose predicted board has not changed for
`patience` steps and whose latent change is below `halt_tol` stops and is compacted out
of the batch; `full_depth=True` runs everything to the end for a fair comparison. The
report includes the distribution of steps used. The update noise sets a floor on the latent
change (sqrt(2) sigma per element, 0.014 at sigma 0.01), so halt_tol must lie above it;
the defaults (0.02, 5 steps) kept a small CPU model within 0.02 board accuracy of full
depth with a sixth of the steps.

`reasoning_steps()` (sudoku.reasoning) is the loop (a generator of per-step predictions and
residuals, one eqk.LoopedUpdate noise stream for the run, CUDA graphs on a GPU); `score()` turns per-depth snapshots into the
report; `evaluate()` joins them (and shards over torch.distributed ranks). The report adds
what the attractor view predicts: per depth, the mean final latent change of the starts whose
board is right vs wrong, and (with ratings) the reasoning steps used against puzzle rating.

Invalid boards count as wrong: nothing is repaired afterwards by a classical solver.

CLI:  python -m sudoku eval --data puzzles.csv --checkpoint run/ckpt.pt --depth 1000 --breadth 8
      [--plot depth.png] [--kernels auto|fused|compile|eager]   (with python/ on PYTHONPATH)
Several processes: torchrun --nproc-per-node N -m sudoku eval ... shards the puzzles over
the ranks (gloo on CPU, NCCL on GPUs) and all-gathers the results; every rank reports the
same numbers as one process would.
"""
from __future__ import annotations

import argparse
import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from cli_safety.atomic_files import atomic_path
from cli_safety.devices import default_device, parse_device
from cli_safety.output_paths import check_output_file, plot_suffixes
from cli_safety.values import SEED, Range
from eqkernels.progress import progress_bar
from sudoku.distributed import dist_info, gather, init_from_env
from sudoku.model import KERNELS, SudokuReasoner
from sudoku.reasoning import RESIDUAL_WINDOW, StepRecord, reasoning_steps  # noqa: F401 (public here)

POSITIVE = Range(int, min=1)


def log_spaced_depths(depth: int, per_decade: int = 3) -> List[int]:
    """1, 2, 5, 10, 20, 50, ... up to and including depth."""
    marks = {depth}
    for k in range(int(math.log10(max(depth, 1))) + 1):
        for m in (1, 2, 5)[:per_decade]:
            if m * 10 ** k <= depth:
                marks.add(m * 10 ** k)
    return sorted(marks)


@dataclass
class DepthResult:
    depth: int
    board_acc: Dict[str, float]     # per aggregation
    cell_acc: Dict[str, float]
    mean_residual: float            # over starts still running at this depth (or frozen)
    residual_correct: float = float("nan")  # mean latent change of the starts whose board is
    residual_wrong: float = float("nan")    # right / wrong at this depth (attractor view)


@dataclass
class EvalReport:
    breadth: int
    results: List[DepthResult] = field(default_factory=list)
    steps_used: Optional[torch.Tensor] = None  # (P * breadth,) reasoning steps per start
    residual_by_step: List[float] = field(default_factory=list)  # mean ||z_t - z_(t-1)|| of
    # the starts still running at step t (per element of z_H)
    steps_by_rating: Optional[Dict[int, tuple]] = None  # rating -> (starts, mean steps used)
    diverged: int = 0  # starts whose latent turned NaN/Inf (residual inf from then on)

    def plot(self, path: str) -> None:
        """PNG: board accuracy against depth (log x) and the residual against t (log y)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        depths = [r.depth for r in self.results]
        for agg in (self.results[0].board_acc if self.results else {}):
            ax1.plot(depths, [r.board_acc[agg] for r in self.results], marker="o", label=agg)
        ax1.set(xscale="log", xlabel="depth (reasoning steps)", ylabel="board accuracy",
                title=f"breadth {self.breadth}")
        ax1.legend()
        steps = range(1, len(self.residual_by_step) + 1)
        ax2.plot(steps, self.residual_by_step)
        ax2.set(yscale="log", xlabel="step t", ylabel="mean ||z_t - z_(t-1)|| per element",
                title="latent residual")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    def table(self) -> str:
        aggs = list(self.results[0].board_acc) if self.results else []
        head = ["depth"] + [f"board {a}" for a in aggs] + [f"cell {a}" for a in aggs] + \
            ["residual", "res. correct", "res. wrong"]
        lines = ["  ".join(f"{h:>14}" for h in head)]
        for r in self.results:
            cells = [str(r.depth)] + [f"{r.board_acc[a]:.4f}" for a in aggs] + \
                    [f"{r.cell_acc[a]:.4f}" for a in aggs] + \
                    [f"{v:.3e}" for v in (r.mean_residual, r.residual_correct, r.residual_wrong)]
            lines.append("  ".join(f"{c:>14}" for c in cells))
        if self.steps_used is not None:
            s = self.steps_used.float()
            lines.append(f"steps used per start: mean {s.mean():.1f}, median {s.median():.0f}, "
                         f"min {int(s.min())}, max {int(s.max())}")
        if self.steps_by_rating:
            lines.append("steps used by puzzle rating: " + ", ".join(
                f"{r}: {m:.1f} ({c} starts)" for r, (c, m) in sorted(self.steps_by_rating.items())))
        if self.diverged:
            lines.append(self.diverged_note())
        return "\n".join(lines)

    def diverged_note(self) -> str:
        total = len(self.steps_used) if self.steps_used is not None else "?"
        return (f"{self.diverged} of {total} starts diverged (latents turned NaN/Inf): "
                f"their residual is inf, never counted as settled")


def aggregate(preds: torch.Tensor, residual: torch.Tensor, answers: torch.Tensor,
              blanks: torch.Tensor) -> Dict[str, Dict[str, float]]:
    """preds: (P, Bz, 81) tokens; residual: (P, Bz); answers: (P, 81); blanks: (P, 81) bool.

    Returns {"board": {agg: acc}, "cell": {agg: acc}} for vote, lowest_residual, pass@B.
    """
    P, Bz, _ = preds.shape
    chosen = {"vote": [], "lowest_residual": []}
    order = residual.argsort(dim=1)
    for p in range(P):
        boards = [tuple(preds[p, i].tolist()) for i in order[p].tolist()]  # by residual
        counts = Counter(boards)
        best = max(counts.values())
        chosen["vote"].append(next(b for b in boards if counts[b] == best))  # tie: lower residual
        chosen["lowest_residual"].append(boards[0])
    board, cell = {}, {}
    n_blank = blanks.sum().clamp(min=1)
    for name, picks in chosen.items():
        picked = torch.tensor(picks, dtype=answers.dtype)
        board[name] = float((picked == answers).all(dim=1).float().mean())
        cell[name] = float(((picked == answers) & blanks).sum() / n_blank)
    correct = (preds == answers[:, None]).all(dim=2)  # (P, Bz)
    board[f"pass@{Bz}"] = float(correct.any(dim=1).float().mean())
    best_cells = ((preds == answers[:, None]) & blanks[:, None]).sum(dim=2).amax(dim=1)
    cell[f"pass@{Bz}"] = float(best_cells.sum() / n_blank)
    return {"board": board, "cell": cell}




def score(snapshots, answers: torch.Tensor, blanks: torch.Tensor, breadth: int,
          steps_used: Optional[torch.Tensor] = None, residual_by_step=(),
          ratings: Optional[torch.Tensor] = None) -> EvalReport:
    """EvalReport from per-depth snapshots [(depth, preds (P*breadth, 81), residual (P*breadth,))].

    answers, blanks: (P, 81); ratings: (P,) puzzle ratings (for steps used against rating)."""
    P = answers.shape[0]
    report = EvalReport(breadth=breadth)
    for t, preds, res in snapshots:
        preds, res = preds.view(P, breadth, -1), res.view(P, breadth)
        scores = aggregate(preds, res, answers, blanks)
        correct = (preds == answers[:, None]).all(dim=2)
        report.results.append(DepthResult(t, scores["board"], scores["cell"], float(res.mean()),
                                          _mean(res[correct]), _mean(res[~correct])))
    report.steps_used = steps_used
    report.residual_by_step = list(residual_by_step)
    if ratings is not None and steps_used is not None:
        per_start = ratings.repeat_interleave(breadth)
        report.steps_by_rating = {int(r): (int((per_start == r).sum()),
                                           float(steps_used[per_start == r].float().mean()))
                                  for r in per_start.unique().tolist()}
    return report


def _mean(v: torch.Tensor) -> float:
    return float(v.mean()) if v.numel() else float("nan")


def evaluate(model: SudokuReasoner, questions: torch.Tensor, answers: torch.Tensor, *, depth: int,
             breadth: int = 1, full_depth: bool = False, halt_tol: float = 0.02,
             patience: int = 5, depths: Optional[List[int]] = None, seed: int = 0,
             progress: bool = False, ratings: Optional[torch.Tensor] = None) -> EvalReport:
    """questions, answers: (P, 81) encoded tokens (blank 1, digit d -> d + 1); ratings: (P,)."""
    if depth < 1 or breadth < 1:
        raise ValueError(f"depth and breadth must be >= 1, got {depth}, {breadth}")
    if questions.shape != answers.shape or questions.dim() != 2:
        raise ValueError(f"questions and answers must both be (P, 81), got "
                         f"{tuple(questions.shape)} and {tuple(answers.shape)}")
    if questions.shape[0] == 0:
        raise ValueError("no puzzles to evaluate")
    noise_floor = math.sqrt(2.0) * model.cfg.noise_std
    if not full_depth and halt_tol <= noise_floor:
        warnings.warn(f"halt_tol {halt_tol:g} is at or below the noise floor of the latent "
                      f"change (sqrt(2) * noise_std = {noise_floor:.3g}): starts will rarely "
                      f"stop early", stacklevel=2)
    device = next(model.parameters()).device
    # Under torch.distributed each rank takes puzzles rank, rank + world, ...; the random
    # starts are drawn for all puzzles on every rank, so a start does not depend on the split.
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
    local = dict(snapshots=snapshots, answers=answers.cpu(), blanks=(questions == 1).cpu(),
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
    report = score(merged, torch.cat([p["answers"] for p in parts]),
                   torch.cat([p["blanks"] for p in parts]), breadth,
                   steps_used=torch.cat([p["steps_used"] for p in parts]), residual_by_step=by_step,
                   ratings=None if ratings is None else torch.cat([p["ratings"] for p in parts]))
    report.diverged = sum(p["diverged"] for p in parts)
    if report.diverged:
        warnings.warn(report.diverged_note(), stacklevel=2)
    return report


def main(argv=None):
    from sudoku import data as sdata
    from sudoku.checkpoint import load_model
    p = argparse.ArgumentParser(prog="python -m sudoku eval",
                                description="Depth/breadth evaluation of a Sudoku reasoner.")
    p.add_argument("--data", required=True,
                   help="CSV in the Sudoku-Extreme format, or an EqR/HRM dataset folder "
                        "(dataset.json + all__*.npy; a folder holding test/ uses test/)")
    p.add_argument("--checkpoint", required=True, help="ours (ckpt.pt) or an EqR .pth")
    p.add_argument("--weights", choices=("ema", "model"), default="ema",
                   help="EMA weights (default) or the raw ones")
    p.add_argument("--latent-dtype", choices=("float32", "bfloat16"), default=None,
                   help="override the checkpoint's latent precision")
    p.add_argument("--depth", type=POSITIVE, default=16)
    p.add_argument("--breadth", type=POSITIVE, default=1)
    p.add_argument("--limit", type=POSITIVE, default=None, help="first N puzzles only")
    p.add_argument("--full-depth", action="store_true", help="no adaptive early stopping")
    p.add_argument("--halt-tol", type=Range(float, above=0), default=0.02,
                   help="a start stops once its mean latent change per element is below this "
                        "(above the noise floor sqrt(2) sigma) ...")
    p.add_argument("--patience", type=Range(int, min=0), default=5,
                   help="... and its board has not changed for this many steps")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default=default_device())
    p.add_argument("--plot", default=None,
                   help="also write accuracy/residual plots to this file (.png, .pdf, .svg, ...)")
    p.add_argument("--kernels", choices=KERNELS, default="auto",
                   help="the block's kernels: auto (the fastest on the device: fused + CUDA graphs "
                        "on a GPU with Triton, eager on CPU), fused, compile or eager")
    args = p.parse_args(argv)
    # Refused before the model is loaded or a step is run.
    device = parse_device(args.device)
    if args.plot:
        check_output_file(args.plot, "--plot", plot_suffixes())
    args.device = init_from_env(device)
    model, info = load_model(args.checkpoint, device=args.device, weights=args.weights,
                             latent_dtype=args.latent_dtype)
    model.kernels = args.kernels  # ValueError (error: ..., exit 2) for a variant without it
    questions, answers, ratings = sdata.load_puzzles(args.data, limit=args.limit, split="test")
    report = evaluate(model, questions, answers, depth=args.depth, breadth=args.breadth,
                      full_depth=args.full_depth, halt_tol=args.halt_tol, seed=args.seed,
                      patience=args.patience, progress=True, ratings=ratings)
    if dist_info()[0] != 0:
        return
    print(f"model: {info['kind']} checkpoint, latent dtype {model.cfg.latent_dtype}, "
          f"{len(questions)} puzzles")
    print(report.table())
    res = report.residual_by_step
    marks = log_spaced_depths(len(res))
    print("residual ||z_t - z_(t-1)|| (mean per element): " +
          ", ".join(f"t={t}: {res[t - 1]:.3e}" for t in marks))
    if args.plot:
        with atomic_path(args.plot) as tmp:  # never a half-written plot
            report.plot(tmp)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()

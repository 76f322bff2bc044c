"""The depth x breadth report: turning the starts' predictions into one answer per example
(vote, lowest residual, pass@B), the per-depth table and the plot.

Three ways of turning the breadth starts of an example into one answer, for every metric of
the task (reasoner.task.Task.score: Sudoku's board / cell, the mazes' exact / path / valid /
cell):
  vote             the answer predicted by most starts (ties: the lower residual);
  lowest_residual  the answer of the start whose latent moved least (the mean change of z_H
                   per element over the last RESIDUAL_WINDOW steps);
  pass@B           per example, the best start's score (solved if any start is right).
A rate is pooled over examples: sum of hits / sum of totals (the cell accuracy counts cells).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from reasoner.task import Scores, board_cell_scores

AGGREGATIONS = ("vote", "lowest_residual")


@dataclass
class DepthResult:
    depth: int
    scores: Dict[str, Dict[str, float]]  # metric -> aggregation -> rate
    mean_residual: float            # over starts still running at this depth (or frozen)
    residual_correct: float = float("nan")  # mean latent change of the starts whose answer is
    residual_wrong: float = float("nan")    # right / wrong at this depth (attractor view)

    @property
    def board_acc(self) -> Dict[str, float]:
        """The exact-match metric (the task's first: Sudoku's board, the mazes' exact)."""
        return next(iter(self.scores.values()))

    @property
    def cell_acc(self) -> Dict[str, float]:
        return self.scores["cell"]


@dataclass
class EvalReport:
    breadth: int
    results: List[DepthResult] = field(default_factory=list)
    steps_used: Optional[torch.Tensor] = None  # (P * breadth,) reasoning steps per start
    residual_by_step: List[float] = field(default_factory=list)  # mean ||z_t - z_(t-1)|| of
    # the starts still running at step t (per element of z_H)
    steps_by_rating: Optional[Dict[int, tuple]] = None  # rating -> (starts, mean steps used)
    diverged: int = 0  # starts whose latent turned NaN/Inf (residual inf from then on)

    @property
    def metrics(self) -> List[str]:
        return list(self.results[0].scores) if self.results else []

    def plot(self, path: str) -> None:
        """PNG (or any matplotlib format): the exact-match accuracy against depth (log x) and
        the residual against t (log y)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        depths = [r.depth for r in self.results]
        main = self.metrics[0] if self.results else "board"
        for agg in (self.results[0].board_acc if self.results else {}):
            ax1.plot(depths, [r.board_acc[agg] for r in self.results], marker="o", label=agg)
        ax1.set(xscale="log", xlabel="depth (reasoning steps)", ylabel=f"{main} accuracy",
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
        rates = [(m, a) for m in self.metrics for a in self.results[0].scores[m]]
        head = ["depth"] + [f"{m} {a}" for m, a in rates] + ["residual", "res. correct",
                                                               "res. wrong"]
        lines = ["  ".join(f"{h:>14}" for h in head)]
        for r in self.results:
            cells = [str(r.depth)] + [f"{r.scores[m][a]:.4f}" for m, a in rates] + \
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


def picks(preds: torch.Tensor, residual: torch.Tensor) -> Dict[str, torch.Tensor]:
    """{aggregation: (P,) index of the chosen start} for preds (P, Bz, L), residual (P, Bz)."""
    P = preds.shape[0]
    order = residual.argsort(dim=1)
    vote = []
    for p in range(P):
        boards = [tuple(preds[p, i].tolist()) for i in order[p].tolist()]  # by residual
        counts = Counter(boards)
        best = max(counts.values())
        vote.append(int(order[p, next(j for j, b in enumerate(boards) if counts[b] == best)]))
    return {"vote": torch.tensor(vote, dtype=torch.long).view(P),
            "lowest_residual": order[:, 0] if P else torch.zeros(0, dtype=torch.long)}


def aggregate_scores(scores: Scores, preds: torch.Tensor,
                     residual: torch.Tensor) -> Dict[str, Dict[str, float]]:
    """{metric: {vote, lowest_residual, pass@B: rate}} from per-start scores
    {metric: (hits (P, Bz), totals (P,))} (integer counts), preds (P, Bz, L), residual (P, Bz)."""
    P, Bz = residual.shape
    chosen = picks(preds, residual)
    rows = torch.arange(P)
    out = {}
    for metric, (hits, totals) in scores.items():
        denom = totals.sum().clamp(min=1)
        rates = {agg: float(hits[rows, idx].sum() / denom) for agg, idx in chosen.items()}
        rates[f"pass@{Bz}"] = float(hits.amax(dim=1).sum() / denom) if P else 0.0
        out[metric] = rates
    return out


def aggregate(preds: torch.Tensor, residual: torch.Tensor, answers: torch.Tensor,
              blanks: torch.Tensor) -> Dict[str, Dict[str, float]]:
    """The board / cell report of preds (P, Bz, L), residual (P, Bz) against answers (P, L),
    the cell accuracy over the `blanks` (P, L) bool: {"board": {agg: acc}, "cell": {...}}."""
    return aggregate_scores(board_cell_scores(preds, answers, blanks), preds, residual)


def score(snapshots, questions: torch.Tensor, answers: torch.Tensor, breadth: int, task,
          steps_used: Optional[torch.Tensor] = None, residual_by_step=(),
          ratings: Optional[torch.Tensor] = None, board=None) -> EvalReport:
    """EvalReport from per-depth snapshots [(depth, preds (P*breadth, L), residual (P*breadth,))]
    of examples questions, answers (P, L), scored by task.score (board: the data's grid);
    ratings: (P,) ratings (for the steps used against rating)."""
    P = answers.shape[0]
    report = EvalReport(breadth=breadth)
    for t, preds, res in snapshots:
        preds, res = preds.view(P, breadth, -1), res.view(P, breadth)
        scores = task.score(questions, answers, preds, board)
        hits, totals = next(iter(scores.values()))
        correct = hits == totals[:, None]
        report.results.append(DepthResult(t, aggregate_scores(scores, preds, res), float(res.mean()),
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


def log_spaced_depths(depth: int, per_decade: int = 3) -> List[int]:
    """1, 2, 5, 10, 20, 50, ... up to and including depth."""
    marks = {depth}
    for k in range(int(math.log10(max(depth, 1))) + 1):
        for m in (1, 2, 5)[:per_decade]:
            if m * 10 ** k <= depth:
                marks.add(m * 10 ** k)
    return sorted(marks)

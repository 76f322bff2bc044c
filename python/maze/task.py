"""Mazes as a reasoner task (reasoner.task.Task): EqR's Maze-Unique tokens (vocab 6), its npy
dataset folders (maze.data), exact / path / validity / cell scoring (maze.score), optional
grid-symmetry augmentation (maze.augment; off by default, as in EqR).

Metrics per start (the depth x breadth report aggregates them by vote, lowest residual and
pass@B):
  exact   the whole grid right (EqR's exact_accuracy; the first metric: a "right" start)
  path    the predicted path cells ('o') are exactly the label's
  valid   the predicted path is a shortest S-G path through open cells (maze.score)
  cell    the fraction of cells right (EqR's accuracy; every cell is labelled)
The CPU-sized model of `python -m maze train` is the token-MLP reasoner (hidden 64, 2 layers,
H_cycles 1, L_cycles 2): on 9x9 mazes it learns in minutes on a 2-core CPU
(benchmarks/results/maze_cpu/), which EqR's attention model at that size does not. EqR's
Maze model is `--token-mixing attention` (1-D RoPE over the cells by default: EqR's released
Maze config uses "rope", not "rope2d"); the recipe's GPU config (EqR's
config/train/eqr_maze_unique.yaml) is RECIPE below.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch

from maze.tokens import PATH, VOCAB_SIZE
from reasoner.task import Scores, Task, TaskData

RECIPE = ("--hidden 128 --layers 1 --heads 8 --H-cycles 3 --L-cycles 4 --token-mixing attention "
          "--pos-encoding rope --batch-size 768 --lr 1e-4 --weight-decay 1.0 --warmup 2000 "
          "--ema-decay 0.999 --latent-dtype bfloat16 --supervision-steps 16 (EqR trains 100,000 "
          "epochs of 1,000 mazes, ~130,000 optimizer steps at batch 768)")


def board_for(seq_len: int, board: Optional[Tuple[int, int]] = None) -> Tuple[int, int]:
    """The grid of seq_len cells: `board`, or a square."""
    if board is not None:
        return tuple(board)
    side = math.isqrt(seq_len)
    if side * side != seq_len:
        raise ValueError(f"maze scoring needs the grid's (height, width): {seq_len} cells are "
                         f"not a square")
    return side, side


class MazeTask(Task):
    name = "maze"
    vocab = VOCAB_SIZE
    example = "maze"
    data_help = ("an EqR maze dataset folder (train/ and test/, each dataset.json + "
                 "all__*.npy), as python -m maze generate writes it")
    augment_default = False
    model_defaults = dict(hidden=64, layers=2, H_cycles=1, L_cycles=2, heads=4, pos_encoding="rope")
    recipe_note = f"EqR's Maze-Unique recipe for a GPU: {RECIPE}."

    def load(self, path: str, split: str = "test", limit: Optional[int] = None) -> TaskData:
        from maze.data import read_split
        data = read_split(path, split, limit=limit)
        return TaskData(torch.from_numpy(data.inputs), torch.from_numpy(data.labels),
                        board=(data.height, data.width), source=data.folder)

    def augment(self, questions, answers, generator: Optional[torch.Generator] = None,
                board=None):
        from maze.augment import augment_batch
        return augment_batch(questions, answers, board_for(questions.shape[1], board), generator)

    def scored_cells(self, questions: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
        """Every cell (EqR's accuracy)."""
        return torch.ones_like(answers, dtype=torch.bool)

    def score(self, questions, answers, preds, board=None) -> Scores:
        from maze.score import path_is_valid
        P, Bz, L = preds.shape
        H, W = board_for(L, board)
        right = preds == answers[:, None]
        path_right = (preds == PATH) == (answers == PATH)[:, None]
        grids = lambda t: t.reshape(-1, H, W).cpu().numpy()  # noqa: E731
        inputs = questions[:, None].expand(P, Bz, L)
        valid = path_is_valid(grids(inputs), grids(preds)).reshape(P, Bz)
        ones = torch.ones(P, dtype=torch.long)
        return {"exact": (right.all(dim=2).long(), ones),
                "path": (path_right.all(dim=2).long(), ones),
                "valid": (torch.from_numpy(valid.astype(np.int64)), ones),
                "cell": (right.sum(dim=2), torch.full((P,), L, dtype=torch.long))}


MAZE = MazeTask()

"""Sudoku as a reasoner task (reasoner.task.Task): 81 cells, 11 tokens, the Sudoku-Extreme CSV
or an EqR/HRM npy folder, EqR's (HRM's) symmetry augmentation, board / blank-cell scoring.

The CPU-sized model of `python -m sudoku train` (hidden 64, 2 layers, H_cycles 1,
L_cycles 2: three block applications per reasoning step, so a step is cheap and the answer
needs several steps); the recipe's GPU config (EqR's config/train/eqr_sudoku.yaml) is
RECIPE below.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from reasoner.task import Task, TaskData
from sudoku.tokens import BLANK_TOKEN, CELLS, VOCAB_SIZE

SIDE = math.isqrt(CELLS)   # the 9 x 9 board
RECIPE = ("--hidden 512 --H-cycles 3 --L-cycles 6 --batch-size 768 --lr 1e-4 --weight-decay 1.0 "
          "--warmup 2000 --steps 50000 --ema-decay 0.999 --latent-dtype bfloat16")


class SudokuTask(Task):
    name = "sudoku"
    vocab = VOCAB_SIZE
    example = "puzzle"
    data_help = ("CSV in the Sudoku-Extreme format, or an EqR/HRM dataset folder "
                 "(dataset.json + all__*.npy; a folder holding train/ or test/ uses the split)")
    augment_default = True
    model_defaults = dict(hidden=64, layers=2, H_cycles=1, L_cycles=2)
    recipe_note = f"The recipe's GPU config: {RECIPE}."

    def load(self, path: str, split: str = "test", limit: Optional[int] = None) -> TaskData:
        from sudoku.data import load_puzzles
        q, a, ratings = load_puzzles(path, limit, split)
        return TaskData(q, a, board=(SIDE, SIDE), ratings=ratings, source=path)

    def augment(self, questions, answers, generator: Optional[torch.Generator] = None,
                board=None):
        from sudoku.augment import augment_batch
        return augment_batch(questions, answers, generator)

    def scored_cells(self, questions: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
        """The blanks: a clue is given, not predicted."""
        return questions == BLANK_TOKEN


SUDOKU = SudokuTask()

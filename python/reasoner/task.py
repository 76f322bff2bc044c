"""What a task gives the reasoner: its tokens, data, augmentation, scoring and CLI defaults.

The reasoner (model, training, evaluation) works on fixed-length token sequences: a question
(B, seq_len) and its answer (B, seq_len), int64 ids in [0, vocab), 0 = padding / unlabelled
(EqR's pad_id and ignore_label_id). A task (python/sudoku/task.py, python/maze/task.py)
subclasses Task and fills in:
  name, vocab       its name (CLI prog, checkpoints) and token count
  load()            a data file or folder -> TaskData (validated; ValueError naming the file)
  augment()         a training-time random symmetry of (question, answer) pairs, or none
  scored_cells()    the cells the "cell" accuracy counts
  score()           per-start metrics for the depth x breadth evaluation
  model_defaults    the CPU-sized model of `train` (ReasonerConfig fields), recipe_note the
                    GPU recipe's flags (for --help)
The base class is a usable generic task: exact match of the labelled cells ("board") and the
accuracy over the cells the question does not give ("cell"), no augmentation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

from reasoner.losses import PAD_TOKEN

Scores = Dict[str, Tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TaskData:
    """questions, answers: (N, seq_len) int64 tokens; board: (height, width) when the tokens
    are a grid (seq_len = height * width); ratings: (N,) int64 difficulty ratings or None
    (the evaluation reports steps used per rating); source: the file or folder read."""
    questions: torch.Tensor
    answers: torch.Tensor
    board: Optional[Tuple[int, int]] = None
    ratings: Optional[torch.Tensor] = None
    source: str = ""

    @property
    def seq_len(self) -> int:
        return int(self.questions.shape[1])

    def describe(self) -> str:
        grid = f" ({self.board[0]}x{self.board[1]})" if self.board else ""
        return f"{self.seq_len} tokens{grid}"


class Task:
    name = "tokens"
    vocab: Optional[int] = None          # None: any (the model's)
    example = "example"                  # what one question is called in reports
    data_help = "a dataset"
    augment_default = False              # `train` augments unless --no-augment
    model_defaults: Dict[str, object] = {}
    recipe_note = ""

    # ---- data ---------------------------------------------------------------------------
    def load(self, path: str, split: str = "test", limit: Optional[int] = None) -> TaskData:
        raise NotImplementedError(f"task {self.name!r} has no data reader")

    def augment(self, questions: torch.Tensor, answers: torch.Tensor,
                generator: Optional[torch.Generator] = None,
                board: Optional[Tuple[int, int]] = None):
        """One random symmetry per example, the same for question and answer; (B, seq_len)
        in, the same out (board: the data's grid). The base task has none."""
        return questions, answers

    # ---- scoring ------------------------------------------------------------------------
    def scored_cells(self, questions: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
        """(N, seq_len) bool: the cells the "cell" accuracy counts (base: the labelled cells
        the question does not already give)."""
        return (questions != answers) & (answers != PAD_TOKEN)

    def score(self, questions: torch.Tensor, answers: torch.Tensor, preds: torch.Tensor,
              board: Optional[Tuple[int, int]] = None) -> Scores:
        """Per-start metrics of predictions preds (P, Bz, seq_len) (Bz starts per example) for
        questions, answers (P, seq_len) (board: the data's grid, for tasks that need it): {metric: (hits (P, Bz), totals (P,))}, int64 counts;
        the rate of a metric over examples is sum(hits) / sum(totals). The first metric is the
        exact match (a start is "right" when its hits equal the total). Base: "board" (every
        labelled cell right) and "cell" (the scored cells right)."""
        return board_cell_scores(preds, answers, self.scored_cells(questions, answers))

    # ---- the model --------------------------------------------------------------------------
    def check_model(self, cfg, data: Optional[TaskData] = None, where: str = "checkpoint") -> None:
        """ValueError naming the field when a model config cannot run this task or `data`:
        vocab against the task's, seq_len (and a rope2d board) against the data's."""
        if self.vocab is not None and cfg.vocab != self.vocab:
            raise ValueError(f"{where}: vocab {cfg.vocab} is not the {self.name} task's "
                             f"{self.vocab} tokens: a model of another task")
        if data is None:
            return
        if cfg.seq_len != data.seq_len:
            raise ValueError(f"{where}: seq_len {cfg.seq_len} does not match the data "
                             f"({data.describe()} in {data.source or 'the data'})")
        if getattr(cfg, "pos_encoding", "none") == "rope2d" and data.board is not None \
                and tuple(cfg.board) != tuple(data.board):
            raise ValueError(f"{where}: its 2-D positions (board {cfg.board[0]}x{cfg.board[1]}) "
                             f"do not match the data's {data.board[0]}x{data.board[1]} grid")


def board_cell_scores(preds: torch.Tensor, answers: torch.Tensor, scored: torch.Tensor) -> Scores:
    """{"board": (every labelled cell right (P, Bz), 1), "cell": (scored cells right (P, Bz),
    scored cells (P,))}. preds (P, Bz, L); answers (P, L); scored (P, L) bool."""
    right = preds == answers[:, None]
    labelled = (answers != PAD_TOKEN)[:, None]
    board = (right | ~labelled).all(dim=2).long()
    cells = (right & scored[:, None]).sum(dim=2)
    return {"board": (board, torch.ones(answers.shape[0], dtype=torch.long)),
            "cell": (cells, scored.sum(dim=1))}

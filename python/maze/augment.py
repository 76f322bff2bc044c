"""Grid symmetries of mazes for training-time augmentation (off by default: EqR's Maze-Unique
builder writes no augmented copies and its loader adds none).

A rotation or reflection of the grid maps a maze with a unique shortest S-G path to one with
a unique shortest path, and its label to the transformed label, so it is applied identically
to question and answer. The 8 symmetries of a square grid (EqR's dataset/common.py
`dihedral_transform` lists the same group: identity, 3 rotations, 2 flips, 2 diagonal
reflections); a non-square grid keeps its shape under 4 of them (identity, the half turn,
the two flips).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def symmetry_indices(height: int, width: int) -> torch.Tensor:
    """(S, H * W) int64: row s is the source cell of every target cell under symmetry s
    (S = 8 for a square grid, 4 otherwise); new = old[:, idx[s]]."""
    grid = torch.arange(height * width).view(height, width)
    maps = [grid, grid.flip(0), grid.flip(1), grid.flip(0).flip(1)]
    if height == width:
        t = grid.t()
        maps += [t, t.flip(0), t.flip(1), t.flip(0).flip(1)]
    return torch.stack([m.reshape(-1) for m in maps])


def augment_batch(questions: torch.Tensor, answers: torch.Tensor, board: Tuple[int, int],
                  generator: Optional[torch.Generator] = None):
    """One random grid symmetry per maze, the same for question and answer. questions,
    answers: (B, H * W) integer tokens of `board` = (H, W); returns the same shapes, dtype and
    device; the draws come from `generator` (CPU)."""
    height, width = board
    if questions.shape != answers.shape or questions.dim() != 2 or \
            questions.shape[1] != height * width:
        raise ValueError(f"questions and answers must both be (B, {height * width}) for a "
                         f"{height}x{width} grid, got {tuple(questions.shape)} and "
                         f"{tuple(answers.shape)}")
    idx = symmetry_indices(height, width)
    pick = torch.randint(len(idx), (questions.shape[0],), generator=generator)
    src = idx[pick].to(questions.device)
    return torch.gather(questions, 1, src), torch.gather(answers, 1, src)

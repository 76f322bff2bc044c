"""Validity-preserving Sudoku symmetries: training-time augmentation and the rater's transforms.

The transform group of the Equilibrium Reasoner / HRM recipe (HRM's `shuffle_sudoku`):
  - digit relabelling by a random permutation of 1..9 (blank stays blank, padding stays padding),
  - transpose with probability 0.5,
  - band permutation (the three row-bands) and row permutation within each band,
  - stack permutation (the three column-stacks) and column permutation within each stack.
Every such transform maps a puzzle with a unique solution to one with a unique solution, and its
solution to the transformed solution, so it is applied identically to question and answer.

As a gather: new[i, j] = old'[rows[i], cols[j]], old' = old or old transposed, then digits mapped.
"""
from __future__ import annotations

import random
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from sudoku.tokens import BLANK_TOKEN, DIGIT_OFFSET, PAD_TOKEN


def random_symmetry(rng: random.Random) -> Tuple[List[int], List[int]]:
    """One random transform as (src, digit_map): new[k] = digit_map[old[src[k]]].

    src: 81 source cells; digit_map: 10 ints over the digit alphabet 0..9 with 0 (blank) -> 0.
    """
    bands, stacks = rng.sample(range(3), 3), rng.sample(range(3), 3)
    rows = [3 * band + k for band in bands for k in rng.sample(range(3), 3)]
    cols = [3 * stack + k for stack in stacks for k in rng.sample(range(3), 3)]
    if rng.random() < 0.5:
        src = [cols[j] * 9 + rows[i] for i in range(9) for j in range(9)]
    else:
        src = [rows[i] * 9 + cols[j] for i in range(9) for j in range(9)]
    return src, [0] + rng.sample(range(1, 10), 9)


def apply_symmetry(grid: Sequence[int], symmetry: Tuple[List[int], List[int]]) -> List[int]:
    """grid: 81 ints 0..9 (0 = blank) -> the transformed grid, same alphabet."""
    src, digit_map = symmetry
    return [digit_map[grid[s]] for s in src]


def symmetry_indices(batch: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(batch, 81) int64 source-cell indices of independent random geometric transforms."""
    def grouped_perm():  # (batch, 9): group permutation then within-group permutation
        groups = torch.argsort(torch.rand(batch, 3, generator=generator), dim=1)
        inner = torch.argsort(torch.rand(batch, 3, 3, generator=generator), dim=2)
        return (groups[:, :, None] * 3 + inner).reshape(batch, 9)

    rows, cols = grouped_perm(), grouped_perm()
    straight = rows[:, :, None] * 9 + cols[:, None, :]
    transposed = cols[:, None, :] * 9 + rows[:, :, None]
    flip = torch.rand(batch, generator=generator) < 0.5
    return torch.where(flip[:, None, None], transposed, straight).reshape(batch, 81)


def digit_tables(batch: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(batch, VOCAB_SIZE) int64 token maps: padding and blank fixed, digits permuted."""
    digits = torch.argsort(torch.rand(batch, 9, generator=generator), dim=1) + 1 + DIGIT_OFFSET
    fixed = torch.tensor([PAD_TOKEN, BLANK_TOKEN]).expand(batch, 2)
    return torch.cat([fixed, digits], dim=1)


def augment_batch(questions, answers, generator: Optional[torch.Generator] = None):
    """Apply one random symmetry per sample, the same one to question and answer.

    questions, answers: (B, 81) or (81,) integer tokens in [0, VOCAB_SIZE), torch or numpy.
    Returns the same type, shape and device; the random draws come from `generator` (CPU).
    """
    as_numpy = isinstance(questions, np.ndarray)
    q, a = torch.as_tensor(questions), torch.as_tensor(answers)
    if q.shape != a.shape or q.shape[-1:] != (81,) or q.dim() not in (1, 2):
        raise ValueError(f"questions and answers must both be (B, 81) or (81,), got "
                         f"{tuple(q.shape)} and {tuple(a.shape)}")
    single = q.dim() == 1
    if single:
        q, a = q[None], a[None]
    B, device = q.shape[0], q.device
    src = symmetry_indices(B, generator).to(device)
    table = digit_tables(B, generator).to(device)
    q_out = torch.gather(table, 1, torch.gather(q.long(), 1, src)).to(q.dtype)
    a_out = torch.gather(table, 1, torch.gather(a.long(), 1, src)).to(a.dtype)
    if single:
        q_out, a_out = q_out[0], a_out[0]
    if as_numpy:
        return q_out.numpy(), a_out.numpy()
    return q_out, a_out

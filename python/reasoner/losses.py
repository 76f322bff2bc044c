"""EqR's training loss (locuslab/EqR models/losses), written from its description.

    loss = sum_b [ sum_{labelled cells c} CE(logits_bc, label_bc) / (labelled cells of b) ]
           + 0.5 * sum_b BCE(q_halt_b, board b fully correct)
then divided by the batch size (EqR backpropagates loss / global_batch_size). CE is
stablemax cross-entropy in float64 (EqR's default `stablemax_cross_entropy`: s(x) = x + 1 for
x >= 0, 1 / (1 - x) for x < 0, normalised) or softmax cross-entropy (`softmax`). Cells whose
label is PAD (0, EqR's pad_id / ignore_label_id in both its datasets) are unlabelled; in
Sudoku and the mazes every cell is labelled.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


PAD_TOKEN = 0       # the unlabelled-cell label
LOSSES = ("stablemax", "softmax")
HALT_WEIGHT = 0.5


def log_stablemax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    s = torch.where(logits < 0, 1 / (1 - logits + 1e-30), logits + 1)
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, kind: str = "stablemax") -> torch.Tensor:
    """(B, L) per-cell loss (0 where labels == PAD). logits: (B, L, V); labels: (B, L)."""
    if kind not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
    mask = labels != PAD_TOKEN
    safe = torch.where(mask, labels, 0)
    if kind == "stablemax":
        logp = log_stablemax(logits.to(torch.float64))
        ce = -logp.gather(-1, safe.long().unsqueeze(-1)).squeeze(-1)
    else:
        ce = F.cross_entropy(logits.float().flatten(0, 1), safe.long().flatten(),
                             reduction="none").view(labels.shape)
    return torch.where(mask, ce, torch.zeros_like(ce))


def eqr_loss(logits: torch.Tensor, q_halt: torch.Tensor, labels: torch.Tensor,
             kind: str = "stablemax"):
    """(loss / B, board_correct (B,) bool). logits (B, L, V), q_halt (B,) logit, labels (B, L)."""
    mask = labels != PAD_TOKEN
    count = mask.sum(-1)
    with torch.no_grad():
        correct = ((logits.argmax(-1) == labels) & mask).sum(-1) == count
    lm = (token_cross_entropy(logits, labels, kind) / count.clamp(min=1).unsqueeze(-1)).sum()
    halt = F.binary_cross_entropy_with_logits(q_halt.float(), correct.to(q_halt.dtype).float(),
                                              reduction="sum")
    return (lm.float() + HALT_WEIGHT * halt) / labels.shape[0], correct

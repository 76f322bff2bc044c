"""Load checkpoints trained with the public Equilibrium Reasoner (EqR) code into SudokuReasoner.

EqR's state-dict names, after dropping a leading `model.` and any `_orig_mod.` segment
(left by torch.compile):
  inner.embed_tokens.embedding_weight            -> embed_tokens.weight   (vocab, hidden)
  inner.lm_head.weight                           -> lm_head.weight
  inner.q_head.weight / .bias                    -> q_head.weight / .bias
  inner.L_level.layers.{i}.mlp_t.gate_up_proj.weight  (2*inter, 81), gate then up
  inner.L_level.layers.{i}.mlp_t.down_proj.weight
  inner.L_level.layers.{i}.mlp.gate_up_proj.weight    (2*inter, hidden), gate then up
  inner.L_level.layers.{i}.mlp.down_proj.weight
                                                 -> L_level.layers.{i}.<same>
Linear weights are stored (out, in) in both. Anything else (e.g. EqR's initial-state
buffers) is reported as unexpected; a parameter of ours with no source is reported
as missing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import torch

from sudoku.model import SudokuReasoner

_RENAMES = {"embed_tokens.embedding_weight": "embed_tokens.weight"}


@dataclass
class LoadReport:
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)      # ours, not in the checkpoint
    unexpected: List[str] = field(default_factory=list)   # the checkpoint's, not ours

    def __str__(self):
        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.missing:
            lines.append("missing (kept at their current values): " + ", ".join(self.missing))
        if self.unexpected:
            lines.append("unexpected (ignored): " + ", ".join(self.unexpected))
        return "; ".join(lines)


def eqr_name_to_ours(name: str) -> str:
    parts = [p for p in name.split(".") if p != "_orig_mod"]
    if parts and parts[0] == "model":
        parts = parts[1:]
    if parts and parts[0] == "inner":
        parts = parts[1:]
    name = ".".join(parts)
    return _RENAMES.get(name, name)


def load_eqr_state_dict(model: SudokuReasoner, state_dict: Dict[str, torch.Tensor], *,
                        strict: bool = True) -> LoadReport:
    """Copy an EqR-named state dict into `model`. strict: raise if anything is missing,
    unexpected, or shaped differently (the message lists every such name)."""
    ours = model.state_dict()
    report = LoadReport()
    mapped = {}
    for name, tensor in state_dict.items():
        target = eqr_name_to_ours(name)
        if target not in ours:
            report.unexpected.append(name)
            continue
        if tuple(tensor.shape) != tuple(ours[target].shape):
            raise ValueError(f"{name} -> {target}: checkpoint shape {tuple(tensor.shape)}, model "
                             f"shape {tuple(ours[target].shape)} (check hidden/expansion/layers)")
        mapped[target] = tensor
    report.missing = [n for n in ours if n not in mapped]
    if strict and (report.missing or report.unexpected):
        raise KeyError(f"EqR checkpoint does not match the model: {report}")
    with torch.no_grad():
        for target, tensor in mapped.items():
            ours[target].copy_(tensor.to(ours[target].dtype))
            report.loaded.append(target)
    return report

"""EqR's own `.pth` files (locuslab/EqR utils/checkpoint.py): config, names and weights.

A file holds {"model": state_dict, "ema": {"mu", "shadow"}, "config": {"arch": {...}, ...},
"carry", ...}. The EMA shadow is used by default (weights="model" for the raw weights);
buffers (TRM's H_init / L_init) come from "model". The ReasonerConfig is built from
config["arch"]: hidden_size, L_layers, H_cycles, L_cycles, expansion, mlp_t, num_heads,
pos_encodings, rope_theta, board_height / board_width, lambda_, noise_scale, H_init_std,
L_init_std, forward_dtype, rms_norm_eps. vocab comes from the embedding's shape; seq_len from
the token MLP's shape (mlp_t: true) or, for attention (mlp_t: false, whose weights do not
depend on it), from the caller (the dataset's dataset.json, as EqR's loader takes it) or
else the training carry the file holds. A TRM checkpoint (arch name trm@...) starts from its
H_init / L_init buffers with damping 1 and noise 0. Refused, naming the option: the original
TRM repo's puzzle embeddings (puzzle_emb_ndim > 0), learned / absolute positions.

State-dict names, after dropping `_orig_mod` segments (torch.compile) and leading `model.`
(the loss head's wrapper) and `inner.`:
  embed_tokens.embedding_weight                    -> embed_tokens.weight   (vocab, hidden)
  L_level.layers.{i}.self_attn.*                   -> L_level.layers.{i}.attn.*
  lm_head.weight, q_head.weight / .bias, H_init, L_init (TRM)
  L_level.layers.{i}.mlp_t.gate_up_proj.weight     (2*inner, seq_len), gate then up
  L_level.layers.{i}.mlp_t.down_proj.weight, L_level.layers.{i}.mlp.{gate_up,down}_proj.weight
  L_level.layers.{i}.self_attn.qkv_proj.weight     (3*hidden, hidden), rows [q | k | v]
  L_level.layers.{i}.self_attn.o_proj.weight       (hidden, hidden)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from reasoner.checkpoint_file import CheckpointError
from reasoner.model import POS_ENCODINGS, Reasoner, ReasonerConfig

_RENAMES = {"embed_tokens.embedding_weight": "embed_tokens.weight"}
_DTYPES = ("bfloat16", "float32", "float64")


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


def is_eqr(ckpt: dict) -> bool:
    return isinstance(ckpt.get("config"), dict) and "arch" in ckpt["config"]


def eqr_name_to_ours(name: str) -> str:
    parts = [p for p in name.split(".") if p != "_orig_mod"]
    if parts and parts[0] == "model":
        parts = parts[1:]
    if parts and parts[0] == "inner":
        parts = parts[1:]
    parts = ["attn" if p == "self_attn" else p for p in parts]
    name = ".".join(parts)
    return _RENAMES.get(name, name)


def config_from_eqr(arch: dict, state: Dict[str, torch.Tensor], seq_len: Optional[int] = None,
                    board: Optional[Sequence[int]] = None) -> Tuple[ReasonerConfig, str]:
    """(ReasonerConfig, kind "eqr" | "trm") from EqR's config["arch"] and the weights' shapes.
    seq_len: the data's token count (an attention model's weights do not fix it); board: the
    data's (height, width) grid, the default board of 2-D RoPE when arch has none."""
    name = str(arch.get("name", ""))
    kind = "trm" if name.lower().startswith("trm") else "eqr" if name.lower().startswith("eqr") else None
    if kind is None:
        raise CheckpointError(f"unsupported arch.name {name!r}: expected eqr@EqRModel or trm@TRMModel")
    mlp_t = bool(arch.get("mlp_t", False))
    pos = arch.get("pos_encodings") or "none"
    if arch.get("puzzle_emb_ndim", 0) or any("puzzle_emb" in k for k in state):
        raise CheckpointError("unsupported arch.puzzle_emb_ndim: puzzle embeddings (the original "
                              "TRM repo) are not supported")
    if kind == "trm" and pos in ("learned", "absolute"):
        raise CheckpointError(f"unsupported arch.pos_encodings {pos!r} of a TRM model: only "
                              f"'none', 'rope' and 'rope2d' are supported")
    if not mlp_t and pos not in POS_ENCODINGS:
        raise CheckpointError(f"unsupported arch.pos_encodings {pos!r} (arch.mlp_t: false): "
                              f"expected one of {POS_ENCODINGS}")
    dtype = str(arch.get("forward_dtype", "bfloat16"))
    if dtype not in _DTYPES:
        raise CheckpointError(f"unsupported arch.forward_dtype {dtype!r}")
    ours = {eqr_name_to_ours(k): v for k, v in state.items()}
    try:
        vocab, hidden = ours["embed_tokens.weight"].shape
        if mlp_t:
            seq_len = int(ours["L_level.layers.0.mlp_t.gate_up_proj.weight"].shape[1])
    except KeyError as e:
        raise CheckpointError(f"EqR checkpoint lacks tensor {e.args[0]} (needed for its shape; "
                              f"arch.mlp_t is {mlp_t})") from None
    if not mlp_t and not seq_len:
        raise CheckpointError("an EqR attention checkpoint (arch.mlp_t: false) does not record "
                              "seq_len, and this file holds no training carry to read it from: "
                              "give the data (its dataset.json has seq_len)")
    if "hidden_size" in arch and int(arch["hidden_size"]) != hidden:
        raise CheckpointError(f"arch.hidden_size {arch['hidden_size']} disagrees with the "
                              f"embedding's width {hidden}")
    grid = None
    if pos == "rope2d" and not mlp_t:
        h, w = arch.get("board_height"), arch.get("board_width")
        grid = (int(h), int(w)) if h is not None and w is not None else \
            (tuple(board) if board is not None else None)
    try:
        cfg = ReasonerConfig(
            seq_len=int(seq_len), vocab=int(vocab), hidden=int(hidden),
            layers=int(arch.get("L_layers", 2)), expansion=float(arch.get("expansion", 4)),
            H_cycles=int(arch["H_cycles"]), L_cycles=int(arch["L_cycles"]),
            damping=1.0 if kind == "trm" else float(arch.get("lambda_", 0.95)),
            noise_std=0.0 if kind == "trm" else float(arch.get("noise_scale", 0.01)),
            rms_eps=float(arch.get("rms_norm_eps", 1e-5)), heads=int(arch.get("num_heads", 8)),
            attention=not mlp_t, pos_encoding="none" if mlp_t else pos,
            rope_base=float(arch.get("rope_theta", 10000.0)), board=grid,
            H_init_std=float(arch.get("H_init_std", 1.0)), L_init_std=float(arch.get("L_init_std", 1.0)),
            latent_dtype=dtype, fixed_init=kind == "trm")
    except KeyError as e:
        raise CheckpointError(f"EqR config lacks arch.{e.args[0]}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"unsupported EqR arch config: {e}") from None
    return cfg, kind


def eqr_state(ckpt: dict, path: str, weights: str) -> Dict[str, torch.Tensor]:
    """The EMA shadow (weights="ema"; buffers from "model") or the raw weights, our names."""
    model_sd = ckpt.get("model")
    if not isinstance(model_sd, dict):
        raise CheckpointError(f"{path}: EqR checkpoint has no 'model' state dict")
    if weights == "model":
        return dict(model_sd)
    ema = ckpt.get("ema")
    shadow = ema.get("shadow") if isinstance(ema, dict) else None
    if not isinstance(shadow, dict) or not shadow:
        raise CheckpointError(f"{path} has no EMA weights (no ema.shadow); pass --weights model "
                              f"for the raw weights")
    # The shadow holds parameters only: buffers (TRM's H_init / L_init) come from the model.
    state = {eqr_name_to_ours(k): v for k, v in shadow.items()}
    for k, v in model_sd.items():
        state.setdefault(eqr_name_to_ours(k), v)
    return state


def load_eqr_state_dict(model: Reasoner, state_dict: Dict[str, torch.Tensor], *,
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
        cfg = model.cfg
        mixing = "self-attention" if cfg.attention else "the token MLP"
        raise KeyError(f"EqR checkpoint does not match its config (arch.mlp_t "
                       f"{str(not cfg.attention).lower()}: {mixing}, arch.L_layers {cfg.layers}): "
                       f"{report}")
    with torch.no_grad():
        for target, tensor in mapped.items():
            ours[target].copy_(tensor.to(ours[target].dtype))
            report.loaded.append(target)
    return report

"""Checkpoint files: ours (format-versioned) and the public EqR code's `.pth`, one loader.

`load_model(path, weights="ema")` reads either kind and returns (SudokuReasoner, info).

Ours (`sudoku.train` writes them): {"format_version", "model_config", "model", "ema", ...}.
  Format 2 (FORMAT_VERSION) is EqR's model. Format 1 (no "format_version" key: written before
  the mlp_t fix) normalised the token-mixing sublayer over hidden instead of the 81 tokens;
  such a file loads with that old layer, flagged as `mlp_t_norm="hidden"` in its config and a
  warning (a different model from EqR's; retrain to get EqR's). A newer format is refused.

EqR's (`utils/checkpoint.py` of locuslab/EqR): {"model": state_dict, "ema": {"mu", "shadow"},
  "config": {"arch": {...}, ...}, ...}. The EMA shadow is used by default (weights="model" for
  the raw weights); buffers (TRM's H_init / L_init) come from "model". The ReasonerConfig is
  built from config["arch"]: hidden_size, L_layers, H_cycles, L_cycles, expansion, mlp_t,
  lambda_, noise_scale, H_init_std, L_init_std, forward_dtype, rms_norm_eps (vocab and seq_len
  from the tensors' shapes). A TRM checkpoint (arch name trm@...) starts from its H_init /
  L_init buffers with damping 1 and noise 0. Unsupported architectures are refused naming the
  option: self-attention token mixing (mlp_t: false; EqR's Maze model, with RoPE), the original
  TRM repo's puzzle embeddings (puzzle_emb_ndim > 0), TRM's learned/absolute positions.

State-dict names, after dropping `_orig_mod` segments (torch.compile) and leading `model.`
(the loss head's wrapper) and `inner.`:
  embed_tokens.embedding_weight                    -> embed_tokens.weight   (vocab, hidden)
  lm_head.weight, q_head.weight / .bias, H_init, L_init (TRM)
  L_level.layers.{i}.mlp_t.gate_up_proj.weight     (2*inner, 81), gate then up
  L_level.layers.{i}.mlp_t.down_proj.weight, L_level.layers.{i}.mlp.{gate_up,down}_proj.weight
Every missing, unexpected or misshapen tensor is named in the error, and so is every tensor
holding a NaN or Inf (such weights are refused, never evaluated).
"""
from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field, fields
from typing import Dict, List, Optional, Tuple

import torch

from sudoku.model import ReasonerConfig, SudokuReasoner

FORMAT_VERSION = 2
MAX_NAMED = 20  # tensors named in one error message
_RENAMES = {"embed_tokens.embedding_weight": "embed_tokens.weight"}
_DTYPES = {"bfloat16": "bfloat16", "float32": "float32", "float64": "float64"}


class CheckpointError(ValueError):
    """A file that is not a checkpoint we can run, with the reason."""


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


def read_file(path: str) -> dict:
    """torch.load of a checkpoint dict, with CheckpointError for a missing or corrupt file.
    Files holding non-tensor objects (EqR's numpy RNG state) need a full unpickle: load only
    files you trust."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} is a directory, not a checkpoint file")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "Weights only load failed" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, OSError,
            UnicodeDecodeError, ValueError, AttributeError, ImportError) as e:
        raise CheckpointError(f"{path} is not a checkpoint (torch.load failed: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a checkpoint: it holds a {type(obj).__name__}, "
                              f"not a dict")
    return obj


def is_eqr(ckpt: dict) -> bool:
    return isinstance(ckpt.get("config"), dict) and "arch" in ckpt["config"]


def load_model(path: str, device="cpu", weights: str = "ema", latent_dtype: Optional[str] = None,
               dtype: torch.dtype = torch.float32) -> Tuple[SudokuReasoner, dict]:
    """(model in eval mode, info) from our checkpoint or an EqR .pth.

    weights: "ema" (default) or "model". latent_dtype: override the file's precision.
    dtype: the parameters' dtype (float64 to check a file against a float64 reference).
    info: {"kind": "ours" | "eqr" | "trm", "format_version", "report": LoadReport, "checkpoint"}.
    """
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    ckpt = read_file(path)
    if is_eqr(ckpt):
        model, info = _load_eqr(ckpt, path, weights, dtype)
    elif "model_config" in ckpt:
        model, info = _load_ours(ckpt, path, weights, dtype)
    else:
        raise CheckpointError(f"{path} is not a Sudoku reasoner or EqR checkpoint (top-level "
                              f"keys: {', '.join(map(str, list(ckpt)[:8])) or 'none'})")
    if latent_dtype is not None:
        model.cfg.latent_dtype = latent_dtype
        model.cfg.__post_init__()
    info["checkpoint"] = ckpt
    return model.to(device).eval(), info


# ---- ours -------------------------------------------------------------------------------
def config_from_ours(ckpt: dict, path: str = "checkpoint") -> Tuple[ReasonerConfig, int]:
    version = ckpt.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version!r} is newer than this code "
                              f"reads (<= {FORMAT_VERSION}); update eqkernels")
    conf = dict(ckpt["model_config"])
    known = {f.name for f in fields(ReasonerConfig)}
    unknown = sorted(set(conf) - known)
    if unknown:
        raise CheckpointError(f"{path}: unsupported model_config option(s) {', '.join(unknown)}")
    if version == 1 and not conf.get("attention", False):
        conf["mlp_t_norm"] = "hidden"
        warnings.warn(f"{path}: checkpoint format 1, written before the mlp_t fix: it runs the old "
                      f"layer (token-mixing RMSNorm over hidden, flagged mlp_t_norm='hidden'), "
                      f"not EqR's; retrain to get EqR's model", stacklevel=3)
    try:
        return ReasonerConfig(**conf), version
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unsupported model_config: {e}") from None


def _load_ours(ckpt, path, weights, dtype):
    cfg, version = config_from_ours(ckpt, path)
    model = SudokuReasoner(cfg).to(dtype)
    if weights not in ckpt:
        raise CheckpointError(f"{path} has no {weights!r} weights")
    load_checked(model, ckpt[weights], path, weights)
    return model, {"kind": "ours", "format_version": version, "report": None}


def load_checked(model: torch.nn.Module, state, path: str, key: str) -> None:
    """model.load_state_dict(state) after checking that every tensor fits the model (names and
    shapes) and is finite: CheckpointError naming the tensors instead of torch's RuntimeError,
    and never an all-NaN model that evaluates as if it had settled."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: {key!r} holds a {type(state).__name__}, not a state dict")
    ours = model.state_dict()
    missing = [n for n in ours if n not in state]
    unexpected = [n for n in state if n not in ours]
    shapes = [f"{n} is {_shape(state[n])} in the file, {_shape(ours[n])} for the config"
              for n in ours if n in state and _shape(state[n]) != _shape(ours[n])]
    if missing or unexpected or shapes:
        parts = shapes + ([f"missing {', '.join(missing)}"] if missing else []) + \
            ([f"unexpected {', '.join(unexpected)}"] if unexpected else [])
        raise CheckpointError(f"{path}: {key!r} weights do not match its model_config: "
                              + "; ".join(parts))
    check_finite(state, path, key)
    model.load_state_dict(state)


def check_finite(state: Dict[str, torch.Tensor], path: str, key: str) -> None:
    """CheckpointError naming every floating tensor of `state` with a NaN or Inf."""
    bad = [n for n, t in state.items() if isinstance(t, torch.Tensor) and t.is_floating_point()
           and not bool(torch.isfinite(t).all())]
    if bad:
        shown = ", ".join(bad[:MAX_NAMED])
        if len(bad) > MAX_NAMED:
            shown += f" and {len(bad) - MAX_NAMED} more"
        raise CheckpointError(f"{path}: non-finite values (NaN/Inf) in {len(bad)} {key!r} "
                              f"tensor{'s' if len(bad) != 1 else ''}: {shown}")


def _shape(t) -> tuple:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else ()


# ---- EqR --------------------------------------------------------------------------------
def eqr_name_to_ours(name: str) -> str:
    parts = [p for p in name.split(".") if p != "_orig_mod"]
    if parts and parts[0] == "model":
        parts = parts[1:]
    if parts and parts[0] == "inner":
        parts = parts[1:]
    name = ".".join(parts)
    return _RENAMES.get(name, name)


def config_from_eqr(arch: dict, state: Dict[str, torch.Tensor]) -> Tuple[ReasonerConfig, str]:
    """(ReasonerConfig, kind "eqr" | "trm") from EqR's config["arch"] and the weights' shapes."""
    name = str(arch.get("name", ""))
    kind = "trm" if name.lower().startswith("trm") else "eqr" if name.lower().startswith("eqr") else None
    if kind is None:
        raise CheckpointError(f"unsupported arch.name {name!r}: expected eqr@EqRModel or trm@TRMModel")
    if not arch.get("mlp_t", False):
        raise CheckpointError(f"unsupported arch.mlp_t: false (self-attention token mixing, "
                              f"pos_encodings {arch.get('pos_encodings')!r}, e.g. EqR's Maze model): "
                              f"only the token-MLP (mlp_t: true) model is supported")
    if arch.get("puzzle_emb_ndim", 0) or any("puzzle_emb" in k for k in state):
        raise CheckpointError("unsupported arch.puzzle_emb_ndim: puzzle embeddings (the original "
                              "TRM repo) are not supported")
    if kind == "trm" and arch.get("pos_encodings") in ("learned", "absolute"):
        raise CheckpointError(f"unsupported arch.pos_encodings {arch['pos_encodings']!r} of a TRM "
                              f"model: only 'none' is supported with mlp_t")
    dtype = str(arch.get("forward_dtype", "bfloat16"))
    if dtype not in _DTYPES:
        raise CheckpointError(f"unsupported arch.forward_dtype {dtype!r}")
    ours = {eqr_name_to_ours(k): v for k, v in state.items()}
    try:
        vocab, hidden = ours["embed_tokens.weight"].shape
        seq_len = ours["L_level.layers.0.mlp_t.gate_up_proj.weight"].shape[1]
    except KeyError as e:
        raise CheckpointError(f"EqR checkpoint lacks tensor {e.args[0]} (needed for its shape)") from None
    if "hidden_size" in arch and int(arch["hidden_size"]) != hidden:
        raise CheckpointError(f"arch.hidden_size {arch['hidden_size']} disagrees with the "
                              f"embedding's width {hidden}")
    try:
        cfg = ReasonerConfig(
            hidden=int(hidden), layers=int(arch.get("L_layers", 2)), expansion=float(arch.get("expansion", 4)),
            H_cycles=int(arch["H_cycles"]), L_cycles=int(arch["L_cycles"]),
            damping=1.0 if kind == "trm" else float(arch.get("lambda_", 0.95)),
            noise_std=0.0 if kind == "trm" else float(arch.get("noise_scale", 0.01)),
            rms_eps=float(arch.get("rms_norm_eps", 1e-5)), heads=int(arch.get("num_heads", 8)),
            vocab=int(vocab), seq_len=int(seq_len),
            H_init_std=float(arch.get("H_init_std", 1.0)), L_init_std=float(arch.get("L_init_std", 1.0)),
            latent_dtype=dtype, fixed_init=kind == "trm")
    except KeyError as e:
        raise CheckpointError(f"EqR config lacks arch.{e.args[0]}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"unsupported EqR arch config: {e}") from None
    return cfg, kind


def _eqr_state(ckpt: dict, path: str, weights: str) -> Dict[str, torch.Tensor]:
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


def _load_eqr(ckpt, path, weights, dtype):
    state = _eqr_state(ckpt, path, weights)
    check_finite(state, path, weights)
    cfg, kind = config_from_eqr(ckpt["config"]["arch"], state)
    model = SudokuReasoner(cfg).to(dtype)
    try:
        report = load_eqr_state_dict(model, state)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: {e.args[0] if e.args else e}") from None
    return model, {"kind": kind, "format_version": None, "report": report}


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

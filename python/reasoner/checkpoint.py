"""Checkpoint files: ours (format-versioned) and the public EqR code's `.pth`, one loader.

`load_model(path, weights="ema", task=..., data=...)` reads either kind and returns
(Reasoner, info); with a task it refuses a model of another task (its vocab, or the task
our file names) and, with the data, one whose seq_len (or 2-D RoPE board) does not fit it.

Ours (reasoner.train writes them): {"format_version", "task", "model_config", "model",
"ema", ...}. Format 2 (FORMAT_VERSION) is EqR's model; the attention options (pos_encoding,
rope_base, board) and "task" were added to it later, with defaults that mean what files
without them ran. Format 1 (no "format_version" key: written before the mlp_t fix) normalised
the token-mixing sublayer over hidden instead of the tokens; such a file loads with that old
layer, flagged as `mlp_t_norm="hidden"` in its config and a warning (a different model from
EqR's; retrain to get EqR's). A newer format is refused.

EqR's: reasoner.eqr_checkpoint (config from config["arch"], names, EMA). Files are read by
reasoner.checkpoint_file.read_file, which never runs code from them. Every missing,
unexpected or misshapen tensor is named in the error, and so is every tensor holding a NaN or
Inf (such weights are refused, never evaluated).
"""
from __future__ import annotations

import warnings
from dataclasses import fields
from typing import Dict, Optional, Tuple

import torch

from reasoner.checkpoint_file import CheckpointError, carry_seq_len, read_file  # noqa: F401
from reasoner.eqr_checkpoint import (LoadReport, config_from_eqr, eqr_name_to_ours,  # noqa: F401
                                     eqr_state, is_eqr, load_eqr_state_dict)
from reasoner.model import Reasoner, ReasonerConfig

FORMAT_VERSION = 2
MAX_NAMED = 20  # tensors named in one error message


def load_model(path: str, device="cpu", weights: str = "ema", latent_dtype: Optional[str] = None,
               dtype: torch.dtype = torch.float32, *, task=None, data=None) -> Tuple[Reasoner, dict]:
    """(model in eval mode, info) from our checkpoint or an EqR .pth (build_model)."""
    return build_model(read_file(path), path, device, weights, latent_dtype, dtype, task=task,
                       data=data)


def build_model(ckpt: dict, path: str, device="cpu", weights: str = "ema",
                latent_dtype: Optional[str] = None, dtype: torch.dtype = torch.float32, *,
                task=None, data=None) -> Tuple[Reasoner, dict]:
    """(model in eval mode, info) from a checkpoint dict read from `path`.

    weights: "ema" (default) or "model". latent_dtype: override the file's precision.
    dtype: the parameters' dtype (float64 to check a file against a float64 reference).
    task: a reasoner.task.Task the model must fit (vocab; our files' task name); data: its
    reasoner.task.TaskData the model must fit (seq_len, board), and the source of an EqR
    attention model's seq_len and default 2-D board.
    info: {"kind": "ours" | "eqr" | "trm", "format_version", "report": LoadReport, "checkpoint"}.
    """
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    if task is not None and ckpt.get("task", task.name) != task.name:
        raise CheckpointError(f"{path} is a checkpoint of the {ckpt['task']} task, not "
                              f"{task.name}: run it with python -m {ckpt['task']} eval")
    if is_eqr(ckpt):
        model, info = _load_eqr(ckpt, path, weights, dtype, data)
    elif "model_config" in ckpt:
        model, info = _load_ours(ckpt, path, weights, dtype)
    else:
        raise CheckpointError(f"{path} is not a reasoner or EqR checkpoint (top-level "
                              f"keys: {', '.join(map(str, list(ckpt)[:8])) or 'none'})")
    if task is not None:
        try:
            task.check_model(model.cfg, data, where=path)
        except ValueError as e:
            raise CheckpointError(str(e)) from None
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
    if not isinstance(ckpt["model_config"], dict):
        raise CheckpointError(f"{path}: model_config holds a "
                              f"{type(ckpt['model_config']).__name__}, not a dict")
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
    model = Reasoner(cfg).to(dtype)
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


def _load_eqr(ckpt, path, weights, dtype, data):
    state = eqr_state(ckpt, path, weights)
    check_finite(state, path, weights)
    seq_len = data.seq_len if data is not None else carry_seq_len(ckpt)
    cfg, kind = config_from_eqr(ckpt["config"]["arch"], state, seq_len=seq_len,
                                board=data.board if data is not None else None)
    model = Reasoner(cfg).to(dtype)
    try:
        report = load_eqr_state_dict(model, state)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: {e.args[0] if e.args else e}") from None
    return model, {"kind": kind, "format_version": None, "report": report}

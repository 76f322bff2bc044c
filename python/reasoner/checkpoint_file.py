"""Reading a checkpoint file without running code from it: torch.load(weights_only=True), and
for EqR's own files a second restricted pass that knows their few extra objects.

EqR's utils/checkpoint.py saves, beside the tensors, numpy's RNG state (np.random.get_state:
an ndarray) and the training "carry" (dataclasses of its models.eqr / models.trm modules, which
are not installed here). torch's weights-only unpickler refuses both. The second pass runs
the same weights-only unpickler with these globals allowed:
  numpy's array and scalar reconstruction (what torch's docs list for numpy arrays);
  classes of EqR's own packages (models., utils., dataset., config., evaluators.), each as an
    inert stand-in of that name: a plain object that only stores the state pickled for it
    (no code of the original class runs, and the original module is never imported);
every other global is refused, naming it. Stand-ins may only appear under the top-level
"carry" key (CheckpointError otherwise): the weights and config are plain tensors and dicts.
"""
from __future__ import annotations

import importlib
import os
import pickle
import zipfile
from typing import Dict, List

import torch

EQR_PACKAGES = ("models.", "utils.", "dataset.", "config.", "evaluators.")
CARRY_KEY = "carry"
_NUMPY_GLOBALS = {"_reconstruct", "scalar", "ndarray", "dtype"}


class CheckpointError(ValueError):
    """A file that is not a checkpoint we can run, with the reason."""


class EqRObject:
    """An inert stand-in for an object of EqR's code: its pickled state as attributes."""

    _eqr_name = "?"

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (__dict__, __slots__ state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["state"] = state

    def __repr__(self):
        return f"<stand-in for {self._eqr_name}: {', '.join(self.__dict__)}>"


def _stand_in(full_name: str) -> type:
    module, _, name = full_name.rpartition(".")
    cls = type(name, (EqRObject,), {"_eqr_name": full_name, "__module__": module})
    return cls


def _numpy_global(full_name: str):
    """numpy's reconstruction helpers and dtype classes, or None for anything else."""
    module, _, name = full_name.rpartition(".")
    top = module.split(".")[0]
    if top != "numpy" or not (name in _NUMPY_GLOBALS or
                              (module == "numpy.dtypes" and name.endswith("DType"))):
        return None
    for candidate in (module, module.replace("numpy.core", "numpy._core", 1)):
        try:
            obj = getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
        return obj
    return None


def _numpy_dtype_classes() -> List[tuple]:
    import numpy as np
    dtypes = getattr(np, "dtypes", None)
    if dtypes is None:
        return []
    return [(getattr(dtypes, n), f"numpy.dtypes.{n}") for n in dir(dtypes) if n.endswith("DType")]


def _restricted_load(path: str):
    """The second pass (see the module docstring)."""
    allowed: List[tuple] = []
    refused = []
    for full_name in sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path)):
        obj = _numpy_global(full_name)
        if obj is not None:
            allowed.append((obj, full_name))
        elif full_name.startswith(EQR_PACKAGES):
            allowed.append((_stand_in(full_name), full_name))
        else:
            refused.append(full_name)
    if any(name.startswith("numpy.") for _, name in allowed):
        allowed += _numpy_dtype_classes()  # an array's dtype is BUILT as one of these
    if refused:
        raise CheckpointError(f"{path} holds objects of {', '.join(refused[:8])}, which a "
                              f"checkpoint loader does not unpickle (only tensors, plain "
                              f"containers, numpy arrays and EqR's training state)")
    with torch.serialization.safe_globals(allowed):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key != CARRY_KEY and _holds_stand_in(value):
                raise CheckpointError(f"{path}: entry {key!r} holds objects of EqR's code; only "
                                      f"the training '{CARRY_KEY}' may")
    return obj


def _holds_stand_in(value, depth: int = 0) -> bool:
    if isinstance(value, EqRObject):
        return True
    if depth > 6:
        return False
    if isinstance(value, dict):
        return any(_holds_stand_in(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_stand_in(v, depth + 1) for v in value)
    return False


def read_file(path: str) -> dict:
    """The checkpoint dict at `path` (tensors on the CPU); CheckpointError for a missing,
    corrupt or refused file. Never runs code from the file (see the module docstring)."""
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
            obj = _restricted_load(path)
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, OSError,
            UnicodeDecodeError, ValueError, AttributeError, ImportError, TypeError) as e:
        raise CheckpointError(f"{path} is not a checkpoint (torch.load failed: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a checkpoint: it holds a {type(obj).__name__}, "
                              f"not a dict")
    return obj


def carry_seq_len(ckpt: Dict) -> int:
    """seq_len of the latents in an EqR checkpoint's training carry (carry.inner_carry.z_H:
    (B, seq_len, hidden)), or 0 when the file has no such carry."""
    inner = getattr(ckpt.get(CARRY_KEY), "inner_carry", None)
    z_H = getattr(inner, "z_H", None)
    return int(z_H.shape[1]) if isinstance(z_H, torch.Tensor) and z_H.dim() == 3 else 0

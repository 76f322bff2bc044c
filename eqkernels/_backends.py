"""Which kernel backends this install has, and which one runs an op.

Nothing here may raise at import: a missing compiled extension or Triton only
removes that backend, and `backends()` says why.
"""
from __future__ import annotations

import functools
import importlib
import os
import warnings

import torch

# Fastest first, per device type; "reference" (plain PyTorch) is always last.
_PREFERENCE = {
    "cpu": ("cpp", "reference"),
    "cuda": ("cuda", "triton", "reference"),
}
BACKEND_NAMES = ("cpp", "cuda", "triton", "reference")


# Devices whose GPU the compiled CUDA kernels have no image for ({"cuda:0": reason}): found
# when a launch says so; the dispatcher then skips "cuda" there (see with_fallback).
_NO_KERNEL_IMAGE: dict = {}


@functools.lru_cache(maxsize=None)
def _load_extension():
    """(module or None, reason string). Importing it registers the torch.ops.eqk.* ops."""
    try:
        module = importlib.import_module("eqkernels._C")
    except ImportError as err:  # not built, or built against another torch
        return None, f"compiled extension eqkernels._C not importable ({err})"
    if not hasattr(torch.ops.eqk, "block_step"):  # an extension from before the torch ops
        return None, "compiled extension eqkernels._C is stale (no torch.ops.eqk ops): rebuild it"
    return module, "compiled extension loaded"


@functools.lru_cache(maxsize=None)
def _triton_status():
    try:
        import triton  # noqa: F401
    except ImportError as err:
        return False, f"triton not importable ({err})"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True, "triton in interpreter mode (TRITON_INTERPRET=1, CPU tensors)"
    if not torch.cuda.is_available():
        return False, "triton installed but no CUDA device (set TRITON_INTERPRET=1 to interpret)"
    return True, "triton on CUDA"


def extension():
    """The compiled module eqkernels._C; raises RuntimeError naming why if it is missing."""
    module, reason = _load_extension()
    if module is None:
        raise RuntimeError(reason)
    return module


def backends() -> dict:
    """{backend name: (available, reason)} for this process."""
    module, reason = _load_extension()
    has_cuda_kernels = module is not None and getattr(module, "with_cuda", False)
    triton_ok, triton_reason = _triton_status()
    return {
        "cpp": (module is not None, reason),
        "cuda": (has_cuda_kernels and torch.cuda.is_available(),
                 ("CUDA kernels compiled in" if has_cuda_kernels
                  else "extension built without CUDA kernels")
                 + "".join(f"; no kernel image on {d}: {r}" for d, r in _NO_KERNEL_IMAGE.items())),
        "triton": (triton_ok, triton_reason),
        "reference": (True, "plain PyTorch, always available"),
    }


def _usable(name: str, device: torch.device) -> bool:
    available, _ = backends()[name]
    if not available:
        return False
    if name == "cpp":
        return device.type == "cpu"
    if name == "cuda":
        return device.type == "cuda" and _device_key(device) not in _NO_KERNEL_IMAGE
    if name == "triton":  # interpreter mode runs CPU tensors, compiled mode CUDA tensors
        interpreted = os.environ.get("TRITON_INTERPRET") == "1"
        return device.type == ("cpu" if interpreted else "cuda")
    return True


@functools.lru_cache(maxsize=None)
def _note_fallback(op: str, device_type: str) -> None:
    warnings.warn(f"eqkernels: no fast backend for {op} on {device_type}; using the PyTorch "
                  f"reference. eqkernels.backends() says why.", RuntimeWarning, stacklevel=3)


def pick(op: str, device: torch.device, requested: str = "auto",
         among: tuple = BACKEND_NAMES) -> str:
    """Backend that runs `op` for tensors on `device`; `requested` forces one.

    among: the backends that implement `op`, fastest first (default: all of them, in the
    device's usual order). Where none of them is a fast backend for this device type (e.g. a
    Triton-only op on CPU), the reference is the design, not a fallback: no warning."""
    if requested != "auto":
        if requested not in among:
            prefix = "" if tuple(among) == BACKEND_NAMES else f"{op}: "
            raise ValueError(f"{prefix}backend must be 'auto' or one of {tuple(among)}, got "
                             f"{requested!r}")
        if not _usable(requested, device):
            raise RuntimeError(f"backend {requested!r} cannot run {op} on {device.type}: "
                               f"{backends()[requested][1]}")
        return requested
    usual = _PREFERENCE.get(device.type, ("reference",))
    preference = [n for n in (usual if tuple(among) == BACKEND_NAMES else among) if n in usual]
    for name in preference:
        if _usable(name, device):
            if name == "reference" and len(preference) > 1:
                _note_fallback(op, device.type)
            return name
    return "reference"


def _device_key(device: torch.device) -> str:
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def with_fallback(op: str, name: str, implementations: dict):
    """implementations[name], and for "cuda" a wrapper that, when a launch reports no kernel
    image for the GPU (an arch newer than the build's SASS with no usable PTX), warns once
    with the reason, marks the device, and reruns the call on the next usable backend of the
    device (a failed launch changed nothing)."""
    fn = implementations[name]
    if name != "cuda":
        return fn

    def call(z, *args, **kwargs):
        if _device_key(z.device) not in _NO_KERNEL_IMAGE:
            try:
                return fn(z, *args, **kwargs)
            except RuntimeError as err:
                if "no kernel image" not in str(err):
                    raise
                _NO_KERNEL_IMAGE[_device_key(z.device)] = str(err)
                gpu = (torch.cuda.get_device_name(z.device) if z.device.type == "cuda"
                       else str(z.device))
                warnings.warn(f"eqkernels: {op}: the compiled CUDA kernels have no image for "
                              f"{gpu}; using {pick(op, z.device)!r} from now on ({err})",
                              RuntimeWarning, stacklevel=2)
        return implementations[pick(op, z.device)](z, *args, **kwargs)
    return call

"""parse_device: a --device value checked against what this machine has, before any work.

torch.device("bogus") raises a RuntimeError listing twenty device types, and a model moved to
"cuda" on a machine without CUDA fails deep inside torch; here both become one ValueError that
names the flag and says what to use instead.
"""
from __future__ import annotations

import torch

RUNNABLE = ("cpu", "cuda", "mps", "xpu")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_device(text: str, flag: str = "--device") -> str:
    """The canonical device string ("cpu", "cuda", "cuda:1", ...) or ValueError."""
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{flag} {text!r} is not a device (expected cpu, cuda, cuda:N or mps)"
                         ) from None
    if device.type not in RUNNABLE:
        raise ValueError(f"{flag} {text!r} is not a device to run on (expected one of "
                         f"{', '.join(RUNNABLE)})")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = "" if torch.version.cuda else ", a build without CUDA"
            raise ValueError(f"{flag} {text}: CUDA is not available on this machine (torch "
                             f"{torch.__version__}{built}); use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"{flag} {text}: this machine has {count} CUDA "
                             f"device{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})")
    elif device.type != "cpu":
        backend = getattr(torch.backends, device.type, None) or getattr(torch, device.type, None)
        available = getattr(backend, "is_available", lambda: False)
        if not available():
            raise ValueError(f"{flag} {text}: {device.type} is not available on this machine; "
                             f"use --device cpu")
    return str(device)

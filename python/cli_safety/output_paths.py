"""Output paths checked before the work that fills them: minutes of training or evaluation
must not end in "Is a directory" or "unknown file extension".

check_output_file(path, flag, suffixes): path is not a folder, its extension is one of
suffixes (if given), and its folder exists and is writable or can be created.
check_output_dir(path, flag): path is a folder (or can be made one) we can write in.
Nothing is created: the probe is a temporary file in the nearest existing folder, removed.
"""
from __future__ import annotations

import os
import tempfile
from typing import Iterable, Optional, Tuple


def plot_suffixes() -> Tuple[str, ...]:
    """The extensions matplotlib's savefig can write (".png", ".pdf", ".svg", ...)."""
    from matplotlib.backend_bases import FigureCanvasBase
    return tuple(sorted("." + k for k in FigureCanvasBase.get_supported_filetypes()))


def check_output_file(path: str, flag: str, suffixes: Optional[Iterable[str]] = None) -> None:
    """ValueError naming `flag` unless a file can be written at `path`."""
    if not path:
        raise ValueError(f"{flag} is empty; expected a file path")
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path} is a directory; expected a file path")
    if suffixes is not None:
        suffixes = tuple(suffixes)
        ext = os.path.splitext(path)[1].lower()
        choices = ", ".join(suffixes)
        if not ext:
            raise ValueError(f"{flag} {path}: no extension (one of {choices})")
        if ext not in suffixes:
            raise ValueError(f"{flag} {path}: unsupported extension {ext!r} (one of {choices})")
    _check_writable(os.path.dirname(os.path.abspath(path)), flag, path)


def check_output_dir(path: str, flag: str) -> None:
    """ValueError naming `flag` unless `path` is or can become a folder we write in."""
    if not path:
        raise ValueError(f"{flag} is empty; expected a directory")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path} is a file, not a directory")
    _check_writable(os.path.abspath(path), flag, path)


def _check_writable(folder: str, flag: str, path: str) -> None:
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"{flag} {path}: {existing} is a file, not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-probe-"):
            pass
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot write in {existing} ({e.strerror or e})") from None

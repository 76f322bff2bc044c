"""Files that are either the old version or the complete new one, never half-written: the
writer fills a temporary file in the same folder, os.replace puts it in place on success, and
a failure (an exception, Ctrl-C) removes it.

    with atomic_write("metrics.jsonl") as fh: fh.write(...)
    with atomic_path("plot.png") as tmp: fig.savefig(tmp)      # writers that want a path
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator

# mkstemp makes 0600 files; the result should have the permissions open() would give it.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path beside `path`, with its extension (writers that infer the format from
    it); moved to `path` when the block ends without an exception. Creates missing folders."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{base}.", suffix=os.path.splitext(base)[1])
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", **open_kwargs):
    """open(path, mode) on a temporary file that replaces `path` when the block succeeds."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())

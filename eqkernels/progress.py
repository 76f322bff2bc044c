"""Progress output that suits where it goes: a tqdm bar on a terminal, plain lines in a log.

    from eqkernels.progress import progress_bar
    bar = progress_bar(total=n, desc="eval", unit="step")   # any tqdm keyword
    bar.update(1); bar.set_postfix(loss=0.3); bar.close()

When the stream (stderr by default) is not a terminal (a log file, CI), thousands of
carriage-return frames make an unreadable file; there the bar prints one plain line
(`desc: 40/100 steps (40%) 12.3 s loss=0.3`) at most every `interval` seconds or each
`percent` percent of the total, whichever comes first, and one at the end.
"""
from __future__ import annotations

import sys
import time
from typing import Optional

LINE_INTERVAL_S = 10.0   # at most this long between plain lines ...
LINE_PERCENT = 10.0      # ... or a line every this many percent of the total


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class PlainProgress:
    """The non-terminal bar: the subset of tqdm's interface progress code uses."""

    def __init__(self, total: Optional[float] = None, desc: str = "", unit: str = "it",
                 initial: float = 0, disable: bool = False, file=None,
                 interval: float = LINE_INTERVAL_S, percent: float = LINE_PERCENT, **_ignored):
        self.total, self.desc, self.unit, self.n = total, desc or "progress", unit, initial
        self.disable, self.file = disable, file
        self.interval, self.percent = interval, percent
        self.start = self._last_t = time.monotonic()
        self._last_n = initial
        self._postfix = ""
        self._closed = False

    def _stream(self):
        return self.file if self.file is not None else sys.stderr

    def line(self) -> str:
        done = f"{self.n:g}"
        if self.total:
            done += f"/{self.total:g} {self.unit} ({100.0 * self.n / self.total:.0f}%)"
        else:
            done += f" {self.unit}"
        text = f"{self.desc}: {done} {time.monotonic() - self.start:.1f} s"
        return text + (f" {self._postfix}" if self._postfix else "")

    def _emit(self) -> None:
        print(self.line(), file=self._stream(), flush=True)
        self._last_t, self._last_n = time.monotonic(), self.n

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.disable:
            return
        due = time.monotonic() - self._last_t >= self.interval
        if self.total:
            due |= 100.0 * (self.n - self._last_n) / self.total >= self.percent
        if due:
            self._emit()

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self._postfix = " ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if not self._closed and not self.disable and self.n != self._last_n:
            self._emit()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):  # pragma: no cover - progress_bar(iterable=...) is not supported
        raise TypeError("PlainProgress is not iterable; call update()")


def progress_bar(**tqdm_kwargs):
    """A tqdm bar (tqdm's keywords) on a terminal; a PlainProgress of plain lines otherwise.
    Extra keywords for the plain form: interval (s), percent (of total)."""
    stream = tqdm_kwargs.get("file") or sys.stderr
    interval = tqdm_kwargs.pop("interval", LINE_INTERVAL_S)
    percent = tqdm_kwargs.pop("percent", LINE_PERCENT)
    if _is_tty(stream):
        from tqdm.auto import tqdm
        return tqdm(**tqdm_kwargs)
    return PlainProgress(interval=interval, percent=percent, **tqdm_kwargs)


__all__ = ["progress_bar", "PlainProgress"]

"""Timing and reporting helpers shared by the benchmark scripts in this folder.

Not a benchmark itself. The scripts import it as a sibling module (`python
benchmarks/<script>.py` puts this folder on sys.path) and call `use_repo_checkout()`
first, so they time this checkout's `eqkernels`, not some other installed copy.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def use_repo_checkout() -> None:
    """Put the repository root first on sys.path (eqkernels imports from the checkout)."""
    root = str(REPO_ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)


# ---------------------------------------------------------------------------- timing

def synchronize(device: torch.device) -> None:
    """Wait for queued device work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable, device: torch.device):
    """(seconds, fn's result) of one call, host wall clock, device synchronised on both sides."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def measure(fn: Callable, device: torch.device, *, warmup: int = 1, repeats: int = 5,
            setup: Optional[Callable] = None, cuda_events: bool = False) -> List[float]:
    """Seconds of each of `repeats` calls of fn, after `warmup` untimed calls.

    setup: called before every call (warm-up included), outside the timed region
           (e.g. a cache flush).
    cuda_events: on CUDA, time each call with a pair of CUDA events (device time from
           the first queued op to the last) instead of host wall clock with syncs.
    """
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    synchronize(device)
    if cuda_events and device.type == "cuda":
        pairs = []
        for _ in range(repeats):
            if setup is not None:
                setup()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            pairs.append((start, end))
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) / 1e3 for s, e in pairs]
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        seconds, _ = time_call(fn, device)
        times.append(seconds)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> float:
    """(max - min) / median: a rough noise indicator for a set of repeats."""
    mid = statistics.median(values)
    return (max(values) - min(values)) / mid if mid > 0 else float("nan")


def copy_bandwidth(device: torch.device, nbytes: int, repeats: int = 10) -> float:
    """Bytes/s of dst.copy_(src) for two float32 tensors of `nbytes` each (2 * nbytes moved)."""
    numel = nbytes // 4
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    times = measure(lambda: dst.copy_(src), device, warmup=2, repeats=repeats, cuda_events=True)
    return 2 * numel * 4 / median(times)


# ------------------------------------------------------------------------ environment

def vm_kib(field: str):
    """A memory field of this process from /proc/self/status (e.g. "VmRSS", "VmHWM") in KiB,
    or None where the file or field is missing (not Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def environment_lines(device: torch.device) -> List[str]:
    """Header lines: torch version, threads, CPU model, CUDA device, eqkernels and backends."""
    import eqkernels
    from eqkernels import _backends

    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
             f"python {platform.python_version()}",
             f"CPU: {cpu_model()} ({os.cpu_count()} logical cores visible)"]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        lines.append(f"CUDA device: {props.name} (sm_{props.major}{props.minor}, "
                     f"{props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}")
    available = [name for name, (ok, _) in _backends.backends().items() if ok]
    lines.append(f"eqkernels {eqkernels.__version__} from {Path(eqkernels.__file__).parent}; "
                 f"backends available: {', '.join(available)}"
                 + ("; TRITON_INTERPRET=1" if os.environ.get("TRITON_INTERPRET") == "1" else ""))
    return lines


# ---------------------------------------------------------------------------- tables

def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    """Plain-text (aligned columns) or markdown table; every cell is already a string."""
    if markdown:
        out = ["| " + " | ".join(headers) + " |",
               "|" + "|".join("---:" for _ in headers) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(out)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))
    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def write_markdown(path: str, title: str, header_lines: Sequence[str], table_md: str,
                   notes: Sequence[str] = ()) -> None:
    text = [f"# {title}", ""]
    text += [f"- {line}" for line in header_lines]
    text += ["", table_md, ""]
    text += list(notes)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(text).rstrip() + "\n")


def report(header_lines: Sequence[str], headers: Sequence[str], rows, notes: Sequence[str],
           out: Optional[str] = None) -> None:
    """Print a benchmark's result (title first in header_lines) and, with out, save it as markdown."""
    print()
    print("\n".join(header_lines))
    print(format_table(headers, rows))
    print("\n".join(notes))
    if out:
        write_markdown(out, header_lines[0], header_lines[1:],
                       format_table(headers, rows, markdown=True), notes)
        print(f"wrote {out}")


def setup_device(name: str, threads: Optional[int] = None) -> torch.device:
    """torch.device(name) after torch.set_num_threads(threads); exits if CUDA is asked for and absent."""
    if threads is not None:
        torch.set_num_threads(threads)
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device visible")
    return device


def parse_sizes(text: str, arity: int) -> List[tuple]:
    """'8x128,64x256' -> [(8, 128), (64, 256)] (each entry must have `arity` numbers)."""
    sizes = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.lower().split("x")
        if len(parts) != arity or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"size {item!r} must be {arity} integers joined by 'x'")
        sizes.append(tuple(int(p) for p in parts))
    if not sizes:
        raise ValueError("no sizes given")
    return sizes


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def fmt_us(seconds: float) -> str:
    us = seconds * 1e6
    return f"{us:.1f}" if us < 1000 else f"{us:.0f}"

"""Load a torchdeq program as written (its `torchdeq` imports) or with ONLY those import lines
rewritten to eqkernels.compat.torchdeq -- the one change a torchdeq user makes.

The programs (programs/prog_*.py) are our own small CPU re-implementations of torchdeq's
docs sample, its README quick start and the deq-zoo models: their model shapes, their
torchdeq calls and the flags of their launch scripts, at tiny sizes. Each defines
`build_parser()` (the program's argparse set-up with add_deq_args), `ARGV` (its launch
flags) and `run(argv=ARGV, steps=..., seed=0, overrides=None) -> dict` with at least
"losses" (one float per training step); `overrides` sets attributes of the parsed args
(the harness uses it for eqkernels' stop_rule, never the program).
"""
from __future__ import annotations

import importlib.util
import re
import sys
import time
import warnings
from pathlib import Path

PROGRAM_DIR = Path(__file__).resolve().parent / "programs"
LIBS = ("torchdeq", "eqk")
_FROM = re.compile(r"^([ \t]*)from[ \t]+torchdeq(\.[\w.]+)?[ \t]+import\b", re.M)
_IMPORT = re.compile(r"^([ \t]*)import[ \t]+torchdeq[ \t]*$", re.M)


def rewrite_imports(source: str) -> str:
    """`from torchdeq.x import y` -> `from eqkernels.compat.torchdeq.x import y`;
    `import torchdeq` -> `import eqkernels.compat.torchdeq as torchdeq`. Nothing else."""
    source = _FROM.sub(lambda m: f"{m.group(1)}from eqkernels.compat.torchdeq"
                                 f"{m.group(2) or ''} import", source)
    return _IMPORT.sub(lambda m: f"{m.group(1)}import eqkernels.compat.torchdeq as torchdeq",
                       source)


def program_names():
    return sorted(p.stem[len("prog_"):] for p in PROGRAM_DIR.glob("prog_*.py"))


def load(name: str, lib: str):
    """The program module `name` importing from torchdeq ("torchdeq") or eqkernels ("eqk")."""
    if lib not in LIBS:
        raise ValueError(f"lib must be one of {LIBS}, got {lib!r}")
    path = PROGRAM_DIR / f"prog_{name}.py"
    source = path.read_text()
    if lib == "eqk":
        source = rewrite_imports(source)
        left = re.findall(r"^\s*(?:from|import)\s+torchdeq\b.*$", source, re.M)
        assert not left, f"import lines not rewritten: {left}"
    module_name = f"tdq_prog_{name}_{lib}"
    spec = importlib.util.spec_from_loader(module_name, loader=None, origin=str(path))
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(path)
    sys.modules[module_name] = module  # dataclasses / pickling look modules up by name
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def with_flags(argv, **flags):
    """argv with the values of some flags replaced (--name value), e.g. smaller sizes."""
    argv = list(argv)
    for name, value in flags.items():
        i = argv.index(f"--{name}")
        argv[i + 1] = str(value)
    return argv


def run_both(name: str, steps=None, seed=0, overrides=None, argv=None):
    """{lib: (result dict, seconds, warnings)} of the same program run on torchdeq and on
    eqkernels (warnings: the messages of the warnings the run raised)."""
    out = {}
    for lib in LIBS:
        prog = load(name, lib)
        kwargs = dict(seed=seed)
        if steps is not None:
            kwargs["steps"] = steps
        if argv is not None:
            kwargs["argv"] = argv
        if overrides and lib == "eqk":
            kwargs["overrides"] = overrides
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            result = prog.run(**kwargs)
            seconds = time.perf_counter() - t0
        out[lib] = (result, seconds, [str(w.message) for w in caught])
    return out


def max_rel_diff(a, b) -> float:
    """max_k |a_k - b_k| / max(|b_k|, 1e-12) over two loss curves of equal length."""
    assert len(a) == len(b), (a, b)
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b))

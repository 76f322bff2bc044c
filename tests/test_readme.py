"""Every ```python block of README.md runs as written (in order, one namespace, as a reader
pasting them into one session would), and the first example's solve converges."""
import contextlib
import io
import re
import textwrap
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^( *)```python\s*\n(.*?)^\1```", re.S | re.M)


def python_blocks():
    return [textwrap.dedent(m.group(2)) for m in FENCE.finditer(README.read_text())]


def test_readme_has_python_blocks():
    assert len(python_blocks()) >= 2


def test_every_python_block_runs_and_the_first_example_converges():
    torch.manual_seed(0)
    namespace = {"__name__": "__readme__"}
    outputs = []
    for i, block in enumerate(python_blocks()):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, f"README.md python block {i}", "exec"), namespace)
        outputs.append(out.getvalue())
    # The first example runs the DEQ in training mode (a fresh module) and prints a summary.
    first = outputs[0]
    match = re.search(r"(\d+)/(\d+) converged", first)
    assert match, first
    assert match.group(1) == match.group(2), first

"""Token encoding of mazes, EqR's (dataset/build_maze_unique_dataset.py): one token per cell,
row-major, token = index in CHARSET '# SGo' plus one:

  0 pad (never in a maze; dataset.json's pad_id and ignore_label_id)
  1 '#' wall   2 ' ' open   3 'S' start   4 'G' goal   5 'o' path        vocab 6
Inputs hold 1-4: the path's cells are open (2). Labels are the input with the path's cells
strictly between S and G set to 5 ('o'); S and G keep their tokens.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np

CHARSET = "# SGo"
PAD, WALL, OPEN, START, GOAL, PATH = 0, 1, 2, 3, 4, 5
VOCAB_SIZE = len(CHARSET) + 1
INPUT_TOKENS = (WALL, OPEN, START, GOAL)
LABEL_TOKENS = (WALL, OPEN, START, GOAL, PATH)

_CHAR_TO_TOKEN = np.full(256, -1, dtype=np.int64)
for _t, _c in enumerate(CHARSET, start=1):
    _CHAR_TO_TOKEN[ord(_c)] = _t
_TOKEN_TO_CHAR = np.array(["?"] + list(CHARSET))


def encode(text: Union[str, Sequence[str]]) -> np.ndarray:
    """A maze as text (lines joined by newlines, or a list of lines, all the same length) ->
    (H, W) int64 tokens. Characters outside '# SGo' are refused, naming row and column."""
    lines = text.split("\n") if isinstance(text, str) else list(text)
    if not lines or not lines[0]:
        raise ValueError("maze text is empty")
    width = len(lines[0])
    for r, line in enumerate(lines):
        if len(line) != width:
            raise ValueError(f"maze row {r} has {len(line)} characters, row 0 has {width}")
    raw = np.frombuffer("".join(lines).encode("latin-1", errors="replace"), dtype=np.uint8)
    tokens = _CHAR_TO_TOKEN[raw].reshape(len(lines), width)
    bad = np.argwhere(tokens < 0)
    if len(bad):
        r, c = (int(v) for v in bad[0])
        raise ValueError(f"maze row {r} column {c}: character {lines[r][c]!r} is not one of "
                         f"{CHARSET!r}")
    return tokens


def decode(tokens, height: int = None, width: int = None) -> str:
    """(H, W) tokens, or (H * W,) with height and width, -> text lines joined by newlines
    (pad shows as '?')."""
    arr = np.asarray(tokens.cpu() if hasattr(tokens, "cpu") else tokens)
    if arr.ndim == 1 and height is not None and width is not None:
        arr = arr.reshape(height, width)
    if arr.ndim != 2:
        raise ValueError(f"tokens must be (H, W), or (H * W,) with height and width; got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"tokens must be integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= VOCAB_SIZE):
        raise ValueError(f"tokens must lie in [0, {VOCAB_SIZE}), got "
                         f"{int(arr.min())}..{int(arr.max())}")
    return "\n".join("".join(row) for row in _TOKEN_TO_CHAR[arr].tolist())

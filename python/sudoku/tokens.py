"""Token encoding of Sudoku grids: 81 cells row-major, one int64 token per cell.

  0 = padding (never produced by encode), 1 = blank ('.'), d + 1 = digit d (1..9): vocab 11.

Strings use the Sudoku-Extreme CSV alphabet: '.' for a blank, '1'..'9' for digits.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

PAD_TOKEN = 0
BLANK_TOKEN = 1
DIGIT_OFFSET = 1            # token = digit + DIGIT_OFFSET
VOCAB_SIZE = 11
CELLS = 81
BLANK_CHAR = "."

_CHAR_TO_TOKEN = np.full(256, -1, dtype=np.int64)
_CHAR_TO_TOKEN[ord(BLANK_CHAR)] = BLANK_TOKEN
for _d in range(1, 10):
    _CHAR_TO_TOKEN[ord(str(_d))] = _d + DIGIT_OFFSET
_TOKEN_TO_CHAR = np.array([""] + [BLANK_CHAR] + [str(d) for d in range(1, 10)])


def encode_many(grids: Sequence[str], name: str = "grid") -> np.ndarray:
    """N strings of 81 chars ('.' or '1'-'9') -> (N, 81) int64 tokens; `name` labels errors."""
    grids = list(grids)
    for k, s in enumerate(grids):
        if not isinstance(s, str):
            raise TypeError(f"{name}[{k}] must be a str, got {type(s).__name__}")
        if len(s) != CELLS:
            raise ValueError(f"{name}[{k}] must have {CELLS} characters, got {len(s)}: {s!r}")
    if not grids:
        return np.zeros((0, CELLS), dtype=np.int64)
    raw = "".join(grids).encode("ascii", errors="replace")  # non-ASCII -> '?', rejected below
    tokens = _CHAR_TO_TOKEN[np.frombuffer(raw, dtype=np.uint8)].reshape(len(grids), CELLS)
    bad = np.argwhere(tokens < 0)
    if len(bad):
        k, j = (int(v) for v in bad[0])
        raise ValueError(f"{name}[{k}] has invalid character {grids[k][j]!r} at position {j}; "
                         f"expected '{BLANK_CHAR}' or a digit 1-9")
    return tokens


def encode(grid: str, name: str = "grid") -> np.ndarray:
    """One 81-char string ('.' or '1'-'9') -> (81,) int64 tokens: blank -> 1, digit d -> d + 1."""
    try:
        return encode_many([grid], name)[0]
    except (ValueError, TypeError) as e:  # drop the "[0]" a batch of one would report
        raise type(e)(str(e).replace(f"{name}[0]", name, 1)) from None


def decode(tokens) -> str:
    """(81,) integer tokens (numpy, torch or a sequence) -> the 81-char string."""
    arr = np.asarray(tokens.cpu() if hasattr(tokens, "cpu") else tokens)
    if arr.shape != (CELLS,):
        raise ValueError(f"tokens must have shape ({CELLS},), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"tokens must be integers, got dtype {arr.dtype}")
    bad = np.flatnonzero((arr < BLANK_TOKEN) | (arr >= VOCAB_SIZE))
    if len(bad):
        j = int(bad[0])
        raise ValueError(f"tokens[{j}] = {int(arr[j])} is not a cell token; expected "
                         f"{BLANK_TOKEN} (blank) or {1 + DIGIT_OFFSET}..{9 + DIGIT_OFFSET}")
    return "".join(_TOKEN_TO_CHAR[arr].tolist())


def to_string(grid: Sequence[int]) -> str:
    """81 ints with 0 = blank (the solver's alphabet) -> the CSV string."""
    return "".join(str(d) if d else BLANK_CHAR for d in grid)


def from_string(s: str) -> list:
    """The CSV string -> 81 ints with 0 = blank (the solver's alphabet); validates like encode."""
    return [int(t) - DIGIT_OFFSET if t != BLANK_TOKEN else 0 for t in encode(s)]

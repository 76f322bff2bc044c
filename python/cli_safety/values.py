"""Range: the valid values of a numeric command-line option, in one place.

    p.add_argument("--patience", type=Range(int, min=0))    # argparse names the flag
    Range(float, above=0).check("lr", cfg.lr)               # the same rule for a config field

A float must be finite; an int option refuses "2.5" and booleans.
"""
from __future__ import annotations

import argparse
import math
from typing import Optional, Union

Number = Union[int, float]

# Seeds: what numpy and torch generators take everywhere (and products of them fit int64).
SEED_MAX = 2**32 - 1


class Range:
    """kind (int or float) with inclusive bounds min/max and exclusive ones above/below."""

    def __init__(self, kind: type, min: Optional[Number] = None, max: Optional[Number] = None,
                 *, above: Optional[Number] = None, below: Optional[Number] = None):
        if kind not in (int, float):
            raise TypeError(f"kind must be int or float, got {kind!r}")
        self.kind, self.min, self.max, self.above, self.below = kind, min, max, above, below
        self.__name__ = kind.__name__  # argparse's name for the type in its own messages

    def describe(self) -> str:
        what = "an int" if self.kind is int else "a float"
        if self.min is not None and self.max is not None:
            return f"{what} in [{_fmt(self.min)}, {_fmt(self.max)}]"
        parts = []
        if self.min is not None:
            parts.append(f">= {_fmt(self.min)}")
        if self.above is not None:
            parts.append(f"> {_fmt(self.above)}")
        if self.max is not None:
            parts.append(f"<= {_fmt(self.max)}")
        if self.below is not None:
            parts.append(f"< {_fmt(self.below)}")
        return " ".join([what] + [" and ".join(parts)] if parts else [what])

    def ok(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        return not ((self.min is not None and value < self.min)
                    or (self.max is not None and value > self.max)
                    or (self.above is not None and value <= self.above)
                    or (self.below is not None and value >= self.below))

    def check(self, name: str, value) -> None:
        """ValueError `name must be <range>, got value` unless value is in range."""
        if not self.ok(value):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")

    def __call__(self, text: str) -> Number:
        """argparse type: the parsed value, or ArgumentTypeError (argparse adds the flag)."""
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None
        if not self.ok(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text}")
        return value

    def __repr__(self) -> str:
        return f"Range({self.describe()})"


def _fmt(v: Number) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


SEED = Range(int, min=0, max=SEED_MAX)

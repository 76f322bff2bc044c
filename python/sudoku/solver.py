"""Bitmask Sudoku solver: counts solutions (uniqueness checks) and rates difficulty.

Grids are sequences of 81 ints, row-major, 0 = blank, 1..9 = digit. Internally a placed digit d
is the bit 1 << (d - 1) and each row / column / box keeps the OR of its placed bits, so a cell's
candidates are `ALL & ~(row | col | box)`.

The search is the propagation solver the rating is defined by:
  1. naked singles (a cell with one candidate) until none is left,
  2. hidden singles (a digit with one possible cell in a row, column or box),
  3. otherwise branch on the blank with the fewest candidates (lowest index on ties), trying its
     candidates in increasing digit order.
A *guess* is every candidate tried at a branch point beyond the first one, i.e. a backtrack. The
guess count of a solve to the first solution is the difficulty rating of one cell/digit ordering;
`sudoku.generate.rate` averages it over random symmetry transforms of the puzzle.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

ALL = 0x1FF
ROW = tuple(i // 9 for i in range(81))
COL = tuple(i % 9 for i in range(81))
BOX = tuple((i // 27) * 3 + (i % 9) // 3 for i in range(81))
# 27 units: rows 0-8, columns 9-17, boxes 18-26; their masks live in R, C, B respectively.
UNITS = tuple(
    [tuple(r * 9 + c for c in range(9)) for r in range(9)]
    + [tuple(r * 9 + c for r in range(9)) for c in range(9)]
    + [tuple((b // 3) * 27 + (b % 3) * 3 + (k // 3) * 9 + k % 3 for k in range(9))
       for b in range(9)]
)
POPCOUNT = tuple(bin(m).count("1") for m in range(512))
BIT_TO_DIGIT = {1 << d: d + 1 for d in range(9)}


class _Search:
    """One depth-first search; holds the counters so the recursion passes only the grid state."""

    __slots__ = ("limit", "count", "guesses", "nodes", "solution")

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0
        self.guesses = 0
        self.nodes = 0
        self.solution: Optional[List[int]] = None

    def run(self, g: List[int], R: List[int], C: List[int], B: List[int],
            empties: List[int]) -> None:
        """g: 81 cell bits (0 = blank); R/C/B: per-unit OR of placed bits; empties: blank cells."""
        self.nodes += 1
        cand = [0] * 81
        while True:
            # Naked singles, placed as soon as found so later cells see them.
            placed = False
            rest = []
            for i in empties:
                r, c, b = ROW[i], COL[i], BOX[i]
                m = ALL & ~(R[r] | C[c] | B[b])
                if not m:
                    return
                if m & (m - 1):
                    cand[i] = m
                    rest.append(i)
                else:
                    g[i] = m
                    R[r] |= m
                    C[c] |= m
                    B[b] |= m
                    placed = True
            empties = rest
            if not empties:
                self.count += 1
                if self.solution is None:
                    self.solution = [BIT_TO_DIGIT[m] for m in g]
                return
            if placed:
                continue
            # Hidden singles; every cand[] entry of a blank is current here (nothing was placed).
            for u in range(27):
                unit = UNITS[u]
                have = R[u] if u < 9 else (C[u - 9] if u < 18 else B[u - 18])
                once = twice = 0
                for i in unit:
                    if not g[i]:
                        m = cand[i]
                        twice |= once & m
                        once |= m
                if (once | have) != ALL:
                    return  # some digit has no cell left in this unit
                single = once & ~twice & ~have  # stale cands may still hold placed digits
                while single:
                    bit = single & -single
                    single ^= bit
                    for i in unit:
                        if cand[i] & bit and not g[i]:
                            break
                    else:
                        return  # its one cell was just filled with another digit
                    r, c, b = ROW[i], COL[i], BOX[i]
                    if (R[r] | C[c] | B[b]) & bit:
                        return  # two hidden singles collide: contradiction
                    g[i] = bit
                    R[r] |= bit
                    C[c] |= bit
                    B[b] |= bit
                    placed = True
            if placed:
                empties = [i for i in empties if not g[i]]
                continue
            break
        # Branch on the most constrained blank.
        best, best_n = -1, 10
        for i in empties:
            n = POPCOUNT[cand[i]]
            if n < best_n:
                best, best_n = i, n
                if n == 2:
                    break
        m = cand[best]
        r, c, b = ROW[best], COL[best], BOX[best]
        first = True
        while m:
            bit = m & -m
            m ^= bit
            if not first:
                self.guesses += 1
            first = False
            g2 = g[:]
            g2[best] = bit
            R2, C2, B2 = R[:], C[:], B[:]
            R2[r] |= bit
            C2[c] |= bit
            B2[b] |= bit
            self.run(g2, R2, C2, B2, [i for i in empties if i != best])
            if self.count >= self.limit:
                return


def _start(grid: Sequence[int], limit: int) -> Tuple[_Search, bool]:
    """Set up a search over `grid`; the bool is False when the clues already clash."""
    if len(grid) != 81:
        raise ValueError(f"grid must have 81 cells, got {len(grid)}")
    g = [0] * 81
    R, C, B = [0] * 9, [0] * 9, [0] * 9
    empties = []
    search = _Search(limit)
    for i, d in enumerate(grid):
        if not d:
            empties.append(i)
            continue
        if not 1 <= d <= 9:
            raise ValueError(f"grid cells must be 0..9, got {d} at cell {i}")
        bit = 1 << (d - 1)
        r, c, b = ROW[i], COL[i], BOX[i]
        if (R[r] | C[c] | B[b]) & bit:
            return search, False
        g[i] = bit
        R[r] |= bit
        C[c] |= bit
        B[b] |= bit
    search.run(g, R, C, B, empties)
    return search, True


def count_solutions(grid: Sequence[int], limit: int = 2) -> int:
    """Number of solutions of `grid` (81 ints, 0 = blank), counting stops at `limit`."""
    return _start(grid, limit)[0].count


def solve(grid: Sequence[int]) -> Optional[List[int]]:
    """The first solution found (81 ints 1..9), or None if there is none."""
    return _start(grid, 1)[0].solution


def guesses(grid: Sequence[int]) -> int:
    """Backtracks of the propagation solver to the first solution, in this cell/digit order."""
    search, ok = _start(grid, 1)
    if not ok or search.solution is None:
        raise ValueError("grid has no solution")
    return search.guesses


def is_solution(grid: Sequence[int]) -> bool:
    """True iff `grid` is a complete valid Sudoku: every row, column and box holds 1..9 once."""
    if len(grid) != 81:
        return False
    for unit in UNITS:
        seen = 0
        for i in unit:
            d = grid[i]
            if not isinstance(d, int) or not 1 <= d <= 9:
                return False
            seen |= 1 << (d - 1)
        if seen != ALL:
            return False
    return True

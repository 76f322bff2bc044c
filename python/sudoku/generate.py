"""Generate hard Sudoku puzzles with a unique solution (no data can be downloaded).

Recipe per puzzle:
  1. a full grid by randomized backtracking (most-constrained cell, shuffled digits);
  2. clue removal in random order, keeping a removal only if the solution stays unique
     (`solver.count_solutions(.., limit=2) == 1`), which leaves a minimal puzzle;
  3. a hill-climb: drop one or two clues, add back more from the solution at random, check
     uniqueness, minimise again, keep the result when it is at least as hard (mean guesses, then
     fewer clues);
  4. accept the puzzle when its mean guess count reaches `min_rating`, else start over.

Rating = mean over `RATING_TRANSFORMS` random symmetry transforms of the propagation solver's
guess count (`solver.guesses`): averaging removes the luck of the fixed cell/digit order. The
transforms are drawn from a seed derived from the puzzle itself, so `rate` is a pure function
of the puzzle and a CSV's ratings can be re-checked. The CSV stores round(mean) (half up).

Puzzle k of a run depends only on (seed, k): output is deterministic for a given --seed, for any
number of worker processes.
"""
from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from cli_safety.values import Range
from sudoku.augment import apply_symmetry, random_symmetry
from sudoku.solver import ALL, BOX, COL, POPCOUNT, ROW, count_solutions, guesses

RATING_TRANSFORMS = 8


def mean_guesses(puzzle: Sequence[int], transforms: int = RATING_TRANSFORMS) -> float:
    """Mean solver guesses over `transforms` random symmetries seeded by the puzzle itself."""
    rng = random.Random(zlib.crc32(bytes(puzzle)))
    total = 0
    for _ in range(transforms):
        total += guesses(apply_symmetry(puzzle, random_symmetry(rng)))
    return total / transforms


def rate(puzzle: Sequence[int], transforms: int = RATING_TRANSFORMS) -> int:
    """The integer rating stored in the CSV: mean guesses rounded half up."""
    return rating_of_mean(mean_guesses(puzzle, transforms))


def rating_of_mean(mean: float) -> int:
    return int(mean + 0.5)


def random_full_grid(rng: random.Random) -> List[int]:
    """A uniformly-seeded random complete grid: 81 ints 1..9."""
    g = [0] * 81
    R, C, B = [0] * 9, [0] * 9, [0] * 9

    def fill(empties: List[int]) -> bool:
        if not empties:
            return True
        best, best_m, best_n = -1, 0, 10
        for i in empties:
            m = ALL & ~(R[ROW[i]] | C[COL[i]] | B[BOX[i]])
            n = POPCOUNT[m]
            if n < best_n:
                best, best_m, best_n = i, m, n
                if n <= 1:
                    break
        if best_n == 0:
            return False
        digits = [d for d in range(9) if best_m >> d & 1]
        rng.shuffle(digits)
        r, c, b = ROW[best], COL[best], BOX[best]
        rest = [i for i in empties if i != best]
        for d in digits:
            bit = 1 << d
            g[best] = d + 1
            R[r] |= bit
            C[c] |= bit
            B[b] |= bit
            if fill(rest):
                return True
            R[r] ^= bit
            C[c] ^= bit
            B[b] ^= bit
        g[best] = 0
        return False

    if not fill(list(range(81))):
        raise RuntimeError("no complete grid found: the filler is broken")
    return g


def minimise(puzzle: List[int], rng: random.Random) -> List[int]:
    """Remove clues of a unique-solution puzzle in random order while the solution stays unique."""
    puzzle = puzzle[:]
    order = [i for i in range(81) if puzzle[i]]
    rng.shuffle(order)
    for i in order:
        d = puzzle[i]
        puzzle[i] = 0
        if count_solutions(puzzle, 2) != 1:
            puzzle[i] = d
    return puzzle


def hill_climb(puzzle: List[int], solution: Sequence[int], rng: random.Random, steps: int
               ) -> Tuple[List[int], float]:
    """Harder variants of a minimal `puzzle` of `solution`; returns (best puzzle, mean guesses)."""
    best, best_score = puzzle, (mean_guesses(puzzle), -sum(1 for d in puzzle if d))
    for _ in range(steps):
        clues = [i for i in range(81) if best[i]]
        blanks = [i for i in range(81) if not best[i]]
        drop = rng.randint(1, 2)
        trial = best[:]
        for i in rng.sample(clues, drop):
            trial[i] = 0
        for i in rng.sample(blanks, drop + 1):
            trial[i] = solution[i]
        if count_solutions(trial, 2) != 1:
            continue
        trial = minimise(trial, rng)
        score = (mean_guesses(trial), -sum(1 for d in trial if d))
        if score >= best_score:
            best, best_score = trial, score
    return best, best_score[0]


def add_clues(puzzle: List[int], solution: Sequence[int], k: int, rng: random.Random
              ) -> List[int]:
    """`puzzle` with k more of its blanks filled from `solution`, always leaving one blank
    (a fully solved grid is no puzzle)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    puzzle = puzzle[:]
    blanks = [i for i in range(81) if not puzzle[i]]
    for i in rng.sample(blanks, max(0, min(k, len(blanks) - 1))):
        puzzle[i] = solution[i]
    return puzzle


# A minimal puzzle has at least 17 clues, so at most 64 blanks; adding back more than 63
# could leave none (add_clues stops one short of a solved grid on any puzzle).
MAX_EXTRA_CLUES = 81 - 17 - 1


@dataclass
class GenConfig:
    min_rating: float = 1.0      # accept a puzzle when its mean guesses reach this
    climb_steps: int = 50        # hill-climb steps per minimal puzzle
    max_attempts: int = 1000     # full grids tried per puzzle before giving up
    # Solution digits added back to the final puzzle (still unique: clues only constrain
    # more). Easier puzzles for small CPU runs; 0 keeps the hardest (minimal) puzzles.
    extra_clues: int = 0

    def __post_init__(self):
        for name, valid in GEN_RANGES.items():
            valid.check(name, getattr(self, name))


# The valid range of every GenConfig field (also the generate CLI's argparse types).
GEN_RANGES = dict(min_rating=Range(float, min=0), climb_steps=Range(int, min=0),
                  max_attempts=Range(int, min=1),
                  extra_clues=Range(int, min=0, max=MAX_EXTRA_CLUES))


def generate_one(seed: int, index: int, cfg: GenConfig) -> Tuple[List[int], List[int], int, int]:
    """Puzzle `index` of run `seed`: (question, answer, rating, attempts); 0 = blank."""
    rng = random.Random(f"sudoku-gen:{seed}:{index}")
    for attempt in range(1, cfg.max_attempts + 1):
        solution = random_full_grid(rng)
        puzzle = minimise(solution, rng)
        puzzle, score = hill_climb(puzzle, solution, rng, cfg.climb_steps)
        if cfg.extra_clues:
            puzzle = add_clues(puzzle, solution, cfg.extra_clues, rng)
            score = mean_guesses(puzzle)
        if score >= cfg.min_rating:
            return puzzle, solution, rating_of_mean(score), attempt
    raise RuntimeError(f"no puzzle with mean guesses >= {cfg.min_rating} in {cfg.max_attempts} "
                       f"attempts (seed {seed}, index {index})")


def _job(args):
    seed, index, cfg = args
    return index, generate_one(seed, index, cfg)


def generate(n: int, seed: int = 0, workers: int = 2, cfg: Optional[GenConfig] = None,
             progress: bool = True) -> List[Tuple[List[int], List[int], int]]:
    """n distinct puzzles as (question, answer, rating), in index order; `workers` processes."""
    cfg = cfg or GenConfig()
    out, seen = [], set()
    bar = None
    if progress:
        from eqkernels.progress import progress_bar
        bar = progress_bar(total=n, desc="generate", unit="puzzle", smoothing=0.05)

    def consume(results) -> None:
        for _, (question, answer, rating, _) in results:
            key = bytes(question)
            if key in seen:
                continue  # duplicates are astronomically rare; a later index replaces them
            seen.add(key)
            out.append((question, answer, rating))
            if bar is not None:
                bar.update(1)

    pool = None
    if workers > 1:
        import multiprocessing as mp
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        pool = mp.get_context(method).Pool(workers)
    try:
        index = 0
        while len(out) < n:
            jobs = [(seed, i, cfg) for i in range(index, index + n - len(out))]
            index += len(jobs)
            consume(pool.imap(_job, jobs, chunksize=1) if pool else map(_job, jobs))
    finally:
        if pool is not None:
            pool.terminate()
    if bar is not None:
        bar.close()
    return out

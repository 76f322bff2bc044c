"""Random mazes with a unique shortest path from S to G of a chosen length: EqR's Maze-Unique
builder (dataset/build_maze_unique_dataset.py), reimplemented to draw the same random stream.

Per example (one numpy Generator, default_rng(seed), drawn in this order):
  1. the path length: integers(min_path, max_path + 1) (uniform);
  2. up to max_grid_attempts grids:
       perfect: a spanning-tree maze carved by a randomized depth-first backtracker on the
                odd cells of the largest odd-sized top-left block (a 30x30 grid holds a 29x29
                maze, its last row and column walls): start cell (integers(cells_h),
                integers(cells_w)), then at each step one unvisited neighbour, integers(k),
                neighbours listed in the order down, up, right, left;
       random:  each cell a wall with probability wall_prob (random((H, W)) < wall_prob);
     a grid with fewer than length + 1 open cells is skipped;
  3. per grid, up to max_start_attempts starts: S uniform over the open cells (row-major,
     integers(count)); G uniform over the cells at BFS distance exactly `length` from S; in
     random mode the pair is kept only if the shortest S-G path is unique.
  "Unique", EqR's definition: exactly one shortest S-G path. A perfect maze is a tree, so
  every path there is unique (EqR does not recount it); random grids are counted.
  Labels: the path's cells strictly between S and G become 'o' (maze.tokens).
  dedupe: an example whose input equals an earlier one (any split) is dropped and a new
  length drawn, at most max_resamples times per example.
Splits are drawn one after another from the same stream (EqR: train, then test), so with
EqR's options and seed this writes EqR's dataset: `python -m maze generate` with its
defaults is EqR's Maze-Unique recipe (30x30, perfect, lengths 100-140, 1000 + 1000, seed 42).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple

import numpy as np

from maze.tokens import GOAL, OPEN, PATH, START, WALL

MODES = ("perfect", "random")
# EqR's order of neighbours: (dy, dx) = down, up, right, left.
DIRS = ((1, 0), (-1, 0), (0, 1), (0, -1))
RECIPE_SIZE, RECIPE_PATH = 30, (100, 140)   # EqR's Maze-Unique: 30x30, lengths 100..140


class GenerationError(ValueError):
    """The options admit no maze (or too few distinct ones): which, and what to change."""


def default_path_range(height: int, width: int) -> Tuple[int, int]:
    """EqR's lengths 100..140 at 30x30, scaled by area for other sizes (15x15: 25..35,
    9x9: 9..13)."""
    if (height, width) == (RECIPE_SIZE, RECIPE_SIZE):
        return RECIPE_PATH
    scale = height * width / RECIPE_SIZE ** 2
    lo = max(1, round(RECIPE_PATH[0] * scale))
    return lo, max(lo, round(RECIPE_PATH[1] * scale))


@dataclass(frozen=True)
class MazeConfig:
    height: int = RECIPE_SIZE
    width: int = RECIPE_SIZE
    mode: str = "perfect"
    min_path: int = RECIPE_PATH[0]         # shortest-path length in steps (cells - 1)
    max_path: int = RECIPE_PATH[1]
    wall_prob: float = 0.37                # random mode only
    dedupe: bool = True
    max_grid_attempts: int = 200
    max_start_attempts: int = 200
    max_resamples: int = 50                # duplicates tolerated per example (EqR's
                                           # max_length_resamples)

    def __post_init__(self):
        for name in ("height", "width", "min_path", "max_path", "max_grid_attempts",
                     "max_start_attempts", "max_resamples"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        smallest = 3 if self.mode == "perfect" else 2
        if min(self.height, self.width) < smallest:
            raise ValueError(f"a {self.mode} maze needs height and width >= {smallest}, got "
                             f"{self.height}x{self.width}")
        if not 0 <= self.wall_prob < 1:
            raise ValueError(f"wall_prob must be in [0, 1), got {self.wall_prob!r}")
        if self.min_path > self.max_path:
            raise ValueError(f"min_path ({self.min_path}) must be <= max_path ({self.max_path})")
        if self.max_path > self.longest_path:
            raise ValueError(f"max_path {self.max_path} exceeds the longest path a "
                             f"{self.height}x{self.width} {self.mode} maze can hold "
                             f"({self.longest_path} steps)")

    @property
    def maze_block(self) -> Tuple[int, int]:
        """(rows, cols) of the perfect maze: the largest odd sizes that fit."""
        return self.height - (self.height % 2 == 0), self.width - (self.width % 2 == 0)

    @property
    def longest_path(self) -> int:
        """An upper bound on any shortest-path length: open cells - 1."""
        if self.mode == "random":
            return self.height * self.width - 1
        rows, cols = self.maze_block
        cells = ((rows - 1) // 2) * ((cols - 1) // 2)
        return 2 * cells - 2          # cells + (cells - 1) passages, minus one


class Maze(NamedTuple):
    open_mask: np.ndarray                 # (H, W) bool
    start: int                            # flat index of S
    goal: int
    path: List[int]                       # flat indices S .. G, length + 1 cells


def carve_perfect(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(height, width) bool open mask of a perfect maze (a spanning tree of the odd cells)
    carved by EqR's randomized depth-first backtracker; height and width odd, >= 3."""
    ch, cw = (height - 1) // 2, (width - 1) // 2
    open_mask = np.zeros((height, width), dtype=bool)
    visited = [[False] * cw for _ in range(ch)]
    cell = (int(rng.integers(ch)), int(rng.integers(cw)))
    visited[cell[0]][cell[1]] = True
    open_mask[2 * cell[0] + 1, 2 * cell[1] + 1] = True
    stack = [cell]
    while stack:
        r, c = stack[-1]
        fresh = [(r + dr, c + dc) for dr, dc in DIRS
                 if 0 <= r + dr < ch and 0 <= c + dc < cw and not visited[r + dr][c + dc]]
        if not fresh:
            stack.pop()
            continue
        nr, nc = fresh[int(rng.integers(len(fresh)))]
        visited[nr][nc] = True
        open_mask[r + nr + 1, c + nc + 1] = True     # the wall between (2r+1, ..) and (2nr+1, ..)
        open_mask[2 * nr + 1, 2 * nc + 1] = True
        stack.append((nr, nc))
    return open_mask


def _neighbours(open_mask: np.ndarray) -> List[List[int]]:
    """Per flat cell, its open 4-neighbours (flat indices) in DIRS order; [] for walls."""
    H, W = open_mask.shape
    flat = open_mask.ravel().tolist()
    out: List[List[int]] = [[] for _ in range(H * W)]
    for i in np.flatnonzero(open_mask).tolist():
        y, x = divmod(i, W)
        out[i] = [(y + dy) * W + x + dx for dy, dx in DIRS
                  if 0 <= y + dy < H and 0 <= x + dx < W and flat[(y + dy) * W + x + dx]]
    return out


def _bfs(nbrs: List[List[int]], start: int) -> List[int]:
    """Step distances from `start` over the open cells (-1: unreachable), per flat cell."""
    dist = [-1] * len(nbrs)
    dist[start] = 0
    queue = deque([start])
    while queue:
        i = queue.popleft()
        d = dist[i] + 1
        for j in nbrs[i]:
            if dist[j] < 0:
                dist[j] = d
                queue.append(j)
    return dist


def count_shortest_paths(nbrs: List[List[int]], dist_s: List[int], goal: int, cap: int = 2) -> int:
    """Number of shortest paths from the source of `dist_s` to `goal`, counted up to `cap`."""
    length = dist_s[goal]
    if length < 0:
        return 0
    dist_g = _bfs(nbrs, goal)
    layers: List[List[int]] = [[] for _ in range(length + 1)]
    for i, (a, b) in enumerate(zip(dist_s, dist_g)):
        if a >= 0 and b >= 0 and a + b == length:
            layers[a].append(i)
    counts = [0] * len(nbrs)
    counts[layers[0][0]] = 1
    for d in range(length):
        for i in layers[d]:
            for j in nbrs[i]:
                if dist_s[j] == d + 1 and dist_g[j] == length - d - 1:
                    counts[j] = min(cap, counts[j] + counts[i])
    return counts[goal]


def _walk_back(nbrs: List[List[int]], dist: List[int], goal: int) -> List[int]:
    """The shortest path to `goal` by stepping to a neighbour one closer (unique here)."""
    path = [goal]
    while dist[path[-1]] > 0:
        d = dist[path[-1]] - 1
        path.append(next(j for j in nbrs[path[-1]] if dist[j] == d))
    return path[::-1]


def sample_maze(cfg: MazeConfig, length: int, rng: np.random.Generator) -> Optional[Maze]:
    """One maze whose unique shortest S-G path has `length` steps, or None if the attempts
    run out (steps 2-3 of the module docstring)."""
    H, W = cfg.height, cfg.width
    for _ in range(cfg.max_grid_attempts):
        if cfg.mode == "perfect":
            rows, cols = cfg.maze_block
            open_mask = np.zeros((H, W), dtype=bool)
            open_mask[:rows, :cols] = carve_perfect(rows, cols, rng)
        else:
            open_mask = rng.random((H, W)) >= cfg.wall_prob
        cells = np.flatnonzero(open_mask)
        if len(cells) < max(length + 1, 2):
            continue
        nbrs = _neighbours(open_mask)
        for _ in range(cfg.max_start_attempts):
            start = int(cells[rng.integers(len(cells))])
            dist = _bfs(nbrs, start)
            goals = np.flatnonzero(np.asarray(dist) == length)
            if not len(goals):
                continue
            goal = int(goals[rng.integers(len(goals))])
            if cfg.mode == "random" and count_shortest_paths(nbrs, dist, goal) != 1:
                continue
            return Maze(open_mask, start, goal, _walk_back(nbrs, dist, goal))
    return None


def maze_tokens(maze: Maze) -> Tuple[np.ndarray, np.ndarray]:
    """(input, label): (H * W,) uint8 tokens of a maze (maze.tokens ids)."""
    inp = np.where(maze.open_mask.ravel(), OPEN, WALL).astype(np.uint8)
    inp[maze.start], inp[maze.goal] = START, GOAL
    label = inp.copy()
    label[maze.path[1:-1]] = PATH
    return inp, label


class MazeSet(NamedTuple):
    inputs: np.ndarray      # (N, H * W) uint8
    labels: np.ndarray      # (N, H * W) uint8
    lengths: np.ndarray     # (N,) int32 shortest-path lengths (steps)


def generate(counts: Mapping[str, int], cfg: Optional[MazeConfig] = None, seed: int = 42,
             progress: bool = True) -> Dict[str, MazeSet]:
    """Mazes for each split of `counts` ({"train": N, "test": M}), drawn in that order
    from default_rng(seed); deterministic for given (counts, cfg, seed)."""
    cfg = cfg or MazeConfig()
    for name, n in counts.items():
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ValueError(f"count of split {name!r} must be an int >= 1, got {n!r}")
    rng = np.random.default_rng(seed)
    seen = set() if cfg.dedupe else None
    out = {}
    for name, n in counts.items():
        bar = None
        if progress:
            from eqkernels.progress import progress_bar
            bar = progress_bar(total=n, desc=f"{name} mazes", unit="maze")
        inputs, labels, lengths = [], [], []
        try:
            while len(inputs) < n:
                for _ in range(cfg.max_resamples):
                    length = int(rng.integers(cfg.min_path, cfg.max_path + 1))
                    maze = sample_maze(cfg, length, rng)
                    if maze is None:
                        raise GenerationError(
                            f"no {cfg.height}x{cfg.width} {cfg.mode} maze with a unique shortest "
                            f"path of {length} steps in {cfg.max_grid_attempts} grids x "
                            f"{cfg.max_start_attempts} starts; lower min_path / max_path"
                            + (" or wall_prob" if cfg.mode == "random" else ""))
                    inp, label = maze_tokens(maze)
                    if seen is not None:
                        key = inp.tobytes()
                        if key in seen:
                            continue
                        seen.add(key)
                    inputs.append(inp)
                    labels.append(label)
                    lengths.append(length)
                    if bar is not None:
                        bar.update(1)
                    break
                else:
                    raise GenerationError(
                        f"{cfg.max_resamples} duplicate mazes in a row after {len(inputs)} "
                        f"{name} mazes: these options admit too few distinct mazes; widen "
                        f"min_path..max_path, use a larger grid, or turn dedupe off")
        finally:
            if bar is not None:
                bar.close()
        out[name] = MazeSet(np.stack(inputs), np.stack(labels), np.array(lengths, dtype=np.int32))
    return out

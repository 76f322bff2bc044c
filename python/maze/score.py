"""Scoring maze predictions: exact match, and whether the predicted path is a shortest path.

For each example, with `inputs` the maze, `labels` its solution and `preds` a model's tokens
(all (N, H * W) or (N, H, W), maze.tokens ids):
  exact       every cell of preds equals the label (EqR's exact_accuracy; maze labels have
              no ignored cells)
  path_exact  the cells predicted 'o' are exactly the label's 'o' cells
  valid       the cells predicted 'o' (set O) form, with S and G, a shortest S-to-G path
              through open cells: every cell of O is open (' ') in the input, |O| equals the
              shortest S-G distance d minus 1, and S reaches G through O. (A connected S-G
              walk inside O + {S, G} has >= d + 1 cells, so it uses each of those d + 1 cells
              once: it is a shortest path.) In a maze whose shortest path is unique, valid
              implies path_exact.
  cell_accuracy  the fraction of cells equal to the label (EqR's accuracy)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

from maze.tokens import GOAL, OPEN, PATH, START, WALL


def as_grids(tokens, height: int, width: int, name: str = "tokens") -> np.ndarray:
    """(N, H * W) or (N, H, W) integer tokens (numpy or torch) -> (N, H, W) int64."""
    arr = np.asarray(tokens.cpu() if hasattr(tokens, "cpu") else tokens)
    if arr.ndim == 2 and arr.shape[1] == height * width:
        arr = arr.reshape(len(arr), height, width)
    if arr.ndim != 3 or arr.shape[1:] != (height, width):
        raise ValueError(f"{name} must be (N, {height * width}) or (N, {height}, {width}), "
                         f"got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _dilate(mask: np.ndarray) -> np.ndarray:
    """mask (N, H, W) bool -> mask or any of its 4 neighbours."""
    out = mask.copy()
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    out[:, :, 1:] |= mask[:, :, :-1]
    out[:, :, :-1] |= mask[:, :, 1:]
    return out


def bfs_distances(source: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Breadth-first distances from the cells of `source` through `allowed` cells, for a
    batch at once. source, allowed: (N, H, W) bool. Returns (N, H, W) int64, -1 where
    unreachable. Each round grows every still-growing example by one step."""
    dist = np.where(source & allowed, 0, -1).astype(np.int64)
    reached = source & allowed
    active = np.flatnonzero(reached.reshape(len(reached), -1).any(axis=1))
    step = 0
    while active.size:
        step += 1
        sub = reached[active]
        new = _dilate(sub) & allowed[active] & ~sub
        grew = new.reshape(len(active), -1).any(axis=1)
        if not grew.any():
            break
        active, new = active[grew], new[grew]
        reached[active] |= new
        d = dist[active]
        d[new] = step
        dist[active] = d
    return dist


def shortest_distances(inputs: np.ndarray) -> np.ndarray:
    """inputs (N, H, W) maze tokens -> (N,) shortest S-to-G step count through non-wall
    cells, -1 if G is unreachable. Each maze must hold exactly one S and one G."""
    start, goal = inputs == START, inputs == GOAL
    _require_one(start, "S")
    _require_one(goal, "G")
    dist = bfs_distances(start, inputs != WALL)
    return dist.reshape(len(dist), -1)[np.arange(len(dist)), goal.reshape(len(goal), -1).argmax(1)]


def _require_one(mask: np.ndarray, what: str) -> None:
    counts = mask.reshape(len(mask), -1).sum(axis=1)
    bad = np.flatnonzero(counts != 1)
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"maze {k} has {int(counts[k])} '{what}' cells, expected exactly 1")


def path_is_valid(inputs: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """(N,) bool: the cells of preds marked 'o' form a shortest S-G path of the maze
    `inputs` (both (N, H, W) tokens; see the module docstring)."""
    start, goal = inputs == START, inputs == GOAL
    d = shortest_distances(inputs)
    marked = preds == PATH
    flat = lambda m: m.reshape(len(m), -1)  # noqa: E731
    on_open = ~flat(marked & (inputs != OPEN)).any(axis=1)
    right_count = flat(marked).sum(axis=1) == d - 1
    ok = on_open & right_count & (d >= 1)
    valid = np.zeros(len(inputs), dtype=bool)
    idx = np.flatnonzero(ok)
    if idx.size:
        reach = bfs_distances(start[idx], marked[idx] | start[idx] | goal[idx])
        valid[idx] = flat(np.where(goal[idx], reach, -1)).max(axis=1) >= 0
    return valid


@dataclass
class MazeScores:
    """Per-example results, each (N,): exact, path_exact, valid (bool), cell_accuracy (float)."""
    exact: np.ndarray
    path_exact: np.ndarray
    valid: np.ndarray
    cell_accuracy: np.ndarray

    def summary(self) -> Dict[str, float]:
        """Means over the examples (rates in [0, 1]) and the example count."""
        n = len(self.exact)
        out = {name: float(getattr(self, name).mean()) if n else 0.0
               for name in ("exact", "path_exact", "valid", "cell_accuracy")}
        out["count"] = n
        return out


def score(inputs, labels, preds, height: int, width: int) -> MazeScores:
    """Score predicted tokens against the labels of mazes `inputs`; all three (N, H * W) or
    (N, H, W) integer arrays or tensors."""
    inputs = as_grids(inputs, height, width, "inputs")
    labels = as_grids(labels, height, width, "labels")
    preds = as_grids(preds, height, width, "preds")
    if not len(inputs) == len(labels) == len(preds):
        raise ValueError(f"inputs, labels and preds must hold the same number of mazes, got "
                         f"{len(inputs)}, {len(labels)} and {len(preds)}")
    n = len(inputs)
    same = (preds == labels).reshape(n, -1)
    path_exact = ((preds == PATH) == (labels == PATH)).reshape(n, -1).all(axis=1)
    return MazeScores(exact=same.all(axis=1), path_exact=path_exact,
                      valid=path_is_valid(inputs, preds), cell_accuracy=same.mean(axis=1))

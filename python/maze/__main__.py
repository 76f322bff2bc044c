"""`python -m maze generate|check|train|eval ...` (run with python/ on the path).

  generate --out DIR [--count N] [--test-count M] [--size N | HxW] [--mode perfect|random]
           [--min-path A] [--max-path B] [--wall-prob P] [--seed S] [--no-dedupe]
      writes an EqR dataset folder (train/, test/, identifiers.json; maze.data). The defaults
      are EqR's Maze-Unique recipe: 30x30 perfect mazes, paths of 100-140 steps, 1000 train
      + 1000 test, seed 42 -- the same files EqR's builder writes. Smaller grids default to
      that length range scaled by area (15x15: 25-35, 9x9: 9-13).
  check DIR [--split train|test|all] [--size N | HxW]
      validates a dataset folder (ours or EqR's), including every label's shortest path.
  train --data DIR --out RUN [...]   the reasoner on the maze task (reasoner.train_cli; a
      CPU-sized token-MLP model by default, EqR's attention recipe in --help)
  eval --data DIR --checkpoint CKPT [--depth D --breadth B --plot P]   depth x breadth
      (reasoner.eval_cli): ours or EqR's maze .pth; scored by maze.score (exact, path,
      valid, cell)
Bad input (options, an output folder that exists, malformed files, a checkpoint of another
task or grid) prints `error: <message>` and exits 2, without a traceback. Ctrl-C exits 130
(in `train`: after saving a checkpoint).
"""
from __future__ import annotations

import argparse
import pickle
import sys
import time
from typing import Tuple

import numpy as np

from cli_safety.exits import BAD_INPUT, error_exit, run_cli

USAGE = "usage: python -m maze {generate,check,train,eval} [--help | options]"


class _Parser(argparse.ArgumentParser):
    """argparse with our error format: `error: ...` and exit 2."""

    def error(self, message):
        error_exit(f"{message}\n{self.format_usage().rstrip()}")


def parse_size(text: str) -> Tuple[int, int]:
    """'15' -> (15, 15); '9x15' -> (9, 15)."""
    parts = text.lower().split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) not in (1, 2) or min(dims) < 2:
        raise argparse.ArgumentTypeError(f"--size must be N or HxW with N, H, W >= 2, got {text!r}")
    return (dims[0], dims[-1])


def _generate(args) -> None:
    from maze.data import check_output, write_dataset
    from maze.generate import MazeConfig, default_path_range, generate
    height, width = args.size
    lo, hi = default_path_range(height, width)
    cfg = MazeConfig(height=height, width=width, mode=args.mode,
                     min_path=lo if args.min_path is None else args.min_path,
                     max_path=hi if args.max_path is None else args.max_path,
                     wall_prob=args.wall_prob, dedupe=not args.no_dedupe)
    counts = {"train": args.count, "test": args.count if args.test_count is None else args.test_count}
    for name, n in counts.items():
        if n < 1:
            flag = "--count" if name == "train" else "--test-count"
            raise ValueError(f"{flag} must be >= 1, got {n}")
    check_output(args.out)            # before any work
    start = time.perf_counter()
    sets = generate(counts, cfg, seed=args.seed, progress=True)
    wall = time.perf_counter() - start
    write_dataset(args.out, {name: (s.inputs, s.labels) for name, s in sets.items()}, height, width)
    print(f"wrote {args.out}: {height}x{width} {cfg.mode} mazes, unique shortest paths of "
          f"{cfg.min_path}-{cfg.max_path} steps, seed {args.seed}, {wall:.1f} s")
    for name, s in sets.items():
        print(f"  {name}: {len(s.inputs)} mazes, path length min {int(s.lengths.min())} "
              f"mean {float(s.lengths.mean()):.1f} max {int(s.lengths.max())}")


def _check(args) -> None:
    from maze.data import read_split
    splits = ("train", "test") if args.split == "all" else (args.split,)
    for split in splits:
        data = read_split(args.path, split, size=args.size, paths=True)
        _, labels = data.grids()
        steps = (labels == 5).reshape(len(labels), -1).sum(axis=1) + 1
        print(f"{data.folder}: {len(data)} mazes {data.height}x{data.width}, tokens and "
              f"shortest paths valid; path length min {int(steps.min())} mean "
              f"{float(np.mean(steps)):.1f} max {int(steps.max())}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m maze", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser)
    g = sub.add_parser("generate", help="generate a maze dataset folder (EqR's layout)")
    g.add_argument("--out", required=True, help="output folder (must not exist, or be empty)")
    g.add_argument("--count", type=int, default=1000, help="train mazes (and test, by default)")
    g.add_argument("--test-count", type=int, default=None, help="test mazes (default: --count)")
    g.add_argument("--size", type=parse_size, default=(30, 30), help="N (N x N) or HxW; default 30")
    g.add_argument("--mode", choices=("perfect", "random"), default="perfect",
                   help="perfect: a spanning-tree maze (EqR's Maze-Unique); random: walls with "
                        "probability --wall-prob, kept when the shortest path is unique")
    g.add_argument("--min-path", type=int, default=None,
                   help="S-G shortest path of at least this many steps (default: 100 at 30x30, "
                        "scaled by area)")
    g.add_argument("--max-path", type=int, default=None,
                   help="... and at most this many (default: 140 at 30x30, scaled by area)")
    g.add_argument("--wall-prob", type=float, default=0.37, help="random mode's wall probability")
    g.add_argument("--seed", type=int, default=42, help="random seed (EqR's recipe: 42)")
    g.add_argument("--no-dedupe", action="store_true", help="allow repeated mazes")
    c = sub.add_parser("check", help="validate a maze dataset folder")
    c.add_argument("path")
    c.add_argument("--split", choices=("train", "test", "all"), default="all")
    c.add_argument("--size", type=parse_size, default=None, help="expected grid: N or HxW")
    return p


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    if argv[0] not in ("generate", "check", "train", "eval"):
        error_exit(f"unknown command {argv[0]!r}\n{USAGE}")
    run_cli(lambda: _run(argv), BAD_INPUT + (pickle.UnpicklingError, UnicodeDecodeError))


def _run(argv) -> None:
    if argv[0] in ("train", "eval"):
        from maze.task import MAZE
        if argv[0] == "train":
            from reasoner.train_cli import main as entry
        else:
            from reasoner.eval_cli import main as entry
        entry(MAZE, argv[1:])
        return
    args = build_parser().parse_args(argv)
    (_generate if args.cmd == "generate" else _check)(args)


if __name__ == "__main__":
    main()

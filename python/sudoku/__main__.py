"""`python -m sudoku generate|check|train|eval ...`: the one entry to the Sudoku reasoner.

generate / check: sudoku.data; train: reasoner.train_cli; eval: reasoner.eval_cli (both with
the Sudoku task, sudoku.task). Each takes --help. The defaults of `train` are a small model
that trains on a 2-core CPU in minutes. Bad input (a missing or corrupt checkpoint, a
checkpoint of another task, malformed CSV / npy data, no puzzles, an unsupported config, a
device this machine lacks, a value out of range, an output path that cannot be written)
prints `error: <message>` and exits 2, without a traceback, before any work. Ctrl-C exits
130 (in `train`: after saving a checkpoint; see reasoner.train_cli).
"""
import csv
import pickle
import sys

from cli_safety.exits import BAD_INPUT as COMMON_BAD_INPUT, error_exit, run_cli

USAGE = "usage: python -m sudoku {generate,check,train,eval} [--help | options]"

# What bad input raises; anything else is a bug and keeps its traceback.
BAD_INPUT = COMMON_BAD_INPUT + (csv.Error, pickle.UnpicklingError, UnicodeDecodeError)


def run(argv) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    cmd, rest = argv[0], argv[1:]
    if cmd in ("generate", "check"):
        from sudoku.data import main as entry
        entry([cmd] + rest)
    elif cmd in ("train", "eval"):
        from sudoku.task import SUDOKU
        if cmd == "train":
            from reasoner.train_cli import main as entry
        else:
            from reasoner.eval_cli import main as entry
        entry(SUDOKU, rest)
    else:
        error_exit(f"unknown command {cmd!r}\n{USAGE}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    run_cli(lambda: run(argv), BAD_INPUT)


if __name__ == "__main__":
    main()

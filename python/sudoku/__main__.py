"""`python -m sudoku generate|check|train|eval ...`: the one entry to the Sudoku reasoner.

generate / check: sudoku.data; train: sudoku.train; eval: sudoku.evaluate. Each takes
--help. The defaults of `train` are a small model that trains on a 2-core CPU in minutes.
"""
import sys

USAGE = "usage: python -m sudoku {generate,check,train,eval} [--help | options]"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    cmd, rest = argv[0], argv[1:]
    if cmd in ("generate", "check"):
        from sudoku.data import main as run
        run([cmd] + rest)
    elif cmd == "train":
        from sudoku.train import main as run
        run(rest)
    elif cmd == "eval":
        from sudoku.evaluate import main as run
        run(rest)
    else:
        sys.exit(f"unknown command {cmd!r}\n{USAGE}")


if __name__ == "__main__":
    main()

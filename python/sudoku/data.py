"""Sudoku data: the Sudoku-Extreme CSV format, validation, loading, and the generator CLI.

CSV format (the public Sudoku-Extreme data): header `source,question,answer,rating`;
  question: 81 chars row-major, '.' = blank, '1'-'9' = clue;
  answer:   81 digits, a valid solved grid agreeing with every clue of the question;
  rating:   an int, the backtrack count of a reference solver (ours: see sudoku.generate).
Tokens (sudoku.tokens): blank -> 1, digit d -> d + 1, 0 = padding; vocab 11.
EqR/HRM dataset folders (dataset.json + all__inputs.npy, all__labels.npy, ...; the same
tokens) are read by read_npy_dataset / load_puzzles (`--data DIR` of train and eval).

CLI (run from the repo root with python/ on the path; sudoku/__main__.py dispatches here):
  PYTHONPATH=python python -m sudoku generate --n 1000 --out data/generated.csv --seed 0
      --workers 2   # progress bar, then wall time and the rating histogram
  PYTHONPATH=python python -m sudoku check data/generated.csv [--unique] [--rerate]
      # validates every row; --unique counts solutions, --rerate recomputes our ratings
`python -m sudoku.data generate|check ...` is the same entry.
"""
from __future__ import annotations

import argparse
import csv
import os
import time
from collections import Counter
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from cli_safety.atomic_files import atomic_write
from cli_safety.output_paths import check_output_file
from cli_safety.values import SEED, Range
from sudoku.augment import augment_batch  # noqa: F401  (training uses sdata.augment_batch)
from sudoku.tokens import (BLANK_TOKEN, DIGIT_OFFSET, decode, encode,  # noqa: F401
                           encode_many, to_string)

HEADER = ("source", "question", "answer", "rating")
GENERATED_SOURCE = "generated"


class PuzzleRow(NamedTuple):
    source: str
    question: str     # 81 chars, '.' = blank
    answer: str       # 81 digits
    rating: int


# Cells of the 27 units as a (27, 9) index array: rows, columns, boxes.
_UNIT_CELLS = np.array(
    [[r * 9 + c for c in range(9)] for r in range(9)]
    + [[r * 9 + c for r in range(9)] for c in range(9)]
    + [[(b // 3) * 27 + (b % 3) * 3 + (k // 3) * 9 + k % 3 for k in range(9)] for b in range(9)])
_UNIT_NAMES = [f"row {u}" for u in range(9)] + [f"column {u}" for u in range(9)] + \
    [f"box {u}" for u in range(9)]


def check_tokens(questions: np.ndarray, answers: np.ndarray,
                 labels: Optional[Sequence[str]] = None) -> None:
    """Raise ValueError on the first bad pair. questions, answers: (N, 81) int64 tokens.

    Checks: the answer has no blank and is a valid solution (each row, column and box holds
    1..9 once), and every clue of the question equals the answer's digit. `labels[k]` names
    pair k in the message (default "pair k").
    """
    questions, answers = np.asarray(questions), np.asarray(answers)
    if questions.shape != answers.shape or questions.ndim != 2 or questions.shape[1] != 81:
        raise ValueError(f"questions and answers must both be (N, 81), got {questions.shape} "
                         f"and {answers.shape}")
    label = (lambda k: labels[k]) if labels is not None else (lambda k: f"pair {k}")
    digits = answers - DIGIT_OFFSET
    blank = np.argwhere((digits < 1) | (digits > 9))
    if len(blank):
        k, j = (int(v) for v in blank[0])
        raise ValueError(f"{label(k)}: answer must be all digits 1-9, got token "
                         f"{int(answers[k, j])} at position {j}")
    # A unit holds 1..9 once iff the OR of its 9 one-hot bits is 0x1FF.
    seen = np.bitwise_or.reduce(np.left_shift(1, digits - 1)[:, _UNIT_CELLS], axis=2)
    bad = np.argwhere(seen != 0x1FF)
    if len(bad):
        k, u = (int(v) for v in bad[0])
        cells = "".join(str(int(d)) for d in digits[k, _UNIT_CELLS[u]])
        raise ValueError(f"{label(k)}: answer is not a valid Sudoku solution: {_UNIT_NAMES[u]} "
                         f"reads {cells}")
    clash = np.argwhere((questions != BLANK_TOKEN) & (questions != answers))
    if len(clash):
        k, j = (int(v) for v in clash[0])
        got = int(questions[k, j])
        shown = got - DIGIT_OFFSET if 1 <= got - DIGIT_OFFSET <= 9 else f"token {got}"
        raise ValueError(f"{label(k)}: question clue {shown} at position {j} (row {j // 9}, "
                         f"column {j % 9}) disagrees with the answer's {int(digits[k, j])}")


def check_pair(question: str, answer: str) -> None:
    """Raise ValueError if (question, answer) strings are not a consistent puzzle/solution pair."""
    check_tokens(encode(question, "question")[None], encode(answer, "answer")[None],
                 labels=["pair"])


def _rows_from(records: Iterable, where: str) -> List[PuzzleRow]:
    rows = []
    for k, rec in enumerate(records):
        if isinstance(rec, dict):
            rec = tuple(rec.get(h) for h in HEADER)
        if len(rec) != 4:
            raise ValueError(f"{where} row {k}: expected 4 fields {HEADER}, got {len(rec)}")
        source, question, answer, rating = rec
        try:
            rating_int = int(rating)
            if str(rating).strip() not in (str(rating_int), f"{rating_int}.0"):
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(f"{where} row {k}: rating must be an int, got {rating!r}") from None
        rows.append(PuzzleRow(str(source), question, answer, rating_int))
    return rows


def validate_rows(rows: Sequence[PuzzleRow], where: str = "rows") -> Tuple[np.ndarray, np.ndarray]:
    """Encode and check all rows at once; returns (questions, answers): (N, 81) int64 tokens."""
    labels = _RowLabels(where)
    questions = encode_many([r.question for r in rows], f"{where} question")
    answers = encode_many([r.answer for r in rows], f"{where} answer")
    check_tokens(questions, answers, labels)
    return questions, answers


class _RowLabels:
    """Lazy `labels[k]` for error messages, so big files need no list of N strings."""

    def __init__(self, where: str):
        self.where = where

    def __getitem__(self, k: int) -> str:
        return f"{self.where} row {k}"


def read_csv(path: str, limit: Optional[int] = None, validate: bool = True) -> List[PuzzleRow]:
    """Rows of a Sudoku-Extreme CSV (first `limit` only if given), checked unless validate=False."""
    _check_limit(limit)
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or tuple(h.strip() for h in header) != HEADER:
                raise ValueError(f"{path}: header must be {','.join(HEADER)}, got "
                                 f"{','.join(header)[:80] if header else 'an empty file'}")
            records = []
            for rec in reader:
                if limit is not None and len(records) >= limit:
                    break
                records.append(rec)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: not a readable CSV ({type(e).__name__}: {e})") from None
    rows = _rows_from(records, path)
    if validate:
        validate_rows(rows, path)
    return rows


def write_csv(path: str, rows: Iterable[Union[PuzzleRow, tuple, dict]]) -> None:
    """Write rows (PuzzleRow, 4-tuples or dicts with the header's keys) after checking them;
    atomically (the old file or the whole new one, never half of it)."""
    rows = _rows_from(rows, "write_csv")
    validate_rows(rows, "write_csv")
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(rows)


def load_tensors(path: str, limit: Optional[int] = None, split: str = "train"):
    """(questions, answers): (N, 81) torch.int64 tokens of a validated CSV or npy folder."""
    return load_puzzles(path, limit, split)[:2]


NPY_FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")


def _npy_folder(path: str, split: str) -> str:
    if os.path.isfile(os.path.join(path, "dataset.json")):
        return path
    if os.path.isfile(os.path.join(path, split, "dataset.json")):
        return os.path.join(path, split)
    raise ValueError(f"{path}: not an EqR/HRM dataset folder (no dataset.json in it or in "
                     f"{os.path.join(path, split)})")


def read_npy_dataset(path: str, limit: Optional[int] = None, split: str = "test"):
    """(questions, answers): (N, 81) int64 tokens of an EqR/HRM dataset folder, validated.

    The folder (or its `split` subfolder) holds dataset.json and all__inputs.npy /
    all__labels.npy, tokens already encoded as ours (0 pad, 1 blank, d + 1 digit d), as
    EqR's dataset/build_sudoku_dataset.py writes them.
    """
    import json
    _check_limit(limit)
    folder = _npy_folder(path, split)
    try:
        with open(os.path.join(folder, "dataset.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{folder}/dataset.json: unreadable ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{folder}/dataset.json: expected a JSON object")
    if meta.get("seq_len", 81) != 81 or meta.get("vocab_size", 11) != 11:
        raise ValueError(f"{folder}/dataset.json: seq_len {meta.get('seq_len')}, vocab_size "
                         f"{meta.get('vocab_size')}; a Sudoku dataset has 81 and 11")
    arrays = {}
    for name in ("inputs", "labels"):
        file = os.path.join(folder, f"all__{name}.npy")
        try:
            arr = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"{file}: not a readable .npy array ({e})") from None
        if arr.ndim != 2 or arr.shape[1] != 81 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{file}: expected an (N, 81) integer array, got {arr.shape} {arr.dtype}")
        arrays[name] = np.asarray(arr[:limit] if limit is not None else arr, dtype=np.int64)
    q, a = arrays["inputs"], arrays["labels"]
    if q.shape != a.shape:
        raise ValueError(f"{folder}: all__inputs.npy {q.shape} and all__labels.npy {a.shape} differ")
    if len(q) == 0:
        raise ValueError(f"{folder}: the dataset is empty")
    bad = (q < 1) | (q > 10)
    if bad.any():
        k, j = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"{folder}/all__inputs.npy row {k}: token {int(q[k, j])} at position {j} "
                         f"(expected 1 = blank or 2..10 = digits)")
    check_tokens(q, a, _RowLabels(f"{folder} example"))
    return q, a


def write_npy_dataset(path: str, questions: np.ndarray, answers: np.ndarray) -> None:
    """Write (N, 81) tokens as an EqR/HRM dataset folder (one example per puzzle, no groups)."""
    import json
    questions, answers = np.asarray(questions), np.asarray(answers)
    check_tokens(questions, answers)
    os.makedirs(path, exist_ok=True)
    n = len(questions)
    meta = dict(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=11, seq_len=81,
                num_puzzle_identifiers=1, total_groups=n, mean_puzzle_examples=1,
                total_samples=n, sets=["all"])
    with open(os.path.join(path, "dataset.json"), "w") as f:
        json.dump(meta, f)
    arrays = dict(inputs=questions.astype(np.uint8), labels=answers.astype(np.uint8),
                  puzzle_identifiers=np.zeros(n, np.int32),
                  puzzle_indices=np.arange(n + 1, dtype=np.int32),
                  group_indices=np.arange(n + 1, dtype=np.int32))
    for name in NPY_FIELDS:
        np.save(os.path.join(path, f"all__{name}.npy"), arrays[name])


def load_puzzles(path: str, limit: Optional[int] = None, split: str = "test"):
    """(questions, answers, ratings): torch int64 (N, 81), (N, 81), and (N,) or None, from a
    Sudoku-Extreme CSV or an EqR/HRM dataset folder (which has no ratings). Empty: ValueError."""
    import torch
    if os.path.isdir(path):
        q, a = read_npy_dataset(path, limit, split)
        return torch.from_numpy(q), torch.from_numpy(a), None
    if not os.path.exists(path):
        raise ValueError(f"data {path} does not exist")
    rows = read_csv(path, limit, validate=False)
    if not rows:
        raise ValueError(f"{path}: no puzzles (only a header)")
    q, a = validate_rows(rows, path)
    ratings = torch.tensor([r.rating for r in rows], dtype=torch.int64)
    return torch.from_numpy(q), torch.from_numpy(a), ratings


def _check_limit(limit: Optional[int]) -> None:
    if limit is not None:
        Range(int, min=1).check("limit", limit)


def rating_histogram(ratings: Iterable[int], width: int = 40) -> str:
    """A text histogram, one line per rating value."""
    counts = Counter(int(r) for r in ratings)
    if not counts:
        return "(no puzzles)"
    top = max(counts.values())
    lines = ["rating  count"]
    for r in range(min(counts), max(counts) + 1):
        n = counts.get(r, 0)
        lines.append(f"{r:6d} {n:6d} {'#' * max(int(round(width * n / top)), 1 if n else 0)}")
    return "\n".join(lines)


def _generate_cmd(args) -> None:
    from sudoku.generate import GenConfig, generate
    cfg = GenConfig(min_rating=args.min_rating, climb_steps=args.climb_steps,
                    extra_clues=args.extra_clues)
    start = time.perf_counter()
    puzzles = generate(args.n, seed=args.seed, workers=args.workers, cfg=cfg, progress=True)
    wall = time.perf_counter() - start
    rows = [PuzzleRow(GENERATED_SOURCE, to_string(q), to_string(a), r) for q, a, r in puzzles]
    write_csv(args.out, rows)
    clues = [sum(c != "." for c in row.question) for row in rows]
    print(f"wrote {len(rows)} puzzles to {args.out} in {wall:.1f} s "
          f"({len(rows) / wall:.2f} puzzles/s, {args.workers} workers, seed {args.seed})")
    print(f"clues: mean {np.mean(clues):.1f}, min {min(clues)}, max {max(clues)}")
    print(rating_histogram(row.rating for row in rows))


def _check_cmd(args) -> None:
    rows = read_csv(args.path, limit=args.limit)
    print(f"{args.path}: {len(rows)} rows, format and solutions valid")
    if args.unique or args.rerate:
        from sudoku.generate import rate
        from sudoku.solver import count_solutions
        from sudoku.tokens import from_string
        for k, row in enumerate(rows):
            grid = from_string(row.question)
            if args.unique and count_solutions(grid, 2) != 1:
                raise SystemExit(f"{args.path} row {k}: question has more than one solution")
            if args.rerate and rate(grid) != row.rating:
                raise SystemExit(f"{args.path} row {k}: rating {row.rating} != rerated "
                                 f"{rate(grid)}")
        checked = ["unique solutions"] * args.unique + ["ratings match the rater"] * args.rerate
        print("all rows: " + ", ".join(checked))
    print(rating_histogram(row.rating for row in rows))


def main(argv=None) -> None:
    from sudoku.generate import GEN_RANGES, MAX_EXTRA_CLUES, GenConfig
    defaults = GenConfig()
    positive = Range(int, min=1)
    # Usage lines read `python -m sudoku generate ...`: the documented entry (sudoku/__main__).
    p = argparse.ArgumentParser(prog="python -m sudoku", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="generate unique-solution puzzles into a CSV")
    g.add_argument("--n", type=positive, default=1000, help="number of puzzles")
    g.add_argument("--out", required=True, help="output CSV path")
    g.add_argument("--seed", type=SEED, default=0)
    g.add_argument("--workers", type=positive, default=2, help="worker processes")
    g.add_argument("--min-rating", type=GEN_RANGES["min_rating"], default=defaults.min_rating,
                   help="keep puzzles whose mean guess count reaches this")
    g.add_argument("--climb-steps", type=GEN_RANGES["climb_steps"], default=defaults.climb_steps,
                   help="hill-climb steps per minimal puzzle")
    g.add_argument("--extra-clues", type=GEN_RANGES["extra_clues"], default=defaults.extra_clues,
                   help=f"solution digits added back to each puzzle, 0 to {MAX_EXTRA_CLUES}, "
                        f"always leaving one blank (easier puzzles; use with --min-rating 0 "
                        f"--climb-steps 0 for small CPU runs)")
    c = sub.add_parser("check", help="validate a CSV and print its rating histogram")
    c.add_argument("path")
    c.add_argument("--limit", type=positive, default=None, help="first N rows only")
    c.add_argument("--unique", action="store_true", help="also check unique solutions")
    c.add_argument("--rerate", action="store_true", help="also recompute ratings (ours)")
    args = p.parse_args(argv)
    if args.cmd == "generate":
        check_output_file(args.out, "--out")  # before minutes of generating
        _generate_cmd(args)
    else:
        _check_cmd(args)


if __name__ == "__main__":
    main()

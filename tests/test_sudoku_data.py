"""Sudoku data: CSV round trip, token encoding, the generator and rater, augmentation validity,
and clear errors for malformed input. Every test draws a fresh seed (printed on failure)."""
import random

import numpy as np
import pytest
import torch

from sudoku import data as sdata
from sudoku.augment import (apply_symmetry, augment_batch, random_symmetry,
                            symmetry_indices)
from sudoku.generate import (GenConfig, generate, generate_one, mean_guesses,
                             random_full_grid, rate, rating_of_mean)
from sudoku.solver import count_solutions, guesses, is_solution, solve
from sudoku.tokens import decode, encode, encode_many, from_string, to_string


def _reference_count(grid, limit):
    """Plain backtracking solution counter (no bitmasks, no propagation): what the tests trust."""
    grid = list(grid)

    def allowed(i):
        r, c = divmod(i, 9)
        used = {grid[r * 9 + k] for k in range(9)} | {grid[k * 9 + c] for k in range(9)}
        br, bc = r // 3 * 3, c // 3 * 3
        used |= {grid[(br + a) * 9 + bc + b] for a in range(3) for b in range(3)}
        return [d for d in range(1, 10) if d not in used]

    count = 0

    def search():
        nonlocal count
        blanks = [(len(allowed(i)), i) for i in range(81) if not grid[i]]
        if not blanks:
            count += 1
            return
        i = min(blanks)[1]
        for d in allowed(i):
            grid[i] = d
            search()
            grid[i] = 0
            if count >= limit:
                return

    search()
    return count


def _random_pair(rng, blanks):
    """(question, answer) strings: a random full grid with `blanks` random cells removed."""
    answer = random_full_grid(rng)
    question = answer[:]
    for i in rng.sample(range(81), blanks):
        question[i] = 0
    return to_string(question), to_string(answer)


@pytest.fixture(scope="module")
def generated():
    """A few generated puzzles (fresh seed) as (seed, [(question, answer, rating)])."""
    seed = random.randrange(2**31)
    return seed, generate(4, seed=seed, workers=1, cfg=GenConfig(climb_steps=3), progress=False)


def test_csv_round_trip(tmp_path):
    seed = random.randrange(2**31)
    rng = random.Random(seed)
    rows = [sdata.PuzzleRow("src" + str(k), *_random_pair(rng, rng.randint(0, 81)),
                            rng.randint(0, 500)) for k in range(20)]
    path = str(tmp_path / "new_dir" / "puzzles.csv")  # the folder is made on write
    sdata.write_csv(path, rows)
    with open(path) as f:
        assert f.readline().strip() == "source,question,answer,rating"
    assert sdata.read_csv(path) == rows, f"seed {seed}"
    assert sdata.read_csv(path, limit=5) == rows[:5]
    questions, answers = sdata.load_tensors(path)
    assert questions.dtype == answers.dtype == torch.int64 and questions.shape == (20, 81)
    for row, q, a in zip(rows, questions, answers):
        assert decode(q) == row.question and decode(a) == row.answer


def test_encode_decode():
    seed = random.randrange(2**31)
    rng = random.Random(seed)
    grids = ["".join(rng.choice(".123456789") for _ in range(81)) for _ in range(10)]
    tokens = encode_many(grids)
    assert tokens.dtype == np.int64 and tokens.shape == (10, 81)
    for s, t in zip(grids, tokens):
        assert np.array_equal(encode(s), t)
        expected = [1 if ch == "." else int(ch) + 1 for ch in s]
        assert t.tolist() == expected, f"seed {seed}"
        assert decode(t) == s and decode(torch.from_numpy(t)) == s and decode(t.tolist()) == s
        assert to_string(from_string(s)) == s


def test_solution_counter_matches_the_reference():
    seed = random.randrange(2**31)
    rng = random.Random(seed)
    for _ in range(30):
        question, answer = _random_pair(rng, rng.randint(30, 55))
        grid = from_string(question)
        assert count_solutions(grid, 3) == _reference_count(grid, 3), f"seed {seed}: {question}"
        assert to_string(solve(grid)) == answer or count_solutions(grid, 2) == 2
    clash = [0] * 81
    clash[0] = clash[1] = 5  # two 5s in row 0
    assert count_solutions(clash) == 0 and solve(clash) is None


def test_generated_puzzles_are_unique_and_rated(generated):
    seed, puzzles = generated
    assert len(puzzles) == 4 and len({tuple(q) for q, _, _ in puzzles}) == 4
    for question, answer, rating in puzzles:
        assert is_solution(answer)
        assert all(q in (0, a) for q, a in zip(question, answer))
        assert count_solutions(question, 2) == 1, f"seed {seed}"
        assert _reference_count(question, 2) == 1, f"seed {seed}"
        assert solve(question) == answer
        assert mean_guesses(question) >= GenConfig().min_rating
        assert rating == rate(question) >= 1, f"seed {seed}"
        # The rater is a function of the puzzle: same value on a second call.
        assert rate(question) == rating


def test_generation_is_deterministic_per_seed():
    seed = random.randrange(2**31)
    cfg = GenConfig(climb_steps=1, min_rating=0.0)
    assert generate(2, seed, workers=1, cfg=cfg, progress=False) == \
        generate(2, seed, workers=1, cfg=cfg, progress=False)


def test_extra_clues_give_easier_unique_puzzles():
    seed = random.randrange(2**31)
    cfg = GenConfig(climb_steps=0, min_rating=0.0, extra_clues=15)
    for question, answer, rating in generate(2, seed, workers=1, cfg=cfg, progress=False):
        assert sum(1 for d in question if d) >= 17 + 15, f"seed {seed}"
        assert all(q in (0, a) for q, a in zip(question, answer))
        assert count_solutions(question, 2) == 1 and solve(question) == answer, f"seed {seed}"
        assert rating == rate(question)
    # The same minimal puzzle, with the clues added back on top of it.
    minimal = generate_one(seed, 0, GenConfig(climb_steps=0, min_rating=0.0))[0]
    first = generate_one(seed, 0, cfg)[0]
    assert all(m in (0, f) for m, f in zip(minimal, first))
    assert sum(1 for d in first if d) == sum(1 for d in minimal if d) + 15


def test_rating_is_monotone_in_mean_guesses():
    seed = random.randrange(2**31)
    rng = random.Random(seed)
    means = sorted(rng.uniform(0, 50) for _ in range(200))
    ratings = [rating_of_mean(m) for m in means]
    assert ratings == sorted(ratings) and all(abs(r - m) <= 0.5 for r, m in zip(ratings, means))
    cfg = GenConfig(climb_steps=0, min_rating=0.0)
    puzzles = [q for q, _, _ in generate(3, seed, workers=1, cfg=cfg, progress=False)]
    by_guesses = sorted(puzzles, key=mean_guesses)
    assert [rate(q) for q in by_guesses] == sorted(rate(q) for q in puzzles), f"seed {seed}"


def test_rater_counts_no_guesses_for_singles_only_puzzles():
    seed = random.randrange(2**31)
    rng = random.Random(seed)
    answer = random_full_grid(rng)
    question = answer[:]
    for i in rng.sample(range(81), 5):  # five blanks: each is a naked single
        question[i] = 0
    assert guesses(question) == 0 and rate(question) == 0, f"seed {seed}"
    with pytest.raises(ValueError, match="no solution"):
        guesses([1, 1] + [0] * 79)


def _assert_valid_pairs(questions, answers, seed):
    sdata.check_tokens(np.asarray(questions), np.asarray(answers))
    for q, a in zip(questions, answers):
        grid = from_string(decode(q))
        assert count_solutions(grid, 2) == 1, f"seed {seed}"
        assert to_string(solve(grid)) == decode(a), f"seed {seed}"


def test_augmented_pairs_stay_valid_and_unique(generated):
    gen_seed, puzzles = generated
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    questions = torch.from_numpy(encode_many([to_string(q) for q, _, _ in puzzles]))
    answers = torch.from_numpy(encode_many([to_string(a) for _, a, _ in puzzles]))
    reps = 4
    q_aug, a_aug = augment_batch(questions.repeat(reps, 1), answers.repeat(reps, 1), generator=g)
    assert q_aug.dtype == torch.int64 and q_aug.shape == (4 * reps, 81)
    _assert_valid_pairs(q_aug, a_aug, (gen_seed, seed))
    # Blanks stay blank, cells move as a permutation.
    assert torch.equal((q_aug == 1).sum(1), (questions == 1).sum(1).repeat(reps))
    assert not torch.equal(q_aug, questions.repeat(reps, 1))
    # numpy in -> numpy out; a single (81,) pair works too.
    q_np, a_np = augment_batch(questions.numpy(), answers.numpy(), generator=g)
    assert isinstance(q_np, np.ndarray)
    _assert_valid_pairs(q_np, a_np, (gen_seed, seed))
    q1, a1 = augment_batch(questions[0], answers[0], generator=g)
    assert q1.shape == (81,)
    _assert_valid_pairs(q1[None], a1[None], (gen_seed, seed))


def test_transform_group_is_covered():
    """Every transform of the batch version is a cell bijection, transposes occur, and the
    Python version used by the rater keeps solutions valid."""
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    src = symmetry_indices(256, g)
    assert torch.equal(src.sort(1).values, torch.arange(81)[None].repeat(256, 1))
    # Cells 0 and 1 share a row; they come from one source row, or one source column if the
    # transform transposes: about half of the 256 draws.
    assert 0 < ((src[:, 1] - src[:, 0]).abs() % 9 == 0).float().mean() < 1
    rng = random.Random(seed)
    answer = random_full_grid(rng)
    for _ in range(20):
        assert is_solution(apply_symmetry(answer, random_symmetry(rng))), f"seed {seed}"


@pytest.mark.parametrize("question, answer, message", [
    ("." * 80, "1" * 81, "question must have 81 characters, got 80"),
    ("." * 81, "1" * 82, "answer must have 81 characters, got 82"),
    ("." * 80 + "0", "1" * 81, "question has invalid character '0' at position 80"),
    ("." * 81, "x" + "1" * 80, "answer has invalid character 'x' at position 0"),
])
def test_malformed_strings_are_rejected(question, answer, message):
    with pytest.raises(ValueError, match=message):
        sdata.check_pair(question, answer)


def test_inconsistent_pairs_are_rejected(tmp_path):
    seed = random.randrange(2**31)
    rng = random.Random(seed)
    question, answer = _random_pair(rng, 40)
    sdata.check_pair(question, answer)
    with pytest.raises(ValueError, match="must be all digits 1-9"):
        sdata.check_pair(question, "." + answer[1:])
    # Swap two cells of row 0 in the answer: row stays a permutation, columns break.
    broken = answer[1] + answer[0] + answer[2:]
    with pytest.raises(ValueError, match="not a valid Sudoku solution: column 0"):
        sdata.check_pair("." * 81, broken)
    clue = rng.choice([j for j in range(81) if question[j] != "."])
    wrong = str(int(answer[clue]) % 9 + 1)
    bad_q = question[:clue] + wrong + question[clue + 1:]
    with pytest.raises(ValueError, match=f"question clue {wrong} at position {clue} "):
        sdata.check_pair(bad_q, answer)
    # The same errors name the file row; a bad header or rating is reported too.
    path = str(tmp_path / "bad.csv")
    with open(path, "w") as f:
        f.write(f"source,question,answer,rating\ns,{question},{answer},3\ns,{bad_q},{answer},1\n")
    with pytest.raises(ValueError, match="bad.csv row 1: question clue"):
        sdata.read_csv(path)
    assert len(sdata.read_csv(path, limit=1)) == 1
    with open(path, "w") as f:
        f.write(f"source,puzzle,answer,rating\ns,{question},{answer},3\n")
    with pytest.raises(ValueError, match="header must be source,question,answer,rating"):
        sdata.read_csv(path)
    with pytest.raises(ValueError, match="row 0: rating must be an int, got 'hard'"):
        sdata.write_csv(path, [("s", question, answer, "hard")])
    with pytest.raises(ValueError, match="tokens\\[3\\] = 0 is not a cell token"):
        decode(np.array([1, 1, 1, 0] + [1] * 77))

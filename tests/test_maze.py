"""The maze task (python/maze): tokens, EqR's dataset folders, the generator, scoring, the CLI.
Small grids only: the whole file runs in seconds."""
import functools
import hashlib
import json
import os
import random
from collections import deque

import numpy as np
import pytest

from maze import data as mdata
from maze import tokens as mt
from maze.__main__ import main as maze_main
from maze.generate import (GenerationError, MazeConfig, carve_perfect, default_path_range,
                           generate)
from maze.score import bfs_distances, path_is_valid, score
from cli_run import run_cli

SMALL = MazeConfig(height=9, width=9, min_path=5, max_path=12)


_run = functools.partial(run_cli, maze_main)  # (code, out, err) of python -m maze argv


# ---- tokens -------------------------------------------------------------------------------
def test_tokens_are_eqr_alphabet_plus_one():
    assert mt.VOCAB_SIZE == 6 and mt.CHARSET == "# SGo"
    assert (mt.PAD, mt.WALL, mt.OPEN, mt.START, mt.GOAL, mt.PATH) == (0, 1, 2, 3, 4, 5)
    text = "#####\n#S o#\n# #o#\n#  G#\n#####"
    grid = mt.encode(text)
    assert grid.shape == (5, 5) and grid[1, 1] == mt.START and grid[2, 3] == mt.PATH
    assert mt.decode(grid) == text and mt.decode(grid.ravel(), 5, 5) == text


@pytest.mark.parametrize("text,match", [("#S\n#x", "row 1 column 1: character 'x'"),
                                        ("#S#\n#G", "row 1 has 2 characters"), ("", "empty")])
def test_bad_maze_text_is_refused(text, match):
    with pytest.raises(ValueError, match=match):
        mt.encode(text)


# ---- generator ----------------------------------------------------------------------------
def _python_bfs(open_mask, start):
    """Plain BFS distances over open cells, written out (-1: unreachable)."""
    H, W = open_mask.shape
    dist = np.full((H, W), -1)
    dist[start] = 0
    queue = deque([start])
    while queue:
        y, x = queue.popleft()
        for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
            if 0 <= ny < H and 0 <= nx < W and open_mask[ny, nx] and dist[ny, nx] < 0:
                dist[ny, nx] = dist[y, x] + 1
                queue.append((ny, nx))
    return dist


def _unique_shortest_path_length(grid):
    """(d, unique) for a (H, W) token maze: d = S-G distance; the shortest path is unique iff
    each distance layer 0..d of the cells on some shortest path holds exactly one cell."""
    open_mask = grid != mt.WALL
    s = tuple(np.argwhere(grid == mt.START)[0])
    g = tuple(np.argwhere(grid == mt.GOAL)[0])
    ds, dg = _python_bfs(open_mask, s), _python_bfs(open_mask, g)
    d = ds[g]
    on = (ds >= 0) & (dg >= 0) & (ds + dg == d)
    return d, all((on & (ds == k)).sum() == 1 for k in range(d + 1))


@pytest.mark.parametrize("cfg", [SMALL, MazeConfig(height=9, width=13, min_path=8, max_path=16),
                                 MazeConfig(height=8, width=8, mode="random", wall_prob=0.3,
                                            min_path=6, max_path=12)],
                         ids=["perfect-9x9", "perfect-9x13", "random-8x8"])
def test_generated_mazes_have_a_unique_shortest_path_in_range(cfg):
    seed = random.randrange(2**31)
    sets = generate({"train": 12, "test": 6}, cfg, seed=seed, progress=False)
    H, W = cfg.height, cfg.width
    all_inputs = np.concatenate([s.inputs for s in sets.values()])
    assert len({row.tobytes() for row in all_inputs}) == 18, f"seed {seed}: duplicates"
    for s in sets.values():
        assert s.inputs.dtype == np.uint8 and s.inputs.shape[1] == H * W
        mdata.check_tokens(s.inputs, s.labels, W)
        for inp, label, length in zip(s.inputs, s.labels, s.lengths):
            d, unique = _unique_shortest_path_length(inp.reshape(H, W))
            assert d == length and cfg.min_path <= d <= cfg.max_path and unique, f"seed {seed}"
            assert (label == mt.PATH).sum() == d - 1
        assert path_is_valid(s.inputs.reshape(-1, H, W), s.labels.reshape(-1, H, W)).all()


def test_perfect_mazes_are_spanning_trees():
    rng = np.random.default_rng(random.randrange(2**31))
    for rows, cols in ((9, 9), (7, 11), (3, 3)):
        m = carve_perfect(rows, cols, rng)
        cells = m[1::2, 1::2]
        assert cells.all() and not m[0].any() and not m[:, 0].any()  # every cell, closed border
        edges = (m[:, 1:] & m[:, :-1]).sum() + (m[1:] & m[:-1]).sum()
        assert edges == m.sum() - 1  # connected (below) with V - 1 edges: a tree
        assert (_python_bfs(m, (1, 1))[m] >= 0).all()


def test_generation_is_deterministic_from_the_seed():
    a = generate({"train": 4, "test": 2}, SMALL, seed=5, progress=False)
    b = generate({"train": 4, "test": 2}, SMALL, seed=5, progress=False)
    c = generate({"train": 4, "test": 2}, SMALL, seed=6, progress=False)
    for k in a:
        assert np.array_equal(a[k].inputs, b[k].inputs) and np.array_equal(a[k].labels, b[k].labels)
    assert not np.array_equal(a["train"].inputs, c["train"].inputs)


# Digests of the inputs and labels (train then test) that EqR's own builder
# (dataset/build_maze_unique_dataset.py, locuslab/EqR) wrote for these options: our generator
# draws the same random stream, so it writes the same mazes (at 30x30 with EqR's Maze-Unique
# recipe too: `python -m maze generate` reproduces those 2000 mazes byte for byte).
EQR_BUILDER_DIGESTS = [
    (dict(size=9, mode="perfect", lo=5, hi=12, train=8, test=4, seed=3, wall=0.37),
     "f45a1dafb9416ad73cca054bd63028b6ed06ce90fcb9a3d79d6319c6ab7953ff"),
    (dict(size=8, mode="random", lo=6, hi=12, train=4, test=2, seed=11, wall=0.3),
     "c838fd8345e3cf897188485bd13f49af0baefd7673f41e193aee39f9cb400bbc"),
]


@pytest.mark.parametrize("opts,digest", EQR_BUILDER_DIGESTS, ids=["perfect", "random"])
def test_same_mazes_as_eqr_builder(opts, digest):
    cfg = MazeConfig(height=opts["size"], width=opts["size"], mode=opts["mode"],
                     min_path=opts["lo"], max_path=opts["hi"], wall_prob=opts["wall"])
    sets = generate({"train": opts["train"], "test": opts["test"]}, cfg, seed=opts["seed"],
                    progress=False)
    h = hashlib.sha256()
    for s in sets.values():
        h.update(s.inputs.tobytes())
        h.update(s.labels.tobytes())
    assert h.hexdigest() == digest


@pytest.mark.parametrize("kwargs,match", [
    (dict(max_path=97), "max_path 97 exceeds the longest path"),
    (dict(min_path=13, max_path=12), "min_path"),
    (dict(mode="spiral"), "mode must be one of"),
    (dict(height=2, width=2, min_path=1, max_path=1), "needs height and width >= 3"),
    (dict(wall_prob=1.0), "wall_prob"),
    (dict(min_path=0), "min_path must be an int >= 1"),
])
def test_bad_generator_options_are_refused(kwargs, match):
    opts = dict(height=15, width=15, min_path=5, max_path=12)
    opts.update(kwargs)
    with pytest.raises(ValueError, match=match):
        MazeConfig(**opts)


def test_infeasible_lengths_and_too_few_mazes_raise_generation_errors():
    with pytest.raises(GenerationError, match="lower min_path"):
        generate({"train": 1}, MazeConfig(height=4, width=4, mode="random", wall_prob=0.9,
                                          min_path=10, max_path=10, max_grid_attempts=5,
                                          max_start_attempts=5), progress=False)
    # A 5x5 perfect maze holds 4 cells: paths of 6 steps exist in 8 mazes only (4 trees, each
    # a chain, and S/G at either end), so a 9th distinct one cannot be found.
    with pytest.raises(GenerationError, match="duplicate"):
        generate({"train": 9}, MazeConfig(height=5, width=5, min_path=6, max_path=6,
                                          max_resamples=3), progress=False)


def test_default_path_range_is_eqr_recipe_scaled_by_area():
    assert default_path_range(30, 30) == (100, 140)
    assert default_path_range(15, 15) == (25, 35)
    assert default_path_range(9, 9) == (9, 13)


# ---- scoring ------------------------------------------------------------------------------
TWO_WAYS = ["#######",
            "#S   G#",
            "# ### #",
            "#     #",
            "#######"]


def _grid(lines):
    return mt.encode(lines)[None]


def test_score_exact_path_and_validity_by_hand():
    inp = _grid(TWO_WAYS)
    top = _grid(["#######", "#SoooG#", "# ### #", "#     #", "#######"])
    assert path_is_valid(inp, top).all()
    # A longer way round (connected, through open cells) is not a shortest path.
    around = _grid(["#######", "#S   G#", "#o###o#", "#ooooo#", "#######"])
    assert not path_is_valid(inp, around).any()
    # The right number of cells but not connected; a path through a wall; one cell short.
    gap = _grid(["#######", "#Soo G#", "# ### #", "#   o #", "#######"])
    wall = mt.encode(TWO_WAYS)[None].copy()
    wall[0, 1, 2:5] = mt.PATH
    wall[0, 2, 2] = mt.PATH
    wall[0, 1, 3] = mt.OPEN
    short = _grid(["#######", "#Soo G#", "# ### #", "#     #", "#######"])
    for pred in (gap, wall, short):
        assert not path_is_valid(inp, pred).any()
    s = score(np.concatenate([inp] * 3), np.concatenate([top] * 3),
              np.concatenate([top, around, gap]), 5, 7)
    assert s.exact.tolist() == [True, False, False]
    assert s.path_exact.tolist() == [True, False, False]
    assert s.valid.tolist() == [True, False, False]
    assert s.summary()["exact"] == pytest.approx(1 / 3) and s.summary()["count"] == 3


def test_valid_but_not_exact_when_the_shortest_path_is_not_unique():
    inp = _grid(["#####", "#S  #", "#  G#", "#####"])  # three shortest paths of 3 steps
    label = _grid(["#####", "#Soo#", "#  G#", "#####"])
    pred = _grid(["#####", "#S  #", "#ooG#", "#####"])
    s = score(inp, label, pred, 4, 5)
    assert s.valid.all() and not s.path_exact.any() and not s.exact.any()


def _all_shortest_interiors(grid):
    """Every shortest S-G path's interior cell set, by enumerating paths (tiny grids only)."""
    open_mask = grid != mt.WALL
    s = tuple(np.argwhere(grid == mt.START)[0])
    g = tuple(np.argwhere(grid == mt.GOAL)[0])
    dg = _python_bfs(open_mask, g)
    out = set()

    def walk(cell, interior):
        if cell == g:
            out.add(frozenset(interior[:-1]))
            return
        y, x = cell
        for n in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
            if 0 <= n[0] < grid.shape[0] and 0 <= n[1] < grid.shape[1] and dg[n] == dg[cell] - 1:
                walk(n, interior + [n])
    if dg[s] > 0:
        walk(s, [])
    return out


def test_validity_agrees_with_enumerating_shortest_paths():
    seed = random.randrange(2**31)
    rng = np.random.default_rng(seed)
    inputs, preds, expected = [], [], []
    for _ in range(60):
        grid = np.where(rng.random((5, 6)) < 0.25, mt.WALL, mt.OPEN)
        s, g = rng.choice(30, 2, replace=False)
        grid.flat[s], grid.flat[g] = mt.START, mt.GOAL
        paths = _all_shortest_interiors(grid)
        pred = grid.copy()
        if paths and rng.random() < 0.6:
            for cell in sorted(next(iter(paths)), key=str):
                pred[cell] = mt.PATH
        flips = rng.choice(30, rng.integers(0, 3), replace=False)
        for j in flips:   # perturb some predictions
            if pred.flat[j] in (mt.OPEN, mt.PATH):
                pred.flat[j] = mt.PATH + mt.OPEN - pred.flat[j]
        marked = frozenset(map(tuple, np.argwhere(pred == mt.PATH)))
        inputs.append(grid)
        preds.append(pred)
        expected.append(marked in paths)
    got = path_is_valid(np.stack(inputs), np.stack(preds))
    assert got.tolist() == expected, f"seed {seed}"
    assert any(expected) and not all(expected)


def test_batched_bfs_matches_a_plain_bfs():
    rng = np.random.default_rng(random.randrange(2**31))
    allowed = rng.random((6, 7, 8)) < 0.7
    src = np.zeros_like(allowed)
    src[:, 0, 0] = True
    allowed[:, 0, 0] = True
    dist = bfs_distances(src, allowed)
    for k in range(6):
        assert np.array_equal(dist[k], _python_bfs(allowed[k], (0, 0)))


# ---- data folders -------------------------------------------------------------------------
def _small_dataset(tmp_path, name="ds", **cfg):
    c = MazeConfig(**dict(dict(height=9, width=9, min_path=5, max_path=12), **cfg))
    sets = generate({"train": 5, "test": 3}, c, seed=1, progress=False)
    root = str(tmp_path / name)
    mdata.write_dataset(root, {k: (s.inputs, s.labels) for k, s in sets.items()}, c.height, c.width)
    return root, sets


def test_written_folder_is_eqr_layout_and_reads_back(tmp_path):
    root, sets = _small_dataset(tmp_path)
    assert sorted(os.listdir(root)) == ["identifiers.json", "test", "train"]
    assert json.load(open(os.path.join(root, "identifiers.json"))) == ["<blank>"]
    with open(os.path.join(root, "test", "dataset.json")) as f:
        assert json.load(f) == {"pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0,
                                "vocab_size": 6, "seq_len": 81, "num_puzzle_identifiers": 1,
                                "total_groups": 3, "mean_puzzle_examples": 1.0, "sets": ["all"],
                                "total_samples": 3}
    assert sorted(os.listdir(os.path.join(root, "test"))) == sorted(
        ["dataset.json"] + [f"all__{f}.npy" for f in mdata.FIELDS])
    assert np.load(os.path.join(root, "test", "all__group_indices.npy")).tolist() == [0, 1, 2, 3]
    assert np.load(os.path.join(root, "test", "all__puzzle_identifiers.npy")).dtype == np.int32
    both = mdata.read_dataset(root, size=(9, 9), paths=True)
    for k in ("train", "test"):
        assert np.array_equal(both[k].inputs, sets[k].inputs)
        assert np.array_equal(both[k].labels, sets[k].labels)
        assert both[k].inputs.dtype == np.int64 and (both[k].height, both[k].width) == (9, 9)
    assert len(mdata.read_split(root, "train", limit=2)) == 2
    assert len(mdata.read_split(os.path.join(root, "test"))) == 3  # a split folder itself


def test_non_square_grids_carry_their_board_in_dataset_json(tmp_path):
    root, _ = _small_dataset(tmp_path, height=7, width=11)
    meta = json.load(open(os.path.join(root, "train", "dataset.json")))
    assert (meta["seq_len"], meta["board_height"], meta["board_width"]) == (77, 7, 11)
    split = mdata.read_split(root, "train")
    assert (split.height, split.width) == (7, 11) and split.grids()[0].shape == (5, 7, 11)


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    sets = generate({"train": 2, "test": 2}, SMALL, seed=2, progress=False)
    calls = []

    def failing_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7:
            raise OSError(28, "No space left on device")
        return real_save(*args, **kwargs)

    real_save = np.save
    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError):
        mdata.write_dataset(str(tmp_path / "out"),
                            {k: (s.inputs, s.labels) for k, s in sets.items()}, 9, 9)
    assert os.listdir(tmp_path) == []   # no half folder, no staging folder


def test_output_folder_rules(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not empty"):
        mdata.check_output(str(tmp_path / "full"))
    with pytest.raises(ValueError, match="is a file"):
        mdata.check_output(str(tmp_path / "file"))
    mdata.check_output(str(tmp_path / "empty"))
    mdata.check_output(str(tmp_path / "new" / "deeper"))
    root, _ = _small_dataset(tmp_path, name="empty")   # an empty folder is filled
    assert len(mdata.read_split(root, "test")) == 3


def test_writing_refuses_bad_tokens(tmp_path):
    sets = generate({"train": 2}, SMALL, seed=2, progress=False)
    inputs, labels = sets["train"].inputs.copy(), sets["train"].labels.copy()
    labels[0, labels[0] == mt.PATH] = mt.OPEN            # the label lost its path
    with pytest.raises(ValueError, match="not a shortest S-G path"):
        mdata.write_dataset(str(tmp_path / "a"), {"train": (inputs, labels)}, 9, 9)
    with pytest.raises(ValueError, match=r"\(N >= 1, 81\)"):
        mdata.write_dataset(str(tmp_path / "b"), {"train": (inputs[:, :80], labels[:, :80])}, 9, 9)
    assert os.listdir(tmp_path) == []


def _corrupt(root, fn):
    """Apply fn(folder) to the test split of a copy-free small dataset."""
    fn(os.path.join(root, "test"))


def _edit_meta(**changes):
    def fn(folder):
        file = os.path.join(folder, "dataset.json")
        meta = json.load(open(file))
        for k, v in changes.items():
            if v is KeyError:
                del meta[k]
            else:
                meta[k] = v
        json.dump(meta, open(file, "w"))
    return fn


def _edit_array(name, fn_arr):
    def fn(folder):
        file = os.path.join(folder, f"all__{name}.npy")
        arr = np.load(file)
        np.save(file, fn_arr(arr))
    return fn


def _set(arr, index, value):
    arr = arr.copy()
    arr[index] = value
    return arr


def _write(name, content):
    def fn(folder):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(content)
    return fn


def _second_start(arr):
    arr = arr.copy()
    j = int(np.flatnonzero(arr[0] == mt.OPEN)[0])
    arr[0, j] = mt.START
    return arr


def _path_on_wall(arr):
    arr = arr.copy()
    j = int(np.flatnonzero(arr[0] == mt.WALL)[0])
    arr[0, j] = mt.PATH
    return arr


MALFORMED = [
    (_write("dataset.json", b"{not json"), "dataset.json: unreadable"),
    (_edit_meta(seq_len=KeyError), "field 'seq_len' is missing"),
    (_edit_meta(seq_len="81"), "field 'seq_len' must be int"),
    (_edit_meta(vocab_size=11), "field 'vocab_size' is 11; a maze dataset has 6"),
    (_edit_meta(ignore_label_id=5), "field 'ignore_label_id'"),
    (_edit_meta(seq_len=80), "field 'seq_len' is 80, not a square grid"),
    (_edit_meta(seq_len=225), "expected 9x9"),
    (_edit_meta(board_height=9, board_width=8), "board_height x board_width = 9x8"),
    (_edit_meta(sets=[]), "field 'sets'"),
    (_edit_meta(total_groups=4), "field 'total_groups' is 4"),
    (_edit_meta(total_samples=2), "field 'total_samples' is 2"),
    (_edit_array("inputs", lambda a: a[:, :80]), r"all__inputs.npy: expected \(N, 81\)"),
    (_edit_array("labels", lambda a: a[:2]), "all__labels.npy: shape"),
    (_edit_array("inputs", lambda a: a.astype(np.float32)), "expected an integer array"),
    (_edit_array("inputs", lambda a: _set(a, (1, 0), 7)),
     "all__inputs.npy example 1: token 7 at cell 0"),
    (_edit_array("inputs", _second_start), "example 0: 2 'S' cells"),
    (_edit_array("labels", _path_on_wall), "is 'o' but the input has '#'"),
    (_edit_array("labels", lambda a: _set(a, (2, 0), 9)), "all__labels.npy example 2: token 9"),
    (_edit_array("puzzle_indices", lambda a: a[:-1]),
     "all__puzzle_indices.npy: must start at 0 and end at 3"),
    (_edit_array("group_indices", lambda a: np.array([0, 2, 1, 3], a.dtype)), "must not decrease"),
    (_edit_array("puzzle_identifiers", lambda a: a + 1), "num_puzzle_identifiers"),
    (_write("all__labels.npy", b"\x93NUMPY garbage"), "all__labels.npy: not a readable .npy"),
    (lambda folder: np.save(os.path.join(folder, "all__inputs.npy"), np.array([{}], dtype=object)),
     "all__inputs.npy: not a readable .npy"),
    (lambda folder: os.remove(os.path.join(folder, "all__group_indices.npy")),
     "all__group_indices.npy: missing"),
    (_edit_array("labels", lambda a: np.where(a == mt.PATH, mt.OPEN, a)), "not a shortest S-G path"),
]


@pytest.mark.parametrize("corrupt,match", MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_folders_are_refused_naming_the_file_and_field(tmp_path, corrupt, match):
    root, _ = _small_dataset(tmp_path)
    _corrupt(root, corrupt)
    with pytest.raises(ValueError, match=match):
        mdata.read_split(root, "test", size=(9, 9), paths=True)


def test_missing_folders_are_refused(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        mdata.read_split(str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="not an EqR dataset folder"):
        mdata.read_split(str(tmp_path))


# ---- CLI ----------------------------------------------------------------------------------
def test_cli_generates_a_folder_that_checks(tmp_path, capsys):
    out = str(tmp_path / "mazes")
    code, stdout, err = _run(["generate", "--out", out, "--count", "6", "--test-count", "3",
                              "--size", "9", "--seed", "4"], capsys)
    assert code == 0, err
    assert "9x9 perfect mazes" in stdout and "paths of 9-13 steps" in stdout
    assert "train mazes: 6/6" in err   # progress lines (stderr is not a terminal here)
    assert [len(mdata.read_split(out, s)) for s in ("train", "test")] == [6, 3]
    code, stdout, err = _run(["check", out, "--size", "9"], capsys)
    assert code == 0 and "shortest paths valid" in stdout, err
    code, _, err = _run(["generate", "--out", str(tmp_path / "rect"), "--count", "2", "--size",
                         "7x11", "--mode", "random", "--wall-prob", "0.2", "--min-path", "6",
                         "--max-path", "9"], capsys)
    assert code == 0, err
    assert mdata.read_split(str(tmp_path / "rect"), "test").width == 11


def test_cli_bad_input_prints_error_and_exits_2(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    bad_folder, _ = _small_dataset(tmp_path, name="bad")
    _corrupt(bad_folder, _edit_meta(vocab_size=11))
    gen = ["generate", "--count", "2", "--size", "9"]
    cases = [
        (gen + ["--out", str(tmp_path / "full")], "not empty"),
        (gen + ["--out", str(tmp_path / "a"), "--min-path", "20", "--max-path", "10"],
         "min_path (20) must be <= max_path"),
        (gen + ["--out", str(tmp_path / "a"), "--max-path", "100"], "exceeds the longest path"),
        (gen + ["--out", str(tmp_path / "a"), "--count", "0"], "--count must be >= 1"),
        (["generate", "--out", str(tmp_path / "a"), "--size", "1"], "--size must be N or HxW"),
        (["generate", "--out", str(tmp_path / "a"), "--size", "5", "--min-path", "6",
          "--max-path", "6", "--count", "5"], "duplicate"),
        (gen + ["--out", str(tmp_path / "a"), "--frobnicate"], "unrecognized arguments"),
        (["generate", "--count", "2"], "required: --out"),
        (["check", str(bad_folder)], "field 'vocab_size' is 11"),
        (["check", str(tmp_path / "nothing")], "does not exist"),
        (["check", str(bad_folder), "--split", "train", "--size", "15"], "expected 15x15"),
        (["frobnicate"], "unknown command"),
    ]
    for argv, message in cases:
        code, _, err = _run(argv, capsys)
        last = err.rstrip("\n").split("\nerror: ")[-1]   # progress lines may come first
        assert code == 2 and ("\n" + err).count("\nerror: ") == 1 and message in last, (argv, err)
        assert "Traceback" not in err
    assert not (tmp_path / "a").exists()   # nothing half-written by the failed runs
    assert sorted(os.listdir(tmp_path)) == ["bad", "full"]

"""The reasoner on the maze task: `python -m maze train|eval` end to end on tiny grids, maze
scoring through the depth x breadth report, grid-symmetry augmentation, and bad input
(checkpoints of another task or grid, malformed data, bad model options) as `error:` + exit 2
with nothing half-written."""
import os
import random

import numpy as np
import pytest
import torch

from maze import data as mdata
from maze.__main__ import main as maze_main
from maze.augment import augment_batch, symmetry_indices
from maze.generate import MazeConfig, generate
from maze.score import path_is_valid
from maze.task import MAZE
from maze.tokens import OPEN, PATH, WALL
from reasoner.model import Reasoner, ReasonerConfig
from reasoner.report import aggregate_scores
from sudoku.__main__ import main as sudoku_main
from test_eqr_cli_data import _puzzles, _write_csv
from test_eqr_maze import _maze_arch, _maze_weights, _write
from cli_run import run_cli

TINY = ["--hidden", "16", "--heads", "2", "--batch-size", "8", "--supervision-steps", "2",
        "--warmup", "1", "--device", "cpu", "--layers", "1"]
ATTENTION = ["--token-mixing", "attention"]


_run = run_cli


def _bad(code, err, *words):
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


@pytest.fixture(scope="module")
def mazes(tmp_path_factory):
    """{size: dataset root} of tiny perfect mazes (5x5 and 7x7)."""
    root = tmp_path_factory.mktemp("mazes")
    out = {}
    for n, (lo, hi) in ((5, (2, 6)), (7, (4, 10))):
        sets = generate({"train": 24, "test": 6}, MazeConfig(height=n, width=n, min_path=lo,
                                                              max_path=hi), seed=n, progress=False)
        out[n] = str(root / f"m{n}")
        mdata.write_dataset(out[n], {k: (s.inputs, s.labels) for k, s in sets.items()}, n, n)
    return out


def test_train_then_eval_on_tiny_mazes(mazes, tmp_path, capsys):
    run = str(tmp_path / "run")
    code, out, err = _run(maze_main, ["train", "--data", mazes[5], "--out", run, "--steps", "4",
                                      "--checkpoint-every", "2", "--augment"] + TINY + ATTENTION,
                          capsys)
    assert code == 0, err
    ckpt = torch.load(os.path.join(run, "ckpt.pt"), weights_only=True)
    cfg = ckpt["model_config"]
    assert ckpt["task"] == "maze" and ckpt["step"] == 4 and ckpt["train_config"]["augment"]
    assert (cfg["seq_len"], cfg["vocab"], cfg["attention"], cfg["pos_encoding"]) == (25, 6, True, "rope")
    plot = str(tmp_path / "depth.png")
    code, out, err = _run(maze_main, ["eval", "--data", mazes[5], "--checkpoint",
                                      os.path.join(run, "ckpt.pt"), "--depth", "3", "--breadth",
                                      "2", "--full-depth", "--plot", plot], capsys)
    assert code == 0, err
    assert "ours checkpoint, latent dtype float32, 6 mazes" in out
    for column in ("exact vote", "path lowest_residual", "valid pass@2", "cell vote"):
        assert column in out, out
    assert os.path.getsize(plot) > 0


def test_maze_scores_and_their_aggregation():
    """exact / path / valid / cell per start, then vote, lowest residual and pass@B."""
    rng = np.random.default_rng(0)
    sets = generate({"test": 2}, MazeConfig(height=7, width=7, min_path=6, max_path=8), seed=1,
                    progress=False)
    q, a = (torch.from_numpy(x.astype(np.int64)) for x in (sets["test"].inputs, sets["test"].labels))
    wall_wrong = a.clone()
    j = int((a[0] == WALL).nonzero()[0])
    wall_wrong[:, j] = OPEN  # the path right, one wall cell wrong: path yes, exact no, valid yes
    gap = a.clone()
    for p in range(2):
        gap[p, int((a[p] == PATH).nonzero()[int(rng.integers(1))])] = OPEN  # a path cell missing
    preds = torch.stack([a, wall_wrong, gap], dim=1)  # (P=2, Bz=3, 49)
    scores = MAZE.score(q, a, preds, board=(7, 7))
    assert scores["exact"][0].tolist() == [[1, 0, 0], [1, 0, 0]]
    assert scores["path"][0].tolist() == [[1, 1, 0], [1, 1, 0]]
    assert scores["valid"][0].tolist() == [[1, 1, 0], [1, 1, 0]]
    assert scores["cell"][0].tolist() == [[49, 48, 48], [49, 48, 48]]
    residual = torch.tensor([[0.3, 0.1, 0.2], [0.1, 0.2, 0.3]])
    rates = aggregate_scores(scores, preds, residual)
    assert rates["exact"] == {"vote": 0.5, "lowest_residual": 0.5, "pass@3": 1.0}
    assert rates["valid"]["lowest_residual"] == 1.0 and rates["cell"]["pass@3"] == 1.0
    assert rates["cell"]["lowest_residual"] == pytest.approx((48 + 49) / 98)


def test_grid_symmetries_keep_labels_shortest_paths():
    sets = generate({"test": 6}, MazeConfig(height=7, width=7, min_path=6, max_path=10), seed=2,
                    progress=False)
    q, a = (torch.from_numpy(x.astype(np.int64)) for x in (sets["test"].inputs, sets["test"].labels))
    assert symmetry_indices(7, 7).unique(dim=0).shape[0] == 8
    assert symmetry_indices(3, 5).unique(dim=0).shape[0] == 4
    gen = torch.Generator().manual_seed(random.randrange(2**31))
    q2, a2 = augment_batch(q, a, (7, 7), gen)
    assert not torch.equal(q2, q)  # 6 mazes: some transform is not the identity
    assert path_is_valid(q2.view(-1, 7, 7).numpy(), a2.view(-1, 7, 7).numpy()).all()
    assert torch.equal((q2 != a2).sum(1), (q != a).sum(1))
    with pytest.raises(ValueError, match=r"\(B, 49\)"):
        augment_batch(q[:, :48], a[:, :48], (7, 7))


def _ours(path, task, seq_len, vocab, **over):
    cfg = ReasonerConfig(seq_len=seq_len, vocab=vocab, hidden=16, layers=1, heads=2, **over)
    model = Reasoner(cfg)
    state = dict(format_version=2, model_config=cfg.to_dict(), model=model.state_dict(),
                 ema=model.state_dict())
    if task:
        state["task"] = task
    torch.save(state, path)
    return str(path)


def test_checkpoints_of_another_task_or_grid_are_refused_naming_the_field(mazes, tmp_path, capsys):
    q, a = _puzzles(2, 3)
    _write_csv(tmp_path / "p.csv", q, a)
    csv = str(tmp_path / "p.csv")
    maze9 = _ours(tmp_path / "m9.pt", "maze", 49, 6, attention=True, pos_encoding="rope")
    sudoku_ckpt = _ours(tmp_path / "s.pt", "sudoku", 81, 11)
    old_sudoku = _ours(tmp_path / "old.pt", None, 81, 11)  # written before the task key
    arch = _maze_arch()
    _write(tmp_path / "eqr_maze.pth", arch, _maze_weights(arch, torch.Generator().manual_seed(0),
                                                          torch.float32))
    eqr_maze = str(tmp_path / "eqr_maze.pth")
    ev = lambda ckpt, data: ["eval", "--checkpoint", ckpt, "--data", data, "--depth", "1"]  # noqa: E731
    cases = [
        (sudoku_main, ev(maze9, csv), ["maze task", "python -m maze eval"]),
        (sudoku_main, ev(eqr_maze, csv), ["vocab 6", "sudoku task's 11"]),
        (maze_main, ev(sudoku_ckpt, mazes[5]), ["sudoku task"]),
        (maze_main, ev(old_sudoku, mazes[5]), ["vocab 11"]),
        (maze_main, ev(maze9, mazes[5]), ["seq_len 49", "25 tokens (5x5)"]),
    ]
    for main, argv, words in cases:
        code, _, err = _run(main, argv, capsys)
        _bad(code, err, *words)
    # 2-D positions of another board: the board named.
    rope2d = _ours(tmp_path / "r2.pt", "maze", 25, 6, attention=True, pos_encoding="rope2d",
                   board=(5, 5))
    code, _, err = _run(maze_main, ev(rope2d, mazes[7]), capsys)
    _bad(code, err, "seq_len 25")
    from reasoner.task import TaskData
    flat = ReasonerConfig(seq_len=25, vocab=6, hidden=16, heads=2, attention=True,
                          pos_encoding="rope2d", board=(1, 25))
    with pytest.raises(ValueError, match="board 1x25.*5x5 grid"):
        MAZE.check_model(flat, TaskData(torch.ones(1, 25, dtype=torch.long),
                                        torch.ones(1, 25, dtype=torch.long), board=(5, 5)))


def test_bad_maze_data_and_model_options_refused_before_any_file_is_written(mazes, tmp_path, capsys):
    bad = tmp_path / "bad"
    import shutil
    shutil.copytree(mazes[5], bad)
    meta = bad / "train" / "dataset.json"
    meta.write_text(meta.read_text().replace('"seq_len": 25', '"seq_len": 24'))
    out = tmp_path / "run"
    base = ["train", "--out", str(out), "--steps", "1"] + TINY
    code, _, err = _run(maze_main, base + ["--data", str(bad)], capsys)
    _bad(code, err, "seq_len")
    code, _, err = _run(maze_main, base + ["--data", mazes[5], "--token-mixing", "mlp",
                                           "--pos-encoding", "rope2d"], capsys)
    _bad(code, err, "--pos-encoding rope2d needs --token-mixing attention")
    code, _, err = _run(maze_main, base + ATTENTION + ["--data", mazes[5], "--pos-encoding",
                                                       "rope2d", "--hidden", "12", "--heads", "2"],
                        capsys)
    _bad(code, err, "rope2d", "divisible by 4")
    code, _, err = _run(maze_main, base + ["--data", str(tmp_path / "none")], capsys)
    _bad(code, err, "does not exist")
    assert not out.exists()
    code, _, err = _run(maze_main, ["eval", "--checkpoint", str(tmp_path / "none.pt"), "--data",
                                    mazes[5]], capsys)
    _bad(code, err, "does not exist")

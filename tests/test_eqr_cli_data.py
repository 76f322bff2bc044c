"""EqR files people already have: npy dataset folders beside our CSV, `python -m sudoku eval` on
an EqR .pth, EqR's loss, and `error: ...` (exit 2) on bad input instead of a traceback."""
import functools
import math
import random

import numpy as np
import pytest
import torch

from sudoku import data as sdata
from sudoku.__main__ import main as sudoku_main
from reasoner.evaluate import evaluate
from reasoner.losses import eqr_loss
from reasoner.model import ReasonerConfig, Reasoner as SudokuReasoner
from sudoku.tokens import CELLS, VOCAB_SIZE, decode
from test_eqr_reference import _eqr_arch, _eqr_weights, _write_eqr_pth
from cli_run import run_cli


def _puzzles(N, seed):
    """Valid solved grids (a shifted pattern, relabelled) with random blanks, encoded."""
    gen = torch.Generator().manual_seed(seed)
    r, c = torch.arange(9)[:, None], torch.arange(9)[None, :]
    base = ((r * 3 + r // 3 + c) % 9).flatten()
    answers = torch.stack([torch.randperm(9, generator=gen)[base] + 2 for _ in range(N)])
    blanks = torch.rand(N, 81, generator=gen) < 0.5
    return torch.where(blanks, torch.ones_like(answers), answers), answers


def _write_csv(path, q, a, ratings=None):
    ratings = ratings if ratings is not None else [0] * len(q)
    sdata.write_csv(str(path), [("test", decode(qq.numpy()), decode(aa.numpy()), int(r))
                                for qq, aa, r in zip(q, a, ratings)])


_run = functools.partial(run_cli, sudoku_main)  # (code, out, err) of python -m sudoku argv


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
def test_npy_dataset_round_trips_against_our_csv(tmp_path, seed):
    q, a = _puzzles(7, seed)
    _write_csv(tmp_path / "p.csv", q, a, ratings=list(range(7)))
    sdata.write_npy_dataset(str(tmp_path / "ds" / "test"), q.numpy(), a.numpy())
    sdata.write_npy_dataset(str(tmp_path / "ds" / "train"), q[:3].numpy(), a[:3].numpy())
    cq, ca, cr = sdata.load_puzzles(str(tmp_path / "p.csv"))
    nq, na, nr = sdata.load_puzzles(str(tmp_path / "ds"), split="test")
    assert torch.equal(cq, nq) and torch.equal(ca, na) and nr is None and cr.tolist() == list(range(7))
    assert sdata.load_tensors(str(tmp_path / "ds"))[0].shape == (3, 81)  # train/ by default
    assert sdata.load_puzzles(str(tmp_path / "ds" / "test"), limit=2)[0].shape == (2, 81)


def test_malformed_npy_and_csv_are_refused_with_the_file_named(tmp_path):
    q, a = _puzzles(3, 0)
    folder = tmp_path / "ds"
    sdata.write_npy_dataset(str(folder), q.numpy(), a.numpy())
    np.save(folder / "all__inputs.npy", np.zeros((3, 80), np.uint8))
    with pytest.raises(ValueError, match=r"all__inputs\.npy.*\(N, 81\)"):
        sdata.load_puzzles(str(folder))
    bad = q.numpy().copy()
    bad[1, 4] = 12
    np.save(folder / "all__inputs.npy", bad.astype(np.uint8))
    with pytest.raises(ValueError, match="row 1: token 12"):
        sdata.load_puzzles(str(folder))
    (folder / "all__inputs.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="not a readable .npy"):
        sdata.load_puzzles(str(folder))
    with pytest.raises(ValueError, match="not an EqR/HRM dataset folder"):
        sdata.load_puzzles(str(tmp_path))


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
def test_eqr_loss_is_per_sample_normalised_stablemax_plus_half_summed_bce(seed):
    gen = torch.Generator().manual_seed(seed)
    B, L, V = 3, 81, 11
    logits = torch.randn(B, L, V, generator=gen, dtype=torch.float64) * 3
    labels = torch.randint(2, 11, (B, L), generator=gen)
    labels[1, :20] = 0  # unlabelled (PAD) cells
    labels[2] = logits[2].argmax(-1)  # a fully correct board
    q = torch.randn(B, generator=gen, dtype=torch.float64)
    loss, correct = eqr_loss(logits, q, labels)
    want = 0.0
    for b in range(B):
        terms = []
        for c in range(L):
            if labels[b, c] == 0:
                continue
            s = [1 / (1 - x) if x < 0 else x + 1 for x in logits[b, c].tolist()]
            terms.append(-math.log(s[int(labels[b, c])] / sum(s)))
        want += sum(terms) / len(terms)
        y = float(b == 2)
        p = 1 / (1 + math.exp(-float(q[b])))
        want += 0.5 * -(y * math.log(p) + (1 - y) * math.log(1 - p))
    assert correct.tolist() == [False, False, True]
    assert float(loss) == pytest.approx(want / B, rel=1e-6), f"seed {seed}"


def test_report_adds_latent_change_of_correct_vs_wrong_and_steps_by_rating():
    torch.manual_seed(random.randrange(2**31))
    model = SudokuReasoner(ReasonerConfig(seq_len=CELLS, vocab=VOCAB_SIZE,
                                          hidden=16, layers=1, expansion=2.0, H_cycles=1, L_cycles=2))
    q, a = _puzzles(4, 1)
    q[0] = a[0]  # nothing blank: the lm head alone decides; at least the fields must be filled
    report = evaluate(model, q, a, depth=6, breadth=2, ratings=torch.tensor([0, 0, 3, 5]),
                      halt_tol=1e9, patience=0)
    r = report.results[-1]
    assert math.isnan(r.residual_correct) or r.residual_correct >= 0
    assert r.residual_wrong >= 0  # a random model gets boards wrong
    assert set(report.steps_by_rating) == {0, 3, 5} and report.steps_by_rating[0][0] == 4
    assert "res. correct" in report.table() and "steps used by puzzle rating" in report.table()


def test_cli_evaluates_an_eqr_pth_on_an_npy_folder(tmp_path, capsys):
    arch = _eqr_arch(forward_dtype="bfloat16")
    _write_eqr_pth(tmp_path / "eqr.pth", arch, _eqr_weights(arch, torch.Generator().manual_seed(5),
                                                            torch.float32))
    q, a = _puzzles(3, 2)
    sdata.write_npy_dataset(str(tmp_path / "ds" / "test"), q.numpy(), a.numpy())
    code, out, err = _run(["eval", "--checkpoint", str(tmp_path / "eqr.pth"), "--data",
                           str(tmp_path / "ds"), "--depth", "2", "--full-depth"], capsys)
    assert code == 0, err
    assert "eqr checkpoint, latent dtype bfloat16, 3 puzzles" in out and "board vote" in out


def test_cli_bad_input_prints_error_and_exits_2(tmp_path, capsys):
    q, a = _puzzles(2, 3)
    _write_csv(tmp_path / "ok.csv", q, a)
    model = SudokuReasoner(ReasonerConfig(seq_len=CELLS, vocab=VOCAB_SIZE,
                                          hidden=16, layers=1, expansion=2.0))
    torch.save(dict(format_version=2, model_config=model.cfg.to_dict(), model=model.state_dict(),
                    ema=model.state_dict()), tmp_path / "ok.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 truncated zip")
    (tmp_path / "bad.csv").write_text("source,question,answer,rating\nx,123,456,0\n")
    (tmp_path / "empty.csv").write_text("source,question,answer,rating\n")
    arch = _eqr_arch(mlp_t=False)
    _write_eqr_pth(tmp_path / "maze.pth", arch, _eqr_weights(_eqr_arch(), torch.Generator(), torch.float32))
    cases = [
        (["--checkpoint", str(tmp_path / "missing.pt"), "--data", str(tmp_path / "ok.csv")], "does not exist"),
        (["--checkpoint", str(tmp_path / "corrupt.pt"), "--data", str(tmp_path / "ok.csv")], "is not a checkpoint"),
        (["--checkpoint", str(tmp_path / "ok.pt"), "--data", str(tmp_path / "bad.csv")], "bad.csv"),
        (["--checkpoint", str(tmp_path / "ok.pt"), "--data", str(tmp_path / "empty.csv")], "no puzzles"),
        (["--checkpoint", str(tmp_path / "ok.pt"), "--data", str(tmp_path / "nothing.csv")], "does not exist"),
        (["--checkpoint", str(tmp_path / "maze.pth"), "--data", str(tmp_path / "ok.csv")], "arch.mlp_t"),
    ]
    for argv, message in cases:
        code, _, err = _run(["eval"] + argv + ["--depth", "1"], capsys)
        assert code == 2 and err.startswith("error: ") and message in err, (argv, err)
        assert "Traceback" not in err
    code, _, err = _run(["train", "--data", str(tmp_path / "empty.csv"), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "no puzzles" in err
    code, _, err = _run(["frobnicate"], capsys)
    assert code == 2 and "unknown command" in err

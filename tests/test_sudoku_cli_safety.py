"""`python -m sudoku`: a run directory is never overwritten or mixed up, and bad input gets one
`error:` line (exit 2) before any work: devices, value ranges, output paths, checkpoints whose
weights do not fit their config or are not finite."""
import functools
import json
import math
import os
import random
import shutil

import pytest
import torch

from sudoku import data as sdata
from sudoku.__main__ import main as sudoku_main
from reasoner.evaluate import evaluate
from sudoku.generate import add_clues, random_full_grid
from reasoner.model import ReasonerConfig, Reasoner as SudokuReasoner
from sudoku.tokens import CELLS, VOCAB_SIZE, decode
from cli_run import run_cli
from test_eqr_cli_data import _puzzles

TINY = ["--hidden", "16", "--layers", "1", "--batch-size", "4", "--supervision-steps", "1",
        "--warmup", "1", "--device", "cpu"]


@pytest.fixture
def csv_path(tmp_path):
    q, a = _puzzles(12, 7)
    path = tmp_path / "p.csv"
    sdata.write_csv(str(path), [("t", decode(x.numpy()), decode(y.numpy()), 0) for x, y in zip(q, a)])
    return str(path)


_run = functools.partial(run_cli, sudoku_main)  # (code, out, err) of python -m sudoku argv


def _train(csv, out, steps, capsys, *extra):
    return _run(["train", "--data", csv, "--out", out, "--steps", str(steps),
                 "--checkpoint-every", "1"] + TINY + list(extra), capsys)


def _bad(code, err, *words):
    assert code == 2, err
    assert "error:" in err and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


def _rows(path):
    return open(path).read().splitlines()


def test_train_never_overwrites_a_run_without_being_told(tmp_path, csv_path, capsys):
    out = str(tmp_path / "run")
    assert _train(csv_path, out, 3, capsys)[0] == 0
    saved = open(os.path.join(out, "ckpt.pt"), "rb").read()
    code, _, err = _train(csv_path, out, 1, capsys)
    _bad(code, err, "already holds a run", "--overwrite", "--resume")
    assert open(os.path.join(out, "ckpt.pt"), "rb").read() == saved
    code, _, err = _train(csv_path, out, 2, capsys, "--overwrite")
    assert code == 0, err
    assert torch.load(os.path.join(out, "ckpt.pt"))["step"] == 2
    assert [json.loads(r)["step"] for r in _rows(os.path.join(out, "metrics.jsonl"))] == [1, 2]
    code, _, err = _train(csv_path, out, 2, capsys, "--overwrite", "--resume")
    _bad(code, err, "--overwrite", "--resume")


def test_resume_needs_a_checkpoint_unless_asked_to_resume_if_one_exists(tmp_path, csv_path, capsys):
    out = str(tmp_path / "run")
    code, _, err = _train(csv_path, out, 2, capsys, "--resume")
    _bad(code, err, "--resume: no checkpoint", "ckpt.pt")
    assert not os.path.exists(out)
    code, stdout, err = _train(csv_path, out, 2, capsys, "--resume-if-exists")
    assert code == 0 and "starting a new run" in stdout, err
    code, stdout, err = _train(csv_path, out, 3, capsys, "--resume-if-exists")
    assert code == 0 and "resumed at step 2" in stdout, err


def test_resume_cuts_the_metrics_log_back_to_the_checkpoint(tmp_path, csv_path, capsys):
    straight, crashed = str(tmp_path / "a"), str(tmp_path / "b")
    assert _train(csv_path, straight, 8, capsys)[0] == 0
    assert _train(csv_path, crashed, 4, capsys)[0] == 0
    shutil.copy(os.path.join(crashed, "ckpt.pt"), tmp_path / "step4.pt")
    assert _train(csv_path, crashed, 6, capsys, "--resume")[0] == 0
    # A crash after step 6's rows were logged but before its checkpoint: the file is at 4.
    shutil.copy(tmp_path / "step4.pt", os.path.join(crashed, "ckpt.pt"))
    code, _, err = _train(csv_path, crashed, 8, capsys, "--resume")
    assert code == 0, err
    assert "dropped 2 rows" in err
    assert _rows(os.path.join(crashed, "metrics.jsonl")) == _rows(os.path.join(straight, "metrics.jsonl"))


def test_bad_devices_are_refused_before_any_work(tmp_path, csv_path, capsys, monkeypatch):
    model = SudokuReasoner(ReasonerConfig(seq_len=CELLS, vocab=VOCAB_SIZE,
                                          hidden=16, layers=1, expansion=2.0))
    ckpt = str(tmp_path / "m.pt")
    torch.save(dict(format_version=2, model_config=model.cfg.to_dict(), model=model.state_dict(),
                    ema=model.state_dict()), ckpt)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, words in (("bogus", ["--device 'bogus' is not a device"]),
                          ("cuda", ["--device cuda: CUDA is not available"])):
        code, _, err = _run(["train", "--data", csv_path, "--out", str(tmp_path / "r"),
                             "--device", device], capsys)
        _bad(code, err, *words)
        code, _, err = _run(["eval", "--data", csv_path, "--checkpoint", ckpt, "--device", device],
                            capsys)
        _bad(code, err, *words)
    assert not os.path.exists(tmp_path / "r")


def test_values_out_of_range_are_refused_naming_the_flag(tmp_path, csv_path, capsys):
    ev = ["eval", "--data", csv_path, "--checkpoint", str(tmp_path / "none.pt")]
    cases = [
        (["generate", "--n", "2", "--out", str(tmp_path / "g.csv"), "--extra-clues", "99"], "--extra-clues"),
        (["generate", "--n", "2", "--out", str(tmp_path / "g.csv"), "--extra-clues", "-1"], "--extra-clues"),
        (["generate", "--n", "0", "--out", str(tmp_path / "g.csv")], "--n"),
        (["generate", "--n", "2", "--out", str(tmp_path / "g.csv"), "--workers", "0"], "--workers"),
        (ev + ["--patience", "-2"], "--patience"),
        (ev + ["--limit", "0"], "--limit"),
        (ev + ["--limit", "-3"], "--limit"),
        (ev + ["--halt-tol", "nan"], "--halt-tol"),
        (ev + ["--depth", "0"], "--depth"),
        (["check", csv_path, "--limit", "0"], "--limit"),
        (["train", "--data", csv_path, "--out", str(tmp_path / "r"), "--lr", "0"], "--lr"),
        (["train", "--data", csv_path, "--out", str(tmp_path / "r"), "--ema-decay", "1.5"], "--ema-decay"),
        (["train", "--data", csv_path, "--out", str(tmp_path / "r"), "--warmup", "-1"], "--warmup"),
        (["train", "--data", csv_path, "--out", str(tmp_path / "r"), "--seed", "-1"], "--seed"),
        (["train", "--data", csv_path, "--out", str(tmp_path / "r"), "--hidden", "0"], "--hidden"),
    ]
    for argv, flag in cases:
        code, _, err = _run(argv, capsys)
        _bad(code, err, flag)
        assert "must be" in err or "invalid choice" in err, err
    assert not os.path.exists(tmp_path / "g.csv") and not os.path.exists(tmp_path / "r")
    code, out, _ = _run(["generate", "--help"], capsys)
    assert code == 0 and "usage: python -m sudoku generate" in out and "sudoku.data" not in out


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
def test_extra_clues_never_fill_the_last_blank(seed):
    rng = random.Random(seed)
    solution = random_full_grid(rng)
    puzzle = [d if rng.random() < 0.3 else 0 for d in solution]
    filled = add_clues(puzzle, solution, 81, rng)
    assert sum(1 for d in filled if not d) == 1, f"seed {seed}"
    assert all(f in (0, s) for f, s in zip(filled, solution))


def test_output_paths_are_checked_before_the_work(tmp_path, csv_path, capsys):
    os.makedirs(tmp_path / "adir")
    (tmp_path / "afile").write_text("x")
    code, _, err = _run(["generate", "--n", "3", "--out", str(tmp_path / "adir"), "--workers", "1"], capsys)
    _bad(code, err, "--out", "is a directory")
    assert "generate:" not in err  # refused before generating
    code, _, err = _run(["train", "--data", csv_path, "--out", str(tmp_path / "afile")] + TINY, capsys)
    _bad(code, err, "--out", "is a file, not a directory")
    model = SudokuReasoner(ReasonerConfig(seq_len=CELLS, vocab=VOCAB_SIZE,
                                          hidden=16, layers=1, expansion=2.0))
    ckpt = str(tmp_path / "m.pt")
    torch.save(dict(format_version=2, model_config=model.cfg.to_dict(), model=model.state_dict(),
                    ema=model.state_dict()), ckpt)
    ev = ["eval", "--data", csv_path, "--checkpoint", ckpt, "--depth", "2", "--plot"]
    for plot, words in ((str(tmp_path / "afile" / "d.png"), ["afile is a file"]),
                        (str(tmp_path / "d.xyz"), ["unsupported extension '.xyz'", ".png"]),
                        (str(tmp_path / "adir"), ["is a directory"])):
        code, out, err = _run(ev + [plot], capsys)
        _bad(code, err, "--plot", *words)
        assert "eval breadth" not in err and "board vote" not in out  # before the evaluation
    code, out, err = _run(ev + [str(tmp_path / "new" / "d.svg")], capsys)
    assert code == 0 and os.path.getsize(tmp_path / "new" / "d.svg") > 0, err


def test_checkpoint_whose_weights_do_not_fit_its_config_is_refused(tmp_path, csv_path, capsys):
    out = str(tmp_path / "run")
    assert _train(csv_path, out, 2, capsys)[0] == 0
    path = os.path.join(out, "ckpt.pt")
    ckpt = torch.load(path, weights_only=False)
    for key in ("model", "ema"):
        ckpt[key]["lm_head.weight"] = torch.zeros(3, 5)
    torch.save(ckpt, path)
    code, _, err = _run(["eval", "--data", csv_path, "--checkpoint", path], capsys)
    _bad(code, err, "lm_head.weight", "(3, 5)", "(11, 16)")
    code, _, err = _train(csv_path, out, 4, capsys, "--resume")
    _bad(code, err, "lm_head.weight", "(3, 5)")


def test_non_finite_weights_are_refused_at_load_naming_the_tensors(tmp_path, csv_path, capsys):
    out = str(tmp_path / "run")
    assert _train(csv_path, out, 2, capsys)[0] == 0
    path = os.path.join(out, "ckpt.pt")
    ckpt = torch.load(path, weights_only=False)
    for key in ("model", "ema"):
        for name, t in ckpt[key].items():
            if t.is_floating_point():
                t.fill_(float("nan"))
    ckpt["ema"]["q_head.bias"][0] = float("inf")
    torch.save(ckpt, path)
    code, _, err = _run(["eval", "--data", csv_path, "--checkpoint", path], capsys)
    _bad(code, err, "non-finite", "embed_tokens.weight", "q_head.bias")
    code, _, err = _train(csv_path, out, 4, capsys, "--resume")
    _bad(code, err, "non-finite", "embed_tokens.weight")


def test_latents_that_turn_non_finite_are_reported_never_converged(capsys):
    """Finite but huge embeddings overflow the injection: the latents turn NaN, the fused update
    freezes them (zero change) and they must not read as settled."""
    torch.manual_seed(random.randrange(2**31))
    model = SudokuReasoner(ReasonerConfig(seq_len=CELLS, vocab=VOCAB_SIZE,
                                          hidden=16, layers=1, expansion=2.0, H_cycles=1, L_cycles=2))
    with torch.no_grad():
        model.embed_tokens.weight.fill_(3e38)
    q, a = _puzzles(3, 1)
    with pytest.warns(UserWarning, match="6 of 6 starts diverged"):
        report = evaluate(model, q, a, depth=8, breadth=2)
    assert report.diverged == 6
    assert all(math.isinf(r.mean_residual) for r in report.results)
    assert "6 of 6 starts diverged" in report.table()


def test_a_global_batch_smaller_than_the_ranks_is_refused(tmp_path, csv_path, capsys, monkeypatch):
    import reasoner.train_cli as strain
    monkeypatch.setattr(strain, "dist_info", lambda: (0, 4))  # as under torchrun with 4 ranks
    code, _, err = _run(["train", "--data", csv_path, "--out", str(tmp_path / "r"), "--batch-size",
                         "2", "--device", "cpu"], capsys)
    _bad(code, err, "--batch-size 2", "4 ranks")

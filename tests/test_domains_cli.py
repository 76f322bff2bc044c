"""`python -m domains`: bad input (output folder, device, value ranges, config) gets one `error:`
line and exit 2 before any data is made or any model trained."""
import pytest
import torch

import domains.__main__ as cli
from cli_run import run_cli


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started before the input was checked")
    monkeypatch.setattr(cli, "run_domain", refuse)


def _run(argv, capsys):
    code, _, err = run_cli(cli.main, argv, capsys)
    return code, err


def _bad(code, err, *words):
    assert code == 2, err
    assert "error:" in err and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


def test_output_folder_is_checked_before_training(tmp_path, capsys, no_training):
    (tmp_path / "afile").write_text("x")
    code, err = _run(["lp", "--out", str(tmp_path / "afile")], capsys)
    _bad(code, err, "--out", "is a file, not a directory")
    (tmp_path / "run" / "lp.png").mkdir(parents=True)  # where the plot goes: a folder
    code, err = _run(["all", "--out", str(tmp_path / "run")], capsys)
    _bad(code, err, "lp.png", "is a directory")


def test_devices_values_and_configs_are_checked_before_training(tmp_path, capsys, no_training,
                                                                 monkeypatch):
    out = ["--out", str(tmp_path / "run")]
    code, err = _run(["lp", "--device", "bogus"] + out, capsys)
    _bad(code, err, "--device 'bogus' is not a device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = _run(["lp", "--device", "cuda"] + out, capsys)
    _bad(code, err, "--device cuda: CUDA is not available")
    for flag, value in (("--train-steps", "0"), ("--train-iters", "-1"),
                        ("--eval-max-iters", "0"), ("--seed", "-2")):
        code, err = _run(["lp", flag, value] + out, capsys)
        _bad(code, err, flag, "must be")
    code, err = _run(["all", "--config", "huge"] + out, capsys)
    _bad(code, err, "config must be one of")

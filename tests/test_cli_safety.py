"""The shared CLI safety helpers (python/cli_safety): value ranges, device parsing, output-path
checks, atomic writes, the run-directory policy, the metrics-log cut and the signal stop."""
import argparse
import json
import os
import random
import signal

import pytest
import torch

from cli_safety.atomic_files import atomic_path, atomic_write
from cli_safety.devices import parse_device
from cli_safety.output_paths import check_output_dir, check_output_file, plot_suffixes
from cli_safety.run_dir import cut_log, plan_run_dir
from cli_safety.stop_signal import StopOnSignal
from cli_safety.values import Range


def test_range_parses_and_names_the_valid_range():
    positive = Range(int, min=1)
    assert positive("3") == 3
    for bad in ("0", "-3"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"an int >= 1, got " + bad):
            positive(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="an int >= 1, got '2.5'"):
        positive("2.5")
    unit = Range(float, min=0, max=1)
    assert unit("0.5") == 0.5
    for bad in ("1.5", "nan", "inf", "-0.1"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"a float in \[0, 1\]"):
            unit(bad)
    above = Range(float, above=0)
    with pytest.raises(argparse.ArgumentTypeError, match="a float > 0, got 0"):
        above("0")
    with pytest.raises(ValueError, match="lr must be a float > 0, got -1"):
        above.check("lr", -1.0)
    with pytest.raises(ValueError, match="n must be an int >= 1, got True"):
        positive.check("n", True)  # a bool is not a count
    p = argparse.ArgumentParser(prog="x")
    p.add_argument("--n", type=positive)
    assert p.parse_args(["--n", "4"]).n == 4


def test_parse_device_refuses_unknown_and_unavailable_devices(monkeypatch):
    assert parse_device("cpu") == "cpu"
    with pytest.raises(ValueError, match=r"--device 'bogus' is not a device \(expected cpu, cuda"):
        parse_device("bogus")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--device cuda: CUDA is not available"):
        parse_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert parse_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match="cuda:2: this machine has 2 CUDA devices"):
        parse_device("cuda:2")
    with pytest.raises(ValueError, match="--dev 'meta' is not a device to run on"):
        parse_device("meta", flag="--dev")


def test_output_file_checks_directory_parent_writability_and_extension(tmp_path):
    check_output_file(str(tmp_path / "new" / "deeper" / "a.png"), "--plot", plot_suffixes())
    assert not (tmp_path / "new").exists()  # checked, nothing created
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match=r"--plot .*afile/a.png: .*afile is a file, not a directory"):
        check_output_file(str(tmp_path / "afile" / "a.png"), "--plot", plot_suffixes())
    with pytest.raises(ValueError, match="--out .* is a directory; expected a file"):
        check_output_file(str(tmp_path), "--out")
    with pytest.raises(ValueError, match=r"--plot .*a\.xyz: unsupported extension '\.xyz' \(one of .*\.png"):
        check_output_file(str(tmp_path / "a.xyz"), "--plot", plot_suffixes())
    with pytest.raises(ValueError, match="no extension"):
        check_output_file(str(tmp_path / "plot"), "--plot", plot_suffixes())
    with pytest.raises(ValueError, match="--plot .*: cannot write in /proc"):
        check_output_file("/proc/a.png", "--plot", plot_suffixes())
    assert {".png", ".pdf", ".svg"} <= set(plot_suffixes())


def test_output_dir_checks(tmp_path):
    check_output_dir(str(tmp_path / "run"), "--out")
    assert not (tmp_path / "run").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="--out .*f is a file, not a directory"):
        check_output_dir(str(tmp_path / "f"), "--out")
    with pytest.raises(ValueError, match="--out .*: cannot write in /proc"):
        check_output_dir("/proc/run", "--out")


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(str(path)) as fh:
            fh.write("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]
    with atomic_write(str(path)) as fh:
        fh.write("new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["a.txt"]
    with atomic_path(str(tmp_path / "b.png")) as tmp:
        assert tmp.endswith(".png") and os.path.dirname(tmp) == str(tmp_path)
        open(tmp, "w").write("png")
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.png"]


def test_run_dir_policy(tmp_path):
    out = str(tmp_path / "run")
    plan = plan_run_dir(out, resume="never", overwrite=False)
    assert not plan.resume and not plan.start_over
    with pytest.raises(ValueError, match="--resume: no checkpoint .*ckpt.pt to resume from"):
        plan_run_dir(out, resume="required", overwrite=False)
    plan = plan_run_dir(out, resume="if_exists", overwrite=False)
    assert not plan.resume and "starting a new run" in plan.note
    os.makedirs(out)
    open(os.path.join(out, "metrics.jsonl"), "w").write('{"step": 1}\n')
    # A log without a checkpoint: a run stopped before its first checkpoint.
    with pytest.raises(ValueError, match="already holds a run.*metrics.jsonl.*--overwrite"):
        plan_run_dir(out, resume="never", overwrite=False)
    plan = plan_run_dir(out, resume="if_exists", overwrite=False)
    assert not plan.resume and plan.start_over
    open(os.path.join(out, "ckpt.pt"), "w").write("x")
    with pytest.raises(ValueError, match="already holds a run.*ckpt.pt.*--resume.*--overwrite"):
        plan_run_dir(out, resume="never", overwrite=False)
    assert plan_run_dir(out, resume="required", overwrite=False).resume
    assert plan_run_dir(out, resume="if_exists", overwrite=False).resume
    plan = plan_run_dir(out, resume="never", overwrite=True)
    assert plan.start_over and not plan.resume


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
def test_cut_log_keeps_rows_up_to_the_step_and_drops_a_torn_last_line(tmp_path, seed):
    rng = random.Random(seed)
    steps = sorted(rng.sample(range(1, 100), 12))
    cut = rng.choice(steps)
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(dict(step=s, loss=rng.random())) + "\n" for s in steps)
                    + '{"step": 10')  # a torn write
    kept = path.read_text().splitlines()[:steps.index(cut) + 1]
    dropped = cut_log(str(path), cut)
    assert path.read_text().splitlines() == kept, f"seed {seed}"
    assert dropped == len(steps) - len(kept) + 1
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match="metrics.jsonl line 2 is not a JSON row"):
        cut_log(str(path), 5)
    cut_log(str(tmp_path / "absent.jsonl"), 3)  # nothing to cut


def test_stop_on_signal_records_the_signal_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGINT)
    with StopOnSignal() as stop:
        assert not stop.requested and not stop.agreed()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # a second signal does not abort the save
        assert stop.requested and stop.agreed()
        assert stop.signal_name == "SIGTERM" and stop.exit_code == 143
    assert signal.getsignal(signal.SIGINT) is before

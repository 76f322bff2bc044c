"""Ctrl-C during `python -m sudoku train` loses nothing: the run saves a checkpoint at the next
batch boundary, says how to resume and exits 130, and `--resume` then ends with the same
weights, EMA, optimizer state and metrics log (no duplicate rows) as an uninterrupted run.
Alone and as two gloo processes (torchrun's environment), the signal sent to one rank only."""
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from sudoku import data as sdata
from sudoku.__main__ import main as sudoku_main
from sudoku.tokens import decode

ROOT = Path(__file__).resolve().parents[1]
STEPS = 30
ARGS = ["--hidden", "16", "--layers", "1", "--batch-size", "4", "--supervision-steps", "2",
        "--warmup", "2", "--checkpoint-every", "10", "--steps", str(STEPS), "--device", "cpu"]


def _write_data(path, seed):
    gen = torch.Generator().manual_seed(seed)
    r, c = torch.arange(9)[:, None], torch.arange(9)[None, :]
    base = ((r * 3 + r // 3 + c) % 9).flatten()
    answers = torch.stack([torch.randperm(9, generator=gen)[base] + 2 for _ in range(12)])
    q = torch.where(torch.rand(12, 81, generator=gen) < 0.5, torch.ones_like(answers), answers)
    sdata.write_csv(str(path), [("t", decode(x.numpy()), decode(y.numpy()), 0)
                                for x, y in zip(q, answers)])


def _free_ports(n):
    """n distinct free ports (the sockets stay open until all are picked)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _launch(argv):
    """`python -m sudoku train argv` as a process of its own, one thread."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "python")]))
    return subprocess.Popen([sys.executable, "-m", "sudoku", "train"] + argv, env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _in_process(argv):
    """`python -m sudoku train argv` in this process, one thread as in the launched ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sudoku_main(["train"] + argv)
    finally:
        torch.set_num_threads(threads)


def _logged_step(path):
    try:
        rows = open(path).read().splitlines()
        return json.loads(rows[-1])["step"] if rows else 0
    except (OSError, ValueError, IndexError):
        return 0


def _plan(seed, world):
    rng = random.Random(seed)
    at_step, target = rng.randrange(2, STEPS // 2), rng.randrange(world)
    return at_step, target, f"seed {seed}: SIGINT to rank {target} once step {at_step} is logged"


def _wait_and_signal(log, procs, pid, at_step, note):
    deadline = time.monotonic() + 120
    while _logged_step(log) < at_step:
        assert time.monotonic() < deadline and all(alive() for alive in procs), note
        time.sleep(0.01)
    os.kill(pid, signal.SIGINT)


def _compare(straight, cut, at_step, interrupted_at, note):
    assert at_step <= interrupted_at < STEPS, note
    want = torch.load(straight / "ckpt.pt", weights_only=False)
    got = torch.load(cut / "ckpt.pt", weights_only=False)
    assert got["step"] == want["step"] == STEPS
    for key in ("model", "ema"):
        for name, value in want[key].items():
            torch.testing.assert_close(got[key][name], value, rtol=0, atol=0,
                                       msg=lambda m: f"{key}.{name}: {m} ({note})")
    for k, state in want["optimizer"]["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(got["optimizer"]["state"][k][name], value, rtol=0, atol=0,
                                       msg=lambda m: f"optimizer {k}.{name}: {m} ({note})")
    rows = (cut / "metrics.jsonl").read_text().splitlines()
    assert rows == (straight / "metrics.jsonl").read_text().splitlines(), note
    steps = [json.loads(r)["step"] for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS, note


def test_sigint_saves_and_resume_matches_an_uninterrupted_run(tmp_path):
    seed = random.randrange(2**31)
    at_step, _, note = _plan(seed, 1)
    data, straight, cut = tmp_path / "p.csv", tmp_path / "straight", tmp_path / "cut"
    _write_data(data, seed)
    _in_process(["--data", str(data), "--out", str(straight)] + ARGS)
    # The interrupted run is a process of its own: the real signal, exit code and messages.
    proc = _launch(["--data", str(data), "--out", str(cut)] + ARGS)
    _wait_and_signal(cut / "metrics.jsonl", [lambda: proc.poll() is None], proc.pid, at_step, note)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130 and "Traceback" not in err, f"{note}\n{err}"
    saved = torch.load(cut / "ckpt.pt", weights_only=False)["step"]
    assert f"interrupted (SIGINT) at step {saved}: saved" in err, err
    assert "resume with: python -m sudoku train --data" in err and err.rstrip().endswith("--resume")
    _in_process(["--data", str(data), "--out", str(cut), "--resume"] + ARGS)
    _compare(straight, cut, at_step, saved, note)


def _rank_worker(rank, world, ports, tmp):
    """Rank `rank` of the three runs, each as torchrun would start it (its own rendezvous port):
    uninterrupted, interrupted (the test signals one rank), resumed; exit codes and stderr go
    to tmp/rank{r}.json."""
    import io
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1")
    torch.set_num_threads(1)
    data = os.path.join(tmp, "p.csv")
    results = []
    runs = (("straight", []), ("cut", []), ("cut", ["--resume"]))
    for (out, extra), port in zip(runs, ports):
        os.environ["MASTER_PORT"] = str(port)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                sudoku_main(["train", "--data", data, "--out", os.path.join(tmp, out)] + ARGS + extra)
                code = 0
            except SystemExit as e:
                code = e.code
        results.append(dict(code=code, err=err.getvalue()))
        # Each command starts its own process group and tears it down on the way out.
        assert not dist.is_initialized(), f"rank {rank}: {out} {extra} left its process group"
    with open(os.path.join(tmp, f"rank{rank}.json"), "w") as fh:
        json.dump(results, fh)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_sigint_to_one_of_two_gloo_ranks_stops_both_at_one_step_and_resumes_exactly(tmp_path):
    import torch.multiprocessing as mp
    seed = random.randrange(2**31)
    at_step, target, note = _plan(seed, 2)
    _write_data(tmp_path / "p.csv", seed)
    ctx = mp.start_processes(_rank_worker, args=(2, _free_ports(3), str(tmp_path)), nprocs=2,
                             join=False, start_method="spawn")
    straight_done = lambda: (tmp_path / "cut" / "metrics.jsonl").exists()  # noqa: E731
    deadline = time.monotonic() + 120
    while not straight_done():  # the uninterrupted run first, then the one to interrupt
        assert time.monotonic() < deadline and all(p.is_alive() for p in ctx.processes), note
        time.sleep(0.01)
    _wait_and_signal(tmp_path / "cut" / "metrics.jsonl", [p.is_alive for p in ctx.processes],
                     ctx.processes[target].pid, at_step, note)
    deadline = time.monotonic() + 300
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:  # a hung rank fails the test instead of hanging CI
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{note}: the ranks were still running after 300 s")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    saved = None
    for rank, (straight, cut, resumed) in enumerate(ranks):
        assert straight["code"] == resumed["code"] == 0, (note, straight["err"], resumed["err"])
        assert cut["code"] == 130, f"{note}: rank {rank}\n{cut['err']}"
        assert "Traceback" not in cut["err"], cut["err"]
    err0 = ranks[0][1]["err"]
    saved = int(err0.split("interrupted (SIGINT) at step ")[1].split(":")[0])
    assert "resume with: torchrun --nproc-per-node 2 -m sudoku train" in err0, err0
    _compare(tmp_path / "straight", tmp_path / "cut", at_step, saved, note)

"""What the signal-safe stop costs a DDP training run: one flag all-reduce per batch.

What it measures. Two gloo ranks (one thread each) train the Sudoku reasoner (reasoner.train's
Trainer, random valid puzzles) and time, in the same run:
  batch ms       one batch of deep supervision (train_batch: up to supervision_steps optimizer
                 steps, each with DDP's gradient all-reduce), median over --batches;
  agreement us   StopOnSignal.agreed(): the MAX all-reduce of the stop flag every rank makes
                 once per batch, median over --calls back-to-back calls;
  overhead       agreement / batch, the fraction a run pays for the stop check.
Rows: the configs named by --configs, hidden x batch x supervision steps.

Run (from the repository root):

    python benchmarks/bench_stop_agreement.py
    python benchmarks/bench_stop_agreement.py --configs 16x4x2,64x32x16 \
        --out benchmarks/results/stop_agreement_cpu.md
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time

import torch

from timing import environment_lines, parse_sizes, report, use_repo_checkout

use_repo_checkout()
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402


def _puzzles(n, gen):
    r, c = torch.arange(9)[:, None], torch.arange(9)[None, :]
    base = ((r * 3 + r // 3 + c) % 9).flatten()
    answers = torch.stack([torch.randperm(9, generator=gen)[base] + 2 for _ in range(n)])
    blanks = torch.rand(n, 81, generator=gen) < 0.5
    return torch.where(blanks, torch.ones_like(answers), answers), answers


def _worker(rank, world, port, configs, batches, calls, out):
    from cli_safety.stop_signal import StopOnSignal
    from reasoner.model import Reasoner, ReasonerConfig
    from sudoku.tokens import CELLS, VOCAB_SIZE
    from reasoner.train import TrainConfig, Trainer
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    rows = []
    try:
        for hidden, batch, segments in configs:
            torch.manual_seed(0)
            q, a = _puzzles(max(4 * batch, 64), torch.Generator().manual_seed(1))
            model = Reasoner(ReasonerConfig(seq_len=CELLS, vocab=VOCAB_SIZE, hidden=hidden,
                                            layers=2, H_cycles=1, L_cycles=2))
            cfg = TrainConfig(batch_size=batch, steps=10**9, supervision_steps=segments,
                              warmup=1, augment=False)
            with tempfile.TemporaryDirectory() as tmp:
                trainer = Trainer(model, q, a, cfg, tmp)
                stop = StopOnSignal(signals=())  # the check alone: no handlers installed
                trainer.train_batch()  # warm-up
                stop.agreed()
                batch_s = []
                for _ in range(batches):
                    dist.barrier()
                    t0 = time.perf_counter()
                    trainer.train_batch()
                    batch_s.append(time.perf_counter() - t0)
                dist.barrier()
                agree_s = []
                for _ in range(calls):
                    t0 = time.perf_counter()
                    stop.agreed()
                    agree_s.append(time.perf_counter() - t0)
            rows.append((hidden, batch, segments, statistics.median(batch_s),
                         statistics.median(agree_s)))
    finally:
        dist.destroy_process_group()
    if rank == 0:
        torch.save(rows, out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="16x4x2,64x32x16",
                   help="hidden x batch x supervision steps, comma-separated")
    p.add_argument("--batches", type=int, default=5)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--out", default=None, help="also write the table as markdown here")
    args = p.parse_args()
    configs = parse_sizes(args.configs, 3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.pt")
        mp.spawn(_worker, args=(2, port, configs, args.batches, args.calls, out), nprocs=2)
        rows = torch.load(out)
    torch.set_num_threads(1)
    header = ["Stop-flag agreement per batch vs the batch, 2 gloo ranks x 1 thread"] + \
        environment_lines(torch.device("cpu"))
    table = [[f"{h}x{b}x{s}", f"{bt * 1e3:.1f}", f"{at * 1e6:.0f}", f"{at / bt:.3%}"]
             for h, b, s, bt, at in rows]
    report(header, ["hidden x batch x segments", "batch ms", "agreement us", "overhead"], table,
           ["batch: one train_batch (deep supervision, DDP) per rank, median; agreement: one "
            "StopOnSignal.agreed() (a 1-element MAX all-reduce), median; overhead = agreement / "
            "batch. The other helpers' jobs shared the 2 cores."], out=args.out)


if __name__ == "__main__":
    main()

"""Peak memory of one training step: implicit backward vs an autograd-unrolled loop.

What it measures. One training step (forward solve + backward + nothing else) of a
DEQ whose block is tanh(z W^T + x U^T) over (B, n), run for max_iter steps of the
damped loop (damping 0.9, noise 0.01, so every run takes exactly max_iter steps), by
  implicit   eqkernels.DEQ(solver="damped", backward="implicit"): the forward keeps
             no graph, the adjoint solve (capped at 1,000 steps) keeps none either;
  unrolled   the same loop written in PyTorch with autograd recording every step.
For each it prints
  saved MiB  bytes autograd saved for backward (torch.autograd.graph.saved_tensors_hooks);
  peak MiB   growth of the process's peak resident memory over the step (VmHWM, reset
             before the step through /proc/self/clear_refs; Linux only, else "-").
The unrolled loop is skipped above --max-unrolled steps (it grows linearly).

Run (from the repository root):

    python benchmarks/bench_training_memory.py
    python benchmarks/bench_training_memory.py --iters 10,1000,40000 --batch 64 --width 256
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

from timing import environment_lines, report, use_repo_checkout, vm_kib

use_repo_checkout()

import eqkernels  # noqa: E402

DAMPING, SIGMA = 0.9, 0.01


class TanhBlock(nn.Module):
    def __init__(self, n):
        super().__init__()
        W = torch.randn(n, n)
        self.W = nn.Parameter(W * (0.8 / torch.linalg.matrix_norm(W, ord=2)))
        self.U = nn.Parameter(torch.randn(n, n) / n ** 0.5)

    def forward(self, z, x):
        return torch.tanh(z @ self.W.T + x @ self.U.T)


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def measure(step):
    """(saved MiB, peak-growth MiB or None) of running step()."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    can_peak = _reset_peak()
    before = vm_kib("VmRSS")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    peak = vm_kib("VmHWM") if can_peak else None
    growth = None if peak is None or before is None else (peak - before) / 1024
    return saved[0] / 2**20, growth


def implicit_step(block, x, iters):
    deq = eqkernels.DEQ(block, solver="damped", max_iter=iters, tol=1e-30, backward="implicit",
                        backward_max_iter=min(iters, 1000),
                        solver_kwargs=dict(damping=DAMPING, noise_std=SIGMA, seed=0))
    z, _ = deq(x)
    z.square().mean().backward()


def unrolled_step(block, x, iters):
    z = torch.zeros_like(x)
    for _ in range(iters):
        z = (1 - DAMPING) * z + DAMPING * block(z, x) + SIGMA * torch.randn_like(z)
    z.square().mean().backward()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", default="10,1000,40000")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--max-unrolled", type=int, default=5000,
                   help="skip the unrolled loop above this many steps")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    block = TanhBlock(args.width)
    x = torch.randn(args.batch, args.width)
    implicit_step(block, x, 5)  # warm-up: kernels, imports
    unrolled_step(block, x, 5)
    rows = []
    for iters in (int(s) for s in args.iters.split(",")):
        imp = measure(lambda: implicit_step(block, x, iters))
        unr = (measure(lambda: unrolled_step(block, x, iters)) if iters <= args.max_unrolled
               else None)
        fmt = lambda v: "-" if v is None else f"{v:.2f}"
        rows.append([str(iters), fmt(imp[0]), fmt(imp[1]),
                     "skipped" if unr is None else fmt(unr[0]),
                     "skipped" if unr is None else fmt(unr[1])])
        print(f"  max_iter={iters}: implicit saved {fmt(imp[0])} MiB peak +{fmt(imp[1])} MiB; "
              f"unrolled " + ("skipped" if unr is None else
                              f"saved {fmt(unr[0])} MiB peak +{fmt(unr[1])} MiB"), flush=True)
    headers = ["max_iter", "implicit saved MiB", "implicit peak MiB", "unrolled saved MiB",
               "unrolled peak MiB"]
    header = ["Training-step memory: implicit backward vs autograd unroll",
              *environment_lines(torch.device("cpu")),
              f"block tanh(z W^T + x U^T), B={args.batch}, n={args.width}, float32, damped loop "
              f"(damping {DAMPING}, noise {SIGMA}); adjoint capped at 1000 steps"]
    notes = ["saved = bytes autograd kept for backward; peak = growth of peak RSS over the step."]
    report(header, headers, rows, notes, args.out)


if __name__ == "__main__":
    main()

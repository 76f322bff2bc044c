"""Long-run loop of an equilibrium-reasoner-shaped block: plain PyTorch loop vs eqkernels.

What it measures. The block is two post-norm transformer-MLP layers over (B, 81, 512)
tokens (h <- RMSNorm(h + SwiGLU(h)), twice), run as

    z <- (1 - lam) z + lam * block(z + injection) + sigma * eps,   lam = 0.95, sigma = 0.01

for N steps, by
  (a) eager    the loop as reference EqR-style code writes it: the update with
               torch.randn_like, per-sample step norms, and a `.item()` halting test
               every step;
  (b) ours     eqkernels.damped: the same update, norms and halting mask in one fused
               op, the host looking at the halting flag every check_every steps;
  (c) ours+graphs  eqkernels.damped(cuda_graph=True): segments of 16 steps of block +
               fused update captured once as a CUDA graph and replayed (on a CPU the
               same segments run uncaptured: the column then measures segment overhead).
Both run the same block on the same data (fp32 on CPU, bf16 autocast on CUDA) and
do the same number of block calls (the tolerance is never met: sigma > 0).
It prints steps/s of each and the ratio ours/eager. Issue targets: >= 1 on CPU (no
slower); >= 3 on a GPU at B = 64.

Step count. Every loop is first run untimed (compilation, cuBLAS set-up, one graph
capture), then one K-step segment of the eager loop is timed to pick N for about
--seconds of work. N is a whole number of K-step graph segments (K = --graph-steps,
damped's default) and at least --min-segments of them, so the graph column amortises
its one capture and never times a partial segment; a row timed over fewer steps is
refused (exit 2), not reported.

Run (from the repository root):

    python benchmarks/bench_block_loop.py                      # B in 1, 64, 512 on CPU
    python benchmarks/bench_block_loop.py --batches 1,64 --seconds 5
    python benchmarks/bench_block_loop.py --device cuda --out benchmarks/results/block_loop_h100.md
"""
from __future__ import annotations

import argparse
import inspect
import sys

import torch
from torch import nn

from timing import (environment_lines, median, report, setup_device, time_call,
                    use_repo_checkout)

use_repo_checkout()

import eqkernels  # noqa: E402

TOKENS, WIDTH = 81, 512
DAMPING, SIGMA = 0.95, 0.01
TOL = 1e-30  # never met with noise: both loops run exactly N steps
GRAPH_STEPS = inspect.signature(eqkernels.damped).parameters["graph_steps"].default
MIN_SEGMENTS = 4  # a timed run is at least this many whole graph segments


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, h):
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SwiGLU(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.gate_up = nn.Linear(d, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d, bias=False)

    def forward(self, h):
        gate, up = self.gate_up(h).chunk(2, dim=-1)
        return self.down(nn.functional.silu(gate) * up)


class ReasonerBlock(nn.Module):
    """Two post-norm SwiGLU layers: h <- norm(h + mlp(h))."""

    def __init__(self, d=WIDTH, hidden=4 * WIDTH * 2 // 3, layers=2):
        super().__init__()
        self.mlps = nn.ModuleList(SwiGLU(d, hidden) for _ in range(layers))
        self.norms = nn.ModuleList(RMSNorm(d) for _ in range(layers))

    def forward(self, h):
        for mlp, norm in zip(self.mlps, self.norms):
            h = norm(h + mlp(h))
        return h


def eager_loop(block, z0, inj, steps, autocast):
    """The loop as plain PyTorch code writes it (one host sync per step for halting)."""
    z = z0.clone()
    for _ in range(steps):
        with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=autocast):
            f_out = block(z + inj).float()
        z_next = (1 - DAMPING) * z + DAMPING * f_out + SIGMA * torch.randn_like(z)
        step_norm = (z_next - z).flatten(1).norm(dim=1)
        z = z_next
        if bool((step_norm < TOL).all()):  # .item(): the per-step sync
            break
    return z


def our_loop(block, z0, inj, steps, autocast, backend, graphs=False, graph_steps=GRAPH_STEPS):
    B = z0.shape[0]

    def f(z_flat):
        with torch.autocast(z_flat.device.type, dtype=torch.bfloat16, enabled=autocast):
            return block(z_flat.view(B, TOKENS, WIDTH) + inj).float().reshape(B, -1)

    z, info = eqkernels.damped(f, z0.reshape(B, -1), max_iter=steps, tol=TOL, damping=DAMPING,
                               noise_std=SIGMA, seed=0, backend=backend, cuda_graph=graphs,
                               graph_steps=graph_steps)
    return z, info


def min_steps(args):
    """The fewest steps a reported row may be timed over: --min-segments whole segments."""
    return args.min_segments * args.graph_steps


def pick_steps(args, seconds_per_step):
    """N: --steps, or about --seconds of work; a whole number of graph segments, at least
    min_steps(args). Raises ValueError where --steps / --max-steps ask for fewer."""
    K, low = args.graph_steps, min_steps(args)
    if args.steps is not None:
        steps = args.steps
    else:
        want = int(args.seconds / max(seconds_per_step, 1e-9))
        steps = max(low, min(args.max_steps // K * K, -(-want // K) * K))
    if steps < low or steps % K:
        raise ValueError(f"{steps} steps is not a whole number of >= {args.min_segments} "
                         f"segments of {K} steps (--min-segments x --graph-steps = {low}); "
                         f"fewer would time warm-up and capture, not the loop")
    return steps


def run_batch(B, args, device):
    torch.manual_seed(args.seed)
    block = ReasonerBlock(WIDTH, 4 * WIDTH * 2 // 3).to(device)
    inj = torch.randn(B, TOKENS, WIDTH, device=device)
    z0 = torch.randn(B, TOKENS, WIDTH, device=device)
    autocast = device.type == "cuda"
    K = args.graph_steps
    with torch.no_grad():
        backend, graph_mode = [None], [None]

        def eager(steps):
            return eager_loop(block, z0, inj, steps, autocast)

        def ours(steps):
            _, info = our_loop(block, z0, inj, steps, autocast, args.backend, graph_steps=K)
            backend[0] = info.backend

        def ours_graphs(steps):
            _, info = our_loop(block, z0, inj, steps, autocast, args.backend, graphs=True,
                               graph_steps=K)
            graph_mode[0] = info.extra["cuda_graph"].split(" (")[0]

        # Untimed warm-up of all three (kernel compilation, cuBLAS handles, autocast caches,
        # the graph path's warm-up segment and capture), THEN the calibration: a first call
        # once picked 3 steps at B=1, fewer than one graph segment.
        for fn in (eager, ours, ours_graphs):
            fn(2 * K)
        per_step = time_call(lambda: eager(K), device)[0] / K
        steps = pick_steps(args, per_step)
        eager_t, ours_t, graphs_t = [], [], []
        for _ in range(args.repeats):  # interleaved, so load drift hits all alike
            eager_t.append(time_call(lambda: eager(steps), device)[0])
            ours_t.append(time_call(lambda: ours(steps), device)[0])
            graphs_t.append(time_call(lambda: ours_graphs(steps), device)[0])
    eager_rate, ours_rate = steps / median(eager_t), steps / median(ours_t)
    graphs_rate = steps / median(graphs_t)
    ratio = ours_rate / eager_rate
    target = 1.0 if device.type == "cpu" else (3.0 if B == 64 else None)
    verdict = "-" if target is None else f">= {target:g} {'ok' if ratio >= target else 'MISS'}"
    print(f"  B={B}: {steps} steps ({steps // K} segments of {K}), backend {backend[0]}, "
          f"eager {eager_rate:.2f} steps/s, ours {ours_rate:.2f} steps/s, "
          f"ours+graphs {graphs_rate:.2f} steps/s ({graph_mode[0]})", flush=True)
    return [str(B), str(steps), backend[0], f"{eager_rate:.2f}", f"{ours_rate:.2f}",
            f"{ratio:.3f}", f"{graphs_rate:.2f}", f"{graphs_rate / eager_rate:.3f}",
            graph_mode[0], verdict]


HEADERS = ["B", "steps", "backend", "eager steps/s", "ours steps/s", "ours/eager",
           "ours+graphs steps/s", "graphs/eager", "graph mode", "target (ours/eager)"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="1,64,512", help="comma-separated B list")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--backend", default="auto", help="eqkernels backend for the epilogue")
    p.add_argument("--steps", type=int, default=None,
                   help="steps per timed run (default: about --seconds of work); a multiple "
                        "of --graph-steps, at least --min-segments of them")
    p.add_argument("--graph-steps", type=int, default=GRAPH_STEPS,
                   help=f"K, steps per CUDA-graph segment (default {GRAPH_STEPS}, damped's)")
    p.add_argument("--min-segments", type=int, default=MIN_SEGMENTS,
                   help=f"fewest whole segments a row is timed over (default {MIN_SEGMENTS})")
    p.add_argument("--seconds", type=float, default=2.0, help="target seconds per timed run")
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokens", type=int, default=TOKENS, help="tokens per sample (81)")
    p.add_argument("--width", type=int, default=WIDTH, help="hidden width (512)")
    p.add_argument("--out", default=None, help="also write the table as markdown here")
    return p.parse_args(argv)


def main(argv=None):
    global TOKENS, WIDTH
    args = parse_args(argv)
    TOKENS, WIDTH = args.tokens, args.width
    if args.graph_steps < 1 or args.min_segments < 1:
        sys.exit("error: --graph-steps and --min-segments must be >= 1")
    try:
        if args.steps is not None:
            pick_steps(args, 1.0)  # refuse a too-short --steps before any work
        if args.max_steps < min_steps(args):
            raise ValueError(f"--max-steps {args.max_steps} is below the minimum "
                             f"{min_steps(args)} (--min-segments x --graph-steps)")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    device = setup_device(args.device, args.threads)
    print("Running...", flush=True)
    rows = [run_batch(int(b), args, device) for b in args.batches.split(",") if b.strip()]
    header = ["Long-run loop: plain PyTorch eager loop vs eqkernels.damped",
              *environment_lines(device),
              f"block: 2 x post-norm RMSNorm + SwiGLU over (B, {TOKENS}, {WIDTH}), "
              f"{'bf16 autocast' if device.type == 'cuda' else 'fp32'}; damping {DAMPING}, "
              f"sigma {SIGMA}; median of {args.repeats} interleaved runs after an untimed warm-up; "
              f"steps: whole {args.graph_steps}-step graph segments, at least "
              f"{args.min_segments} of them"]
    notes = ["ours/eager = steps/s of eqkernels.damped over the eager loop's, same run; "
             "targets: >= 1 on CPU, >= 3 at B=64 on a GPU. graphs/eager: "
             "eqkernels.damped(cuda_graph=True) over the eager loop ('graph mode' says whether "
             "it was captured)."]
    report(header, HEADERS, rows, notes, args.out)


if __name__ == "__main__":
    main()

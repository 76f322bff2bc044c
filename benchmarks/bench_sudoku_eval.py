"""Sudoku evaluation throughput: block applications per second at breadth B, and the time a
1,000-puzzle x breadth-8 x 40,000-layer evaluation would take at that rate.

The model is the recipe's (hidden 512, 2 layers, H3/L6, token MLP) with random weights (the
throughput does not depend on the weights); the puzzles are random boards (tokens 1..10).
Loops (--loops) run the same reasoning steps on the same starts, interleaved:
  eager         the EqR-style loop: each update written in plain PyTorch,
                z = (1 - damping) z + damping * blocks(z + inj) + noise_std * randn_like(z);
  ours          reasoner.reasoning.reasoning_steps, kernels="eager" (the eager block, every
                update through eqk.LoopedUpdate, in place), no CUDA graphs;
  fused         the same with kernels="fused" (the fused block ops);
  fused_graphs  kernels="fused", each segment of --steps steps one CUDA-graph replay;
  compile       kernels="compile" (each step under torch.compile(fullgraph=True)).
Each of our loops is one evaluation run at full depth (no halting: every call does the same
work) whose generator is advanced --steps steps (one segment) per timed call; the warm-up
calls (compiles, Triton JIT, the graph loop's warm-up segment and capture) are not timed.
A block application is one pass of the layer stack over one start's (81, hidden) latent; a
reasoning step is H_cycles x (L_cycles + 1) of them; "layers" counts each of the stack's
layers (EqR's 40,000-layer runs), so one block application is cfg.layers layers.

    python benchmarks/bench_sudoku_eval.py --device cuda --puzzles 1000 --breadth 8
    python benchmarks/bench_sudoku_eval.py --dry-run        # tiny sizes, CPU (CI)
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from timing import (REPO_ROOT, environment_lines, measure, median, report, setup_device,
                    synchronize, use_repo_checkout)

use_repo_checkout()
sys.path.insert(0, os.path.join(REPO_ROOT, "python"))  # the domain models live in python/

from reasoner import model as model_mod  # noqa: E402
from reasoner.model import Reasoner, ReasonerConfig  # noqa: E402
from sudoku.tokens import CELLS, VOCAB_SIZE  # noqa: E402
from reasoner.reasoning import reasoning_steps  # noqa: E402

TARGET = dict(puzzles=1000, breadth=8, layers=40_000, minutes=6)
LOOPS = ("eager", "ours", "fused", "fused_graphs", "compile")
DEFAULT_LOOPS = {"cpu": "eager,ours", "cuda": ",".join(LOOPS)}


def eager_steps(model: Reasoner, tokens, starts, steps: int) -> torch.Tensor:
    """The plain-PyTorch loop of the same reasoning steps; returns the final predictions."""
    cfg = model.cfg
    h, l = (t.clone() for t in starts)
    x = model.embed(tokens)

    def update(z, inj):
        out = model.L_level(z + inj)
        return (1 - cfg.damping) * z + cfg.damping * out + cfg.noise_std * torch.randn_like(z)

    for _ in range(steps):
        for _ in range(cfg.H_cycles):
            for _ in range(cfg.L_cycles):
                l = update(l, h + x)
            h = update(h, l)
    return model.heads(h)[0].argmax(-1)


def our_loop(model: Reasoner, name: str, tokens, starts, steps: int, timed: int):
    """A function advancing one full-depth evaluation run of loop `name` by `steps` reasoning
    steps per call, warmed up here (the graph loop: a warm-up segment, then its capture), with
    `timed` calls left; returns the latest predictions."""
    model.kernels = "eager" if name == "ours" else "fused" if name.startswith("fused") else name
    graphs = name == "fused_graphs"
    warm = 2 if graphs else 1
    run = reasoning_steps(model, tokens, starts, depth=steps * (timed + warm), full_depth=True,
                          seed=0, graphs=graphs, segment_steps=steps)

    def advance():
        for _ in range(steps):
            record = next(run)
        return record.pred
    for _ in range(warm):  # the path is fixed once the run starts: model.kernels may change
        advance()
    return advance


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="latent dtype (default: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--puzzles", type=int, default=1000)
    p.add_argument("--breadth", type=int, default=8)
    p.add_argument("--steps", type=int, default=2, help="reasoning steps timed per call")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--loops", default=None, help=f"comma list of {', '.join(LOOPS)} "
                   f"(default: {DEFAULT_LOOPS['cpu']} on CPU, all on CUDA and in a dry run)")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of the compile loop (a dry run: aot_eager)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dry-run", action="store_true", help="tiny sizes: checks the plumbing")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.compile_backend not in torch._dynamo.list_backends(exclude_tags=()):
        p.error(f"--compile-backend: unknown {args.compile_backend!r}; choose from "
                f"{torch._dynamo.list_backends(exclude_tags=())}")
    if args.dry_run:
        args.puzzles, args.breadth, args.steps, args.hidden, args.repeats = 4, 2, 1, 32, 1
        if args.compile_backend == "inductor":
            args.compile_backend = "aot_eager"
    device = setup_device(args.device, args.threads)
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    loops = (args.loops or DEFAULT_LOOPS["cuda" if args.dry_run or device.type == "cuda"
                                         else "cpu"]).split(",")
    if [q for q in loops if q not in LOOPS] or "eager" not in loops:
        p.error(f"--loops: a comma list of {LOOPS} including eager (the baseline), got {args.loops!r}")
    model_mod.set_compile_backend(args.compile_backend)

    torch.manual_seed(0)
    cfg = ReasonerConfig(seq_len=CELLS, vocab=VOCAB_SIZE, hidden=args.hidden, latent_dtype=dtype)
    model = Reasoner(cfg).to(device).eval()
    n = args.puzzles * args.breadth
    tokens = torch.randint(1, 11, (n, cfg.seq_len), device=device)
    starts = model.initial_carry(n, device)
    per_step = cfg.H_cycles * (cfg.L_cycles + 1)
    applications = n * args.steps * per_step

    rows, rates, warm = [], {}, {}
    with torch.no_grad():
        calls, failed = {}, {}
        for name in loops:
            t0 = time.perf_counter()
            try:
                if name == "eager":
                    calls[name] = lambda: eager_steps(model, tokens, starts, args.steps)
                    calls[name]()
                else:
                    calls[name] = our_loop(model, name, tokens, starts, args.steps, args.repeats)
                synchronize(device)
            except Exception as err:  # noqa: BLE001 -- reported, the other loops go on
                if name == "eager":
                    raise
                calls.pop(name, None)
                failed[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                print(f"{name}: FAILED ({failed[name]})", flush=True)
                continue
            warm[name] = time.perf_counter() - t0
        times = {name: [] for name in calls}
        for _ in range(args.repeats):  # interleaved, so drift hits all alike
            for name in calls:
                times[name] += measure(calls[name], device, warmup=0, repeats=1)
    for name in calls:
        seconds = median(times[name])
        rates[name] = applications / seconds
        total_layers = TARGET["puzzles"] * TARGET["breadth"] * TARGET["layers"]
        minutes = total_layers / cfg.layers / rates[name] / 60
        rows.append([name, f"{seconds * 1e3:.1f}", f"{rates[name]:,.0f}",
                     f"{rates[name] * cfg.layers:,.0f}", f"{minutes:,.1f}",
                     f"{rates[name] / rates['eager']:.2f}", f"{warm[name]:.1f}"])
    header = [f"Sudoku eval throughput ({device.type}, {dtype})", *environment_lines(device),
              f"model: hidden {cfg.hidden}, {cfg.layers} layers, H{cfg.H_cycles}/L{cfg.L_cycles}, "
              f"token MLP; {args.puzzles} puzzles x breadth {args.breadth} = {n} starts, "
              f"{args.steps} reasoning steps ({per_step} block applications each) per timed call, "
              f"median of {args.repeats}; compile backend {args.compile_backend}"
              + (" (dry run: tiny sizes)" if args.dry_run else "")]
    notes = [f"extrapolated: {TARGET['puzzles']} puzzles x breadth {TARGET['breadth']} x "
             f"{TARGET['layers']:,} layers at the measured rate (goal <= {TARGET['minutes']} "
             f"minutes on one GPU); ratio = rate / eager's rate in the same run; warm-up: the "
             f"untimed first call (compiles, Triton JIT, graph capture)."]
    notes += [f"{name} FAILED: {why}" for name, why in failed.items()]
    report(header, ["loop", "ms / call", "block apps / s", "layers / s", "extrapolated min",
                    "vs eager", "warm-up s"], rows, notes, args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

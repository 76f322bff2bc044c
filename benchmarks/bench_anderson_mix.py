"""Kernel microbenchmark of the fused Anderson step (`anderson_step`) alone, per backend.

What it measures. For each backend usable on the device (cpu: reference, cpp, and
triton only under TRITON_INTERPRET=1 with --include-interpreted; cuda: reference,
triton, cuda) and each size (B, n, m), it builds a realistic mid-solve state -- every
sample active, history full (count >= m), residuals far above tol (tol = 1e-30) and
restart_growth = inf, so nobody converges or restarts -- and times single calls of the
backend's step function (resolved once, as the solver does) with z_out a separate
buffer, so z, f(z) stay fixed and the state stays valid call after call (only nstep,
count and the ring-buffer slot advance). After timing it checks that this held
(all still active, count advanced by exactly the number of calls), and that the
backend's first step agreed with the reference's on an identical state.

Reported per row: median time per step, and effective bandwidth = bytes / time with
bytes = (2m + 5) * B * n * itemsize: the history X and G read once (2m), z and f(z)
read once (2), z_out and the new X and G slots written once (3). Other traffic (the
Gram matrix, best_z when the residual improves -- it does not here after the first
call) is not counted. The device's copy bandwidth (dst.copy_(src) on a large tensor,
2 * bytes / time; CUDA events on a GPU) is measured too and each row shows its
fraction of it; the GPU target is >= 70% of copy bandwidth for B * n >= 1M.
On CUDA the L2 cache is flushed before each timed call (--no-flush-cache to keep it).
On the CPU, "cpp-bound" is the same kernel called as the eager solver loop calls it: the step
bound once to the state (bind_anderson_step), one pybind11 call per step instead of a
dispatcher call with 16 tensors. It updates z in place, so z is restored (untimed) before
each call; the difference between its row and "cpp" is the dispatcher's cost.

Run (from the repository root):

    python benchmarks/bench_anderson_mix.py
    python benchmarks/bench_anderson_mix.py --sizes 8x128x6,64x256x6 --backends cpp
    TRITON_INTERPRET=1 python benchmarks/bench_anderson_mix.py --include-interpreted --sizes 8x128x6
    python benchmarks/bench_anderson_mix.py --device cuda --out benchmarks/results/anderson_mix_h100.md
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

import torch

from timing import (copy_bandwidth, environment_lines, fmt_us, measure, median, parse_sizes,
                    report, setup_device, spread, synchronize, use_repo_checkout)

use_repo_checkout()

from eqkernels import _backends  # noqa: E402
from eqkernels.ops.anderson_mix import (AndersonHistory, bind_anderson_step,  # noqa: E402
                                       resolve_anderson_step)
from eqkernels.ops.tracking import SolveState  # noqa: E402

DEFAULT_SIZES = "8x128x6,64x256x6,256x1024x6,64x16384x6,1024x1024x6,256x8192x8"
DEVICE_BACKENDS = {"cpu": ("reference", "cpp", "triton"), "cuda": ("reference", "triton", "cuda")}
GPU_TARGET_FRACTION = 0.70   # of copy bandwidth, for B * n >= GPU_TARGET_MIN_ELEMS
GPU_TARGET_MIN_ELEMS = 1 << 20
BOUND = "cpp-bound"  # the cpp kernel through the bound step (CPU)
STEP_PARAMS = dict(tol=1e-30, stop_mode="abs", beta=1.0, lam=1e-4, restart_growth=float("inf"))
COPY_BYTES = {"cpu": 256 << 20, "cuda": 1 << 30}
FLUSH_BYTES = 256 << 20


def make_state(B, n, m, device, dtype, seed):
    """(z, fz, state, hist): a mid-solve step with every sample live and its history full."""
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *shape: torch.randn(*shape, generator=gen, dtype=dtype)
    z = rnd(B, n)
    fz = z + 0.1 * rnd(B, n)                       # residual |g| ~ 0.1 sqrt(n) >> tol
    hist = AndersonHistory.empty(z, m)
    hist.X.copy_(z[:, None, :] + 0.1 * rnd(B, m, n))
    hist.G.copy_(0.1 * rnd(B, m, n))
    G64 = hist.G.double()
    hist.gram.copy_(G64 @ G64.transpose(1, 2))
    del G64
    hist.count.copy_(m + torch.arange(B, dtype=torch.int32) % m)  # full; slots differ per sample
    state = SolveState.start(z)
    state.nstep.fill_(m + 1)
    to = lambda t: t.to(device)
    hist = AndersonHistory(X=to(hist.X), G=to(hist.G), gram=to(hist.gram), count=to(hist.count))
    state = SolveState(**{k: to(v) for k, v in vars(state).items()})
    return to(z), to(fz), state, hist


def usable_backends(device, requested, include_interpreted):
    names = []
    for name in requested or DEVICE_BACKENDS[device.type]:
        if name not in DEVICE_BACKENDS[device.type]:
            print(f"skipping {name}: not a backend for {device.type}", file=sys.stderr)
            continue
        if name == "triton" and device.type == "cpu" and not include_interpreted:
            if requested:
                print("skipping triton on cpu: pass --include-interpreted (and TRITON_INTERPRET=1)",
                      file=sys.stderr)
            continue
        if not _backends._usable(name, device):
            if requested or name != "triton":
                print(f"skipping {name}: {_backends.backends()[name][1]}", file=sys.stderr)
            continue
        names.append(name)
    return names


def bench_backend(name, base, device, args):
    """(times, max |z_out - reference z_out| after one step) for one backend on one size."""
    z, fz, state0, hist0 = base
    bound = name == BOUND
    if bound:
        def step(z, fz, z_out, state, hist, **params):  # z_out = z: the bound step is in place
            z_out.copy_(z)
            bind_anderson_step(z_out, state, hist, backend="cpp", **params)[1](z_out, fz)
    else:
        step = resolve_anderson_step(device, name)[1]
    # Parity on an identical state: the first step's z_out against the reference's.
    outs = []
    for fn in (resolve_anderson_step(device, "reference")[1], step):
        state, hist = copy.deepcopy(state0), copy.deepcopy(hist0)
        out = torch.empty_like(z)
        fn(z, fz, out, state, hist, **STEP_PARAMS)
        outs.append(out)
    err = float((outs[0] - outs[1]).abs().max())
    del outs

    state, hist = copy.deepcopy(state0), copy.deepcopy(hist0)
    z_out = torch.empty_like(z)
    count0, nstep0 = hist.count.clone(), state.nstep.clone()
    flush = None
    if args.flush_cache:
        scratch = torch.empty(FLUSH_BYTES // 4, device=device)
        flush = scratch.zero_
    if bound:  # the iterate is z_out, restored to z before each (timed) call
        z_out.copy_(z)
        call = bind_anderson_step(z_out, state, hist, backend="cpp", **STEP_PARAMS)[1]

        def restore():
            z_out.copy_(z)
            if flush is not None:
                flush()
        times = measure(lambda: call(z_out, fz), device, warmup=args.warmup,
                        repeats=args.repeats, setup=restore, cuda_events=True)
    else:
        times = measure(lambda: step(z, fz, z_out, state, hist, **STEP_PARAMS), device,
                        warmup=args.warmup, repeats=args.repeats, setup=flush,
                        cuda_events=True)
    synchronize(device)
    calls = args.warmup + args.repeats
    ok = (bool(state.active.all()) and not bool(state.converged.any())
          and torch.equal(hist.count, count0 + calls) and torch.equal(state.nstep, nstep0 + calls)
          and bool(torch.isfinite(z_out).all()))
    if not ok:
        print(f"WARNING {name}: the state did not stay mid-solve (converged, restarted or "
              f"non-finite); timings may not be representative", file=sys.stderr)
    return times, err


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring for what is measured.")
    p.add_argument("--sizes", default=DEFAULT_SIZES,
                   help=f"comma-separated BxNxM list (default {DEFAULT_SIZES})")
    p.add_argument("--backends", default=None,
                   help="comma-separated subset (default: every backend usable on the device)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--include-interpreted", action="store_true",
                   help="on cpu, also time triton under TRITON_INTERPRET=1 (very slow)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed calls per row (median; default 20 on cpu, 100 on cuda)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--flush-cache", action=argparse.BooleanOptionalAction, default=None,
                   help="write a 256 MiB scratch buffer before every call, untimed "
                        "(default: on for cuda, off for cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the table as markdown to this file")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 100 if args.device == "cuda" else 20
    if args.flush_cache is None:
        args.flush_cache = args.device == "cuda"
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    device = setup_device(args.device, args.threads)
    if args.include_interpreted and os.environ.get("TRITON_INTERPRET") != "1":
        print("--include-interpreted: TRITON_INTERPRET=1 is not set, triton will be skipped",
              file=sys.stderr)
    dtype = getattr(torch, args.dtype)
    itemsize = torch.empty((), dtype=dtype).element_size()
    sizes = parse_sizes(args.sizes, 3)
    requested = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    names = usable_backends(device, requested, args.include_interpreted)
    if not names:
        sys.exit("no usable backend")
    if device.type == "cpu" and "cpp" in names:
        names.insert(names.index("cpp") + 1, BOUND)

    copy_bw = copy_bandwidth(device, COPY_BYTES[device.type])
    on_gpu = device.type == "cuda"
    headers = ["B", "n", "m", "backend", "us/step", "spread", "GB/s", "of copy bw"]
    headers += ["target"] if on_gpu else []
    headers += ["max|dz| vs ref"]
    rows = []
    print("Running...", flush=True)
    for B, n, m in sizes:
        base = make_state(B, n, m, device, dtype, args.seed)
        nbytes = (2 * m + 5) * B * n * itemsize
        for name in names:
            times, err = bench_backend(name, base, device, args)
            t = median(times)
            bw = nbytes / t
            row = [str(B), str(n), str(m), name, fmt_us(t), f"{spread(times):.0%}",
                   f"{bw / 1e9:.1f}", f"{bw / copy_bw:.0%}"]
            if on_gpu:
                if B * n >= GPU_TARGET_MIN_ELEMS and name != "reference":
                    ok = bw / copy_bw >= GPU_TARGET_FRACTION
                    row.append(f">= {GPU_TARGET_FRACTION:.0%} {'ok' if ok else 'MISS'}")
                else:
                    row.append("-")
            row.append(f"{err:.1e}")
            rows.append(row)
            print("  " + ", ".join(f"{h} {c}" for h, c in zip(headers, row)), flush=True)
        del base

    header = ["Fused anderson_step microbenchmark",
              *environment_lines(device),
              f"device {device}, backends timed: {', '.join(names)}; {args.dtype}; median of "
              f"{args.repeats} calls after {args.warmup} warm-up; cache flush "
              f"{'on' if args.flush_cache else 'off'}; "
              f"{'CUDA events' if on_gpu else 'wall clock'}",
              f"copy bandwidth ({COPY_BYTES[device.type] >> 20} MiB dst.copy_(src), 2*bytes/time): "
              f"{copy_bw / 1e9:.1f} GB/s"]
    notes = ["GB/s = (2m+5)*B*n*itemsize / time (history X, G read; z, f(z) read; z_out, X and G "
             "slot written). spread = (max-min)/median of the timed calls. max|dz| vs ref: first "
             "step's z_out against the reference backend on the same state."]
    if on_gpu:
        notes.append(f"GPU target: >= {GPU_TARGET_FRACTION:.0%} of copy bandwidth for B*n >= 1M "
                     f"(fast backends).")
    report(header, headers, rows, notes, args.out)


if __name__ == "__main__":
    main()

"""Kernel microbenchmark of the fused block-step epilogue (`block_step`) alone, with and without
noise, per backend: time per call and bandwidth against the device's copy bandwidth.

What it measures. For each size (B, n), dtype, sigma and backend usable on the device (cpu: cpp,
and reference with --include-reference; cuda: cuda, triton), it times single calls of the
backend's step function (resolved once, as the solver does) on a state where every sample is
active and nobody converges (tol = 0), with z_next a separate buffer, so every call does the same
work; the step counter advances each call, so each call draws a fresh noise field.

Reported per row: median time per call, and effective bandwidth = 3 * B * n * itemsize / time
(z and f_out read, z_next written; the per-sample state is not counted), and its fraction of
the copy bandwidth (dst.copy_(src), 2 * bytes / time, measured in the same run). GPU target:
>= 70% of copy bandwidth with noise, for B * n >= 1M. "Gnormal/s" is B * n / time: the
Gaussian draws per second a noisy call delivers.

--baseline ROOT times the same rows on another checkout of eqkernels (ROOT: its repository root,
extension built in place) and on this one, each in its own subprocess, alternating (--rounds
times), and adds the baseline's time and the ratio baseline / this. That is how a kernel change is shown not to
slow the CPU down: one run, one machine, both builds.

Run (from the repository root):

    python benchmarks/bench_block_step.py
    python benchmarks/bench_block_step.py --sizes 64x41472 --baseline /tmp/base
    python benchmarks/bench_block_step.py --device cuda --sizes 768x41472,64x41472 \\
        --out benchmarks/results/gpu_h200/block_step.md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

from timing import (REPO_ROOT, copy_bandwidth, environment_lines, fmt_us, measure, median,
                    parse_sizes, report, setup_device, spread)

DEFAULT_SIZES = {"cpu": "64x41472,768x4096,64x256", "cuda": "768x41472,64x41472,1024x1024"}
DEVICE_BACKENDS = {"cpu": ("cpp",), "cuda": ("cuda", "triton")}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}
GPU_TARGET_FRACTION = 0.70
GPU_TARGET_MIN_ELEMS = 1 << 20
COPY_BYTES = {"cpu": 256 << 20, "cuda": 1 << 30}


def _import_eqkernels(root):
    """Import eqkernels from `root` (a checkout) when given, else from this repository."""
    if root:
        sys.path.insert(0, os.path.abspath(root))
    else:
        from timing import use_repo_checkout
        use_repo_checkout()
    import eqkernels  # noqa: F401
    from eqkernels.ops.block_step import block_step, new_step_counter
    from eqkernels.ops.tracking import SolveState
    return block_step, new_step_counter, SolveState


def time_rows(cases, device, repeats, root=None):
    """{case key: [seconds per call]} for every (B, n, dtype, sigma, backend) case."""
    block_step, new_step_counter, SolveState = _import_eqkernels(root)
    out = {}
    for B, n, dtype_name, sigma, backend in cases:
        dtype = DTYPES[dtype_name]
        gen = torch.Generator().manual_seed(B * 1000 + n)
        z = torch.randn(B, n, generator=gen).to(device, dtype)
        f_out = (z.float() + 0.1 * torch.randn(B, n, generator=gen).to(device)).to(dtype)
        z_next = torch.empty_like(z)
        rdt = torch.float64 if dtype == torch.float64 else torch.float32
        state = SolveState.start(torch.zeros(B, 1, dtype=rdt, device=device))
        step = new_step_counter(device, 0)

        def call():
            block_step(z, f_out, z_next, state, damping=0.9, sigma=sigma, tol=0.0,
                       stop_mode="abs", step=step, seed=1234, backend=backend)
        times = measure(call, device, warmup=3, repeats=repeats, cuda_events=True)
        assert bool(state.active.all()), "a sample stopped: the timed work changed"
        out[f"{B}x{n}/{dtype_name}/{sigma}/{backend}"] = times
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default=None, help="BxN list, e.g. 768x41472,64x256")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--sigmas", default="0,0.01")
    ap.add_argument("--backends", default=None)
    ap.add_argument("--include-reference", action="store_true")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--baseline", default=None, help="another checkout's root to compare with")
    ap.add_argument("--baseline-name", default=None, help="what the baseline is (for the table)")
    ap.add_argument("--rounds", type=int, default=2, help="alternations with --baseline")
    ap.add_argument("--stat", choices=("median", "min"), default="median",
                    help="time per call: median, or min (on a machine shared with other work)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--emit-json", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        sizes = parse_sizes(args.sizes or DEFAULT_SIZES.get(args.device, "64x256"), 2)
        dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        sigmas = [float(s) for s in args.sigmas.split(",") if s.strip()]
        bad = [d for d in dtypes if d not in DTYPES]
        if bad:
            raise ValueError(f"--dtypes: unknown {bad}, expected some of {sorted(DTYPES)}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.root:  # this checkout's eqkernels (the environment lines import it)
        from timing import use_repo_checkout
        use_repo_checkout()
    device = setup_device(args.device, args.threads)
    backends = ([b.strip() for b in args.backends.split(",")] if args.backends
                else list(DEVICE_BACKENDS.get(device.type, ("reference",))))
    if args.include_reference:
        backends.append("reference")
    cases = [(B, n, d, s, b) for B, n in sizes for d in dtypes for s in sigmas for b in backends]

    if args.emit_json:  # the --baseline subprocess
        print(json.dumps(time_rows(cases, device, args.repeats, args.root)))
        return 0

    this, base = {}, {}
    if args.baseline:  # both checkouts in subprocesses, alternating: the same conditions
        for _ in range(args.rounds):
            for root, into in ((args.baseline, base), (str(REPO_ROOT), this)):
                cmd = [sys.executable, os.path.abspath(__file__), "--emit-json", "--root", root,
                       "--device", args.device, "--sizes",
                       args.sizes or DEFAULT_SIZES.get(args.device, "64x256"), "--dtypes",
                       args.dtypes, "--sigmas", args.sigmas, "--backends", ",".join(backends),
                       "--repeats", str(args.repeats)]
                if args.threads is not None:
                    cmd += ["--threads", str(args.threads)]
                res = subprocess.run(cmd, capture_output=True, text=True, check=True)
                for k, v in json.loads(res.stdout.strip().splitlines()[-1]).items():
                    into.setdefault(k, []).extend(v)
    else:
        this = time_rows(cases, device, args.repeats)

    copy_bw = copy_bandwidth(device, COPY_BYTES.get(device.type, 256 << 20))
    headers = ["B", "n", "dtype", "sigma", "backend", "us/call", "spread", "GB/s", "of copy bw",
               "Gnormal/s", "target"]
    if args.baseline:
        headers += ["baseline us", "baseline / this"]
    stat = median if args.stat == "median" else min
    rows = []
    for B, n, d, s, b in cases:
        key = f"{B}x{n}/{d}/{s}/{b}"
        t = stat(this[key])
        nbytes = 3 * B * n * DTYPES[d].itemsize
        frac = nbytes / t / copy_bw
        target = "-"
        if device.type == "cuda" and B * n >= GPU_TARGET_MIN_ELEMS and b != "reference":
            target = ">= 70% " + ("ok" if frac >= GPU_TARGET_FRACTION else "MISS")
        row = [str(B), str(n), d, f"{s:g}", b, fmt_us(t), f"{spread(this[key]):.0%}",
               f"{nbytes / t / 1e9:.1f}", f"{frac:.0%}",
               f"{B * n / t / 1e9:.2f}" if s else "-", target]
        if args.baseline:
            tb = stat(base[key])
            row += [fmt_us(tb), f"{tb / t:.2f}"]
        rows.append(row)
    header = ["Fused block_step microbenchmark"] + environment_lines(device) + [
        f"device {device}, {args.stat} of {args.repeats} calls x "
        f"{args.rounds if args.baseline else 1} round(s) after 3 warm-up; copy bandwidth "
        f"(dst.copy_(src)): {copy_bw / 1e9:.1f} GB/s"]
    if args.baseline:
        header.append(f"baseline: {args.baseline_name or 'the checkout'} at "
                      f"{os.path.abspath(args.baseline)}; both timed in subprocesses, alternating")
    notes = ["GB/s = 3 * B * n * itemsize / time (z, f_out read; z_next written). "
             "GPU target: >= 70% of copy bandwidth for B * n >= 1M, noise on."]
    report(header, headers, rows, notes, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

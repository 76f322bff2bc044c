"""Solver overhead of eqkernels' Anderson against torchdeq's, on the same fixed-point map.

What it measures. For each batch B and width n it solves

    z = f(z),   f(z) = tanh(z @ W.T + x),   ||W||_2 = 0.9 (random Gaussian, rescaled),

x ~ N(0, 1), z0 = 0, float32, abs tolerance 1e-6, m = 6, lam = 1e-4, beta = tau = 1,
with `eqkernels.anderson` (backend "auto", or those given by --backends) and with
torchdeq's `anderson_solver`, and reports for each:

  nstep        f evaluations the solve made. eqkernels: max over samples of info.nstep
               (the slowest sample; the batched loop evaluates f for the whole batch
               that often). torchdeq: counted by wrapping f (its info['nstep'].max(),
               the step of its lowest residual, is shown in brackets).
  solve        median wall time of a solve over --repeats runs after a warm-up.
  f-only       median wall time, in the same run, of a plain loop of exactly as many
               f calls on the same W and x; the loop iterates z <- f(z) starting from
               f(z0), so every call sees a realistic iterate and depends on the last.
  overhead     solve / f-only: 1.0 would be a solver that costs nothing beyond f.
  ours/td      our overhead ratio divided by torchdeq's.

The timed repeats of both libraries and of the f-only loops are interleaved, so
machine-load drift hits them alike. Targets (issues 12/13): our overhead <= 3 at (8,128),
<= 1.4 at (64,256), <= 1.15 at (256,1024), both through eqkernels.anderson and through
eqkernels.DEQ (a no_grad forward of DEQ(block, solver=Anderson(...)) on the same map, whose
f-only baseline is the same number of block(z, x) module calls); our nstep within 10% of
torchdeq's.

Run (from the repository root):

    python benchmarks/bench_solver_overhead.py
    python benchmarks/bench_solver_overhead.py --sizes 8x128,64x256 --backends reference,cpp
    python benchmarks/bench_solver_overhead.py --device cuda --out benchmarks/results/solver_overhead_h100.md
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import torch

from timing import (environment_lines, fmt_ms, median, parse_sizes,
                    report, setup_device, spread, synchronize, time_call, use_repo_checkout)

use_repo_checkout()

import eqkernels  # noqa: E402
from eqkernels import _backends  # noqa: E402

DEFAULT_SIZES = "8x128,64x256,256x1024"
OVERHEAD_TARGET = {(8, 128): 3.0, (64, 256): 1.4, (256, 1024): 1.15}
NSTEP_TOLERANCE = 0.10  # our nstep within 10% of torchdeq's


class CountingMap:
    """f with a call counter (used only in the untimed warm-up solve)."""

    def __init__(self, f):
        self.f = f
        self.calls = 0

    def __call__(self, z):
        self.calls += 1
        return self.f(z)


def make_problem(B, n, device, dtype, seed):
    """(f, z0, ||W||_2 as stored): f(z) = tanh(z @ W.T + x), W rescaled in float64."""
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(n, n, generator=gen, dtype=torch.float64)
    W *= 0.9 / torch.linalg.matrix_norm(W, ord=2)
    x = torch.randn(B, n, generator=gen, dtype=torch.float64)
    W_norm = float(torch.linalg.matrix_norm(W.to(dtype).double(), ord=2))
    W, x = W.to(device=device, dtype=dtype), x.to(device=device, dtype=dtype)
    Wt = W.T

    def f(z):
        return torch.tanh(z @ Wt + x)
    f.Wt, f.x = Wt, x  # for the DEQ block of the same map

    z0 = torch.zeros(B, n, device=device, dtype=dtype)
    return f, z0, W_norm


def f_only_loop(f, z_start, ncalls):
    """ncalls chained evaluations z <- f(z); returns the last iterate (so nothing is dead)."""
    z = z_start
    for _ in range(ncalls):
        z = f(z)
    return z


def f_only_of(s, f):
    return s.f_only or (lambda z_start, ncalls: f_only_loop(f, z_start, ncalls))


def max_residual(f, z):
    return float((f(z) - z).norm(dim=1).max())


@dataclass
class Solver:
    """One solver configuration under test, its warm-up facts and its timings."""
    label: str
    solve: callable            # () -> z
    nstep: int = 0             # f evaluations per solve (ours: max info.nstep)
    f_calls: int = 0           # f calls the solve actually made (counted)
    info_nstep: int = 0        # torchdeq: info['nstep'].max(); ours: == nstep
    backend: str = ""
    residual: float = float("nan")
    converged: str = ""
    solve_times: list = field(default_factory=list)
    f_times: list = field(default_factory=list)
    f_only: callable = None    # (z_start, ncalls) -> z; None: f_only_loop on f
    floor: callable = None     # () -> None: f + the fused step alone, nstep times (no driver)
    floor_times: list = field(default_factory=list)


class TanhBlock(torch.nn.Module):
    """The same map as a DEQ block: block(z, x) = tanh(z W^T + x)."""

    def __init__(self, Wt):
        super().__init__()
        self.register_buffer("Wt", Wt)

    def forward(self, z, x):
        return torch.tanh(z @ self.Wt + x)


class CountingBlock(torch.nn.Module):
    def __init__(self, block):
        super().__init__()
        self.block, self.calls = block, 0

    def forward(self, z, x):
        self.calls += 1
        return self.block(z, x)


def our_solver(f, z0, args, backend, via):
    """via "anderson": eqkernels.anderson(f, z0, ...); via "DEQ": eqkernels.DEQ(block) on the
    same map (no_grad forward), whose f-only baseline is the same number of block(z, x) calls."""
    if via == "anderson":
        params = dict(max_iter=args.max_iter, tol=args.tol, stop_mode="abs", m=args.m,
                      lam=args.lam, beta=1.0, backend=backend)
        solver = Solver(label="", solve=lambda: eqkernels.anderson(f, z0, **params)[0])
        counter = CountingMap(f)
        z, info = eqkernels.anderson(counter, z0, **params)
    else:
        block = TanhBlock(f.Wt)
        anderson = eqkernels.Anderson(m=args.m, lam=args.lam, beta=1.0, backend=backend)
        deq = eqkernels.DEQ(block, solver=anderson, max_iter=args.max_iter, tol=args.tol)
        x = f.x

        def solve():
            with torch.no_grad():
                return deq(x)[0]
        solver = Solver(label="", solve=solve)
        counter = CountingBlock(block)
        with torch.no_grad():
            z, info = eqkernels.DEQ(counter, solver=anderson, max_iter=args.max_iter,
                                    tol=args.tol)(x)
        solver.f_only = lambda z_start, ncalls: block_only_loop(block, x, z_start, ncalls)
    solver.nstep = int(info.nstep.max())
    solver.info_nstep = solver.nstep
    if via == "anderson":
        solver.floor = step_floor(f, z0, args, backend, solver.nstep)
    solver.f_calls = counter.calls
    solver.backend = f"{via}[{info.backend}]"
    solver.label = f"eqk.{via}[{info.backend}]"
    solver.residual = max_residual(f, z)
    solver.converged = f"{int(info.converged.sum())}/{z0.shape[0]}"
    return solver


def step_floor(f, z0, args, backend, ncalls):
    """ncalls of f followed by the bound fused Anderson step, called directly: what a solve
    would cost with a driver loop that costs nothing (floor / f-only is the best overhead
    ratio the loop can reach with this step)."""
    solver = eqkernels.Anderson(m=args.m, lam=args.lam, beta=1.0, backend=backend)
    options = eqkernels.SolveOptions(max_iter=args.max_iter, tol=args.tol)

    def run():
        state = solver.init(z0)
        _, step = solver.bind(state, options)
        z = state.z
        for _ in range(ncalls):
            step(z, f(z))
    return run


def block_only_loop(block, x, z_start, ncalls):
    """ncalls chained block(z, x) calls (the module call a DEQ makes), like f_only_loop."""
    z = z_start
    for _ in range(ncalls):
        z = block(z, x)
    return z


def torchdeq_solver(f, z0, args):
    from torchdeq.solver.anderson import anderson_solver
    params = dict(max_iter=args.max_iter, tol=args.tol, stop_mode="abs", m=args.m, lam=args.lam,
                  tau=1.0)
    solver = Solver(label="torchdeq", solve=lambda: anderson_solver(f, z0, **params)[0])
    counter = CountingMap(f)
    z, _, info = anderson_solver(counter, z0, **params)
    solver.f_calls = counter.calls
    solver.nstep = counter.calls
    solver.info_nstep = int(info["nstep"].max())
    solver.backend = "torchdeq"
    solver.residual = max_residual(f, z)
    solver.converged = f"{int((info['abs_lowest'] < args.tol).sum())}/{z0.shape[0]}"
    return solver


def run_size(B, n, args, device, dtype, our_backends):
    """Warm up, then interleave timed repeats of every solver and of its f-only loop."""
    f, z0, W_norm = make_problem(B, n, device, dtype, args.seed)
    ours = [our_solver(f, z0, args, b, via) for b in our_backends for via in ("anderson", "DEQ")]
    td = torchdeq_solver(f, z0, args)
    solvers = ours + [td]
    z_start = f(z0)  # first iterate: nonzero, in the range f produces
    for s in solvers:  # extra untimed warm-ups (the counted solve above was the first)
        for _ in range(args.warmup - 1):
            s.solve()
        f_only_of(s, f)(z_start, s.f_calls)
    synchronize(device)
    for _ in range(args.repeats):
        f_times = {}  # one f-only timing per distinct (baseline, call count) per round
        for s in solvers:
            seconds, _ = time_call(s.solve, device)
            s.solve_times.append(seconds)
            key = (s.f_only is None, s.f_calls)
            if key not in f_times:
                loop = f_only_of(s, f)
                f_times[key] = time_call(lambda: loop(z_start, s.f_calls), device)[0]
            s.f_times.append(f_times[key])
            if s.floor is not None:
                s.floor_times.append(time_call(s.floor, device)[0])
    print(f"  B={B} n={n}: ||W||_2={W_norm:.6f}; "
          + "; ".join(f"{s.label}: converged {s.converged}, max |f(z)-z| {s.residual:.2e}, "
                      f"f calls {s.f_calls}, solve spread {spread(s.solve_times):.0%}"
                      for s in solvers), flush=True)
    return ours, td


def table_rows(B, n, ours, td):
    rows = []
    target = OVERHEAD_TARGET.get((B, n))
    td_solve, td_f = median(td.solve_times), median(td.f_times)
    td_ratio = td_solve / td_f
    for s in ours:
        solve, f_only = median(s.solve_times), median(s.f_times)
        ratio = solve / f_only
        nstep_ratio = s.nstep / td.nstep
        # Fewer steps than torchdeq is not a miss (it happens where torchdeq stalls short of tol).
        verdict = ("ok" if abs(nstep_ratio - 1) <= NSTEP_TOLERANCE
                   else "fewer" if nstep_ratio < 1 else "MISS")
        nstep_cell = str(s.nstep) if s.f_calls == s.nstep else f"{s.nstep} [f {s.f_calls}]"
        rows.append([
            str(B), str(n), s.backend, nstep_cell, f"{td.nstep} ({td.info_nstep})",
            td.converged, f"{nstep_ratio:.2f} {verdict}",
            fmt_ms(solve), fmt_ms(f_only), f"{ratio:.2f}",
            f"{median(s.floor_times) / f_only:.2f}" if s.floor_times else "-",
            f"<= {target:g} {'ok' if ratio <= target else 'MISS'}" if target else "-",
            fmt_ms(td_solve), fmt_ms(td_f), f"{td_ratio:.2f}", f"{ratio / td_ratio:.2f}",
        ])
    return rows


HEADERS = ["B", "n", "backend", "nstep", "td nstep (info)", "td conv", "nstep ratio",
           "solve ms", "f-only ms", "overhead", "f+step floor", "target",
           "td solve ms", "td f-only ms", "td overhead", "ours/td"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring for what each column means.")
    p.add_argument("--sizes", default=DEFAULT_SIZES,
                   help=f"comma-separated BxN list (default {DEFAULT_SIZES})")
    p.add_argument("--backends", default="auto",
                   help="comma-separated eqkernels backends: auto, reference, cpp, triton, cuda "
                        "(default auto)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--max-iter", type=int, default=500)
    p.add_argument("--tol", type=float, default=1e-6, help="abs tolerance (default 1e-6)")
    p.add_argument("--m", type=int, default=6, help="history size (default 6)")
    p.add_argument("--lam", type=float, default=1e-4, help="ridge (default 1e-4)")
    p.add_argument("--repeats", type=int, default=7, help="timed solves per solver (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed solves first (>= 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: leave torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the table as markdown to this file")
    args = p.parse_args(argv)
    if args.warmup < 1 or args.repeats < 1:
        p.error("--warmup and --repeats must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    device = setup_device(args.device, args.threads)
    dtype = getattr(torch, args.dtype)
    sizes = parse_sizes(args.sizes, 2)
    our_backends = []
    for b in (x.strip() for x in args.backends.split(",") if x.strip()):
        try:
            _backends.pick("anderson_step", device, b)
            our_backends.append(b)
        except (RuntimeError, ValueError) as err:
            print(f"skipping backend {b!r}: {err}", file=sys.stderr)
    if not our_backends:
        sys.exit("no usable eqkernels backend among --backends")

    print("Running...", flush=True)
    rows, ran = [], []
    for B, n in sizes:
        ours, td = run_size(B, n, args, device, dtype, our_backends)
        ran += [s.backend for s in ours if s.backend not in ran]
        rows += table_rows(B, n, ours, td)

    header = ["Solver overhead: eqkernels.anderson and eqkernels.DEQ vs torchdeq anderson_solver",
              *environment_lines(device),
              f"device {device}, backend(s) that ran: {', '.join(ran)} (requested {args.backends})",
              f"f(z) = tanh(z W^T + x), ||W||_2 = 0.9, {args.dtype}, z0 = 0, tol {args.tol:g} abs, "
              f"m {args.m}, lam {args.lam:g}, beta/tau 1, max_iter {args.max_iter}; "
              f"median of {args.repeats} (after {args.warmup} warm-up), seed {args.seed}"]
    notes = ["nstep: f evaluations per solve (ours: max info.nstep; [f N] if the loop made more "
             "f calls); td nstep: f calls counted, (info) = torchdeq's info['nstep'].max(). "
             "td conv: samples torchdeq brought below tol. nstep ratio = ours / td, target within "
             "10% ('fewer': we needed over 10% fewer).",
             "overhead = solve time / time of the same number of f calls alone (same run); "
             "ours/td = our overhead / torchdeq's.",
             "f+step floor = (nstep x (f + the fused Anderson step), called directly, no driver "
             "loop) / f-only: the overhead a zero-cost loop would have with this step; "
             "overhead - floor is what the driver loop (and for DEQ rows the layer) adds.",
             "DEQ rows: a no_grad forward of eqkernels.DEQ(block, solver=eqkernels.Anderson(...)) "
             "on the same map; f-only = the same number of block(z, x) module calls."]
    report(header, HEADERS, rows, notes, args.out)


if __name__ == "__main__":
    main()

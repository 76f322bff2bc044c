"""torchdeq programs on torchdeq and on eqkernels.compat.torchdeq, side by side.

Each program of tests/compat/programs (our small re-implementations of torchdeq's docs
sample, README quick start and the deq-zoo models, run with their launch-script flags) is
loaded twice: as written (`from torchdeq ... import ...`) and with only those import lines
rewritten to eqkernels.compat.torchdeq (tests/compat/tdq_programs.py). Both train the same
number of steps from the same seed. Per program it prints whether the eqkernels run
completed unchanged (and which warnings it gave), the largest relative difference of the
per-step training losses (with eqkernels' default per-sample stopping, and with
stop_rule="batch", torchdeq's whole-batch rule), and the CPU time of the whole run (process
time, median of --repeats runs after one untimed warm-up each; the two libraries' runs
alternate) with the ratio torchdeq / eqkernels.

Run (from the repository root; ~2-4 minutes on 2 CPU cores):

    python benchmarks/bench_compat_programs.py
    python benchmarks/bench_compat_programs.py --out benchmarks/results/compat_programs_cpu.md
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import torch

from timing import REPO_ROOT, environment_lines, report, use_repo_checkout


def _messages(caught):
    short = sorted({str(w.message).split(";")[0] for w in caught})
    return "; ".join(short)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per library")
    parser.add_argument("--programs", nargs="+", default=None, help="default: all")
    parser.add_argument("--out", default=None, help="write the table as markdown here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    use_repo_checkout()
    sys.path.insert(0, str(REPO_ROOT / "tests" / "compat"))
    import tdq_programs

    names = args.programs or tdq_programs.program_names()
    unknown = sorted(set(names) - set(tdq_programs.program_names()))
    if unknown:
        parser.error(f"unknown programs {unknown}; known: {tdq_programs.program_names()}")
    rows = []
    for name in names:
        progs = {lib: tdq_programs.load(name, lib) for lib in tdq_programs.LIBS}
        steps = progs["eqk"].run.__defaults__[1]  # the program's own default step count
        times = {lib: [] for lib in progs}
        results = {}
        for lib, prog in progs.items():  # warm-up, untimed (first-call costs)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                results[lib] = prog.run(steps=steps)
            if lib == "eqk":
                warned = _messages(caught)
        for _ in range(args.repeats):
            for lib in progs:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t0 = time.process_time()
                    progs[lib].run(steps=steps)
                    times[lib].append(time.process_time() - t0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batch = progs["eqk"].run(steps=steps, overrides={"stop_rule": "batch"})
        theirs = results["torchdeq"]["losses"]
        t_td, t_ours = statistics.median(times["torchdeq"]), statistics.median(times["eqk"])
        rows.append([name, "yes" + (f" ({warned})" if warned else ""), str(steps),
                     f"{tdq_programs.max_rel_diff(results['eqk']['losses'], theirs):.1e}",
                     f"{tdq_programs.max_rel_diff(batch['losses'], theirs):.1e}",
                     f"{t_td:.3f}", f"{t_ours:.3f}", f"{t_td / t_ours:.2f}"])
        print(" | ".join(rows[-1]), flush=True)
    header = ["torchdeq programs on eqkernels.compat.torchdeq (only the imports changed)",
              *environment_lines(torch.device("cpu")),
              f"CPU time: median of {args.repeats} runs per library after one warm-up; runs "
              f"alternate"]
    headers = ["torchdeq program", "runs unchanged (warnings)", "N steps",
               "loss diff (per-sample)", "loss diff (stop_rule=batch)", "torchdeq s",
               "ours s", "torchdeq/ours"]
    notes = ["loss diff: max over the N training steps of |loss_ours - loss_torchdeq| / "
             "|loss_torchdeq|, same seed and data.",
             "per-sample: eqkernels' default (each sample stops at its tolerance); "
             "stop_rule=batch: torchdeq's whole-batch rule (args.stop_rule, set by the harness).",
             "time: CPU seconds (process time, all threads) of one whole run (model build, "
             "N training steps, the eval pass); wall clock on a shared machine varies too "
             "much between runs to compare."]
    report(header, headers, rows, notes, out=args.out)


if __name__ == "__main__":
    main()

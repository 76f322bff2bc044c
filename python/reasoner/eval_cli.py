"""`python -m <task> eval ...`: the depth x breadth evaluation command line, for any task.

  python -m sudoku eval --data puzzles.csv --checkpoint run/ckpt.pt --depth 1000 --breadth 8
  python -m maze eval --data data/maze-30x30-unique-1k --checkpoint eqr.pth --depth 16
      [--plot depth.png] [--kernels auto|fused|compile|eager]   (with python/ on PYTHONPATH)

The checkpoint (ours or EqR's .pth) is read first, then the data (the task's test split),
then the model is built to fit both: a checkpoint of another task, or one whose seq_len or
2-D board does not match the data, is refused naming the field. Several processes: torchrun
--nproc-per-node N -m <task> eval ... shards the examples over the ranks (gloo on CPU, NCCL
on GPUs) and all-gathers the results; every rank reports the same numbers as one process
would.
"""
from __future__ import annotations

import argparse

from cli_safety.atomic_files import atomic_path
from cli_safety.devices import default_device, parse_device
from cli_safety.output_paths import check_output_file, plot_suffixes
from cli_safety.values import SEED, Range
from reasoner.checkpoint import build_model, read_file
from reasoner.distributed import dist_info, torchrun_group
from reasoner.evaluate import evaluate
from reasoner.model import KERNELS
from reasoner.report import log_spaced_depths
from reasoner.task import Task

POSITIVE = Range(int, min=1)


def build_parser(task: Task) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {task.name} eval",
                                description=f"Depth/breadth evaluation of a {task.name} reasoner.")
    p.add_argument("--data", required=True, help=f"{task.data_help} (its test split)")
    p.add_argument("--checkpoint", required=True, help="ours (ckpt.pt) or an EqR .pth")
    p.add_argument("--weights", choices=("ema", "model"), default="ema",
                   help="EMA weights (default) or the raw ones")
    p.add_argument("--latent-dtype", choices=("float32", "bfloat16"), default=None,
                   help="override the checkpoint's latent precision")
    p.add_argument("--depth", type=POSITIVE, default=16)
    p.add_argument("--breadth", type=POSITIVE, default=1)
    p.add_argument("--limit", type=POSITIVE, default=None, help=f"first N {task.example}s only")
    p.add_argument("--full-depth", action="store_true", help="no adaptive early stopping")
    p.add_argument("--halt-tol", type=Range(float, above=0), default=0.02,
                   help="a start stops once its mean latent change per element is below this "
                        "(above the noise floor sqrt(2) sigma) ...")
    p.add_argument("--patience", type=Range(int, min=0), default=5,
                   help="... and its answer has not changed for this many steps")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default=default_device())
    p.add_argument("--plot", default=None,
                   help="also write accuracy/residual plots to this file (.png, .pdf, .svg, ...)")
    p.add_argument("--kernels", choices=KERNELS, default="auto",
                   help="the block's kernels: auto (the fastest on the device: eager on CPU; on a "
                        "GPU with Triton fused + CUDA graphs for the token-MLP model, compile for "
                        "attention), fused, compile or eager")
    return p


def main(task: Task, argv=None) -> None:
    args = build_parser(task).parse_args(argv)
    # Refused before the model is built or a step is run.
    device = parse_device(args.device)
    if args.plot:
        check_output_file(args.plot, "--plot", plot_suffixes())
    with torchrun_group(device) as args.device:
        _evaluate(task, args)


def _evaluate(task: Task, args) -> None:
    ckpt = read_file(args.checkpoint)
    data = task.load(args.data, split="test", limit=args.limit)
    model, info = build_model(ckpt, args.checkpoint, device=args.device, weights=args.weights,
                              latent_dtype=args.latent_dtype, task=task, data=data)
    model.kernels = args.kernels  # ValueError (error: ..., exit 2) for a variant without it
    report = evaluate(model, data.questions, data.answers, depth=args.depth, breadth=args.breadth,
                      full_depth=args.full_depth, halt_tol=args.halt_tol, seed=args.seed,
                      patience=args.patience, progress=True, ratings=data.ratings, task=task,
                      board=data.board)
    if dist_info()[0] != 0:
        return
    print(f"model: {info['kind']} checkpoint, latent dtype {model.cfg.latent_dtype}, "
          f"{len(data.questions)} {task.example}s")
    print(report.table())
    res = report.residual_by_step
    marks = log_spaced_depths(len(res))
    print("residual ||z_t - z_(t-1)|| (mean per element): " +
          ", ".join(f"t={t}: {res[t - 1]:.3e}" for t in marks))
    if args.plot:
        with atomic_path(args.plot) as tmp:  # never a half-written plot
            report.plot(tmp)
        print(f"wrote {args.plot}")

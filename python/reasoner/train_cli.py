"""`python -m <task> train ...`: the reasoner's training command line, for any task.

  python -m sudoku train --data train.csv --out runs/a        (python/ on PYTHONPATH)
  python -m maze train --data data/maze-9x9 --out runs/m

The run folder (cli_safety.run_dir): an --out that holds a run is refused unless --resume
(continue it; an error if it has no checkpoint), --resume-if-exists (continue if there is a
checkpoint, else start; for requeued jobs) or --overwrite (delete its checkpoint and
metrics, start over) says what to do. Resuming cuts metrics.jsonl back to the checkpoint's
step, so every step is logged once.
Ctrl-C (SIGINT) or SIGTERM: the run finishes its batch, saves a checkpoint, prints the
command that resumes it and exits 128 + the signal (130, SIGTERM 143); a second signal is
ignored (torchrun forwards the one it gets), Ctrl-\\ quits without saving. Under torchrun
every rank stops after the same batch (one flag all-reduce per batch,
benchmarks/bench_stop_agreement.py), rank 0 saves, all wait for it; torchrun SIGKILLs
workers 30 s (its --shutdown-timeout) after forwarding a signal: one batch plus a save must
fit in that.
The model flags default to the task's CPU-sized model (Task.model_defaults); the task's GPU
recipe is in its --help (Task.recipe_note). The model's seq_len (and a rope2d board) come
from the data, its vocab from the task.
Data-parallel: torchrun --nproc-per-node N -m <task> train ... (DDP; gloo on CPU, NCCL on
GPUs; --batch-size is the global batch).
"""
from __future__ import annotations

import argparse
import os
import random
import shlex
import sys
from dataclasses import asdict

import torch

from cli_safety.devices import default_device, parse_device
from cli_safety.output_paths import check_output_dir
from cli_safety.run_dir import CHECKPOINT, clear_run, plan_run_dir
from cli_safety.stop_signal import StopOnSignal
from cli_safety.values import Range
from reasoner.distributed import dist_info, launched_by_torchrun, torchrun_group
from reasoner.losses import LOSSES
from reasoner.model import LATENT_DTYPES, POS_ENCODINGS, Reasoner, ReasonerConfig
from reasoner.task import Task, TaskData
from reasoner.train import TRAIN_RANGES, TrainConfig, Trainer

POSITIVE = Range(int, min=1)  # model sizes and cycle counts


def build_parser(task: Task) -> argparse.ArgumentParser:
    d = dict(hidden=64, layers=2, H_cycles=1, L_cycles=2, attention=False, heads=8,
             pos_encoding="rope", latent_dtype="float32")
    d.update(task.model_defaults)
    p = argparse.ArgumentParser(prog=f"python -m {task.name} train",
                                description=f"Train the {task.name} equilibrium reasoner "
                                            f"(EqR's recipe). {task.recipe_note}".strip())
    p.add_argument("--data", required=True, help=f"{task.data_help} (its train split)")
    p.add_argument("--out", required=True, help="run directory (checkpoint, metrics)")
    runs = p.add_mutually_exclusive_group()
    runs.add_argument("--resume", action="store_true",
                      help="continue the run in --out from its checkpoint (an error if none)")
    runs.add_argument("--resume-if-exists", action="store_true",
                      help="continue if --out holds a checkpoint, else start a new run there "
                           "(for jobs requeued with one command line)")
    runs.add_argument("--overwrite", action="store_true",
                      help="start over in an --out that holds a run (deletes its checkpoint "
                           "and metrics); without it such an --out is refused")
    p.add_argument("--hidden", type=POSITIVE, default=d["hidden"],
                   help=f"latent width ({d['hidden']}: a CPU-sized model)")
    p.add_argument("--layers", type=POSITIVE, default=d["layers"])
    p.add_argument("--H-cycles", dest="H_cycles", type=POSITIVE, default=d["H_cycles"],
                   help="z_H updates per reasoning step")
    p.add_argument("--L-cycles", dest="L_cycles", type=POSITIVE, default=d["L_cycles"],
                   help="z_L updates per z_H update")
    p.add_argument("--token-mixing", choices=("mlp", "attention"),
                   default="attention" if d["attention"] else "mlp",
                   help="the token MLP (EqR's mlp_t: true) or self-attention (mlp_t: false)")
    p.add_argument("--heads", type=POSITIVE, default=d["heads"], help="attention heads")
    p.add_argument("--pos-encoding", choices=POS_ENCODINGS, default=None,
                   help=f"attention's positions: rope (1-D over the tokens), rope2d (the grid), "
                        f"none (default {d['pos_encoding']} with attention)")
    p.add_argument("--latent-dtype", choices=sorted(LATENT_DTYPES), default=d["latent_dtype"],
                   help="precision of the latents and blocks (EqR's forward_dtype: bfloat16)")
    p.add_argument("--device", default=default_device())
    p.set_defaults(default_pos_encoding=d["pos_encoding"])
    for name, value in asdict(TrainConfig()).items():
        flag = "--" + name.replace("_", "-")
        if name == "augment":
            aug = p.add_mutually_exclusive_group()
            aug.add_argument(flag, dest=name, action="store_true", default=task.augment_default,
                             help="random symmetries of the training pairs (default "
                                  f"{'on' if task.augment_default else 'off'} for {task.name})")
            aug.add_argument("--no-augment", dest=name, action="store_false")
        elif isinstance(value, bool):
            p.add_argument(flag, action="store_true", default=value) if not value else \
                p.add_argument("--no-" + name.replace("_", "-"), dest=name, action="store_false")
        elif name == "loss":
            p.add_argument(flag, choices=LOSSES, default=value)
        else:
            p.add_argument(flag, type=TRAIN_RANGES[name], default=value)
    return p


def model_config(task: Task, args, data: TaskData) -> ReasonerConfig:
    """The model of the command line for this data: seq_len (and rope2d's board) from the
    data, vocab from the task (or the data's largest token + 1)."""
    attention = args.token_mixing == "attention"
    if args.pos_encoding not in (None, "none") and not attention:
        raise ValueError(f"--pos-encoding {args.pos_encoding} needs --token-mixing attention")
    pos = "none" if not attention else args.pos_encoding or args.default_pos_encoding
    vocab = task.vocab or int(max(data.questions.max(), data.answers.max())) + 1
    try:
        return ReasonerConfig(seq_len=data.seq_len, vocab=vocab, hidden=args.hidden,
                              layers=args.layers, H_cycles=args.H_cycles, L_cycles=args.L_cycles,
                              attention=attention, heads=args.heads, pos_encoding=pos,
                              board=data.board if pos == "rope2d" else None,
                              latent_dtype=args.latent_dtype)
    except ValueError as e:
        raise ValueError(f"model options: {e}") from None


def main(task: Task, argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(task).parse_args(argv)
    cfg = TrainConfig(**{k: getattr(args, k) for k in asdict(TrainConfig())})
    # Everything that can be refused is refused here, before the data is read or a file touched.
    device = parse_device(args.device)
    check_output_dir(args.out, "--out")
    plan = plan_run_dir(args.out, overwrite=args.overwrite, resume="required" if args.resume
                        else "if_exists" if args.resume_if_exists else "never")
    with torchrun_group(device) as device:
        _train(task, args, argv, cfg, plan, device)


def _train(task: Task, args, argv, cfg: TrainConfig, plan, device: str) -> None:
    rank, world = dist_info()
    if cfg.batch_size < world:
        raise ValueError(f"--batch-size {cfg.batch_size} (the global batch) is smaller than the "
                         f"{world} ranks: every rank needs a sample")
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    random.seed(cfg.seed)
    data = task.load(args.data, split="train")
    model = Reasoner(model_config(task, args, data)).to(device)
    if plan.start_over and rank == 0:
        clear_run(args.out)
    trainer = Trainer(model, data.questions, data.answers, cfg, args.out, task=task,
                      board=data.board)
    if plan.resume:
        trainer.load(os.path.join(args.out, CHECKPOINT))
    if rank == 0:
        print(f"{plan.note}: resumed at step {trainer.step}" if plan.resume else plan.note)
    with StopOnSignal() as stop:
        interrupted = trainer.run(stop=stop)
    if interrupted:
        if rank == 0:
            print(f"interrupted ({stop.signal_name}) at step {trainer.step}: saved "
                  f"{os.path.join(args.out, CHECKPOINT)}\nresume with: "
                  f"{resume_command(task, argv, world)}", file=sys.stderr)
        sys.exit(stop.exit_code)


def resume_command(task: Task, argv, world: int) -> str:
    """The command line that continues this run: the same options with --resume."""
    keep = [a for a in argv if a not in ("--resume", "--resume-if-exists", "--overwrite")]
    launcher = (f"torchrun --nproc-per-node {world} -m {task.name} train" if launched_by_torchrun()
                else f"python -m {task.name} train")
    return f"{launcher} {shlex.join(keep)} --resume"

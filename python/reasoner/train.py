"""Training of the reasoner with EqR's recipe: deep supervision, AdamW + warm-up, EMA.

Per batch, up to `supervision_steps` segments: each runs one reasoning step from the
carried latents (detached between segments), takes EqR's loss (reasoner.losses: stablemax
cross-entropy normalised per sample + 0.5 x the halting BCE, over the batch size; `--loss
softmax` for softmax cross-entropy) and an optimizer step. The gradient flows through the
whole last round (grad_rounds = 1: EqR's latent_recursion, all L_cycles z_L updates and the
z_H update; earlier rounds run without autograd) or the last grad_rounds rounds;
`--one-step-grad` records only the last z_L update and the z_H update. The update noise comes
from the same counter-based stream as inference (eqk.LoopedUpdate, seeded per forward from
torch's RNG, whose state the checkpoint keeps). A segment whose answers are all right and
whose halting head says so ends the batch early. The task (reasoner.task) gives the
augmentation and the cells the logged cell accuracy counts.

Checkpoints (`<out>/ckpt.pt`, format reasoner.checkpoint.FORMAT_VERSION) hold the task's
name, the model config, weights, optimizer, EMA weights, the data position and every RNG
state, so a resumed run continues exactly where the interrupted one stopped; they are written
atomically (the old file or the whole new one). Metrics go to `<out>/metrics.jsonl`, one row
per batch. The command line (`python -m sudoku train`, `python -m maze train`) is
reasoner.train_cli.
"""
from __future__ import annotations

import copy
import json
import os
import random
import sys
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from cli_safety.atomic_files import atomic_path
from cli_safety.run_dir import CHECKPOINT, LOG, cut_log
from cli_safety.stop_signal import StopOnSignal
from cli_safety.values import SEED, Range
from eqkernels.progress import progress_bar
from reasoner.checkpoint import (FORMAT_VERSION, CheckpointError, config_from_ours, load_checked,
                                 load_model, read_file)
from reasoner.distributed import barrier, dist_info
from reasoner.losses import LOSSES, eqr_loss
from reasoner.model import Reasoner
from reasoner.task import Task


@dataclass
class TrainConfig:
    """Defaults: a small run that finishes on a 2-core CPU in minutes."""
    batch_size: int = 32
    steps: int = 1000               # optimizer steps in all
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 100
    ema_decay: float = 0.99
    supervision_steps: int = 16
    grad_rounds: int = 1            # rounds recorded whole (1: EqR's last latent_recursion)
    one_step_grad: bool = False     # record only the last z_L update and the z_H update
    loss: str = "stablemax"         # or "softmax" (reasoner.losses)
    checkpoint_every: int = 200
    augment: bool = True
    seed: int = 0

    def __post_init__(self):
        for name, valid in TRAIN_RANGES.items():
            valid.check(name, getattr(self, name))


# The valid range of every numeric field (the CLI's argparse types, and TrainConfig's check).
TRAIN_RANGES = dict(batch_size=Range(int, min=1), steps=Range(int, min=1),
                    lr=Range(float, above=0), weight_decay=Range(float, min=0),
                    warmup=Range(int, min=0), ema_decay=Range(float, min=0, max=1),
                    supervision_steps=Range(int, min=1), grad_rounds=Range(int, min=1),
                    checkpoint_every=Range(int, min=1), seed=SEED)


def _grad_mode(cfg: "TrainConfig"):
    """EqR's whole last round (grad_rounds 1), the last k rounds, or the 1-step gradient."""
    if cfg.grad_rounds < 1:
        raise ValueError(f"grad_rounds must be >= 1, got {cfg.grad_rounds}")
    if cfg.one_step_grad:
        if cfg.grad_rounds != 1:
            raise ValueError("one_step_grad needs grad_rounds 1")
        return "one_step"
    return "last" if cfg.grad_rounds == 1 else cfg.grad_rounds


def lr_at(step: int, cfg: TrainConfig) -> float:
    return cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))


class Trainer:
    """Trains `model` on questions, answers (N, seq_len) int64 tokens into the run folder
    `out`. task: the reasoner.task.Task (its augmentation when cfg.augment and no augment_fn
    is given, and the cells the logged cell accuracy counts; default the base task);
    augment_fn(questions, answers) -> (questions, answers): an augmentation of its own;
    board: the data's (height, width) grid, for a task whose augmentation needs it."""

    def __init__(self, model: Reasoner, questions, answers, cfg: TrainConfig, out: str,
                 augment_fn=None, task: Optional[Task] = None, board=None):
        L = model.cfg.seq_len
        if questions.shape != answers.shape or questions.dim() != 2 or questions.shape[1] != L:
            raise ValueError(f"questions and answers must both be (N, {L}) (the model's "
                             f"seq_len), got {tuple(questions.shape)}, {tuple(answers.shape)}")
        if cfg.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {cfg.loss!r}")
        _grad_mode(cfg)
        self.model, self.cfg, self.out = model, cfg, out
        self.questions, self.answers = questions, answers
        self.task = task or Task()
        if augment_fn is None:
            augment_fn = lambda q, a: self.task.augment(q, a, board=board)  # noqa: E731
        self.augment_fn = augment_fn if cfg.augment else None
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95),
                                     weight_decay=cfg.weight_decay)
        self.ema = copy.deepcopy(model).requires_grad_(False)
        # Under torch.distributed (torchrun): DDP averages the gradients, each rank takes its
        # slice of every global batch, and rank 0 alone writes checkpoints and metrics.
        self.rank, self.world = dist_info()
        self.forward_model = model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel
            self.forward_model = DistributedDataParallel(model)
        self.step = 0
        self.position = 0           # index into the current epoch's order
        self.epoch = 0
        self.order = self._epoch_order()
        os.makedirs(out, exist_ok=True)

    def _epoch_order(self):
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.questions.shape[0], generator=g)

    def _next_batch(self):
        B = self.cfg.batch_size
        if self.position + B > len(self.order):
            self.epoch += 1
            self.position = 0
            self.order = self._epoch_order()
        idx = self.order[self.position:self.position + B][self.rank::self.world]
        self.position += B
        q, a = self.questions[idx], self.answers[idx]
        if self.augment_fn is not None:
            q, a = self.augment_fn(q, a)
        return q, a

    def train_batch(self):
        """One batch of deep supervision; returns its metrics."""
        device = next(self.model.parameters()).device
        q, a = (t.to(device) for t in self._next_batch())
        blanks = self.task.scored_cells(q, a)
        carry, losses, segments = None, [], 0
        for _ in range(self.cfg.supervision_steps):
            for group in self.opt.param_groups:
                group["lr"] = lr_at(self.step, self.cfg)
            logits, q_logits, carry = self.forward_model(q, carry=carry, steps=1,
                                                         grad=_grad_mode(self.cfg))
            pred = logits.argmax(-1)
            if segments == 0:  # before any optimizer step on this batch: an unbiased estimate
                first_cell_acc = float(((pred == a) & blanks).sum() / blanks.sum().clamp(min=1))
            loss, solved = eqr_loss(logits, q_logits[:, 0], a, self.cfg.loss)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self._update_ema()
            self.step += 1
            segments += 1
            losses.append(float(loss.detach()))
            # (Alone only: under DDP every rank must run the same number of backward passes.)
            if self.world == 1 and bool(solved.all()) and bool((q_logits[:, 0] > 0).all()):
                break
            if self.step >= self.cfg.steps:
                break
        cell_acc = float(((pred == a) & blanks).sum() / blanks.sum().clamp(min=1))
        # cell_acc is after the batch's own optimizer steps (one per segment), so on a small
        # model it measures memorisation of the batch as much as skill; cell_acc_first is not.
        return dict(step=self.step, loss=sum(losses) / len(losses), cell_acc=cell_acc,
                    cell_acc_first=first_cell_acc,
                    board_acc=float(solved.float().mean()), segments=segments,
                    lr=lr_at(self.step - 1, self.cfg))

    @torch.no_grad()
    def _update_ema(self):
        d = self.cfg.ema_decay
        for pe, p in zip(self.ema.parameters(), self.model.parameters()):
            pe.lerp_(p.detach(), 1 - d)

    def run(self, progress: bool = True, stop: Optional[StopOnSignal] = None) -> bool:
        """Train to cfg.steps, saving every checkpoint_every steps and at the end. With `stop`
        (a StopOnSignal), a SIGINT/SIGTERM ends the run after the current batch, with a
        checkpoint there, on every rank at the same step; returns True when that happened."""
        bar = progress_bar(total=self.cfg.steps, initial=self.step, desc="train", unit="step",
                           disable=not progress or self.rank != 0)
        log = open(os.path.join(self.out, LOG), "a") if self.rank == 0 else None
        device = next(self.model.parameters()).device
        interrupted, saved_at = False, None
        try:
            while self.step < self.cfg.steps:
                before = self.step
                metrics = self.train_batch()
                if log is not None:
                    log.write(json.dumps(metrics) + "\n")
                    log.flush()
                bar.update(self.step - before)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}",
                                cell_first=f"{metrics['cell_acc_first']:.3f}",
                                cell=f"{metrics['cell_acc']:.3f}",
                                board=f"{metrics['board_acc']:.3f}", refresh=False)
                if self.step // self.cfg.checkpoint_every != before // self.cfg.checkpoint_every:
                    self.save()
                    saved_at = self.step
                # A batch boundary: the checkpoint holds no half-supervised batch. One check
                # per batch (a flag all-reduce under DDP), every rank at the same step.
                if stop is not None and stop.agreed(device):
                    interrupted = True
                    break
        finally:
            bar.close()
            if log is not None:
                log.close()
        if saved_at != self.step:
            self.save()
        barrier(self.world)  # no rank leaves (and has torchrun stop the others) mid-save
        return interrupted

    # ---- checkpoints -----------------------------------------------------------------
    def state(self):
        return dict(format_version=FORMAT_VERSION, task=self.task.name,
                    model_config=self.model.cfg.to_dict(), train_config=asdict(self.cfg),
                    model=self.model.state_dict(), ema=self.ema.state_dict(),
                    optimizer=self.opt.state_dict(), step=self.step, epoch=self.epoch,
                    position=self.position,
                    rng=dict(torch=torch.get_rng_state(), python=random.getstate()))

    def save(self):
        if self.rank != 0:
            return
        with atomic_path(os.path.join(self.out, CHECKPOINT)) as tmp:  # never half-written
            torch.save(self.state(), tmp)

    def load(self, path):
        """Continue from checkpoint `path` (weights, EMA, optimizer, data position, RNG), and
        cut <out>/metrics.jsonl back to its step."""
        ckpt = read_file(path)
        if "model_config" not in ckpt:
            raise CheckpointError(f"{path} is not a checkpoint of a reasoner run (cannot resume)")
        if ckpt.get("task", self.task.name) != self.task.name:
            raise CheckpointError(f"{path}: cannot resume: it is a {ckpt['task']} run, this is "
                                  f"{self.task.name}; start a new --out folder")
        cfg, version = config_from_ours(ckpt, path)
        if version != FORMAT_VERSION or cfg != self.model.cfg:
            raise CheckpointError(f"{path}: cannot resume: its model (format {version}, "
                                  f"{cfg}) is not this run's ({self.model.cfg}); start a new "
                                  f"--out folder")
        load_checked(self.model, ckpt.get("model"), path, "model")
        load_checked(self.ema, ckpt.get("ema"), path, "ema")
        self.opt.load_state_dict(ckpt["optimizer"])
        self.step, self.epoch, self.position = ckpt["step"], ckpt["epoch"], ckpt["position"]
        self.cfg.seed = ckpt["train_config"]["seed"]  # the data order is the run's, not ours
        self.order = self._epoch_order()
        torch.set_rng_state(ckpt["rng"]["torch"])
        random.setstate(ckpt["rng"]["python"])
        if self.rank == 0:  # rows a crash left past the checkpoint would be logged twice
            dropped = cut_log(os.path.join(self.out, LOG), self.step)
            if dropped:
                print(f"{LOG}: dropped {dropped} rows logged after the checkpoint's step "
                      f"{self.step} (they will be logged again)", file=sys.stderr)


def load_checkpoint(path: str, device="cpu", ema: bool = True):
    """(model, checkpoint dict): the EMA weights by default, ready for evaluation; reads our
    checkpoints and EqR's .pth (reasoner.checkpoint.load_model)."""
    model, info = load_model(path, device=device, weights="ema" if ema else "model")
    return model, info["checkpoint"]

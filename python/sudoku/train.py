"""Training of the Sudoku reasoner with EqR's recipe: deep supervision, AdamW + warm-up, EMA.

Per batch, up to `supervision_steps` segments: each runs one reasoning step from the
carried latents (detached between segments), takes EqR's loss (sudoku.losses: stablemax
cross-entropy normalised per sample + 0.5 x the halting BCE, over the batch size; `--loss
softmax` for softmax cross-entropy) and an optimizer step. The gradient flows through the
whole last round (grad_rounds = 1: EqR's latent_recursion, all L_cycles z_L updates and the
z_H update; earlier rounds run without autograd) or the last grad_rounds rounds;
`--one-step-grad` records only the last z_L update and the z_H update. The update noise comes
from the same counter-based stream as inference (eqk.LoopedUpdate, seeded per forward from
torch's RNG, whose state the checkpoint keeps). A segment whose boards are all solved and
whose halting head says so ends the batch early.

Checkpoints (`<out>/ckpt.pt`, format sudoku.checkpoint.FORMAT_VERSION) hold the model config, weights, optimizer, EMA weights,
the data position and every RNG state, so a resumed run continues exactly where the
interrupted one stopped. Metrics go to `<out>/metrics.jsonl`.

CLI:  python -m sudoku train --data train.csv --out runs/a     (python/ on PYTHONPATH)
      --resume continues runs/a. The defaults are a CPU-sized run (hidden 64, H_cycles 1,
      L_cycles 2); the recipe's GPU config is  --hidden 512 --H-cycles 3 --L-cycles 6
      --batch-size 768 --lr 1e-4 --weight-decay 1.0 --warmup 2000 --steps 50000
      --ema-decay 0.999 --latent-dtype bfloat16 (EqR's forward_dtype).
      Data-parallel: torchrun --nproc-per-node N -m sudoku train ... (DDP; gloo on CPU,
      NCCL on GPUs; --batch-size is the global batch).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
from dataclasses import asdict, dataclass

import torch

from eqkernels.progress import progress_bar
from sudoku.checkpoint import FORMAT_VERSION, CheckpointError, config_from_ours, load_model, read_file
from sudoku.distributed import dist_info, init_from_env
from sudoku.losses import LOSSES, eqr_loss
from sudoku.model import LATENT_DTYPES, ReasonerConfig, SudokuReasoner


# (H_cycles, L_cycles) of the CPU-sized default: few block applications per reasoning step,
# so a step is cheap and the answer needs several steps (depth is visible).
SMALL_CYCLES = (1, 2)


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
    loss: str = "stablemax"         # or "softmax" (sudoku.losses)
    checkpoint_every: int = 200
    augment: bool = True
    seed: int = 0


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
    def __init__(self, model: SudokuReasoner, questions, answers, cfg: TrainConfig, out: str,
                 augment_fn=None):
        if questions.shape != answers.shape or questions.dim() != 2 or questions.shape[1] != 81:
            raise ValueError(f"questions and answers must both be (N, 81), got "
                             f"{tuple(questions.shape)}, {tuple(answers.shape)}")
        if cfg.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {cfg.loss!r}")
        _grad_mode(cfg)
        self.model, self.cfg, self.out = model, cfg, out
        self.questions, self.answers = questions, answers
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
        blanks = q == 1
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

    def run(self, progress: bool = True):
        bar = progress_bar(total=self.cfg.steps, initial=self.step, desc="train", unit="step",
                           disable=not progress or self.rank != 0)
        log = open(os.path.join(self.out, "metrics.jsonl"), "a") if self.rank == 0 else None
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
        finally:
            bar.close()
            if log is not None:
                log.close()
        self.save()

    # ---- checkpoints -----------------------------------------------------------------
    def state(self):
        return dict(format_version=FORMAT_VERSION,
                    model_config=self.model.cfg.to_dict(), train_config=asdict(self.cfg),
                    model=self.model.state_dict(), ema=self.ema.state_dict(),
                    optimizer=self.opt.state_dict(), step=self.step, epoch=self.epoch,
                    position=self.position,
                    rng=dict(torch=torch.get_rng_state(), python=random.getstate()))

    def save(self):
        if self.rank != 0:
            return
        path = os.path.join(self.out, "ckpt.pt")
        torch.save(self.state(), path + ".tmp")
        os.replace(path + ".tmp", path)  # never a half-written checkpoint

    def load(self, path):
        ckpt = read_file(path)
        if "model_config" not in ckpt:
            raise CheckpointError(f"{path} is not a checkpoint of sudoku train (cannot resume)")
        cfg, version = config_from_ours(ckpt, path)
        if version != FORMAT_VERSION or cfg != self.model.cfg:
            raise CheckpointError(f"{path}: cannot resume: its model (format {version}, "
                                  f"{cfg}) is not this run's ({self.model.cfg}); start a new "
                                  f"--out folder")
        self.model.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.step, self.epoch, self.position = ckpt["step"], ckpt["epoch"], ckpt["position"]
        self.cfg.seed = ckpt["train_config"]["seed"]  # the data order is the run's, not ours
        self.order = self._epoch_order()
        torch.set_rng_state(ckpt["rng"]["torch"])
        random.setstate(ckpt["rng"]["python"])


def load_checkpoint(path: str, device="cpu", ema: bool = True):
    """(model, checkpoint dict): the EMA weights by default, ready for evaluation; reads our
    checkpoints and EqR's .pth (sudoku.checkpoint.load_model)."""
    model, info = load_model(path, device=device, weights="ema" if ema else "model")
    return model, info["checkpoint"]


def main(argv=None):
    from sudoku import data as sdata
    p = argparse.ArgumentParser(prog="python -m sudoku train",
                                description="Train the Sudoku equilibrium reasoner (EqR's recipe).")
    p.add_argument("--data", required=True,
                   help="CSV in the Sudoku-Extreme format, or an EqR/HRM dataset folder "
                        "(dataset.json + all__*.npy; a folder holding train/ uses train/)")
    p.add_argument("--out", required=True, help="run directory (checkpoint, metrics)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/ckpt.pt")
    p.add_argument("--hidden", type=int, default=64,
                   help="64: a CPU-sized model; the recipe uses 512 (see the module docstring)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--H-cycles", dest="H_cycles", type=int, default=SMALL_CYCLES[0],
                   help="z_H updates per reasoning step (the recipe: 3)")
    p.add_argument("--L-cycles", dest="L_cycles", type=int, default=SMALL_CYCLES[1],
                   help="z_L updates per z_H update (the recipe: 6)")
    p.add_argument("--latent-dtype", choices=sorted(LATENT_DTYPES), default="float32",
                   help="precision of the latents and blocks (EqR's forward_dtype: bfloat16)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    for name, value in asdict(TrainConfig()).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            p.add_argument(flag, action="store_true", default=value) if not value else \
                p.add_argument("--no-" + name.replace("_", "-"), dest=name, action="store_false")
        elif name == "loss":
            p.add_argument(flag, choices=LOSSES, default=value)
        else:
            p.add_argument(flag, type=type(value), default=value)
    args = p.parse_args(argv)
    cfg = TrainConfig(**{k: getattr(args, k) for k in asdict(TrainConfig())})
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.supervision_steps < 1 or cfg.checkpoint_every < 1:
        p.error("--steps, --batch-size, --supervision-steps and --checkpoint-every must be >= 1")
    args.device = init_from_env(args.device)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    random.seed(cfg.seed)
    questions, answers = sdata.load_tensors(args.data, split="train")
    model = SudokuReasoner(ReasonerConfig(hidden=args.hidden, layers=args.layers,
                                          H_cycles=args.H_cycles, L_cycles=args.L_cycles,
                                          latent_dtype=args.latent_dtype)).to(args.device)
    trainer = Trainer(model, questions, answers, cfg, args.out, augment_fn=sdata.augment_batch)
    ckpt = os.path.join(args.out, "ckpt.pt")
    if args.resume and os.path.exists(ckpt):
        trainer.load(ckpt)
        print(f"resumed at step {trainer.step}")
    trainer.run()


if __name__ == "__main__":
    main()

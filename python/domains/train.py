"""Training a domain model at its training depth: AdamW, warm-up then cosine, clipping."""
from __future__ import annotations

import math
from typing import List

import torch
from tqdm.auto import tqdm

from domains.domain import Batch, Domain, RunConfig, batch_size, take, to_device
from domains.model import ImplicitModel


def train(domain: Domain, model: ImplicitModel, data: Batch, cfg: RunConfig, *,
          device: torch.device, seed: int = 0, progress: bool = True) -> List[dict]:
    """Trains in place on minibatches of `data`; returns the log ({step, loss} every 10 steps)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(cfg))
    order = torch.Generator().manual_seed(seed)
    n = batch_size(data)
    model.train()
    log, running = [], []
    bar = tqdm(range(cfg.train_steps), desc=f"train {domain.name}", disable=not progress,
               mininterval=0.5)
    for step in bar:
        rows = torch.randint(n, (min(cfg.batch_size, n),), generator=order)
        batch = to_device(take(data, rows), device)
        pred = model(domain.model_input(model, batch), cfg.train_iters)
        loss = domain.loss(pred, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{domain.name}: training loss is {loss.item()} at step "
                                     f"{step}; lower the learning rate or the damping")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        schedule.step()
        running.append(loss.item())
        if (step + 1) % 10 == 0 or step + 1 == cfg.train_steps:
            log.append(dict(step=step + 1, loss=sum(running) / len(running)))
            bar.set_postfix(loss=f"{log[-1]['loss']:.4g}")
            running = []
    model.eval()
    return log


def _warmup_cosine(cfg: RunConfig):
    def factor(step):
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.train_steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor

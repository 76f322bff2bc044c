"""Test-time scaling: solution quality and the empirical Lipschitz constant of the
input -> output map, against the number of iterations."""
from __future__ import annotations

import copy
from typing import Dict, List, Optional

import torch

from domains.domain import Batch, Domain, RunConfig, batch_size, take, to_device
from domains.model import ImplicitModel


def log_depths(max_iters: int, per_decade: int = 4, include: tuple = ()) -> List[int]:
    """Increasing ints from 1 to max_iters, about `per_decade` per factor of 10."""
    if max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}")
    n = int(round(per_decade * torch.log10(torch.tensor(float(max_iters))).item())) + 1
    grid = torch.logspace(0, torch.log10(torch.tensor(float(max_iters))).item(), max(n, 2))
    depths = {int(round(v)) for v in grid.tolist()} | {k for k in include if 1 <= k <= max_iters}
    return sorted(depths)


@torch.no_grad()
def quality_curve(domain: Domain, model: ImplicitModel, data: Batch, depths: List[int], *,
                  device: torch.device, chunk: int = 256) -> Dict[int, dict]:
    """{k: {"quality": mean metric, each extra metric's mean, "step_norm": median
    ||z_k - z_{k-1}||}} over `data`."""
    sums = {k: {} for k in depths}
    step_norms = {k: [] for k in depths}
    n = batch_size(data)
    for start in range(0, n, chunk):
        batch = to_device(take(data, slice(start, start + chunk)), device)
        u = domain.model_input(model, batch)
        for k, pred, step_norm in model.predictions_at(u, depths):
            metrics = dict(quality=domain.quality(pred, batch), **domain.extra_metrics(pred, batch))
            for name, values in metrics.items():
                sums[k][name] = sums[k].get(name, 0.0) + values.double().sum().item()
            step_norms[k].append(step_norm.float().cpu())
    return {k: dict({name: total / n for name, total in sums[k].items()},
                    step_norm=torch.cat(step_norms[k]).median().item())
            for k in depths}


def _perturbed_inputs(u: torch.Tensor, cfg: RunConfig, seed: int):
    """u followed by u + d for `lipschitz_directions` random d per input, ||d|| = eps ||u||;
    returns (inputs, d) with d shaped (directions, samples, ...)."""
    S, D = u.shape[0], cfg.lipschitz_directions
    gen = torch.Generator(device="cpu").manual_seed(seed)
    d = torch.randn((D,) + tuple(u.shape), generator=gen, dtype=u.dtype).to(u.device)
    u_norm = u.flatten(1).norm(dim=1).clamp_min(1e-12)
    d = d * (cfg.lipschitz_eps * u_norm / d.flatten(2).norm(dim=2)).view(D, S, *[1] * (u.dim() - 1))
    return torch.cat([u, (u.unsqueeze(0) + d).flatten(0, 1)]), d


def _ratio_stats(pred: torch.Tensor, d: torch.Tensor) -> dict:
    """max and median of ||F(u + d) - F(u)|| / ||d|| from predictions on _perturbed_inputs."""
    D, S = d.shape[:2]
    base, moved = pred[:S], pred[S:].view(D, S, *pred.shape[1:])
    ratio = (moved - base.unsqueeze(0)).flatten(2).norm(dim=2) / d.flatten(2).norm(dim=2)
    return dict(lipschitz_max=ratio.max().item(), lipschitz_median=ratio.median().item())


def _float64_inputs(domain: Domain, model: ImplicitModel, data: Batch, cfg: RunConfig,
                    device: torch.device) -> torch.Tensor:
    batch = to_device(take(data, slice(0, cfg.lipschitz_samples)), device)
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    return domain.model_input(model, batch).double()


@torch.no_grad()
def lipschitz_curve(domain: Domain, model: ImplicitModel, data: Batch, depths: List[int],
                    cfg: RunConfig, *, device: torch.device, seed: int = 0) -> Dict[int, dict]:
    """{k: {"lipschitz_max", "lipschitz_median"}}: ratios ||F_k(u') - F_k(u)|| / ||u' - u||
    over inputs u and nearby u' = u + d, ||d|| = eps ||u||, d in random directions.
    F_k is the model's map from u (everything it reads) to its prediction after k steps.

    Runs a float64 copy of the model, so the ratio measures the map, not float32 rounding.
    """
    model64 = copy.deepcopy(model).double()
    u_all, d = _perturbed_inputs(_float64_inputs(domain, model64, data, cfg, device), cfg, seed)
    return {k: _ratio_stats(pred, d) for k, pred, _ in model64.predictions_at(u_all, depths)}


@torch.no_grad()
def reference_lipschitz(domain: Domain, model: ImplicitModel, data: Batch, cfg: RunConfig, *,
                        device: torch.device, seed: int = 0) -> Optional[dict]:
    """The same estimate for the domain's exact map (same inputs, same directions), or None
    where the domain has none."""
    u_all, d = _perturbed_inputs(_float64_inputs(domain, model, data, cfg, device), cfg, seed)
    exact = domain.reference_map(u_all, cfg)
    return None if exact is None else _ratio_stats(exact.double(), d)


def scaling_table(domain: Domain, model: ImplicitModel, test: Batch, cfg: RunConfig, *,
                  device: torch.device, hard: Optional[Batch] = None, seed: int = 0
                  ) -> List[dict]:
    """One row per test-time depth: quality (test, and hard if given), step norm, Lipschitz."""
    depths = log_depths(cfg.eval_max_iters, cfg.depths_per_decade,
                        include=(cfg.train_iters, model.train_forward_depth))
    model.eval()
    curves = [quality_curve(domain, model, test, depths, device=device)]
    if hard is not None:
        curves.append({k: {f"{name}_hard": value for name, value in v.items()
                           if name != "step_norm"}
                       for k, v in quality_curve(domain, model, hard, depths,
                                                 device=device).items()})
    curves.append(lipschitz_curve(domain, model, test, depths, cfg, device=device, seed=seed))
    rows = []
    for k in depths:
        row = dict(iters=k, train_depth=k == cfg.train_iters,
                   train_forward_depth=k == model.train_forward_depth)
        for curve in curves:
            row.update(curve[k])
        rows.append(row)
    return rows

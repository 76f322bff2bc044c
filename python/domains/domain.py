"""What a domain provides to the harness: data, a model, a loss and a per-sample metric."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, Optional

import torch

from cli_safety.values import Range
from domains.model import ImplicitModel

Batch = Dict[str, torch.Tensor]  # "input" plus the domain's targets; dim 0 is the sample


@dataclass
class RunConfig:
    """One run: training at depth `train_iters`, then test-time depths up to `eval_max_iters`.

    model: the domain's own sizes (width, layers, grid size, ...), read by build_model.
    data: the domain's own generator settings (difficulty, noise, ...), read by make_data.
    """
    train_iters: int = 8
    train_steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    grad_clip: float = 1.0
    n_train: int = 512
    n_test: int = 128
    eval_max_iters: int = 400          # 10-100x train_iters
    depths_per_decade: int = 4         # log-spaced test-time depths
    lipschitz_samples: int = 16        # test inputs the Lipschitz estimate perturbs
    lipschitz_directions: int = 4      # random directions per input
    lipschitz_eps: float = 1e-3        # perturbation norm relative to the input's norm
    model: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)

    def __post_init__(self):
        for name, valid in RUN_RANGES.items():
            valid.check(name, getattr(self, name))

    def with_overrides(self, **changes) -> "RunConfig":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


_COUNT = Range(int, min=1)
# The valid range of every numeric RunConfig field (the CLI's overrides use the same).
RUN_RANGES = dict(train_iters=_COUNT, train_steps=_COUNT, batch_size=_COUNT,
                  lr=Range(float, above=0), weight_decay=Range(float, min=0),
                  warmup_steps=Range(int, min=0), grad_clip=Range(float, above=0),
                  n_train=_COUNT, n_test=_COUNT, eval_max_iters=_COUNT, depths_per_decade=_COUNT,
                  lipschitz_samples=_COUNT, lipschitz_directions=_COUNT,
                  lipschitz_eps=Range(float, above=0))


class Domain:
    """Subclass per domain. `configs["small"]` trains on a 2-core CPU in a few minutes;
    `configs["gpu"]` is the scaled-up run."""
    name: str = ""
    metric: str = ""                  # e.g. "PSNR (dB)"
    higher_is_better: bool = True
    has_hard_split: bool = False      # make_data(..., hard=True) gives harder instances
    configs: Dict[str, RunConfig] = {}

    def make_data(self, n: int, seed: int, cfg: RunConfig, *, hard: bool = False) -> Batch:
        """n fresh instances from generator seed `seed` (CPU tensors)."""
        raise NotImplementedError

    def build_model(self, cfg: RunConfig) -> ImplicitModel:
        raise NotImplementedError

    def model_input(self, model: ImplicitModel, batch: Batch) -> torch.Tensor:
        """The continuous input u the model maps (and the Lipschitz estimate perturbs);
        a token domain returns embeddings here."""
        return batch["input"]

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def quality(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        """(B,) per-sample metric, averaged by the harness."""
        raise NotImplementedError

    def extra_metrics(self, pred: torch.Tensor, batch: Batch) -> Dict[str, torch.Tensor]:
        """Further (B,) per-sample metrics to report beside `quality` (name -> values),
        e.g. an LP's constraint violation; averaged by the harness."""
        return {}

    def reference_map(self, u: torch.Tensor, cfg: RunConfig) -> Optional[torch.Tensor]:
        """The exact input -> target map applied to model inputs u (float64), where the
        domain has one (a PDE's solver); None otherwise. Its Lipschitz estimate is reported
        beside the model's, for scale."""
        return None


def take(batch: Batch, rows) -> Batch:
    return {k: v[rows] for k, v in batch.items()}


def to_device(batch: Batch, device) -> Batch:
    return {k: v.to(device) for k, v in batch.items()}


def batch_size(batch: Batch) -> int:
    return len(next(iter(batch.values())))


def get_config(domain: Domain, name: str) -> RunConfig:
    if name not in domain.configs:
        raise ValueError(f"config must be one of {sorted(domain.configs)} for {domain.name}, "
                         f"got {name!r}")
    return domain.configs[name]


def optional_hard(domain: Domain, n: int, seed: int, cfg: RunConfig) -> Optional[Batch]:
    return domain.make_data(n, seed, cfg, hard=True) if domain.has_hard_split else None

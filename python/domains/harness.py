"""One domain, end to end: generate data, train at a small depth, measure test-time scaling,
write the table and plot."""
from __future__ import annotations

import importlib
import time
from typing import Optional

import torch

from cli_safety.devices import default_device, parse_device
from domains import DOMAIN_MODULES
from domains.domain import Domain, RunConfig, get_config, optional_hard
from domains.report import write_report
from domains.scaling import reference_lipschitz, scaling_table
from domains.train import train


def load_domain(name: str) -> Domain:
    if name not in DOMAIN_MODULES:
        raise ValueError(f"domain must be one of {sorted(DOMAIN_MODULES)}, got {name!r}")
    return importlib.import_module(DOMAIN_MODULES[name]).DOMAIN


def run_domain(name: str, *, config: str = "small", out_dir: str = "runs/domains",
               device: Optional[str] = None, seed: int = 0, progress: bool = True,
               **overrides) -> dict:
    """Returns {"rows": scaling table rows, "train_log": ..., "paths": written files}."""
    domain = load_domain(name)
    cfg: RunConfig = get_config(domain, config).with_overrides(**overrides)
    dev = torch.device(parse_device(device, "device") if device else default_device())
    torch.manual_seed(seed)
    start = time.time()
    # Disjoint generator seeds: the test instances are never trained on.
    train_data = domain.make_data(cfg.n_train, seed=3 * seed, cfg=cfg)
    test_data = domain.make_data(cfg.n_test, seed=3 * seed + 1, cfg=cfg)
    hard_data = optional_hard(domain, cfg.n_test, 3 * seed + 2, cfg)
    model = domain.build_model(cfg).to(dev)
    log = train(domain, model, train_data, cfg, device=dev, seed=seed, progress=progress)
    rows = scaling_table(domain, model, test_data, cfg, device=dev, hard=hard_data, seed=seed)
    reference = reference_lipschitz(domain, model, test_data, cfg, device=dev, seed=seed)
    seconds = time.time() - start
    paths = write_report(domain, cfg, rows, log, out_dir, device=_device_name(dev),
                         seconds=seconds, reference=reference)
    return dict(rows=rows, train_log=log, paths=paths, model=model, reference=reference)


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU ({torch.get_num_threads()} threads)"

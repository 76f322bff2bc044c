"""The shared harness of the four-domain models: depth grids, exact Lipschitz of a known map,
training reducing the loss, and the written table/plot."""
import json
import os
import random
import sys

import pytest
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))

from domains.domain import Domain, RunConfig  # noqa: E402
from domains.model import ImplicitModel  # noqa: E402
from domains.report import write_report  # noqa: E402
from domains.scaling import (lipschitz_curve, log_depths, quality_curve,  # noqa: E402
                             reference_lipschitz, scaling_table)
from domains.train import train  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_seed():
    torch.manual_seed(random.randrange(2**31))


class ScaledSum(nn.Module):
    """block(z, x) = a z + x: after k steps from 0, z_k = x (1 - a^k) / (1 - a)."""

    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(float(a)))

    def forward(self, z, x):
        return self.a * z + x


class Linear(ImplicitModel):
    def readout(self, z, u):
        return z


class Denoise(Domain):
    """Recover v from v + noise: a tiny learnable task for the training loop."""
    name, metric, higher_is_better = "toy", "neg. MSE", True

    def make_data(self, n, seed, cfg, *, hard=False):
        g = torch.Generator().manual_seed(seed)
        clean = torch.randn(n, 8, generator=g)
        return dict(input=clean + 0.3 * torch.randn(n, 8, generator=g), target=clean)

    def build_model(self, cfg):
        return Linear(_Tanh(8), train_iters=cfg.train_iters, damping=0.5)

    def loss(self, pred, batch):
        return (pred - batch["target"]).square().mean()

    def quality(self, pred, batch):
        return -(pred - batch["target"]).square().mean(dim=1)

    def extra_metrics(self, pred, batch):
        return dict(max_error=(pred - batch["target"]).abs().amax(dim=1))


class _Tanh(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.lin = nn.Linear(n, n)

    def forward(self, z, x):
        return torch.tanh(self.lin(z)) + x


def test_log_depths_are_increasing_and_cover_the_range():
    depths = log_depths(400, 4, include=(8,))
    assert depths[0] == 1 and depths[-1] == 400 and 8 in depths
    assert all(a < b for a, b in zip(depths, depths[1:]))
    with pytest.raises(ValueError, match="max_iters"):
        log_depths(0)


def test_lipschitz_of_a_known_linear_map_is_exact():
    a = float(torch.tensor(random.uniform(0.3, 0.9)))  # the float32 value the model holds
    model = Linear(ScaledSum(a), train_iters=3)
    data = dict(input=torch.randn(6, 5))
    depths = [1, 2, 5, 20]
    cfg = RunConfig(lipschitz_samples=6, lipschitz_directions=3, lipschitz_eps=1e-2)
    curve = lipschitz_curve(Denoise(), model, data, depths, cfg, device=torch.device("cpu"))
    for k in depths:
        exact = (1 - a ** k) / (1 - a)
        assert curve[k]["lipschitz_max"] == pytest.approx(exact, rel=1e-9)
        assert curve[k]["lipschitz_median"] == pytest.approx(exact, rel=1e-9)


class ScaledTarget(Denoise):
    """A domain whose exact map is u -> c u: its reference Lipschitz constant is |c|."""

    def __init__(self, c):
        self.c = c

    def reference_map(self, u, cfg):
        return self.c * u


def test_reference_lipschitz_of_a_known_exact_map(tmp_path):
    c = random.uniform(-3.0, 3.0)
    cfg = RunConfig(lipschitz_samples=5, lipschitz_directions=3)
    model = Denoise().build_model(cfg)
    data = Denoise().make_data(7, random.randrange(2**31), cfg)
    ref = reference_lipschitz(ScaledTarget(c), model, data, cfg, device=torch.device("cpu"))
    assert ref["lipschitz_max"] == pytest.approx(abs(c), rel=1e-9)
    assert ref["lipschitz_median"] == pytest.approx(abs(c), rel=1e-9)
    assert reference_lipschitz(Denoise(), model, data, cfg, device=torch.device("cpu")) is None
    rows = scaling_table(Denoise(), model, data, cfg.with_overrides(eval_max_iters=10),
                         device=torch.device("cpu"))
    paths = write_report(Denoise(), cfg, rows, [dict(loss=1.0), dict(loss=0.5)], str(tmp_path),
                         device="cpu", seconds=1.0, reference=ref)
    assert f"Lipschitz max {abs(c):.4g}" in open(paths["table"]).read()
    assert json.load(open(paths["json"]))["reference_lipschitz"] == ref


def test_predictions_at_equals_separate_runs_of_each_depth():
    model = Denoise().build_model(RunConfig(train_iters=4))
    u = torch.randn(5, 8)
    with torch.no_grad():
        for k, pred, step_norm in model.predictions_at(u, [1, 3, 10]):
            torch.testing.assert_close(pred, model(u, k), rtol=0, atol=1e-6)
            assert step_norm.shape == (5,)
    with pytest.raises(ValueError, match="strictly increasing"):
        list(model.predictions_at(u, [3, 3]))


@pytest.mark.parametrize("backward, extra", [("implicit", 0), ("one_step", 1), ("unroll", 3),
                                             ("phantom", 2)])
def test_train_forward_depth_counts_the_steps_the_backward_records(backward, extra):
    model = Linear(_Tanh(8), train_iters=4, backward=backward, unroll_steps=3, phantom_steps=2)
    assert model.train_forward_depth == 4 + extra


def test_a_training_prediction_with_unroll_equals_evaluation_at_the_forward_depth():
    model = Linear(_Tanh(8), train_iters=random.randint(2, 6), backward="unroll",
                   unroll_steps=random.randint(1, 4))
    u = torch.randn(5, 8)
    trained = model(u)  # with autograd: train_iters steps, then the recorded unroll
    assert trained.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(trained, model(u, model.train_forward_depth), rtol=0,
                                   atol=1e-6)
        assert not torch.allclose(trained, model(u, model.train_iters), rtol=0, atol=1e-4)


def test_training_reduces_the_loss_and_the_report_is_written(tmp_path):
    domain = Denoise()
    cfg = RunConfig(train_iters=4, train_steps=60, batch_size=32, lr=1e-2, warmup_steps=5,
                    n_train=256, n_test=64, eval_max_iters=40, lipschitz_samples=4)
    model = domain.build_model(cfg)
    data = domain.make_data(cfg.n_train, 0, cfg)
    test = domain.make_data(cfg.n_test, 1, cfg)
    before = quality_curve(domain, model, test, [4], device=torch.device("cpu"))[4]["quality"]
    log = train(domain, model, data, cfg, device=torch.device("cpu"), progress=False)
    assert log[-1]["loss"] < 0.7 * log[0]["loss"]
    rows = scaling_table(domain, model, test, cfg, device=torch.device("cpu"))
    trained = next(r for r in rows if r["iters"] == 4)
    assert trained["quality"] > before
    paths = write_report(domain, cfg, rows, log, str(tmp_path), device="cpu", seconds=1.0)
    table = open(paths["table"]).read()
    assert "| 4 (train) |" in table and "| 9 (train fwd) |" in table  # phantom: 5 steps
    assert "Lipschitz" in table and "max error" in table
    assert all(0 < r["max_error"] < float("inf") for r in rows)
    assert os.path.getsize(paths["plot"]) > 1000

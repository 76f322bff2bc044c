"""The PDE domain: the pseudo-spectral Navier-Stokes solver against exact solutions and
conservation laws, the random-field sampler, and the implicit Fourier neural operator."""
import math
import os
import random
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))

from domains.domain import RunConfig  # noqa: E402
from domains.navier_stokes import (VorticitySolver, dealias_mask, fno_forcing,  # noqa: E402
                                   sample_vorticity)
from domains.pde import DOMAIN, FourierBlock, relative_l2  # noqa: E402
from domains.train import train  # noqa: E402
from grad_checks import assert_finite_nonzero_grads  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_seed():
    torch.manual_seed(random.randrange(2**31))


def _grid_xy(n):
    x = torch.arange(n, dtype=torch.float64) / n
    return x.view(n, 1).expand(n, n), x.view(1, n).expand(n, n)


def _single_shell_vorticity(n, batch):
    """(batch, n, n): random combinations of modes with one |k|, so psi = w / |k|^2 and
    u . grad(w) = 0 exactly: diffusion alone acts, w(t) = exp(-nu |k|^2 t) w(0)."""
    x, y = _grid_xy(n)
    p, q = random.choice([(1, 2), (2, 1), (3, 0), (2, 2)])
    modes = [(p, q), (-q, p)] if p != q else [(p, q), (p, -q)]
    w = torch.zeros(batch, n, n, dtype=torch.float64)
    for a, b in modes:
        phase = 2 * math.pi * (a * x + b * y)
        c, s = torch.randn(2, batch, 1, 1, dtype=torch.float64)
        w = w + c * torch.cos(phase) + s * torch.sin(phase)
    return w, (2 * math.pi) ** 2 * (p * p + q * q)


def _energy_and_enstrophy(w):
    """(B,) kinetic energy 1/2 sum |u|^2 = 1/2 sum |w_hat|^2 / |k|^2 and enstrophy
    1/2 sum |w_hat|^2 (Parseval; the same constant factor dropped from both)."""
    n = w.shape[-1]
    k = 2 * math.pi * torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)
    k2 = k.view(n, 1) ** 2 + k.view(1, n) ** 2
    inv_k2 = torch.where(k2 > 0, 1 / k2.clamp_min(1e-30), torch.zeros_like(k2))
    power = torch.fft.fft2(w).abs() ** 2
    return 0.5 * (power * inv_k2).sum(dim=(-2, -1)), 0.5 * power.sum(dim=(-2, -1))


def test_single_shell_vorticity_decays_exactly():
    n, nu, dt, t_end = 32, random.uniform(0.005, 0.02), 2e-3, 0.2
    w0, k2 = _single_shell_vorticity(n, 3)
    w_end = VorticitySolver(n, nu=nu, dt=dt).solve(w0, t_end)
    # Advection vanishes to rounding: what is left is Crank-Nicolson's own decay factor ...
    half = 0.5 * dt * nu * k2
    scheme = ((1 - half) / (1 + half)) ** round(t_end / dt)
    torch.testing.assert_close(w_end, w0 * scheme, rtol=0, atol=1e-12)
    # ... which is exp(-nu |k|^2 t) up to its O(dt^2) error.
    exact = math.exp(-nu * k2 * t_end)
    torch.testing.assert_close(w_end, w0 * exact, rtol=0, atol=1e-5 * w0.abs().max().item())


def test_forcing_alone_drives_the_linear_response():
    """Unforced zero field stays zero; with the FNO forcing (a single |k| shell, so its own
    advection vanishes) w(t) = f (1 - exp(-nu k^2 t)) / (nu k^2)."""
    n, nu, dt, t_end = 32, random.uniform(0.01, 0.05), 1e-3, 0.5
    f = fno_forcing(n)
    k2 = 2 * (2 * math.pi) ** 2
    zero = torch.zeros(2, n, n, dtype=torch.float64)
    assert VorticitySolver(n, nu=nu, dt=dt).solve(zero, t_end).abs().max() == 0
    w_end = VorticitySolver(n, nu=nu, dt=dt, forcing=f).solve(zero, t_end)
    # Crank-Nicolson's own recursion w <- ((1 - h) w + dt f) / (1 + h), to rounding ...
    half = 0.5 * dt * nu * k2
    scheme = 1 - ((1 - half) / (1 + half)) ** round(t_end / dt)
    torch.testing.assert_close(w_end, (f * scheme / (nu * k2)).expand(2, n, n), rtol=0,
                               atol=1e-13)
    # ... and the exact solution up to the scheme's O(dt^2) error.
    expected = f * (1 - math.exp(-nu * k2 * t_end)) / (nu * k2)
    torch.testing.assert_close(w_end, expected.expand(2, n, n), rtol=0, atol=1e-6 * f.abs().max().item())


def test_inviscid_flow_conserves_energy_and_enstrophy_and_mean():
    n = 32
    w0 = sample_vorticity(4, n, seed=random.randrange(2**31))
    w_end = VorticitySolver(n, nu=0.0, dt=0.01).solve(w0, 0.5)
    assert (w_end - w0).norm() > 0.1 * w0.norm()  # the flow did move
    e0, z0 = _energy_and_enstrophy(w0)
    e1, z1 = _energy_and_enstrophy(w_end)
    torch.testing.assert_close(e1, e0, rtol=1e-4, atol=0)
    torch.testing.assert_close(z1, z0, rtol=1e-4, atol=0)
    assert w_end.mean(dim=(-2, -1)).abs().max() < 1e-12


def test_viscous_forced_flow_keeps_zero_mean_and_unforced_enstrophy_decays():
    n = 32
    w0 = sample_vorticity(3, n, seed=random.randrange(2**31))
    solver = VorticitySolver(n, nu=1e-2, dt=0.02)
    enstrophies, w = [_energy_and_enstrophy(w0)[1]], w0
    for _ in range(5):
        w = solver.solve(w, 0.1)
        enstrophies.append(_energy_and_enstrophy(w)[1])
    steps = torch.stack(enstrophies)
    assert (steps[1:] < steps[:-1]).all()
    forced = VorticitySolver(n, nu=1e-3, dt=0.05, forcing=fno_forcing(n)).solve(w0, 1.0)
    assert forced.mean(dim=(-2, -1)).abs().max() < 1e-12


def test_solver_rejects_a_time_that_is_not_a_multiple_of_dt():
    with pytest.raises(ValueError, match="t_end"):
        VorticitySolver(8, nu=1e-3, dt=0.1).solve(torch.randn(1, 8, 8, dtype=torch.float64), 0.25)


def test_sampler_is_seeded_zero_mean_band_limited_with_the_requested_std():
    seed, n = random.randrange(2**31), 32
    a = sample_vorticity(64, n, seed, std=2.0)
    b = sample_vorticity(64, n, seed, std=2.0)
    assert torch.equal(a, b)
    assert not torch.equal(a, sample_vorticity(64, n, seed + 1, std=2.0))
    assert a.mean(dim=(-2, -1)).abs().max() < 1e-12
    assert a.std().item() == pytest.approx(2.0, rel=0.15)
    outside = torch.fft.rfft2(a)[:, ~dealias_mask(n)]
    assert outside.abs().max() < 1e-9


def test_block_is_a_contraction_in_z():
    contraction = random.uniform(0.5, 0.9)
    block = FourierBlock(8, 4, contraction).double()
    with torch.no_grad():  # push the weights far past the bound: the scaling must catch it
        block.mix.r_real.mul_(20.0)
        block.mix.w.mul_(20.0)
        z, dz, x = torch.randn(3, 5, 8, 16, 16, dtype=torch.float64)
        ratio = ((block(z + 1e-3 * dz, x) - block(z, x)).flatten(1).norm(dim=1)
                 / (1e-3 * dz).flatten(1).norm(dim=1))
    assert ratio.max() <= contraction
    assert ratio.max() > 0.2 * contraction  # the bound is not met by making the block trivial


def _tiny_config(**changes):
    cfg = RunConfig(train_iters=4, train_steps=40, batch_size=16, lr=2e-2, warmup_steps=3,
                    n_train=48, n_test=8, eval_max_iters=20, lipschitz_samples=2,
                    model=dict(width=8, modes=6, contraction=0.7, damping=1.0,
                               backward="phantom"),
                    data=dict(grid=16, nu=1e-3, t_end=0.25, dt=0.05, alpha=2.5, tau=7.0,
                              std=1.0))
    return cfg.with_overrides(**changes)


@pytest.mark.parametrize("backward", ["phantom", "implicit"])
def test_model_forward_backward_gives_finite_nonzero_gradients(backward):
    cfg = _tiny_config(model=dict(_tiny_config().model, backward=backward))
    model = DOMAIN.build_model(cfg)
    batch = DOMAIN.make_data(6, random.randrange(2**31), cfg)
    assert batch["input"].shape == batch["target"].shape == (6, 1, 16, 16)
    pred = model(batch["input"])
    assert pred.shape == (6, 1, 16, 16)
    loss = DOMAIN.loss(pred, batch)
    assert torch.isfinite(loss)
    loss.backward()
    assert_finite_nonzero_grads(model)


def test_model_runs_in_float64_and_predictions_at_matches_forward():
    cfg = _tiny_config()
    model = DOMAIN.build_model(cfg).eval()
    u = DOMAIN.make_data(3, random.randrange(2**31), cfg)["input"]
    with torch.no_grad():
        for k, pred, _ in model.predictions_at(u, [1, 4, 9]):
            torch.testing.assert_close(pred, model(u, k), rtol=0, atol=1e-5)
        model64 = model.double()
        assert model64(u.double(), 4).dtype == torch.float64


def test_reference_map_is_the_solver_that_made_the_targets():
    cfg = _tiny_config()
    data = DOMAIN.make_data(3, random.randrange(2**31), cfg)
    exact = DOMAIN.reference_map(data["input"].double(), cfg)
    assert exact.dtype == torch.float64 and exact.shape == data["target"].shape
    torch.testing.assert_close(exact.float(), data["target"], rtol=1e-4, atol=1e-5)


def test_training_reduces_the_relative_error():
    # 120 steps: over 30 random seeds the error ratio was 0.16-0.39; at 40 steps it reached 0.83.
    cfg = _tiny_config(train_steps=120)
    model = DOMAIN.build_model(cfg)
    data = DOMAIN.make_data(cfg.n_train, random.randrange(2**31), cfg)
    with torch.no_grad():
        before = relative_l2(model(data["input"]), data["target"]).mean()
    log = train(DOMAIN, model, data, cfg, device=torch.device("cpu"), progress=False)
    with torch.no_grad():
        after = relative_l2(model(data["input"]), data["target"]).mean()
    assert after < 0.8 * before, (before.item(), after.item(), log)

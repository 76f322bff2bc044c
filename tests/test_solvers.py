"""Solvers reach the fixed point, stop per sample, and report divergence."""
import random
import warnings

import pytest
import torch

import eqkernels as eqk
from eqkernels.solvers import SOLVERS, DivergenceError
from maps import tanh_map

SOLVER_NAMES = sorted(SOLVERS)


@pytest.fixture(autouse=True)
def _fresh_seed():
    torch.manual_seed(random.randrange(2**31))


@pytest.mark.parametrize("name", SOLVER_NAMES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_reaches_fixed_point(name, dtype, tol):
    f, _, _ = tanh_map(B=9, n=40, dtype=dtype)
    z, info = SOLVERS[name](f, torch.randn(9, 40, dtype=dtype), max_iter=300, tol=tol)
    assert info.converged.all()
    residual = (f(z) - z).double().norm(dim=1)
    assert (residual < tol).all()
    if name == "damped":  # its residual is the last step ||z_T - z_(T-1)||, which bounds f(z)-z
        assert (info.abs_residual.double() < tol).all()
        assert (residual <= info.abs_residual.double() * (1 + 1e-6)).all()
    else:
        torch.testing.assert_close(info.abs_residual.double(), residual, rtol=1e-3,
                                   atol=tol * 1e-3)
    assert z.dtype == dtype


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_relative_stop_mode(name):
    f, _, _ = tanh_map(B=5, n=30)
    z, info = SOLVERS[name](f, torch.zeros(5, 30, dtype=torch.float64), max_iter=300, tol=1e-9,
                            stop_mode="rel")
    fz = f(z)
    rel = (fz - z).norm(dim=1) / fz.norm(dim=1)
    assert info.converged.all() and (rel < 1e-9).all()


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_easy_samples_stop_early(name):
    """Contraction 0.1 for the first half of the batch, 0.95 for the rest."""
    n = 32
    f_easy, _, _ = tanh_map(B=4, n=n, norm=0.1)
    f_hard, _, _ = tanh_map(B=4, n=n, norm=0.95)
    f = lambda z: torch.cat([f_easy(z[:4]), f_hard(z[4:])])
    z, info = SOLVERS[name](f, torch.zeros(8, n, dtype=torch.float64), max_iter=500, tol=1e-10)
    assert info.converged.all()
    assert info.nstep[:4].max() < info.nstep[4:].min()
    # frozen samples were not iterated further: their residual is the one at their own stop
    assert (info.abs_residual < 1e-10).all()


def test_anderson_accelerates_a_slow_linear_map():
    """Symmetric W with eigenvalues up to 0.99: Picard needs ~2,000 steps, Anderson far fewer."""
    n = 64
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
    W = Q @ torch.diag(torch.linspace(-0.99, 0.99, n, dtype=torch.float64)) @ Q.T
    x = torch.randn(4, n, dtype=torch.float64)
    f = lambda z: z @ W.T + x
    z0 = torch.zeros(4, n, dtype=torch.float64)
    _, fp = eqk.fixed_point(f, z0, max_iter=5000, tol=1e-6)
    _, aa = eqk.anderson(f, z0, max_iter=5000, tol=1e-6, m=8, lam=0.0)
    assert aa.converged.all() and fp.converged.all()
    assert aa.nstep.max() * 5 < fp.nstep.min()


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_nan_samples_are_flagged_not_returned(name):
    f0, _, _ = tanh_map(B=6, n=20)

    def f(z):
        out = f0(z)
        out[2] = float("nan")
        out[4, 3] = float("inf")
        return out

    z0 = torch.randn(6, 20, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="2 of 6 samples produced NaN/Inf"):
        z, info = SOLVERS[name](f, z0, max_iter=100, tol=1e-9)
    assert info.diverged.tolist() == [False, False, True, False, True, False]
    assert torch.isfinite(z).all()
    assert info.converged[[0, 1, 3, 5]].all()
    with pytest.raises(DivergenceError):
        SOLVERS[name](f, z0, max_iter=100, tol=1e-9, on_diverge="raise")


def test_divergence_midway_returns_last_finite_best():
    f0, _, _ = tanh_map(B=3, n=10)
    calls = [0]

    def f(z):
        calls[0] += 1
        out = f0(z)
        if calls[0] > 3:
            out[1] = float("nan")
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z, info = eqk.anderson(f, torch.zeros(3, 10, dtype=torch.float64), max_iter=50, tol=1e-12)
    assert info.diverged.tolist() == [False, True, False]
    assert info.nstep[1] == 4
    assert torch.isfinite(z[1]).all() and torch.isfinite(info.abs_residual[1])


def test_trajectory_and_max_iter():
    f, _, _ = tanh_map(B=3, n=16, norm=0.99)
    z, info = eqk.anderson(f, torch.zeros(3, 16, dtype=torch.float64), max_iter=7, tol=1e-14,
                           trajectory=True)
    assert info.trajectory.shape == (7, 3)
    assert (info.nstep == 7).all() and not info.converged.any()
    assert torch.equal(info.trajectory[-1] <= info.trajectory[0], torch.ones(3, dtype=torch.bool))


def test_check_every_only_adds_steps_never_changes_samples():
    f, _, _ = tanh_map(B=4, n=16)
    z0 = torch.zeros(4, 16, dtype=torch.float64)
    z1, i1 = eqk.anderson(f, z0, max_iter=100, tol=1e-10, check_every=1)
    z7, i7 = eqk.anderson(f, z0, max_iter=100, tol=1e-10, check_every=7)
    assert torch.equal(i1.nstep, i7.nstep)
    torch.testing.assert_close(z1, z7, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(tol=0.0), "tol must be > 0"),
    (dict(tol=-1.0), "tol must be > 0"),
    (dict(max_iter=0), "max_iter must be an int >= 1"),
    (dict(stop_mode="max"), "stop_mode must be one of"),
    (dict(check_every=0), "check_every must be"),
    (dict(on_diverge="explode"), "on_diverge must be one of"),
    (dict(m=0), "m must be an int"),
    (dict(beta=0.0), "beta must be in"),
])
def test_bad_options(kwargs, match):
    f, _, _ = tanh_map(B=2, n=4)
    with pytest.raises(ValueError, match=match):
        eqk.anderson(f, torch.zeros(2, 4, dtype=torch.float64), **kwargs)


def test_bad_z0_and_f_output():
    f, _, _ = tanh_map(B=2, n=4)
    with pytest.raises(ValueError, match=r"z0 must be a \(B, n\) tensor"):
        eqk.fixed_point(f, torch.zeros(2, 2, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="z0 must be float32 or float64"):
        eqk.fixed_point(f, torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"f\(z\) must return a tensor of shape \(2, 4\)"):
        eqk.broyden(lambda z: z[:, :3], torch.zeros(2, 4))
    # a non-tensor output gets the same message (not an AttributeError), eager and segmented
    with pytest.raises(ValueError, match=r"f\(z\) must return a tensor of shape \(2, 4\), got tuple"):
        eqk.anderson(lambda z: (z,), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"f\(z\) must return a tensor of shape \(2, 4\), got tuple"):
        eqk.damped(lambda z: (z,), torch.zeros(2, 4), cuda_graph=True, graph_steps=4)

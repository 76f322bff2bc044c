"""The DEQ layer: shapes, helpers, diagnostics, and clear errors for bad input."""
import random

import pytest
import torch
from torch import nn

import eqkernels as eqk
from maps import TanhBlock


@pytest.fixture(autouse=True)
def _fresh_seed():
    torch.manual_seed(random.randrange(2**31))


class ConvBlock(nn.Module):
    """z, x: (B, C, H, W); a small contractive conv block."""

    def __init__(self, channels=3):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.mul_(0.3)

    def forward(self, z, x):
        return torch.tanh(self.conv(z) + x)


def test_any_shape_and_dtype_float32():
    block = ConvBlock()
    x = torch.randn(4, 3, 8, 8)
    z, info = eqk.DEQ(block, max_iter=100, tol=1e-5)(x)
    assert z.shape == x.shape and z.dtype == torch.float32
    assert info.nstep.shape == (4,) and info.converged.all()
    assert ((block(z, x) - z).flatten(1).norm(dim=1) < 1e-5).all()


def test_z0_of_another_shape_than_x():
    block = TanhBlock(6, in_features=10)
    x = torch.randn(3, 10, dtype=torch.float64)
    z, info = eqk.DEQ(block, tol=1e-10, max_iter=200)(x, z0=torch.randn(3, 6, dtype=torch.float64))
    assert z.shape == (3, 6) and info.converged.all()


def test_spectral_radius_of_a_linear_block():
    n = 8
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
    eig = torch.tensor([0.9, 0.4, 0.3, 0.2, -0.1, 0.0, 0.1, -0.3], dtype=torch.float64)
    W = Q @ torch.diag(eig) @ Q.T

    class Linear(nn.Module):
        def forward(self, z, x):
            return z @ W.T + x

    z, info = eqk.DEQ(Linear(), tol=1e-10, max_iter=500, spectral_radius=True)(
        torch.randn(2, n, dtype=torch.float64))
    torch.testing.assert_close(info.spectral_radius, torch.full((2,), 0.9, dtype=torch.float64),
                               rtol=1e-3, atol=1e-3)


def test_weight_and_spectral_norm_helpers():
    block = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16))
    x = torch.randn(4, 16)
    before = block(x)
    eqk.apply_weight_norm(block)
    assert all(hasattr(layer.parametrizations, "weight") for layer in (block[0], block[2]))
    torch.testing.assert_close(block(x), before)  # weight norm starts at the same weights
    eqk.remove_norm(block)
    eqk.apply_spectral_norm(block, n_power_iterations=50)
    block.train()
    block(x)
    sigma = torch.linalg.matrix_norm(block[0].weight.detach(), ord=2)
    assert abs(float(sigma) - 1.0) < 1e-2


def test_nan_producing_block_is_reported_not_returned():
    class Exploding(nn.Module):
        def forward(self, z, x):
            out = torch.tanh(0.5 * z + x)
            return torch.where(x[:, :1] > 0, out * float("inf"), out)

    x = torch.randn(16, 5)
    x[0, 0], x[1, 0] = 1.0, -1.0
    deq = eqk.DEQ(Exploding(), max_iter=50, tol=1e-6)
    with pytest.warns(RuntimeWarning, match="samples produced NaN/Inf"):
        z, info = deq(x)
    assert torch.equal(info.diverged, x[:, 0] > 0)
    assert torch.isfinite(z).all()
    with pytest.raises(eqk.DivergenceError):
        eqk.DEQ(Exploding(), max_iter=50, tol=1e-6, on_diverge="raise")(x)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(tol=0), ValueError, "tol must be > 0"),
    (dict(tol=-1e-3), ValueError, "tol must be > 0"),
    (dict(max_iter=0), ValueError, "max_iter must be an int >= 1"),
    (dict(solver="newton"), ValueError, "solver must be one of"),
    (dict(backward="magic"), ValueError, "backward must be one of"),
    (dict(backward_tol=-1.0), ValueError, "tol must be > 0"),
])
def test_bad_constructor_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        eqk.DEQ(TanhBlock(4), **kwargs)


def test_bad_forward_inputs():
    deq = eqk.DEQ(TanhBlock(4))
    x = torch.randn(2, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match="x must be a floating-point tensor, got torch.int64"):
        deq(torch.ones(2, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="z0 must be a floating-point tensor"):
        deq(x, z0=torch.zeros(2, 4, dtype=torch.int32))
    with pytest.raises(TypeError, match="z0 must have x's dtype torch.float64, got torch.float32"):
        deq(x, z0=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"z0 must have shape \(B, \.\.\.\) with B = 2"):
        deq(x, z0=torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="z0 must be on x's device cpu, got meta"):
        deq(x, z0=torch.zeros(2, 4, dtype=torch.float64, device="meta"))
    bad = x.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        deq(bad)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        deq([[1.0, 2.0]])
    bad[1, 2] = float("-inf")
    with pytest.raises(ValueError, match="z0 contains NaN or Inf"):
        deq(x, z0=bad)


def test_large_finite_inputs_are_not_mistaken_for_inf():
    """The CPU check sums each input: a sum that overflows from finite values must not raise."""
    deq = eqk.DEQ(TanhBlock(4), max_iter=3, on_diverge="ignore")
    x = torch.full((2, 4), 1e308, dtype=torch.float64)  # the sum overflows, each is finite
    assert torch.isinf(x.sum())
    deq(x)  # no ValueError


def test_block_returning_another_shape_is_rejected():
    class XShaped(nn.Module):
        def forward(self, z, x):
            return torch.tanh(x + z.sum())

    with pytest.raises(ValueError, match=r"block\(z, x\) must return z's shape \(2, 5\), got \(2, 4\)"):
        eqk.DEQ(XShaped())(torch.randn(2, 4), z0=torch.zeros(2, 5))


def test_block_returning_another_dtype_is_rejected():
    class Casting(nn.Module):
        def forward(self, z, x):
            return torch.tanh(z + x).float()

    with pytest.raises(TypeError, match=r"block\(z, x\) returned torch.float32 but z0 is torch.float64"):
        eqk.DEQ(Casting())(torch.randn(2, 3, dtype=torch.float64))


def test_backends_report_and_reference_fallback():
    report = eqk.backends()
    assert report["reference"][0] is True
    assert set(report) == {"cpp", "cuda", "triton", "reference"}
    for available, reason in report.values():
        assert isinstance(available, bool) and reason
    f = lambda z: torch.tanh(0.5 * z + 1.0)
    _, info = eqk.anderson(f, torch.zeros(2, 3), backend="reference")
    assert info.backend == "reference"
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        eqk.anderson(f, torch.zeros(2, 3), backend="fortran")


def test_per_call_max_iter_runs_that_many_steps_and_continues_from_z0():
    """deq(x, max_iter=k) is test-time depth scaling: k steps here, then k more from there
    equal 2k steps in one call (damped, noise off, so the runs are deterministic)."""
    class Tanh(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(6, 6).double()

        def forward(self, z, x):
            return torch.tanh(self.lin(z) + x)

    block = Tanh()
    deq = eqk.DEQ(block, solver="damped", max_iter=3, tol=1e-30,
                  solver_kwargs=dict(damping=0.7))
    x = torch.randn(5, 6, dtype=torch.float64)
    with torch.no_grad():
        z_k, info_k = deq(x, max_iter=7)
        z_2k, _ = deq(x, max_iter=14)
        z_again, _ = deq(x, z0=z_k, max_iter=7)
    assert (info_k.nstep == 7).all()
    torch.testing.assert_close(z_again, z_2k, rtol=0, atol=1e-14)
    assert not torch.allclose(z_k, z_2k)
    with pytest.raises(ValueError, match="max_iter must be an int >= 1"):
        deq(x, max_iter=0)

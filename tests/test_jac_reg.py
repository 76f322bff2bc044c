"""Jacobian regularisation: the Hutchinson estimate against the exact ||J||_F^2 / n, its
parameter gradients against those of the exact term, and the DEQ option with the
implicit backward."""
import pytest
import torch
from torch import nn

import eqkernels as eqk
from eqkernels.regularization import JacobianRegularizer, jacobian_reg

SEED = 1234


class SmallMap(nn.Module):
    """z -> tanh(W z + b): sample-wise, a non-constant Jacobian diag(1 - tanh^2) W."""

    def __init__(self, n, dtype=torch.float64):
        super().__init__()
        self.lin = nn.Linear(n, n, dtype=dtype)
        with torch.no_grad():
            self.lin.weight.mul_(1.5)

    def forward(self, z, x=None):
        return torch.tanh(self.lin(z) + (0 if x is None else x))


def exact_frobenius(f, z):
    """||J_f(z)||_F^2 / z.numel() from the full per-sample Jacobians, differentiable."""
    total = 0
    for b in range(z.shape[0]):
        J = torch.autograd.functional.jacobian(lambda zb: f(zb[None])[0], z[b],
                                               create_graph=True)
        total = total + J.square().sum()
    return total / z.numel()


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_estimate_and_its_parameter_gradients_match_the_exact_norm(probe):
    torch.manual_seed(SEED)
    f = SmallMap(5)
    z = torch.randn(3, 5, dtype=torch.float64)
    params = list(f.parameters())
    exact = exact_frobenius(f, z)
    exact_grads = torch.autograd.grad(exact, params)

    gen = torch.Generator().manual_seed(SEED)
    values, grads = [], []
    for _ in range(4000):
        est = jacobian_reg(f, z, probe=probe, generator=gen)
        values.append(est.detach())
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(est, params)]))
    values, grads = torch.stack(values), torch.stack(grads)
    exact_flat = torch.cat([g.flatten() for g in exact_grads])
    # Unbiased: the mean is within 5 standard errors of the exact value (seed in SEED).
    se = values.std() / len(values) ** 0.5
    assert abs(values.mean() - exact) < 5 * se, (float(values.mean()), float(exact), float(se))
    g_se = grads.std(dim=0) / len(grads) ** 0.5
    assert ((grads.mean(dim=0) - exact_flat).abs() < 5 * g_se + 1e-12).all()
    # ... and that test has teeth: the standard error is a few percent of the value.
    assert se < 0.05 * exact


def test_many_probes_in_one_call_average_them():
    torch.manual_seed(SEED)
    f = SmallMap(4)
    z = torch.randn(2, 4, dtype=torch.float64)
    one = [jacobian_reg(f, z, generator=torch.Generator().manual_seed(7)).item()]
    gen = torch.Generator().manual_seed(7)
    singles = [jacobian_reg(f, z, generator=gen).item() for _ in range(3)]
    three = jacobian_reg(f, z, n_probes=3, generator=torch.Generator().manual_seed(7)).item()
    assert one[0] == pytest.approx(singles[0])
    assert three == pytest.approx(sum(singles) / 3, rel=1e-12)


def test_options_are_checked():
    f = SmallMap(3)
    z = torch.randn(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="n_probes"):
        jacobian_reg(f, z, n_probes=0)
    with pytest.raises(ValueError, match="probe"):
        jacobian_reg(f, z, probe="uniform")
    with pytest.raises(ValueError, match="jac_reg_freq"):
        JacobianRegularizer(freq=0)
    with pytest.raises(ValueError, match="jac_reg_freq"):
        eqk.DEQ(SmallMap(3), jac_reg=True, jac_reg_freq=1.5)


def test_deq_option_gradient_flows_through_f_of_z_star_with_the_implicit_backward():
    torch.manual_seed(SEED)
    block = SmallMap(6)
    with torch.no_grad():
        block.lin.weight.mul_(0.3)  # contractive
    x = torch.randn(4, 6, dtype=torch.float64)
    deq = eqk.DEQ(block, max_iter=100, tol=1e-12, backward="implicit", jac_reg=True,
                  jac_reg_probes=2)
    z, info = deq(x)
    assert info.jac_loss.requires_grad and info.jac_loss > 0
    params = list(block.parameters())
    grads = torch.autograd.grad(info.jac_loss, params, retain_graph=True)
    # The same probes (the regulariser's generator, seed 0 + 1) at the same z*.
    gen = torch.Generator().manual_seed(1)
    ref = jacobian_reg(lambda zz: block(zz, x), z.detach(), n_probes=2, generator=gen)
    torch.testing.assert_close(info.jac_loss, ref)
    for g, r in zip(grads, torch.autograd.grad(ref, params)):
        torch.testing.assert_close(g, r)
    # The combined loss backpropagates: the z* term by IFT, the regulariser through f(z*).
    (z.square().mean() + 0.5 * info.jac_loss).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    # Eval mode (or no grad): a zero term, nothing computed.
    deq.eval()
    _, info = deq(x)
    assert float(info.jac_loss) == 0.0 and not info.jac_loss.requires_grad


def test_frequency_skips_a_share_of_training_forwards():
    torch.manual_seed(SEED)
    block = SmallMap(4)
    with torch.no_grad():
        block.lin.weight.mul_(0.3)
    deq = eqk.DEQ(block, max_iter=30, tol=1e-8, jac_reg=True, jac_reg_freq=0.3)
    x = torch.randn(2, 4, dtype=torch.float64)
    computed = sum(bool(deq(x)[1].jac_loss.requires_grad) for _ in range(200))
    assert 30 <= computed <= 90, computed  # Binomial(200, 0.3): mean 60, sd 6.5

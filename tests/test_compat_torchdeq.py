"""eqkernels.compat.torchdeq: the same small torchdeq program run with torchdeq and with the
compat layer (same seeds) reaches comparable fixed points and step counts; unknown
options are errors."""
import argparse

import pytest
import torch
from torch import nn

import eqkernels.compat.torchdeq as compat

SEED = 31


class Layer(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.lin = nn.Linear(n, n)
        self.inj = nn.Linear(n, n)

    def forward(self, z, x):
        return torch.tanh(0.8 * self.lin(z) + self.inj(x))


def program(lib, argv, steps=4, n=16, B=8):
    """A torchdeq training script in miniature: argparse + add_deq_args, apply_norm,
    get_deq, reset_norm per step, IFT / phantom backward, then an eval solve."""
    parser = argparse.ArgumentParser()
    lib.add_deq_args(parser)
    parser.add_argument("--lr", type=float, default=0.05)  # the script's own option
    args = parser.parse_args(argv)
    gen = torch.Generator().manual_seed(SEED)
    xs = [torch.randn(B, n, generator=gen) for _ in range(steps + 1)]
    torch.manual_seed(SEED)
    layer = Layer(n)
    lib.apply_norm(layer, args=args)  # weight norm: no random draws
    deq = lib.get_deq(args)
    opt = torch.optim.SGD(layer.parameters(), lr=args.lr)
    train_steps = []
    for x in xs[:-1]:
        lib.reset_norm(layer)
        z_out, info = deq(lambda z: layer(z, x), torch.zeros(B, n))
        loss = sum(z.square().mean() for z in z_out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        train_steps.append(float(info["nstep"].mean()))
    deq.eval()
    lib.reset_norm(layer)
    with torch.no_grad():
        z_out, info = deq(lambda z: layer(z, xs[-1]), torch.zeros(B, n))
    return z_out[-1], info, train_steps, float(loss.detach())


@pytest.mark.parametrize("argv", [
    ["--f_solver", "anderson", "--f_max_iter", "60", "--f_tol", "1e-6", "--ift",
     "--b_solver", "anderson", "--b_tol", "1e-8", "--b_max_iter", "60"],
    ["--f_solver", "fixed_point_iter", "--f_max_iter", "80", "--f_tol", "1e-6",
     "--grad", "3", "--tau", "0.8"],
    ["--f_solver", "anderson", "--f_max_iter", "40", "--f_tol", "1e-6", "--n_states", "2",
     "--ift", "--core", "sliced"],
], ids=["anderson-ift", "fp-phantom3", "sliced-2states"])
def test_same_program_same_result_as_torchdeq(argv):
    torchdeq = pytest.importorskip("torchdeq")
    z_ref, info_ref, steps_ref, loss_ref = program(torchdeq, argv)
    z, info, steps, loss = program(compat, argv)
    # Same training trajectory (the solves differ only below the tolerances) ...
    assert loss == pytest.approx(loss_ref, rel=1e-3), (loss, loss_ref)
    torch.testing.assert_close(z, z_ref, atol=2e-5, rtol=1e-4)
    # ... and comparable solver work (torchdeq counts the step of its lowest residual).
    for ours, theirs in zip(steps + [float(info["nstep"].mean())],
                            steps_ref + [float(info_ref["nstep"].mean())]):
        assert abs(ours - theirs) <= max(3, 0.3 * theirs), (steps, steps_ref)
    assert set(info_ref) <= set(info)
    assert info["abs_lowest"].shape == info_ref["abs_lowest"].shape
    assert float(info["abs_lowest"].max()) < 1e-6


def test_list_states_and_spectral_radius():
    torchdeq = pytest.importorskip("torchdeq")
    torch.manual_seed(SEED)
    a, b = torch.randn(3, 4), torch.randn(3, 2, 2)
    W = 0.4 * torch.randn(8, 8) / 8 ** 0.5

    def f(z1, z2):  # two states of different shapes (MDEQ-style)
        v = torch.cat([z1, z2.reshape(3, 4)], dim=1)
        v = torch.tanh(v @ W.t() + torch.cat([a, b.reshape(3, 4)], dim=1))
        return [v[:, :4], v[:, 4:].reshape(3, 2, 2)]

    outs = []
    for lib in (torchdeq, compat):
        deq = lib.get_deq(f_solver="anderson", f_max_iter=50, f_tol=1e-7).eval()
        z_out, info = deq(f, [torch.zeros(3, 4), torch.zeros(3, 2, 2)], sradius_mode=True)
        outs.append((z_out[0], info))
    (z_ref, info_ref), (z, info) = outs
    assert isinstance(z, list) and z[1].shape == (3, 2, 2)
    for t, r in zip(z, z_ref):
        torch.testing.assert_close(t, r, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(info["sradius"], info_ref["sradius"], atol=2e-3, rtol=2e-2)


def test_unknown_options_are_errors():
    with pytest.raises(TypeError, match="f_max_iters.*did you mean 'f_max_iter'"):
        compat.get_deq(f_max_iters=10)
    with pytest.raises(ValueError, match="f_tols"):
        compat.get_deq(argparse.Namespace(f_tols=1e-3))
    compat.get_deq(argparse.Namespace(lr=1e-3, epochs=3, f_max_iter=5))  # the script's own
    with pytest.raises(ValueError, match="f_solver"):
        compat.get_deq(f_solver="newton")
    with pytest.raises(ValueError, match="grad has 2 entries"):
        compat.get_deq(n_states=3, grad=[1, 2])
    deq = compat.get_deq(f_solver="anderson")
    f = lambda z: 0.5 * z + 1  # noqa: E731
    with pytest.raises(TypeError, match="solver_kwargs.*'beta'"):
        deq(f, torch.zeros(2, 3), solver_kwargs=dict(beta=0.5))
    with pytest.raises(TypeError, match="unknown arguments"):
        deq(f, torch.zeros(2, 3), writer=print)
    with pytest.raises(TypeError, match="apply_norm: unknown"):
        compat.apply_norm(nn.Linear(2, 2), clip_val=1.0)


def test_fp_correction_and_jac_reg_match_torchdeq():
    torchdeq = pytest.importorskip("torchdeq")
    xs = [torch.randn(4, 3) for _ in range(3)]
    y = torch.randn(4, 3)
    crit = lambda p, t: (p - t).square().mean()  # noqa: E731
    for wf, kw in (("exp", dict(gamma=0.7)), ("linear", dict(gamma=0.9))):
        ref = torchdeq.fp_correction(crit, (xs, y), weight_func=wf, **kw)
        torch.testing.assert_close(compat.fp_correction(crit, (xs, y), weight_func=wf, **kw), ref)
    # torchdeq's "const" weights call .cuda(): compare with the definition instead.
    torch.testing.assert_close(compat.fp_correction(crit, (xs, y), weight_func="const", c=2.0),
                               2.0 * sum(crit(x, y) for x in xs))
    z = torch.randn(2, 5, requires_grad=True)
    fz = torch.tanh(z * 2)
    torch.manual_seed(0)
    ref = torchdeq.jac_reg(fz, z, vecs=3)
    torch.manual_seed(0)
    torch.testing.assert_close(compat.jac_reg(fz, z, vecs=3), ref)


def test_indexing_core_states_and_strict_weight_options():
    torch.manual_seed(SEED)
    W = (0.5 * torch.randn(6, 6) / 6 ** 0.5).requires_grad_()
    x = torch.randn(3, 6)
    f = lambda z: torch.tanh(z @ W.t() + x)  # noqa: E731
    deq = compat.get_deq(core="indexing", n_states=3, f_solver="fixed_point_iter",
                         f_max_iter=12, f_tol=1e-12)
    assert deq.indexing == [4, 8, 12]
    z_out, info = deq(f, torch.zeros(3, 6))
    assert len(z_out) == 3 and all(z.requires_grad for z in z_out)
    # Later states are closer to the fixed point.
    res = [float((f(z) - z).norm().detach()) for z in z_out]
    assert res[0] > res[1] > res[2], res
    with pytest.raises(TypeError, match="gama"):
        compat.fp_correction(lambda a: a.sum(), (z_out,), weight_func="exp", gama=0.5)

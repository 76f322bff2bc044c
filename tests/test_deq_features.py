"""DEQ layer features: solver objects, structured states, multi-state supervision against
torchdeq's definitions, eval controls, breadth starts, device-side input flags."""
import random

import pytest
import torch
from torch import nn

import eqkernels as eqk
from eqkernels.backward import phantom_states, supervision_steps
from maps import TanhBlock


@pytest.fixture
def seed():
    s = random.randrange(2**31)
    torch.manual_seed(s)
    return s


def test_solver_by_name_and_by_object_agree(seed):
    block = TanhBlock(12)
    x = torch.randn(4, 12, dtype=torch.float64)
    with torch.no_grad():
        z1, i1 = eqk.DEQ(block, solver="anderson", tol=1e-10, max_iter=100,
                         solver_kwargs=dict(m=4, lam=1e-6))(x)
        z2, i2 = eqk.DEQ(block, solver=eqk.Anderson(m=4, lam=1e-6), tol=1e-10, max_iter=100)(x)
    assert torch.equal(z1, z2) and torch.equal(i1.nstep, i2.nstep), f"seed {seed}"
    with pytest.raises(ValueError, match="has no option"):
        eqk.DEQ(block, solver="anderson", solver_kwargs=dict(damping=0.5))
    with pytest.raises(ValueError, match="set them on the object"):
        eqk.DEQ(block, solver=eqk.Anderson(), solver_kwargs=dict(m=3))


class TwoScaleBlock(nn.Module):
    """z = (a (B, 2, 3, 3), b (B, 5)), x = (u (B, 2, 3, 3), v (B, 5)); couples both parts."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1).double()
        self.lin = nn.Linear(5, 5).double()
        self.mix = nn.Linear(18, 5).double()
        with torch.no_grad():
            self.conv.weight.mul_(0.2)
            self.lin.weight.mul_(0.3)
            self.mix.weight.mul_(0.1)

    def forward(self, z, x):
        a, b = z
        u, v = x
        a2 = torch.tanh(self.conv(a) + u + b[:, :2, None, None])
        b2 = torch.tanh(self.lin(b) + self.mix(a.flatten(1)) + v)
        return (a2, b2)


class Packed(nn.Module):
    """The same block on one hand-packed (B, 23) state and (B, 23) input."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, z, x):
        a, b = z[:, :18].reshape(-1, 2, 3, 3), z[:, 18:]
        u, v = x[:, :18].reshape(-1, 2, 3, 3), x[:, 18:]
        a2, b2 = self.inner((a, b), (u, v))
        return torch.cat([a2.flatten(1), b2], dim=1)


@pytest.mark.parametrize("backward", ["implicit", "phantom"])
def test_structured_states_match_a_hand_packed_block(backward, seed):
    block = TwoScaleBlock()
    B = 3
    u, v = torch.randn(B, 2, 3, 3, dtype=torch.float64), torch.randn(B, 5, dtype=torch.float64)
    z0 = (torch.randn(B, 2, 3, 3, dtype=torch.float64), torch.randn(B, 5, dtype=torch.float64))
    deq = eqk.DEQ(block, tol=1e-11, max_iter=200, backward=backward)
    (a, b), info = deq((u, v), z0=z0)
    assert a.shape == (B, 2, 3, 3) and b.shape == (B, 5) and info.converged.all(), f"seed {seed}"
    ga = torch.autograd.grad((a.sin().sum() + b.cos().sum()), list(block.parameters()))

    flat = eqk.DEQ(Packed(block), tol=1e-11, max_iter=200, backward=backward)
    xf = torch.cat([u.flatten(1), v], 1)
    zf, info_f = flat(xf, z0=torch.cat([z0[0].flatten(1), z0[1]], 1))
    torch.testing.assert_close(torch.cat([a.flatten(1), b], 1), zf, rtol=0, atol=1e-12)
    gf = torch.autograd.grad(zf[:, :18].sin().sum() + zf[:, 18:].cos().sum(),
                             list(block.parameters()))
    for g1, g2 in zip(ga, gf):
        torch.testing.assert_close(g1, g2, rtol=1e-8, atol=1e-10)
    # default z0 for a structured x: zeros like each part
    (a0, b0), _ = deq((u, v))
    assert a0.shape == u.shape and b0.shape == v.shape
    with pytest.raises(TypeError, match="block\\(z, x\\) must return z's structure"):
        eqk.DEQ(lambda z, x: z[0], max_iter=3)((u, v), z0=z0)


@pytest.mark.parametrize("max_iter,n_states,indexing,expected", [
    (40, 4, None, [10, 20, 30, 40]), (30, 4, None, [9, 16, 23, 30]), (5, 8, None, [1, 2, 3, 4, 5]),
    (30, 1, [3, 9], [3, 9, 30]), (12, 1, None, [12])])
def test_supervision_steps_follow_torchdeq(max_iter, n_states, indexing, expected):
    """Expected lists are torchdeq 0.1.0's DEQIndexing(f_max_iter, n_states, indexing).indexing."""
    assert supervision_steps(max_iter, n_states, indexing) == expected


def test_supervision_steps_equal_torchdeq_when_installed():
    core = pytest.importorskip("torchdeq.core")
    for mi, ns, idx in [(17, 3, None), (50, 6, None), (20, 1, [2, 5, 11])]:
        d = core.DEQIndexing(f_max_iter=mi, n_states=ns, indexing=idx)
        assert supervision_steps(mi, ns, idx) == d.indexing


def test_indexed_states_are_the_solver_iterates_with_their_own_gradients(seed):
    """n_states=3, one_step: state k = block(z_k, x) with z_k the solver's best iterate after
    step k (a separate k-step solve), and fp_correction's gradient equals the hand-built one."""
    block = TanhBlock(10, norm=0.97)
    x = torch.randn(4, 10, dtype=torch.float64)
    y = torch.randn(4, 10, dtype=torch.float64)
    deq = eqk.DEQ(block, solver="anderson", max_iter=12, tol=1e-14, backward="one_step",
                  n_states=3).train()
    z, info = deq(x)
    assert len(info.states) == 3 and z is info.states[-1]
    crit = lambda s, t: ((s - t) ** 2).mean()
    loss = eqk.fp_correction(crit, (info.states, y), weight_func="exp", gamma=0.5)
    g = torch.autograd.grad(loss, [block.W, block.U])

    ref_loss = 0.0
    for i, k in enumerate([4, 8, 12]):
        with torch.no_grad():
            z_k, _ = eqk.anderson(lambda q: block(q, x), torch.zeros(4, 10, dtype=torch.float64),
                                  max_iter=k, tol=1e-14)
        state = block(z_k, x)
        torch.testing.assert_close(info.states[i], state, rtol=0, atol=1e-13, msg=f"seed {seed}")
        ref_loss = ref_loss + 0.5 ** (3 - i - 1) * crit(state, y)
    g_ref = torch.autograd.grad(ref_loss, [block.W, block.U])
    torch.testing.assert_close(loss, ref_loss)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    deq.eval()
    _, info_eval = deq(x)
    assert info_eval.states is None  # supervision is a training-forward feature (as torchdeq)


@pytest.mark.parametrize("sup_gap,sup_loc", [(2, None), (-1, [1, 3])])
def test_phantom_supervision_points_follow_torchdeq(sup_gap, sup_loc, seed):
    """With phantom gradients the states are the phantom unroll's at sup_gap multiples, or at
    sup_loc plus the last (torchdeq's grad.py), built here by hand."""
    block = TanhBlock(8)
    x = torch.randn(3, 8, dtype=torch.float64)
    deq = eqk.DEQ(block, max_iter=60, tol=1e-12, backward="phantom", phantom_steps=5,
                  phantom_damping=0.7, sup_gap=sup_gap, sup_loc=sup_loc).train()
    z, info = deq(x)
    with torch.no_grad():
        z_star, _ = eqk.anderson(lambda q: block(q, x), torch.zeros(3, 8, dtype=torch.float64),
                                 max_iter=60, tol=1e-12)
    seq, q = [], z_star
    for i in range(1, 6):
        q = 0.3 * q + 0.7 * block(q, x)
        seq.append(q)
    want = [seq[1], seq[3]] if sup_gap == 2 else [seq[0], seq[2], seq[4]]
    assert len(info.states) == len(want)
    for s, w in zip(info.states, want):
        torch.testing.assert_close(s, w, rtol=0, atol=1e-12, msg=f"seed {seed}")
    torch.testing.assert_close(z, seq[-1], rtol=0, atol=1e-12)  # z: the whole unroll
    assert info.states[0].requires_grad


@pytest.mark.parametrize("weight_func,kwargs,weights", [
    ("exp", {}, [0.64, 0.8, 1.0]), ("exp", dict(gamma=0.5), [0.25, 0.5, 1.0]),
    ("linear", {}, [1 - 2 / 3 * 0.9, 1 - 1 / 3 * 0.9, 1.0]),
    ("linear", dict(gamma=0.6, bias=0.1), [1 - 2 / 3 * 0.6 + 0.1, 1 - 1 / 3 * 0.6 + 0.1, 1.1]),
    ("const", dict(c=2.0), [2.0, 2.0, 2.0])])
def test_fp_correction_weights(weight_func, kwargs, weights):
    terms = [torch.tensor(3.0), torch.tensor(5.0), torch.tensor(7.0)]
    loss, values = eqk.fp_correction(lambda s: s, (terms,), weight_func=weight_func,
                                     return_loss_values=True, **kwargs)
    torch.testing.assert_close(loss, torch.tensor(sum(w * t for w, t in zip(weights, [3., 5., 7.]))))
    assert values == [3.0, 5.0, 7.0]
    custom = eqk.fp_correction(lambda s: s, (terms,), weight_func=lambda n, k: k)
    assert float(custom) == 5.0 + 14.0
    with pytest.raises(ValueError, match="weight_func must be one of"):
        eqk.fp_correction(lambda s: s, (terms,), weight_func="cubic")


def test_fp_correction_equals_torchdeq_when_installed():
    td = pytest.importorskip("torchdeq.loss")
    xs = [torch.randn(4, 6) for _ in range(4)]
    y, mask = torch.randn(4, 6), torch.rand(4, 6)
    crit = lambda a, b, m: ((a - b) * m).abs().mean()
    for wf, kw in [("exp", {}), ("linear", dict(gamma=0.7))]:
        torch.testing.assert_close(eqk.fp_correction(crit, (xs, y, mask), weight_func=wf, **kw),
                                   td.fp_correction(crit, (xs, y, mask), weight_func=wf, **kw))


def test_eval_factor_and_eval_max_iter(seed):
    block = TanhBlock(6, norm=0.99)
    x = torch.randn(2, 6, dtype=torch.float64)
    deq = eqk.DEQ(block, solver="fixed_point", max_iter=4, tol=1e-30, eval_factor=2.5)
    with torch.no_grad():
        assert (deq.train()(x)[1].nstep == 4).all()
        assert (deq.eval()(x)[1].nstep == 10).all()
        assert (deq.eval()(x, max_iter=3)[1].nstep == 3).all()
        deq2 = eqk.DEQ(block, solver="fixed_point", max_iter=4, tol=1e-30, eval_max_iter=7).eval()
        assert (deq2(x)[1].nstep == 7).all()
    with pytest.raises(ValueError, match="eval_factor must be > 0"):
        eqk.DEQ(block, eval_factor=0)


def test_breadth_starts_aggregate_lowest_mean_and_callable(seed):
    block = TanhBlock(8, norm=0.95)
    x = torch.randn(3, 8, dtype=torch.float64)
    K = 4
    seen = {}

    def keep_all(z, residual):
        seen["z"], seen["res"] = z, residual
        return z[:, 0]

    def run(aggregate, **kw):
        torch.manual_seed(seed)
        deq = eqk.DEQ(block, solver="fixed_point", max_iter=6, tol=1e-14, starts=K,
                      aggregate=aggregate, start_noise=2.0, **kw)
        return deq(x)

    with torch.no_grad():
        z_first, info = run(keep_all)
        assert seen["z"].shape == (3, K, 8) and seen["res"].shape == (3, K)
        assert info.nstep.shape == (3 * K,) and info.start_residual.shape == (3, K)
        # start 0 is the plain z0 (zeros): the same iterate as a one-start solve
        z_one, _ = eqk.DEQ(block, solver="fixed_point", max_iter=6, tol=1e-14)(x)
        torch.testing.assert_close(z_first, z_one, rtol=0, atol=1e-14)
        # each start is an independent solve: start k of sample b is row b*K + k
        torch.testing.assert_close(seen["res"], info.abs_residual.view(3, K))
        z_low, info_low = run("lowest_residual")
        idx = seen["res"].argmin(dim=1)
        assert torch.equal(info_low.start_index, idx)
        torch.testing.assert_close(z_low, seen["z"][torch.arange(3), idx], rtol=0, atol=0)
        z_mean, _ = run("mean")
        torch.testing.assert_close(z_mean, seen["z"].mean(dim=1), rtol=0, atol=1e-15)
    # gradients flow through the chosen start (implicit backward on the B*K batch)
    torch.manual_seed(seed)
    z, _ = eqk.DEQ(block, max_iter=100, tol=1e-10, starts=K)(x)
    z.sum().backward()
    assert block.W.grad is not None and torch.isfinite(block.W.grad).all()
    with pytest.raises(ValueError, match="aggregate must be one of"):
        eqk.DEQ(block, starts=2, aggregate="vote")


def test_input_checks_become_device_flags_without_validation(seed):
    block = TanhBlock(5)
    x = torch.randn(3, 5, dtype=torch.float64)
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        eqk.DEQ(block)(x)  # CPU default: validate
    with pytest.warns(RuntimeWarning, match="NaN/Inf"):
        with torch.no_grad():
            z, info = eqk.DEQ(block, validate_inputs=False, max_iter=20)(x)
    assert info.input_nonfinite.tolist() == [False, True, False]
    assert info.diverged[1] and not info.diverged[[0, 2]].any()


def test_deq_compacts_any_solver_and_matches_the_uncompacted_layer(seed):
    block = TanhBlock(10, norm=0.5)
    x = torch.randn(8, 10, dtype=torch.float64)
    x[:2] *= 50  # saturated tanh: these converge in very few steps
    with torch.no_grad():
        for name in ("anderson", "broyden", "fixed_point"):
            z_ref, i_ref = eqk.DEQ(block, solver=name, max_iter=300, tol=1e-10,
                                   check_every=1)(x)
            z, info = eqk.DEQ(block, solver=name, max_iter=300, tol=1e-10, check_every=1,
                              solver_kwargs=dict(compact_below=0.9))(x)
            assert torch.equal(info.nstep, i_ref.nstep), f"{name} seed {seed}"
            torch.testing.assert_close(z, z_ref, rtol=0, atol=1e-12)
            assert info.extra["compactions"], f"{name}: nothing was compacted"

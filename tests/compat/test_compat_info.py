"""deq(...)'s info and returned states mean what they mean in torchdeq: nstep is the step of
the returned (best) iterate, traces are (B, T) with torchdeq's T, the indexing core returns
fewer states when the solve stops early, f_max_iter=0 skips the solver, sradius in eval."""
import pytest
import torch
from torch import nn

import eqkernels.compat.torchdeq as compat

torchdeq = pytest.importorskip("torchdeq")


def _setup(seed=0, B=4, n=8):
    torch.manual_seed(seed)
    lin = nn.Linear(n, n)
    x = torch.randn(B, n)
    return (lambda z: torch.tanh(0.6 * lin(z) + x)), torch.zeros(B, n)


def _both(z0_fn=None, call=None, **options):
    out = {}
    for lib in (torchdeq, compat):
        f, z0 = _setup()
        deq = lib.get_deq(**options)
        out[lib] = (call or (lambda d: d(f, z0)))(deq)
    return out[compat], out[torchdeq]


@pytest.mark.parametrize("solver, width", [("fixed_point_iter", 31), ("anderson", 29),
                                           ("broyden", 31)])
def test_info_layout_and_nstep_as_torchdeq(solver, width):
    (z, info), (z_ref, info_ref) = _both(f_solver=solver, f_max_iter=30, f_tol=1e-5,
                                         stop_rule="batch")
    assert set(info) == set(info_ref)
    for key in ("abs_trace", "rel_trace"):
        assert info[key].shape == info_ref[key].shape == (4, width)
    assert info["nstep"].dtype == info_ref["nstep"].dtype
    # batch rule: the same solve, so the same step of the best iterate and the same traces
    torch.testing.assert_close(info["nstep"], info_ref["nstep"])
    torch.testing.assert_close(info["abs_trace"], info_ref["abs_trace"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(z[-1], z_ref[-1], atol=1e-5, rtol=1e-5)
    # default per-sample rule: each sample's best step, at most torchdeq's
    f, z0 = _setup()
    z, info = compat.get_deq(f_solver=solver, f_max_iter=30, f_tol=1e-5)(f, z0)
    assert info["abs_trace"].shape == (4, width)
    assert (info["nstep"] <= info_ref["nstep"]).all() and float(info["abs_lowest"].max()) < 1e-5
    assert (info["abs_trace"][:, 0] == 1e8).all()  # torchdeq's placeholder column


def test_indexing_core_early_stop_returns_fewer_states():
    for rule in ("batch", "sample"):
        (z, info), (z_ref, info_ref) = _both(core="indexing", n_states=3, f_max_iter=60,
                                             f_tol=1e-4, f_solver="anderson",
                                             stop_rule=rule)
        assert len(z) == len(z_ref) == 1  # converged before step 20: only the final state
        assert all(t.requires_grad for t in z)
    (z, _), (z_ref, _) = _both(core="indexing", n_states=3, f_max_iter=9, f_tol=1e-9,
                               f_solver="fixed_point_iter")
    assert len(z) == len(z_ref) == 3
    for a, b in zip(z, z_ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_f_max_iter_zero_skips_the_solver():
    for core in ("sliced", "indexing"):
        (z, info), (z_ref, info_ref) = _both(
            core=core, f_solver="anderson", grad=2,
            call=lambda d: d(*_setup()[:1], torch.ones(4, 8), solver_kwargs={"f_max_iter": 0}))
        torch.testing.assert_close(z[-1], z_ref[-1])  # two phantom steps from z0, no solve
        assert info["nstep"].tolist() == info_ref["nstep"].tolist() == [0.0] * 4
        assert (info["abs_lowest"] == 1e8).all() and info["abs_trace"].shape == (4, 1)
    f, z0 = _setup()
    deq = compat.get_deq(f_max_iter=0, eval_f_max_iter=0).eval()
    z, info = deq(f, z0)
    assert torch.equal(z[-1], z0)


def test_simple_fixed_point_iter_and_sliced_states():
    (z, info), (z_ref, info_ref) = _both(f_solver="simple_fixed_point_iter", f_max_iter=12,
                                         n_states=3, grad=2)
    assert len(z) == len(z_ref) == 3
    for a, b in zip(z, z_ref):
        torch.testing.assert_close(a, b)
    assert info["nstep"].tolist() == info_ref["nstep"].tolist() == [4.0] * 4
    assert info["abs_trace"].shape == info_ref["abs_trace"].shape == (4, 1)


def test_eval_mode_budget_and_spectral_radius():
    def call(deq):
        deq.eval()
        f, z0 = _setup()
        torch.manual_seed(3)  # the power method's start
        return deq(f, z0, sradius_mode=True)
    (z, info), (z_ref, info_ref) = _both(f_solver="anderson", f_max_iter=10, eval_factor=3,
                                         f_tol=1e-7, stop_rule="batch", call=call)
    assert len(z) == 1 and info["sradius"].shape == info_ref["sradius"].shape == (4,)
    torch.testing.assert_close(info["sradius"], info_ref["sradius"], atol=1e-3, rtol=1e-3)
    assert info["abs_trace"].shape == info_ref["abs_trace"].shape == (4, 29)  # 30 steps
    f, z0 = _setup()
    _, info = compat.get_deq().eval()(f, z0)
    assert info["sradius"].tolist() == [0.0]


def test_list_states_mdeq_style():
    torch.manual_seed(1)
    a, b = torch.randn(3, 4), torch.randn(3, 2, 2)
    W = 0.4 * torch.randn(8, 8) / 8 ** 0.5

    def f(z1, z2):
        v = torch.tanh(torch.cat([z1, z2.reshape(3, 4)], 1) @ W.t()
                       + torch.cat([a, b.reshape(3, 4)], 1))
        return [v[:, :4], v[:, 4:].reshape(3, 2, 2)]

    outs = []
    for lib in (torchdeq, compat):
        deq = lib.get_deq(f_solver="broyden", f_max_iter=30, f_tol=1e-6, ift=True)
        z_out, info = deq(f, [torch.zeros(3, 4), torch.zeros(3, 2, 2)])
        outs.append(z_out[-1])
    assert isinstance(outs[1], list) and outs[1][1].shape == (3, 2, 2)
    for t, r in zip(outs[1], outs[0]):
        torch.testing.assert_close(t, r, atol=1e-6, rtol=1e-5)

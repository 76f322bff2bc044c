"""compat solvers: torchdeq's solver functions on eqkernels' solvers, the registry, the
whole-batch stop rule (which reproduces torchdeq's solves), Broyden at torchdeq's
robustness, IFT gradients, and what solver_kwargs torchdeq ignores."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import eqkernels as eqk
import eqkernels.compat.torchdeq as compat
from eqkernels.compat.torchdeq.solver import get_solver

torchdeq = pytest.importorskip("torchdeq")
from torchdeq.solver import get_solver as tdq_get_solver  # noqa: E402

SOLVERS = ("fixed_point_iter", "anderson", "broyden")


def _tanh_map(seed, B=4, n=8, scale=0.3, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    W = scale * torch.randn(n, n, generator=gen, dtype=dtype)
    x = torch.randn(B, n, generator=gen, dtype=dtype)
    return lambda z: torch.tanh(z @ W.T + x)


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_batch_rule_reproduces_torchdeqs_solve(name, tau):
    f = _tanh_map(1)
    kw = dict(max_iter=25, tol=1e-4, indexing=[3, 5, 40])
    if name != "broyden":
        kw["tau"] = tau
    z, states, info = get_solver(name)(f, torch.zeros(4, 8), stop_rule="batch", **kw)
    z_ref, states_ref, info_ref = tdq_get_solver(name)(f, torch.zeros(4, 8), **kw)
    assert set(info) == set(info_ref)
    assert all(info[key].shape == info_ref[key].shape for key in info_ref)
    assert len(states) == len(states_ref) == 2  # step 40 was not reached
    if name == "anderson" and tau != 1:
        # eqkernels' Anderson damps its first step too (torchdeq's is a plain f(z0)): the
        # early iterates differ, the solutions agree to the tolerance.
        torch.testing.assert_close(z, z_ref, atol=1e-4, rtol=0)
        return
    torch.testing.assert_close(z, z_ref, atol=1e-6, rtol=1e-6)
    for a, b in zip(states, states_ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    for key in info_ref:
        if key != "sradius":
            torch.testing.assert_close(info[key].float(), info_ref[key].float(),
                                       atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", SOLVERS)
def test_per_sample_rule_meets_the_same_tolerance_with_less_work(name):
    f = _tanh_map(2)
    z, _, info = get_solver(name)(f, torch.zeros(4, 8), max_iter=40, tol=1e-5)
    z_ref, _, info_ref = tdq_get_solver(name)(f, torch.zeros(4, 8), max_iter=40, tol=1e-5)
    assert float(info["abs_lowest"].max()) < 1e-5
    assert float(info["nstep"].max()) <= float(info_ref["nstep"].max())
    assert float(info["nstep"].min()) < float(info_ref["nstep"].min())  # easy samples stop
    torch.testing.assert_close(z, z_ref, atol=3e-5, rtol=0)


def test_simple_fixed_point_iter_runs_every_step_on_lists():
    f = _tanh_map(3)

    def g(z1, z2):
        return [f(z1), 0.5 * z2 + 1]
    z0 = [torch.zeros(4, 8), torch.zeros(4, 2)]
    z, states, info = get_solver("simple_fixed_point_iter")(lambda zs: g(*zs), z0, max_iter=7,
                                                           indexing=[2, 7])
    assert len(states) == 2 and info["nstep"].tolist() == [7.0] * 4
    assert info["abs_trace"].shape == (4, 1)
    torch.testing.assert_close(z[1], torch.full((4, 2), 2 - 2 * 0.5 ** 7))


class SeqLayer(nn.Module):
    """A deq-seq-like attention layer (Conv1d qkv + injection, causal attention, LayerNorm,
    FFN, LayerNorm) on z: (B, D, L)."""

    def __init__(self, d=32, h=4, dh=8, inner=64):
        super().__init__()
        self.h, self.dh = h, dh
        self.qkv = nn.Conv1d(d, 3 * h * dh, 1, bias=False)
        self.o = nn.Conv1d(h * dh, d, 1)
        self.ff1, self.ff2 = nn.Linear(d, inner), nn.Linear(inner, d)

    def forward(self, z, u):
        B, D, L = z.shape
        q, k, v = (self.qkv(z) + u).chunk(3, 1)
        q, k, v = (t.reshape(B, self.h, self.dh, L) for t in (q, k, v))
        s = torch.einsum("bndi,bndj->bnij", q, k) / math.sqrt(self.dh)
        s = s.masked_fill(torch.triu(torch.ones(L, L, dtype=torch.bool), 1), float("-inf"))
        a = torch.einsum("bnij,bndj->bndi", s.softmax(-1), v).reshape(B, -1, L)
        out = F.layer_norm((self.o(a) + z).transpose(1, 2), (D,))
        return F.layer_norm(out + self.ff2(F.relu(self.ff1(out))), (D,)).transpose(1, 2)


def test_broyden_converges_like_torchdeqs_on_a_deq_seq_like_layer():
    """The issue's case: torchdeq's Broyden converged where ours (8 overwritten pairs) did
    not. Ours now keeps every update (eqk.Broyden()); a capped memory restarts when full."""
    counts = {"torchdeq": 0, "compat": 0, "eqk": 0, "eqk_m8": 0}
    total = 0
    for seed in range(3):
        torch.manual_seed(seed)
        layer = SeqLayer()
        torchdeq.apply_norm(layer, "weight_norm")
        torchdeq.reset_norm(layer)
        u = torch.randn(4, 96, 12)
        f = lambda z: layer(z, u)  # noqa: E731
        flat = lambda z: f(z.reshape(4, 32, 12)).reshape(4, -1)  # noqa: E731
        z0 = torch.zeros(4, 32, 12)
        total += 4
        with torch.no_grad():
            info = tdq_get_solver("broyden")(f, z0, max_iter=35, tol=1e-3, stop_mode="rel")[2]
            counts["torchdeq"] += int((info["rel_lowest"] < 1e-3).sum())
            info = get_solver("broyden")(f, z0, max_iter=35, tol=1e-3, stop_mode="rel")[2]
            counts["compat"] += int((info["rel_lowest"] < 1e-3).sum())
            for key, m in (("eqk", None), ("eqk_m8", 8)):
                _, info = eqk.broyden(flat, z0.reshape(4, -1), max_iter=36, tol=1e-3,
                                      stop_mode="rel", m=m)
                counts[key] += int(info.converged.sum())
    assert counts["torchdeq"] >= total - 2, counts  # the layer is solvable
    for key in ("compat", "eqk", "eqk_m8"):
        assert counts[key] >= counts["torchdeq"], counts


def test_broyden_solves_non_contractive_maps_plain_iteration_cannot():
    gen = torch.Generator().manual_seed(0)
    n, B = 16, 4
    A = torch.randn(n, n, generator=gen, dtype=torch.float64)
    A = 2.0 * A / torch.linalg.eigvals(A).abs().max()  # spectral radius 2: iteration diverges
    W = torch.randn(n, n, generator=gen, dtype=torch.float64)
    W = 1.8 * W / torch.linalg.matrix_norm(W, 2)
    x = torch.randn(B, n, generator=gen, dtype=torch.float64)
    z0 = torch.zeros(B, n, dtype=torch.float64)
    for f in (lambda z: z @ A.T + x, lambda z: torch.tanh(z @ W.T + x)):
        ref = tdq_get_solver("broyden")(f, z0, max_iter=60, tol=1e-8)[2]
        _, info = eqk.broyden(f, z0, max_iter=61, tol=1e-8)
        ours = get_solver("broyden")(f, z0, max_iter=60, tol=1e-8)[2]
        assert int((ref["abs_lowest"] < 1e-8).sum()) == B
        assert bool(info.converged.all()) and bool((ours["abs_lowest"] < 1e-8).all())
    _, fp_info = eqk.fixed_point(lambda z: z @ A.T + x, z0, max_iter=60, tol=1e-8,
                                 on_diverge="ignore")
    assert not bool(fp_info.converged.any())


def test_registry_takes_functions_and_eqkernels_solver_objects():
    calls = []

    def damped_solver(func, x0, max_iter=50, tol=1e-3, stop_mode="abs", indexing=None,
                      **kwargs):
        z = x0
        for _ in range(max_iter):
            z = 0.5 * z + 0.5 * func(z)
        calls.append(max_iter)
        return z, [z], compat.solver_stat_from_final_step(z, func(z), max_iter)

    compat.register_solver("damped_half", damped_solver)
    compat.register_solver("anderson3", eqk.Anderson(m=3))
    assert compat.get_solver("damped_half") is damped_solver
    f = _tanh_map(4)
    W = nn.Parameter(torch.eye(8) * 0.1)
    for name in ("damped_half", "anderson3"):
        writer = []
        deq = compat.get_deq(f_solver=name, b_solver=name, f_max_iter=30, b_max_iter=30,
                             f_tol=1e-6, ift=True)
        z_out, info = deq(lambda z: f(z) + z @ W, torch.zeros(4, 8), backward_writer=writer.append)
        z_out[-1].square().sum().backward()
        assert float(info["abs_lowest"].max()) < 1e-2 and len(writer) == 1
        assert W.grad is not None and torch.isfinite(W.grad).all()
        W.grad = None
    assert calls == [30, 30]  # forward and the IFT adjoint solve
    with pytest.raises(ValueError, match="registered solvers.*register_solver"):
        compat.get_deq(f_solver="newton_not_registered")
    with pytest.raises(TypeError, match="solver function or an eqkernels solver object"):
        compat.register_solver("bad", 3)


def test_ift_gradient_matches_torchdeqs():
    grads = {}
    for lib in (torchdeq, compat):
        torch.manual_seed(0)
        lin = nn.Linear(8, 8)
        x = torch.randn(4, 8)
        deq = lib.get_deq(f_solver="anderson", b_solver="anderson", f_max_iter=60,
                          b_max_iter=60, f_tol=1e-7, b_tol=1e-8, ift=True)
        z_out, _ = deq(lambda z: torch.tanh(0.5 * lin(z) + x), torch.zeros(4, 8))
        z_out[-1].sin().sum().backward()
        grads[lib] = lin.weight.grad
    torch.testing.assert_close(grads[compat], grads[torchdeq], atol=1e-5, rtol=1e-4)


def test_solver_kwargs_torchdeq_ignores_are_ignored_with_a_warning():
    f = _tanh_map(5)
    with pytest.warns(UserWarning, match="broyden_solver: 'tau' is not an option"):
        get_solver("broyden")(f, torch.zeros(4, 8), tau=0.5)
    with pytest.warns(UserWarning, match="ls=True.*not implemented"):
        get_solver("broyden")(f, torch.zeros(4, 8), ls=True)
    with pytest.warns(UserWarning, match="m=20 is above"):
        get_solver("anderson")(f, torch.zeros(4, 8), m=20)
    deq = compat.get_deq(f_solver="broyden", tau=0.5)  # tau: the phantom gradient's damping
    with pytest.warns(UserWarning, match="'beta' is not an option"):
        deq(f, torch.zeros(4, 8), solver_kwargs={"beta": 0.5, "LBFGS_thres": 5})
    with pytest.raises(ValueError, match="stop_mode must be 'abs' or 'rel'"):
        get_solver("anderson")(f, torch.zeros(4, 8), stop_mode="max")


def test_return_final_runs_every_step():
    f = _tanh_map(6)
    for name in ("fixed_point_iter", "anderson"):
        z, _, info = get_solver(name)(f, torch.zeros(4, 8), max_iter=9, tol=1e-2,
                                      return_final=True)
        z_ref, _, info_ref = tdq_get_solver(name)(f, torch.zeros(4, 8), max_iter=9, tol=1e-2,
                                                  return_final=True)
        torch.testing.assert_close(z, z_ref, atol=1e-6, rtol=1e-6)
        assert info["nstep"].tolist() == info_ref["nstep"].tolist() == [9.0] * 4

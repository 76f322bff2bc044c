"""Gradients of every backward mode against what their definitions say."""
import random

import pytest
import torch

import eqkernels as eqk
from maps import TanhBlock

B, N = 5, 12


@pytest.fixture(autouse=True)
def _fresh_seed():
    torch.manual_seed(random.randrange(2**31))


def _grads(loss, block, x):
    gx, gW, gU = torch.autograd.grad(loss, [x, block.W, block.U])
    return torch.cat([gx.flatten(), gW.flatten(), gU.flatten()])


def _loss(z, target):
    return ((z - target) ** 2).sum()


def _setup():
    block = TanhBlock(N, norm=0.8)
    x = torch.randn(B, N, dtype=torch.float64, requires_grad=True)
    return block, x, torch.randn(B, N, dtype=torch.float64)


@pytest.mark.parametrize("solver", ["anderson", "fixed_point", "broyden"])
def test_implicit_matches_long_unroll(solver):
    block, x, target = _setup()
    deq = eqk.DEQ(block, solver=solver, max_iter=500, tol=1e-13, backward="implicit")
    z, info = deq(x)
    assert info.converged.all()
    g_implicit = _grads(_loss(z, target), block, x)
    assert deq.last_backward_info.converged.all()

    zu = torch.zeros(B, N, dtype=torch.float64)
    for _ in range(400):  # contraction <= 0.8: 0.8^400 is far below double precision
        zu = block(zu, x)
    g_unrolled = _grads(_loss(zu, target), block, x)
    torch.testing.assert_close(g_implicit, g_unrolled, rtol=1e-6, atol=1e-9)


def test_implicit_gradcheck():
    block = TanhBlock(4, norm=0.7)
    deq = eqk.DEQ(block, max_iter=300, tol=1e-14, backward="implicit", solver_kwargs=dict(lam=1e-16))
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: deq(inp)[0], (x,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_implicit_records_one_block_call():
    """Memory does not grow with max_iter: autograd sees a single application of the block."""
    block, x, target = _setup()
    calls = []
    block.register_forward_hook(lambda mod, inp, out: calls.append(out.requires_grad))
    deq = eqk.DEQ(block, max_iter=200, tol=1e-12, backward="implicit")
    z, info = deq(x)
    assert sum(calls) == 1 and len(calls) == int(info.nstep.max()) + 1


def test_phantom_matches_hand_built_damped_unroll():
    block, x, target = _setup()
    deq = eqk.DEQ(block, max_iter=300, tol=1e-12, backward="phantom", phantom_steps=3,
                  phantom_damping=0.6)
    z, _ = deq(x)
    with torch.no_grad():
        z_star, _ = eqk.DEQ(block, max_iter=300, tol=1e-12)(x)
    zh = z_star.clone()
    for _ in range(3):
        zh = 0.4 * zh + 0.6 * block(zh, x)
    torch.testing.assert_close(z, zh, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_grads(_loss(z, target), block, x),
                               _grads(_loss(zh, target), block, x), rtol=1e-10, atol=1e-12)


def test_one_step_matches_hand_built_jfb():
    block, x, target = _setup()
    z, _ = eqk.DEQ(block, max_iter=300, tol=1e-12, backward="one_step")(x)
    with torch.no_grad():
        z_star, _ = eqk.DEQ(block, max_iter=300, tol=1e-12)(x)
    zh = block(z_star, x)
    torch.testing.assert_close(_grads(_loss(z, target), block, x),
                               _grads(_loss(zh, target), block, x), rtol=1e-10, atol=1e-12)


def test_unroll_matches_hand_built_unroll_and_differs_from_one_step():
    block, x, target = _setup()
    deq = eqk.DEQ(block, max_iter=300, tol=1e-12, backward="unroll", unroll_steps=4)
    z, _ = deq(x)
    with torch.no_grad():
        z_star, _ = eqk.DEQ(block, max_iter=300, tol=1e-12)(x)
    zh = z_star.clone()
    for _ in range(4):
        zh = block(zh, x)
    g_unroll = _grads(_loss(z, target), block, x)
    torch.testing.assert_close(g_unroll, _grads(_loss(zh, target), block, x), rtol=1e-10, atol=1e-12)
    z1, _ = deq(x, backward="one_step")
    assert not torch.allclose(g_unroll, _grads(_loss(z1, target), block, x), rtol=1e-3)


def test_no_grad_forward_returns_solution_without_graph():
    block, x, _ = _setup()
    with torch.no_grad():
        z, info = eqk.DEQ(block, max_iter=300, tol=1e-12)(x)
    assert not z.requires_grad and info.converged.all()
    assert (block(z, x) - z).norm(dim=1).max() < 1e-11


@pytest.mark.parametrize("solver", ["anderson", "damped"])
def test_fused_adjoint_matches_reference_adjoint(solver):
    """The implicit backward through the fused C++ kernels equals the PyTorch reference's."""
    from eqkernels import _backends
    if not _backends._usable("cpp", torch.device("cpu")):
        pytest.skip("compiled extension not built")
    block, x, target = _setup()
    grads = {}
    for backend in ("reference", "cpp"):
        kwargs = {"backend": backend, **({"damping": 0.7} if solver == "damped" else {})}
        deq = eqk.DEQ(block, solver=solver, max_iter=2000, tol=1e-12, solver_kwargs=kwargs)
        z, info = deq(x)
        assert info.backend == backend and info.converged.all()
        grads[backend] = _grads(_loss(z, target), block, x)
        assert deq.last_backward_info.backend == backend
        assert deq.last_backward_info.converged.all()
    torch.testing.assert_close(grads["cpp"], grads["reference"], rtol=1e-8, atol=1e-10)

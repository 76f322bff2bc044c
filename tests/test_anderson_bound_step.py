"""The CPU Anderson step bound to a solve's state (bind_anderson_step, eqkernels._C.AndersonStepCpu)
against the torch.library op it stands in for in the eager solver loop."""
import copy
import random

import pytest
import torch

from eqkernels import _backends
from eqkernels.ops.anderson_mix import anderson_step, bind_anderson_step
from test_anderson_mix_parity import make_case

PARAMS = dict(tol=1e-3, stop_mode="abs", beta=0.7, lam=1e-4, restart_growth=10.0)

pytestmark = pytest.mark.skipif(not _backends._usable("cpp", torch.device("cpu")),
                                reason="compiled extension not built")


def same(a, b, what):
    """Bit for bit, NaN included (make_case feeds some samples a non-finite f(z))."""
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=what)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B,n,m", [(1, 3, 1), (7, 33, 4), (64, 256, 6), (5, 1030, 16)])
def test_bound_step_equals_the_op(B, n, m, dtype):
    seed = random.randrange(2**31)
    z, fz, state, hist = make_case(B, n, m, dtype, seed)
    z_op, state_op, hist_op = z.clone(), copy.deepcopy(state), copy.deepcopy(hist)
    name, step = bind_anderson_step(z, state, hist, backend="cpp", **PARAMS)
    assert name == "cpp"
    live = step(z, fz)
    anderson_step(z_op, fz, z_op, state_op, hist_op, backend="cpp", **PARAMS)
    same(z, z_op, f"z, seed {seed}")
    for field in ("active", "converged", "diverged", "nstep", "abs_res", "rel_res", "best_abs",
                  "best_rel", "best_z"):
        same(getattr(state, field), getattr(state_op, field), f"{field}, seed {seed}")
    for field in ("X", "G", "gram", "count"):
        same(getattr(hist, field), getattr(hist_op, field), f"{field}, seed {seed}")
    assert live == int(state.active.sum()), f"seed {seed}"


def test_bound_step_rejects_bad_calls():
    z, fz, state, hist = make_case(4, 8, 3, torch.float32, 0)
    _, step = bind_anderson_step(z, state, hist, backend="cpp", **PARAMS)
    with pytest.raises(ValueError, match="z must be the iterate this step was bound to"):
        step(z.clone(), fz)
    with pytest.raises(ValueError, match="fz must have z's shape"):
        step(z, fz[:, :4])
    with pytest.raises(ValueError, match="fz must have z's dtype"):
        step(z, fz.double())
    with pytest.raises(ValueError, match="fz must be a contiguous CPU tensor"):
        step(z, fz.t().contiguous().t())


def test_binding_checks_the_state_once():
    z, _, state, hist = make_case(4, 8, 3, torch.float32, 1)
    state.nstep = state.nstep.long()
    with pytest.raises(ValueError, match="nstep must be a \\(4,\\) torch.int32 tensor"):
        bind_anderson_step(z, state, hist, backend="cpp", **PARAMS)


def test_float32_solve_reaches_a_tol_near_float32_precision():
    """The mix is summed in double and rounded once: a float32 solve of a 1024-wide map gets
    below tol 1e-6 (|g| of a rounded iterate is ~1e-7 here). A float32 mix kept 100 of 256
    samples of this problem (benchmarks/bench_solver_overhead.py, 256 x 1024) above tol."""
    import eqkernels as eqk
    seed = random.randrange(2**31)
    gen = torch.Generator().manual_seed(seed)
    B, n = 64, 1024
    W = torch.randn(n, n, generator=gen, dtype=torch.float64)
    W *= 0.9 / torch.linalg.matrix_norm(W, ord=2)
    x = torch.randn(B, n, generator=gen, dtype=torch.float64)
    Wt, x = W.T.float().contiguous(), x.float()
    z, info = eqk.anderson(lambda z: torch.tanh(z @ Wt + x), torch.zeros(B, n), max_iter=150,
                           tol=1e-6, m=6, backend="cpp")
    assert info.converged.all(), f"seed {seed}: {int(info.converged.sum())}/{B} converged"

"""Every fast backend of the fused Anderson step against the PyTorch reference.

On a machine without a GPU the CUDA cases skip; Triton runs interpreted on CPU tensors.
"""
import copy
import random

import pytest
import torch

from eqkernels import _backends
from eqkernels.ops.anderson_mix import AndersonHistory, anderson_step, anderson_step_ref
from eqkernels.ops.tracking import SolveState

# (backend, device type) pairs; each is skipped where this machine cannot run it.
# The CUDA-device cases are marked gpu: scripts/gpu_suite.sh runs them (pytest -m gpu).
FAST_BACKENDS = [("cpp", "cpu"),
                 pytest.param("triton", "cpu", marks=pytest.mark.interpreter),
                 pytest.param("cuda", "cuda", marks=pytest.mark.gpu),
                 pytest.param("triton", "cuda", marks=pytest.mark.gpu)]
BACKEND_IDS = ["cpp-cpu", "triton-cpu", "cuda-cuda", "triton-cuda"]
RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def _require(backend, device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not _backends._usable(backend, torch.device(device)):
        pytest.skip(f"{backend} on {device}: {_backends.backends()[backend][1]}")


def make_case(B, n, m, dtype, seed, device="cpu"):
    """A mid-solve state with a mix of live, converging, diverging, frozen and restarting samples."""
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    z = rnd(B, n)
    scale = torch.exp(rnd(B, 1) * 2)  # residual norms spread over several decades
    fz = z + scale * rnd(B, n) / max(n, 1) ** 0.5
    fz[torch.rand(B, generator=gen) < 0.05] = float("nan")
    z_dev = z.to(device, dtype)
    state = SolveState.start(z_dev)
    state.active.copy_(torch.rand(B, generator=gen) < 0.85)
    state.nstep.copy_(torch.randint(0, 50, (B,), generator=gen, dtype=torch.int32))
    # Built on the CPU, then copied: state.best_abs / (a CPU tensor) failed on every GPU.
    best_abs = torch.exp(rnd(B) * 2).to(dtype)
    state.best_abs.copy_(best_abs)
    state.best_rel.copy_(best_abs / (1 + torch.rand(B, generator=gen, dtype=dtype)))
    state.best_z.copy_(rnd(B, n).to(dtype))
    hist = AndersonHistory.empty(z_dev, m)
    hist.X.copy_(rnd(B, m, n).to(dtype))
    hist.G.copy_((scale[:, :, None] * rnd(B, m, n) / max(n, 1) ** 0.5).to(dtype))
    hist.count.copy_(torch.randint(0, 2 * m + 1, (B,), generator=gen, dtype=torch.int32))
    G64 = hist.G.double()
    hist.gram.copy_(G64 @ G64.transpose(1, 2))
    return z_dev, fz.to(device, dtype), state, hist


def _valid_gram(hist):
    k = torch.clamp(hist.count, max=hist.m)
    idx = torch.arange(hist.m, device=hist.count.device)
    valid = (idx[None, :] < k[:, None])
    return torch.where(valid[:, :, None] & valid[:, None, :], hist.gram, torch.zeros_like(hist.gram))


def _assert_same_step(z, fz, state, hist, backend, params):
    ref_state, ref_hist = copy.deepcopy(state), copy.deepcopy(hist)
    out_ref = torch.full_like(z, float("nan"))
    out = torch.full_like(z, float("nan"))  # poisoned: every live row must be written
    anderson_step_ref(z, fz, out_ref, ref_state, ref_hist, **params)
    ran = anderson_step(z, fz, out, state, hist, backend=backend, **params)
    assert ran == backend
    rtol = RTOL[z.dtype]
    for name in ("active", "converged", "diverged", "nstep"):
        assert torch.equal(getattr(state, name), getattr(ref_state, name)), name
    assert torch.equal(hist.count, ref_hist.count)
    live = ref_state.active
    assert torch.isfinite(out[live]).all(), "a live sample's z_out was not written"
    assert torch.isnan(out[~live]).all(), "a frozen sample's z_out was touched"
    torch.testing.assert_close(out[live], out_ref[live], rtol=rtol, atol=rtol)
    for name in ("abs_res", "rel_res", "best_abs", "best_rel", "best_z"):
        torch.testing.assert_close(getattr(state, name), getattr(ref_state, name),
                                   rtol=rtol, atol=rtol, equal_nan=True, msg=name)
    torch.testing.assert_close(hist.X, ref_hist.X, rtol=rtol, atol=rtol)
    torch.testing.assert_close(hist.G, ref_hist.G, rtol=rtol, atol=rtol)
    torch.testing.assert_close(_valid_gram(hist), _valid_gram(ref_hist), rtol=1e-9, atol=1e-9)


SHAPES = [(1, 1, 1), (3, 7, 2), (8, 128, 5), (64, 256, 6), (17, 1000, 8), (300, 33, 3),
          (5, 5000, 7), (250, 1025, 4)]


@pytest.mark.parametrize("backend,device", FAST_BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("B,n,m", SHAPES)
def test_step_matches_reference(backend, device, B, n, m):
    _require(backend, device)
    if backend == "triton" and device == "cpu" and B * n * m > 2_000_000:
        pytest.skip("too slow under the Triton interpreter")
    seed = random.randrange(2**31)
    z, fz, state, hist = make_case(B, n, m, torch.float32, seed, device)
    params = dict(tol=0.05, stop_mode=random.choice(["abs", "rel"]), beta=random.uniform(0.3, 1.0),
                  lam=1e-4, restart_growth=random.choice([2.0, 10.0, float("inf")]))
    _assert_same_step(z, fz, state, hist, backend, params)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("B,n,m,dtype", [(3, 40000, 12, torch.float32),
                                         (2, 9002, 3, torch.float64),
                                         (700, 1024, 6, torch.float32)])
def test_gpu_rows_split_into_chunks_vector_and_scalar_paths(backend, B, n, m, dtype):
    """The GPU kernels split wide rows into column chunks (a few rows: many chunks, summed by
    the decide kernel) and read 16-byte vectors where every row allows, scalars elsewhere:
    each path against the reference, with m in every history bound (4, 8, 16)."""
    _require(backend, "cuda")
    seed = random.randrange(2**31)
    params = dict(tol=0.05, stop_mode="rel", beta=0.7, lam=1e-4, restart_growth=10.0)
    z, fz, state, hist = make_case(B, n, m, dtype, seed, "cuda")
    _assert_same_step(z, fz, state, hist, backend, params)
    # z and f(z) one element off the 16-byte grid: the scalar path
    z, fz, state, hist = make_case(B, n, m, dtype, seed + 1, "cuda")
    zs = torch.empty(B * n + 1, dtype=dtype, device="cuda")[1:].view(B, n).copy_(z)
    fs = torch.empty(B * n + 1, dtype=dtype, device="cuda")[1:].view(B, n).copy_(fz)
    _assert_same_step(zs, fs, state, hist, backend, params)


@pytest.mark.parametrize("backend,device", FAST_BACKENDS, ids=BACKEND_IDS)
def test_step_matches_reference_float64(backend, device):
    _require(backend, device)
    z, fz, state, hist = make_case(37, 300, 5, torch.float64, random.randrange(2**31), device)
    params = dict(tol=0.05, stop_mode="abs", beta=0.8, lam=1e-6, restart_growth=10.0)
    _assert_same_step(z, fz, state, hist, backend, params)


@pytest.mark.parametrize("backend,device", FAST_BACKENDS, ids=BACKEND_IDS)
def test_ill_conditioned_history_restarts(backend, device):
    """Identical history columns with lam=0 make the Gram matrix singular: damped step + restart."""
    _require(backend, device)
    z, fz, state, hist = make_case(6, 50, 4, torch.float64, random.randrange(2**31), device)
    state.active.fill_(True)
    state.best_abs.fill_(float("inf"))
    state.best_rel.fill_(float("inf"))
    fz = z + 1e-3 * torch.randn_like(z)
    g = fz - z
    hist.G.copy_(g[:, None, :].expand_as(hist.G))
    hist.gram.copy_(hist.G @ hist.G.transpose(1, 2))
    hist.count.fill_(3)
    params = dict(tol=1e-12, stop_mode="abs", beta=0.5, lam=0.0, restart_growth=float("inf"))
    out = z.clone()
    anderson_step(z, fz, out, state, hist, backend=backend, **params)
    torch.testing.assert_close(out, z + 0.5 * g)
    assert (hist.count == 0).all()


@pytest.mark.parametrize("backend,device", FAST_BACKENDS, ids=BACKEND_IDS)
def test_full_solve_matches_reference(backend, device):
    """Same stopping decisions along a whole solve of a random contractive map."""
    _require(backend, device)
    from eqkernels.solvers import anderson
    torch.manual_seed(random.randrange(2**31))
    B, n = 12, 64
    W = torch.randn(n, n, dtype=torch.float64, device=device)
    W *= 0.9 / torch.linalg.matrix_norm(W, ord=2)
    x = torch.randn(B, n, dtype=torch.float64, device=device)
    f = lambda z: torch.tanh(z @ W.T + x)
    z0 = torch.zeros(B, n, dtype=torch.float64, device=device)
    z_ref, info_ref = anderson(f, z0, max_iter=200, tol=1e-10, m=5, backend="reference")
    z_fast, info_fast = anderson(f, z0, max_iter=200, tol=1e-10, m=5, backend=backend)
    assert info_fast.backend == backend
    assert torch.equal(info_fast.nstep, info_ref.nstep)
    assert info_ref.converged.all()
    torch.testing.assert_close(z_fast, z_ref, rtol=1e-9, atol=1e-9)

"""The damped (fused-epilogue) loop: its numbers, its noise, and memory that does not grow
with max_iter, up to 40,000 steps, in inference and in training."""
import io
import random
import tracemalloc
from contextlib import redirect_stderr

import pytest
import torch

import eqkernels as eqk
from eqkernels import _backends
from eqkernels.ops.block_step import noise_key, standard_normal_ref
from maps import TanhBlock, tanh_map

BACKENDS = ["reference", "cpp"]


@pytest.fixture(autouse=True)
def _fresh_seed():
    torch.manual_seed(random.randrange(2**31))


def _require(backend):
    if not _backends._usable(backend, torch.device("cpu")):
        pytest.skip(f"{backend}: {_backends.backends()[backend][1]}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_damped_noisy_run_equals_a_plain_loop(backend):
    """The fused loop is exactly z <- (1-l) z + l f(z) + s eps_t with the documented stream."""
    _require(backend)
    f, _, _ = tanh_map(B=4, n=33)
    z0 = torch.randn(4, 33, dtype=torch.float64)
    lam, sigma, seed, steps = 0.9, 0.02, random.randrange(2**31), 50
    z, info = eqk.damped(f, z0, max_iter=steps, tol=1e-30, damping=lam, noise_std=sigma,
                         seed=seed, backend=backend)
    expect = z0.clone()
    for t in range(1, steps + 1):
        prev = expect
        eps = standard_normal_ref(noise_key(seed, t), 4, 33).double()
        expect = (1 - lam) * expect + lam * f(expect) + sigma * eps
    # eps is float32 (log, cos): backends agree with the reference to a few ulp of eps.
    close = dict(rtol=1e-9, atol=1e-9) if backend == "reference" else dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(z, expect, **close)
    assert info.backend == backend and (info.nstep == steps).all()
    torch.testing.assert_close(info.abs_residual, (expect - prev).norm(dim=1), **close)
    z_again, _ = eqk.damped(f, z0, max_iter=steps, tol=1e-30, damping=lam, noise_std=sigma,
                            seed=seed, backend=backend)
    assert torch.equal(z, z_again)  # reproducible from the seed
    z_other, _ = eqk.damped(f, z0, max_iter=steps, tol=1e-30, damping=lam, noise_std=sigma,
                            seed=seed + 1, backend=backend)
    assert not torch.allclose(z, z_other)


@pytest.mark.parametrize("backend", BACKENDS)
def test_damped_without_noise_reaches_the_fixed_point(backend):
    _require(backend)
    f, _, _ = tanh_map(B=6, n=40)
    z, info = eqk.damped(f, torch.zeros(6, 40, dtype=torch.float64), max_iter=2000, tol=1e-11,
                         damping=0.8, backend=backend)
    assert info.converged.all()
    assert (f(z) - z).norm(dim=1).max() < 1e-9
    assert info.nstep.min() < info.nstep.max() or info.nstep.max() < 2000


def test_trajectory_stays_bounded_on_a_long_run():
    f, _, _ = tanh_map(B=2, n=4)
    _, info = eqk.damped(f, torch.zeros(2, 4, dtype=torch.float64), max_iter=5000, tol=1e-30,
                         damping=0.5, noise_std=0.1, trajectory=True)
    T = info.trajectory.shape[0]
    assert 512 <= T <= 1024 and info.trajectory.shape[1] == 2
    steps = info.trajectory_steps
    assert steps.shape == (T,) and (steps.diff() == steps[1] - steps[0]).all()
    assert int(steps[-1]) <= 5000


def test_progress_bar_shows_step_and_live_samples():
    f, _, _ = tanh_map(B=3, n=8)
    err = io.StringIO()
    with redirect_stderr(err):
        eqk.damped(f, torch.zeros(3, 8, dtype=torch.float64), max_iter=300, tol=1e-30,
                   damping=0.5, noise_std=0.1, progress=True)  # noise: never converges
    text = err.getvalue()
    assert "300/300" in text and "live=3/3" in text and "median_res=" in text


def _training_step(max_iter, block, x):
    """One forward + implicit backward through a max_iter-step noisy damped run."""
    deq = eqk.DEQ(block, solver="damped", max_iter=max_iter, tol=1e-30, backward="implicit",
                  backward_max_iter=min(max_iter, 1_000), trajectory=True,
                  solver_kwargs=dict(damping=0.9, noise_std=0.01, seed=1))
    z, info = deq(x)
    z.square().sum().backward()
    assert (info.nstep == max_iter).all()  # noise: the forward never stops early
    assert deq.last_backward_info.nstep.max() >= 1  # (the adjoint may converge exactly)


def _peak_memory(max_iter, block, x):
    """(tracemalloc peak of the Python heap, bytes autograd saved for backward)."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        _training_step(max_iter, block, x)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    return peak, saved[0]


def test_40000_step_training_memory_is_independent_of_max_iter():
    block = TanhBlock(16, norm=0.8, dtype=torch.float32)
    x = torch.randn(4, 16)
    _training_step(5, block, x)  # warm caches (kernels, warnings registry, tqdm imports)
    peaks = {n: _peak_memory(n, block, x) for n in (100, 1_000, 40_000)}
    heap = {n: p[0] for n, p in peaks.items()}
    saved = {n: p[1] for n, p in peaks.items()}
    assert len(set(saved.values())) == 1, f"autograd saved bytes grow with max_iter: {saved}"
    # < 5% apart, with 128 KiB of slack for the interpreter's own bookkeeping (the peaks
    # are ~50-100 KiB and jitter by that much); a leak of 4 bytes a step would show.
    assert max(heap.values()) <= 1.05 * min(heap.values()) + 131072, f"heap peaks: {heap}"


class _RowCountingMap:
    """tanh(z W^T + x) over the rows it holds, recording the batch size of every call."""

    def __init__(self, W, x, calls):
        self.W, self.x, self.calls = W, x, calls

    def __call__(self, z):
        self.calls.append(z.shape[0])
        return torch.tanh(z @ self.W.T + self.x)

    def restrict(self, rows):
        return _RowCountingMap(self.W, self.x[rows], self.calls)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compaction_gives_the_same_answers_on_fewer_rows(backend):
    _require(backend)
    _, W, _ = tanh_map(B=1, n=24, norm=0.5)
    B = 12
    x = torch.randn(B, 24, dtype=torch.float64)
    z0 = torch.randn(B, 24, dtype=torch.float64)
    z0[:3] *= 1e6  # slow starters: the others halt early and are compacted away
    tol, damping = 1e-10, 0.3
    calls_plain, calls_compact = [], []
    z1, info1 = eqk.damped(_RowCountingMap(W, x, calls_plain), z0, max_iter=500, tol=tol,
                           damping=damping, backend=backend)
    z2, info2 = eqk.damped(_RowCountingMap(W, x, calls_compact), z0, max_iter=500, tol=tol,
                           damping=damping, backend=backend, compact_below=0.5)
    assert info1.converged.all() and info2.converged.all()
    assert torch.equal(info1.nstep, info2.nstep)
    torch.testing.assert_close(z2, z1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(info2.abs_residual, info1.abs_residual, rtol=1e-9, atol=1e-15)
    assert len(calls_plain) == len(calls_compact) == int(info1.nstep.max())
    assert min(calls_compact) < B and sum(calls_compact) < sum(calls_plain)
    assert info2.extra["compactions"]


def test_compaction_needs_a_restrictable_map_and_no_trajectory():
    f, _, _ = tanh_map(B=2, n=4)
    with pytest.raises(TypeError, match="restrict"):
        eqk.damped(f, torch.zeros(2, 4, dtype=torch.float64), compact_below=0.5)
    with pytest.raises(ValueError, match="compact_below"):
        eqk.damped(f, torch.zeros(2, 4, dtype=torch.float64), compact_below=1.5)


def test_deq_compacts_with_the_damped_solver():
    block = TanhBlock(10, norm=0.5)
    x = torch.randn(8, 10, dtype=torch.float64)
    x[:2] *= 50
    ref = eqk.DEQ(block, solver="damped", max_iter=400, tol=1e-9,
                  solver_kwargs=dict(damping=0.5))
    comp = eqk.DEQ(block, solver="damped", max_iter=400, tol=1e-9,
                   solver_kwargs=dict(damping=0.5, compact_below=0.9))
    with torch.no_grad():
        z_ref, info_ref = ref(x)
        z, info = comp(x)
    assert torch.equal(info.nstep, info_ref.nstep)
    torch.testing.assert_close(z, z_ref, rtol=1e-12, atol=1e-12)
    assert info.extra["compactions"], "nothing was compacted: the test lost its point"

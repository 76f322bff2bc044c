"""The capturable loop: device-side noise counter, damped's CUDA-graph mode. On CPU the same
segment code runs uncaptured (checked here against the eager loop); a stand-in capture
checks the cache / replay / fallback structure; the real capture is a GPU test."""
import importlib
import random

import pytest
import torch

import eqkernels as eqk
from eqkernels import _backends
from eqkernels.ops.block_step import noise_key, standard_normal_ref
from maps import tanh_map

segments_mod = importlib.import_module("eqkernels.solvers.segments")

CPU_BACKENDS = ["reference", "cpp"]


def _require(backend, device="cpu"):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not _backends._usable(backend, torch.device(device)):
        pytest.skip(f"{backend}: {_backends.backends()[backend][1]}")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("K", [1, 5, 16])
def test_segments_give_the_eager_iterates(backend, K):
    _require(backend)
    seed = random.randrange(2**31)
    f, _, _ = tanh_map(B=5, n=24)
    z0 = torch.randn(5, 24, dtype=torch.float64)
    kw = dict(max_iter=37, tol=1e-7, damping=0.7, noise_std=0.01, seed=seed, backend=backend,
              on_diverge="ignore")
    z_e, info_e = eqk.damped(f, z0, check_every=K, **kw)
    z_g, info_g = eqk.damped(f, z0, cuda_graph=True, graph_steps=K, **kw)
    assert torch.equal(z_g, z_e), f"seed {seed}"
    assert torch.equal(info_g.nstep, info_e.nstep)
    assert torch.equal(info_g.abs_residual, info_e.abs_residual)
    assert torch.equal(info_g.converged, info_e.converged)
    assert info_g.extra["cuda_graph"].startswith("eager: not a CUDA device")
    runner = info_g.extra["segments"]
    assert runner.eager_segments == -(-info_g.extra["steps"] // K)  # one check per segment


def test_segments_keep_the_divergence_snapshot_cadence():
    seed = random.randrange(2**31)
    B, n = 4, 8

    def f(z):  # the others converge; sample 2 grows 3x a step
        out = 0.5 * torch.tanh(z)
        out[2] = z[2] * 3.0
        return out
    z0 = torch.randn(B, n, dtype=torch.float64)  # sample 2 overflows after ~650 steps
    kw = dict(max_iter=900, tol=1e-30, damping=1.0, seed=seed, on_diverge="ignore")
    z_e, info_e = eqk.damped(f, z0, check_every=16, **kw)
    z_g, info_g = eqk.damped(f, z0, cuda_graph=True, graph_steps=16, **kw)
    assert bool(info_e.diverged[2]) and bool(info_g.diverged[2])
    assert torch.equal(z_g, z_e) and torch.isfinite(z_g).all()


class _FakeGraph:
    """Stands in for torch.cuda.CUDAGraph on CPU: 'records' fn, replays by calling it."""
    recorded = 0

    def __init__(self, fn):
        self.fn = fn
        _FakeGraph.recorded += 1

    def replay(self):
        self.fn()


def test_runner_warms_up_captures_once_per_key_replays_and_bounds_its_cache(monkeypatch):
    monkeypatch.setattr(segments_mod, "_capture_graph", _FakeGraph)
    calls = []
    runner = segments_mod.SegmentRunner(lambda k, base: calls.append((k, base)), capture=True,
                                      reason="captured", cache_size=2)
    for seg in range(5):
        runner.run(16, 16 * seg)  # one key: (16, 0)
    assert (runner.eager_segments, runner.captures, runner.replays) == (1, 1, 4)
    assert len(calls) == 5
    for k in (3, 5, 7):  # three new keys, each warmed then captured: cache keeps 2
        runner.run(k, 0)
        runner.run(k, 0)
    assert runner.captures == 4 and len(runner.cache) == 2 and runner.evictions == 2
    assert runner.describe().startswith("captured (")


def test_failed_capture_falls_back_to_eager_with_the_reason(monkeypatch):
    def broken(fn):
        raise RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(segments_mod, "_capture_graph", broken)
    calls = []
    runner = segments_mod.SegmentRunner(lambda k, base: calls.append(k), capture=True,
                                      reason="captured")
    for _ in range(4):
        runner.run(8, 0)
    assert len(calls) == 4 and not runner.capture
    assert "capture failed (RuntimeError: operation not permitted" in runner.describe()


def test_compaction_happens_at_segment_boundaries_and_matches_eager():
    """f.restrict: compaction with K-step segments equals the eager loop checking every K."""
    torch.manual_seed(random.randrange(2**31))
    B, n, K = 8, 16, 4
    W = 0.9 * torch.randn(n, n, dtype=torch.float64) / n ** 0.5
    scale = torch.linspace(0.1, 1.0, B, dtype=torch.float64)[:, None]

    class Map:
        def __init__(self, rows):
            self.rows = rows

        def __call__(self, z):
            return scale[self.rows] * torch.tanh(z @ W)

        def restrict(self, rows):
            return Map(self.rows[rows])
    z0 = torch.randn(B, n, dtype=torch.float64)
    kw = dict(max_iter=200, tol=1e-9, damping=0.9, compact_below=0.75, on_diverge="ignore")
    z_e, info_e = eqk.damped(Map(torch.arange(B)), z0, check_every=K, **kw)
    z_g, info_g = eqk.damped(Map(torch.arange(B)), z0, cuda_graph=True, graph_steps=K, **kw)
    assert info_g.extra["compactions"] == info_e.extra["compactions"]
    assert all(s % K == 0 for s, _ in info_g.extra["compactions"])
    assert torch.equal(z_g, z_e) and torch.equal(info_g.nstep, info_e.nstep)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_looped_update_counter_is_on_the_device_and_draws_the_documented_stream(backend):
    _require(backend)
    seed, B, n = random.randrange(2**31), 3, 10
    upd = eqk.LoopedUpdate(B, damping=1.0, noise_std=1.0, seed=seed, backend=backend)
    assert upd.step_counter.dtype == torch.int64 and upd.step_counter.shape == (1,)
    z = torch.zeros(B, n)
    for t in range(1, 4):
        f_out = z.clone()
        before = z.clone()
        if t == 2:
            z = upd.differentiable(z, f_out)
        else:
            upd(z, f_out)
        eps = standard_normal_ref(noise_key(seed, t), B, n)
        torch.testing.assert_close(z - before, eps, rtol=2e-6, atol=2e-6)
        assert int(upd.step_counter) == upd.steps == t


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_graph_replay_equals_eager_on_gpu(backend):
    _require(backend, "cuda")
    seed = random.randrange(2**31)
    B, n = 64, 256
    W = (0.5 * torch.randn(n, n) / n ** 0.5).cuda()
    f = lambda z: torch.tanh(z @ W)  # noqa: E731
    z0 = torch.randn(B, n, device="cuda")
    kw = dict(max_iter=100, tol=1e-30, damping=0.9, noise_std=0.01, seed=seed, backend=backend)
    z_e, info_e = eqk.damped(f, z0, check_every=16, **kw)
    z_g, info_g = eqk.damped(f, z0, cuda_graph=True, graph_steps=16, **kw)
    runner = info_g.extra["segments"]
    assert runner.capture and runner.captures >= 1 and runner.replays >= 4, runner.describe()
    assert torch.equal(z_g, z_e) and torch.equal(info_g.nstep, info_e.nstep)

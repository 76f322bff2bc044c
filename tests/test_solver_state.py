"""Solver objects with explicit state: one driver, compaction, warm starts, save/resume."""
import copy
import io
import math
import random

import pytest
import torch

import eqkernels as eqk
from eqkernels import _backends
from maps import tanh_map

STATEFUL = ["anderson", "fixed_point", "broyden"]


def _anderson_backends():
    names = ["reference"]
    if _backends.backends()["cpp"][0]:
        names.append("cpp")
    return names


def _solver(name, backend="auto"):
    return {"anderson": eqk.Anderson(m=5, backend=backend), "fixed_point": eqk.FixedPoint(damping=0.8),
            "broyden": eqk.Broyden(m=6)}[name]


@pytest.fixture
def seed():
    s = random.randrange(2**31)
    torch.manual_seed(s)
    return s


def test_solver_objects_validate_on_construction():
    with pytest.raises(ValueError, match=r"m must be an int in \[1, 16\], got 0"):
        eqk.Anderson(m=0)
    with pytest.raises(ValueError, match="beta must be in"):
        eqk.Anderson(beta=1.5)
    with pytest.raises(ValueError, match="damping must be in"):
        eqk.FixedPoint(damping=0)
    with pytest.raises(ValueError, match="m must be an int >= 1"):
        eqk.Broyden(m=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        eqk.Damped(seed=1.5)
    with pytest.raises(ValueError, match="max_iter must be an int >= 1"):
        eqk.SolveOptions(max_iter=0)
    with pytest.raises(ValueError, match="compact_below must be in"):
        eqk.SolveOptions(compact_below=1.0)
    with pytest.raises(ValueError, match="has no option"):
        eqk.solvers.as_solver("anderson", damping=0.5)
    with pytest.raises(Exception):  # frozen
        eqk.Anderson().m = 3


@pytest.mark.parametrize("name", STATEFUL)
def test_object_driver_matches_function(name, seed):
    f, _, _ = tanh_map(B=6, n=24)
    z0 = torch.randn(6, 24, dtype=torch.float64)
    opts = eqk.SolveOptions(max_iter=200, tol=1e-10)
    z1, i1 = eqk.solve(f, z0, _solver(name), opts)
    kwargs = {"anderson": dict(m=5), "fixed_point": dict(damping=0.8), "broyden": dict(m=6)}[name]
    z2, i2 = getattr(eqk, name)(f, z0, max_iter=200, tol=1e-10, **kwargs)
    assert torch.equal(z1, z2) and torch.equal(i1.nstep, i2.nstep), f"seed {seed}"
    assert i1.converged.all()


@pytest.mark.parametrize("name,backend", [("anderson", b) for b in _anderson_backends()]
                         + [("fixed_point", "auto"), ("broyden", "auto")])
def test_resume_from_saved_state_gives_the_same_iterates(name, backend, seed):
    """k steps, save (torch.save round trip), resume for the rest == one uninterrupted run."""
    f, _, _ = tanh_map(B=5, n=20, norm=0.99)
    z0 = torch.randn(5, 20, dtype=torch.float64)
    solver = _solver(name, backend)
    opts = eqk.SolveOptions(max_iter=40, tol=1e-13, trajectory=True)
    z_full, info_full = eqk.solve(f, z0, solver, opts)
    _, info_a, state = eqk.solve(f, z0, solver, opts.replace(max_iter=17), return_state=True)
    buf = io.BytesIO()
    torch.save(state.state_dict(), buf)
    buf.seek(0)
    restored = eqk.SolverState.from_state_dict(torch.load(buf))
    assert restored.steps == 17
    z_b, info_b = eqk.solve(f, None, solver, opts.replace(max_iter=23), state=restored)
    assert torch.equal(z_b, z_full), f"seed {seed}"
    assert torch.equal(info_b.nstep, info_full.nstep)
    assert torch.equal(info_b.abs_residual, info_full.abs_residual)
    # the resumed trajectory continues the step numbering and equals the tail of the full one
    assert torch.equal(info_b.trajectory_steps, info_full.trajectory_steps[17:])
    assert info_b.trajectory_steps[0] == 18
    assert torch.equal(info_b.trajectory, info_full.trajectory[17:])
    assert torch.equal(info_a.trajectory, info_full.trajectory[:17])


@pytest.mark.parametrize("name", STATEFUL)
def test_take_rows_continues_each_sample_as_in_the_full_batch(name, seed):
    """Compacting a state to some rows and going on gives those rows' iterates of the full run."""
    f_full, W, x = tanh_map(B=6, n=16, norm=0.97)
    z0 = torch.randn(6, 16, dtype=torch.float64)
    solver = _solver(name)
    opts = eqk.SolveOptions(max_iter=10, tol=1e-14)
    _, _, state = eqk.solve(f_full, z0, solver, opts, return_state=True)
    full_state = eqk.SolverState.from_state_dict(
        {k: v for k, v in state.state_dict().items()})
    rows = torch.tensor([4, 1, 3])
    sub = state.take(rows)
    f_sub = lambda z: torch.tanh(z @ W.T + x[rows])
    z_sub, i_sub = eqk.solve(f_sub, None, solver, opts, state=sub)
    z_all, i_all = eqk.solve(f_full, None, solver, opts, state=full_state)
    torch.testing.assert_close(z_sub, z_all[rows], rtol=0, atol=1e-12, msg=f"seed {seed}")
    assert torch.equal(i_sub.nstep, i_all.nstep[rows])
    mask = torch.zeros(6, dtype=torch.bool)
    mask[[1, 3]] = True
    assert state.take(mask).batch_size == 2


class RowMap:
    """f(z) = tanh(z W^T + x) that can be restricted to batch rows (counts the rows it sees)."""

    def __init__(self, W, x, seen):
        self.W, self.x, self.seen = W, x, seen

    def __call__(self, z):
        self.seen.append(z.shape[0])
        return torch.tanh(z @ self.W.T + self.x)

    def restrict(self, rows):
        return RowMap(self.W, self.x[rows], self.seen)


@pytest.mark.parametrize("name", STATEFUL)
def test_compaction_for_every_solver_matches_the_uncompacted_solve(name, seed):
    n = 16
    _, W_easy, _ = tanh_map(B=1, n=n, norm=0.2)
    x = torch.randn(8, n, dtype=torch.float64)
    # rows 0-5 easy (fast contraction), rows 6-7 slow: the batch should shrink to 2 rows
    W = torch.stack([W_easy * (1 if b < 6 else 4.5) for b in range(8)])

    class PerRow(RowMap):
        def __call__(self, z):
            self.seen.append(z.shape[0])
            return torch.tanh(torch.einsum("bij,bj->bi", self.W, z) + self.x)

        def restrict(self, rows):
            return PerRow(self.W[rows], self.x[rows], self.seen)

    z0 = torch.zeros(8, n, dtype=torch.float64)
    solver = _solver(name)
    seen_plain, seen_comp = [], []
    opts = eqk.SolveOptions(max_iter=400, tol=1e-10, check_every=1)
    z_p, i_p = eqk.solve(PerRow(W, x, seen_plain), z0, solver, opts)
    z_c, i_c, st = eqk.solve(PerRow(W, x, seen_comp), z0, solver, opts.replace(compact_below=0.5),
                             return_state=True)
    assert i_p.converged.all() and i_c.converged.all(), f"seed {seed}"
    torch.testing.assert_close(z_c, z_p, rtol=0, atol=1e-12)
    assert torch.equal(i_c.nstep, i_p.nstep)
    assert min(seen_comp) < 8 and sum(seen_comp) < sum(seen_plain)
    assert i_c.extra["compactions"] and st.batch_size == 8


def test_warm_start_from_a_previous_state(seed):
    """A warm start from a converged state of the same map stops at once; from a state of a
    nearby map, fixed-point iteration (a linear rate) needs fewer steps than a cold start."""
    f, W, x = tanh_map(B=4, n=32, norm=0.8)
    z0 = torch.zeros(4, 32, dtype=torch.float64)
    opts = eqk.SolveOptions(max_iter=300, tol=1e-10)
    for solver in (eqk.Anderson(m=6), eqk.FixedPoint(), eqk.Broyden()):
        _, cold, state = eqk.solve(f, z0, solver, opts, return_state=True)
        for keep in (True, False):
            _, again = eqk.solve(f, None, solver, opts, state=state.warm_start(keep_history=keep))
            assert again.converged.all() and (again.nstep == 1).all(), f"seed {seed} {solver}"
    x2 = x + 1e-3 * torch.randn_like(x)
    f2 = lambda z: torch.tanh(z @ W.T + x2)
    fp = eqk.FixedPoint()
    _, _, state = eqk.solve(f, z0, fp, opts, return_state=True)
    _, cold2 = eqk.solve(f2, z0, fp, opts)
    _, warm = eqk.solve(f2, None, fp, opts, state=state.warm_start())
    assert warm.converged.all() and (warm.nstep < cold2.nstep).all(), f"seed {seed}"
    with pytest.raises(ValueError, match="made by solver 'fixed_point', not 'broyden'"):
        eqk.solve(f, None, eqk.Broyden(), opts, state=state)
    with pytest.raises(ValueError, match="either z0 or state"):
        eqk.solve(f, z0, fp, opts, state=state)


def test_transposed_z0_reaches_the_kernels_contiguous(seed):
    f, _, _ = tanh_map(B=6, n=10)
    z0 = torch.randn(10, 6, dtype=torch.float64).T  # (6, 10), not contiguous
    assert not z0.is_contiguous()
    for backend in _anderson_backends():
        st = eqk.Anderson(backend=backend).init(z0)
        assert st.z.is_contiguous() and st.track.best_z.is_contiguous()
        z_t, i_t = eqk.anderson(f, z0, tol=1e-8, max_iter=300, backend=backend)
        z_c, i_c = eqk.anderson(f, z0.contiguous(), tol=1e-8, max_iter=300, backend=backend)
        assert torch.equal(z_t, z_c) and i_t.converged.all(), f"seed {seed} {backend}"
    z_d, i_d = eqk.damped(f, z0, tol=1e-10, max_iter=300)
    z_dc, _ = eqk.damped(f, z0.contiguous(), tol=1e-10, max_iter=300)
    assert torch.equal(z_d, z_dc)


def test_info_has_torchdeq_names_and_rel_trajectory(seed):
    f, _, _ = tanh_map(B=3, n=12)
    z, info = eqk.anderson(f, torch.zeros(3, 12, dtype=torch.float64), max_iter=9, tol=1e-14,
                           trajectory=True)
    fz = f(z)
    assert torch.equal(info["abs_lowest"], info.abs_residual)
    assert torch.equal(info.rel_lowest, info.rel_residual)
    assert info["nstep"] is info.nstep
    assert info.abs_trace.shape == (3, 9) and info.rel_trace.shape == (3, 9)
    # rel trace = abs trace / ||f(z)|| of the same step (last step checked directly)
    torch.testing.assert_close(info.rel_trace.min(dim=1).values,
                               ((fz - z).norm(dim=1) / fz.norm(dim=1)), rtol=1e-6, atol=0)
    with pytest.raises(KeyError):
        info["no_such_field"]


def test_damped_object_runs_through_the_driver(seed):
    f, _, _ = tanh_map(B=3, n=8)
    z0 = torch.randn(3, 8, dtype=torch.float64)
    z1, i1 = eqk.solve(f, z0, eqk.Damped(damping=0.7), eqk.SolveOptions(max_iter=30, tol=1e-30))
    z2, i2 = eqk.damped(f, z0, damping=0.7, max_iter=30, tol=1e-30)
    assert torch.equal(z1, z2) and (i1.nstep == 30).all()


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_damped_noisy_run_resumes_bitwise(seed, cuda_graph):
    """A noisy damped run saved after 45 steps and resumed for 55 more == 100 in one call:
    the noise counter restarts at the state's step count and the snapshot cadence follows it
    (segments of 8 steps when cuda_graph: uncaptured on a CPU, the same code path)."""
    f, _, _ = tanh_map(B=4, n=8)
    z0 = torch.randn(4, 8, dtype=torch.float64)
    solver = eqk.Damped(damping=0.8, noise_std=0.05, seed=seed % 1000, cuda_graph=cuda_graph,
                        graph_steps=8)
    opts = eqk.SolveOptions(max_iter=100, tol=1e-30)
    z_all, info_all = eqk.solve(f, z0, solver, opts)
    _, _, state = eqk.solve(f, z0, solver, opts.replace(max_iter=45), return_state=True)
    saved = eqk.SolverState.from_state_dict(copy.deepcopy(state.state_dict()))
    z_res, info_res = eqk.solve(f, None, solver, opts.replace(max_iter=55), state=saved)
    assert torch.equal(z_res, z_all), f"seed {seed}"
    assert torch.equal(info_res.nstep, info_all.nstep) and (info_all.nstep == 100).all()
    assert torch.equal(info_res.abs_residual, info_all.abs_residual)


@pytest.mark.skipif(not _backends.backends()["cpp"][0], reason="needs the compiled CPU kernel "
                    "(the reference step is too slow for 40,000 steps in a unit test)")
def test_resume_a_40000_step_solve(seed):
    """20,000 steps, save, restore, 20,000 more == 40,000 in one call (bitwise), with the
    stopping test never met so every step runs, with a Gram matrix that keeps changing:
    f(z) = (z + 1 + 0.5 sin(W z + x)) mod 2 pi has no fixed point (f(z) - z is 1 + 0.5 sin(.)
    minus a multiple of 2 pi, never 0) and keeps z bounded (no float absorption)."""
    _, W, x = tanh_map(B=2, n=8, norm=2.5)
    f = lambda z: torch.remainder(z + 1 + 0.5 * torch.sin(z @ W.T + x), 2 * math.pi)
    z0 = torch.randn(2, 8, dtype=torch.float64)
    solver = eqk.Anderson(m=4, backend="cpp")
    opts = eqk.SolveOptions(max_iter=40_000, tol=1e-12)
    z_full, info_full, st_full = eqk.solve(f, z0, solver, opts, return_state=True)
    _, _, state = eqk.solve(f, z0, solver, opts.replace(max_iter=20_000), return_state=True)
    buf = io.BytesIO()
    torch.save(state.state_dict(), buf)
    buf.seek(0)
    z_b, info_b, st_b = eqk.solve(f, None, solver, opts.replace(max_iter=20_000),
                                  state=eqk.SolverState.from_state_dict(torch.load(buf)),
                                  return_state=True)
    assert (info_full.nstep == 40_000).all() and st_b.steps == 40_000
    assert torch.equal(z_b, z_full), f"seed {seed}"
    assert torch.equal(st_b.z, st_full.z) and torch.equal(info_b.nstep, info_full.nstep)
    for k in st_full.buffers:
        assert torch.equal(st_b.buffers[k], st_full.buffers[k]), k

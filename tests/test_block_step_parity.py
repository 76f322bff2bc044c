"""Every fast backend of the fused block-step epilogue against the PyTorch reference.

On a machine without a GPU the CUDA cases skip; Triton runs interpreted on CPU tensors.
"""
import copy
import math
import random

import pytest
import torch

from eqkernels import _backends
from eqkernels.ops.block_step import (block_step, block_step_ref, new_step_counter, noise_key,
                                      residual_dtype, standard_normal_ref)
from eqkernels.ops.tracking import SolveState

# The CUDA-device cases are marked gpu: scripts/gpu_suite.sh runs them (pytest -m gpu).
FAST_BACKENDS = [("cpp", "cpu"),
                 pytest.param("triton", "cpu", marks=pytest.mark.interpreter),
                 pytest.param("cuda", "cuda", marks=pytest.mark.gpu),
                 pytest.param("triton", "cuda", marks=pytest.mark.gpu)]
BACKEND_IDS = ["cpp-cpu", "triton-cpu", "cuda-cuda", "triton-cuda"]
RTOL = {torch.float32: 2e-5, torch.float64: 1e-10, torch.bfloat16: 1e-2}
SHAPES = [(1, 1), (3, 7), (8, 128), (64, 256), (17, 1000), (300, 33), (5, 5000), (250, 1025)]


def _require(backend, device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not _backends._usable(backend, torch.device(device)):
        pytest.skip(f"{backend} on {device}: {_backends.backends()[backend][1]}")


def make_case(B, n, dtype, seed, device="cpu"):
    """A mid-run state: live, frozen, about-to-converge and about-to-diverge samples."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(B, n, generator=gen, dtype=torch.float64)
    step = torch.exp(torch.randn(B, 1, generator=gen, dtype=torch.float64) * 2)
    f_out = z + step * torch.randn(B, n, generator=gen, dtype=torch.float64) / max(n, 1) ** 0.5
    f_out[torch.rand(B, generator=gen) < 0.05] = float("inf")
    z, f_out = z.to(device, dtype), f_out.to(device, dtype)
    state = SolveState.start(torch.zeros(B, 1, dtype=residual_dtype(dtype), device=device))
    state.active.copy_(torch.rand(B, generator=gen) < 0.85)
    state.nstep.copy_(torch.randint(0, 50, (B,), generator=gen, dtype=torch.int32))
    state.abs_res.copy_(torch.rand(B, generator=gen, dtype=torch.float64))
    state.rel_res.copy_(torch.rand(B, generator=gen, dtype=torch.float64))
    return z, f_out, state


def _params():
    """Random op parameters; the noise from a device step counter (and a seed), or, one time
    in four, from an explicit legacy key."""
    p = dict(damping=random.choice([1.0, random.uniform(0.3, 1.0)]),
             sigma=random.choice([0.0, 0.0, 1e-3, 0.05]),
             tol=0.05, stop_mode=random.choice(["abs", "rel"]))
    if random.random() < 0.25:
        p["key"] = noise_key(random.randrange(2**31), random.randrange(40_000))
    else:
        p["seed"] = random.randrange(-2**31, 2**31)
        p["step"] = random.randrange(40_000)
    return p


def _assert_same_step(z, f_out, state, backend, params, in_place):
    params = dict(params)
    start = params.pop("step", None)
    if start is not None:  # each call gets its own counter; both must advance it
        ref_params = dict(params, step=new_step_counter(z.device, start))
        params["step"] = new_step_counter(z.device, start)
    else:
        ref_params = params
    ref_state = copy.deepcopy(state)
    entry_active = state.active.clone()
    if in_place:
        out_ref, out = z.clone(), z.clone()
        block_step_ref(out_ref, f_out, out_ref, ref_state, **ref_params)
        ran = block_step(out, f_out, out, state, backend=backend, **params)
    else:
        out_ref = torch.full_like(z, float("nan"))
        out = torch.full_like(z, float("nan"))  # poisoned: every row active on entry is written
        block_step_ref(z, f_out, out_ref, ref_state, **ref_params)
        ran = block_step(z, f_out, out, state, backend=backend, **params)
    assert ran == backend
    if start is not None:
        assert int(params["step"]) == int(ref_params["step"]) == start + 1, "counter not advanced"
    for name in ("active", "converged", "diverged", "nstep"):
        assert torch.equal(getattr(state, name), getattr(ref_state, name)), name
    if not in_place:
        assert torch.isnan(out[~entry_active]).all(), "a frozen sample's row was written"
    # z_next bit for bit, noise included (eps is bit-identical on every backend, the update
    # rounds like the reference's separate mul/add); the norms' summation order differs.
    same = (out == out_ref) | (torch.isnan(out) & torch.isnan(out_ref))
    assert bool(same.all()), f"{int((~same).sum())} elements of z_next differ ({params})"
    rtol = RTOL[z.dtype]
    for name in ("abs_res", "rel_res"):
        torch.testing.assert_close(getattr(state, name), getattr(ref_state, name),
                                   rtol=rtol, atol=rtol, equal_nan=True, msg=name)


@pytest.mark.parametrize("backend,device", FAST_BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("B,n", SHAPES)
def test_step_matches_reference(backend, device, B, n):
    _require(backend, device)
    z, f_out, state = make_case(B, n, torch.float32, random.randrange(2**31), device)
    _assert_same_step(z, f_out, state, backend, _params(), in_place=random.random() < 0.5)


@pytest.mark.parametrize("backend,device", FAST_BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_step_matches_reference_other_dtypes(backend, device, dtype):
    _require(backend, device)
    z, f_out, state = make_case(37, 300, dtype, random.randrange(2**31), device)
    _assert_same_step(z, f_out, state, backend, _params(), in_place=False)


@pytest.mark.parametrize("backend,device", FAST_BACKENDS, ids=BACKEND_IDS)
def test_frozen_rows_untouched_and_noise_is_the_reference_stream(backend, device):
    _require(backend, device)
    B, n = 9, 301
    z, f_out, state = make_case(B, n, torch.float32, random.randrange(2**31), device)
    f_out = z.clone()  # damping 1 and f_out = z: z_next - z is the noise alone
    state.active.fill_(True)
    state.active[::3] = False
    seed, t = random.randrange(2**31), random.randrange(100)
    key = noise_key(seed, t + 1)
    out = torch.full_like(z, float("nan"))
    step = new_step_counter(device, t)
    block_step(z, f_out, out, state, damping=1.0, sigma=0.5, step=step, seed=seed, tol=1e-30,
               stop_mode="abs", backend=backend)
    assert int(step) == t + 1
    live = torch.ones(B, dtype=torch.bool, device=device)
    live[::3] = False
    assert torch.isnan(out[~live]).all(), "a frozen sample's row was written"
    eps = standard_normal_ref(key, B, n, device)
    assert torch.equal(out[live], z[live] + 0.5 * eps[live])  # damping 1: z_next = z + 0.5 eps


def test_noise_stream_is_standard_normal_and_decorrelated():
    e1 = standard_normal_ref(noise_key(7, 1), 400, 500)
    e2 = standard_normal_ref(noise_key(7, 2), 400, 500)
    e3 = standard_normal_ref(noise_key(8, 1), 400, 500)
    for e in (e1, e2, e3):
        assert abs(float(e.mean())) < 0.01 and abs(float(e.std()) - 1) < 0.01
        assert abs(float((e ** 4).mean()) - 3) < 0.1  # Gaussian kurtosis, not uniform's 1.8
    corr = torch.corrcoef(torch.stack([e1.flatten(), e2.flatten(), e3.flatten()]))
    assert (corr - torch.eye(3)).abs().max() < 0.01
    assert torch.equal(e1, standard_normal_ref(noise_key(7, 1), 400, 500))  # reproducible


def test_reference_matches_the_formula():
    """The reference itself, against a direct float64 statement of the epilogue."""
    B, n = 6, 40
    z, f_out, state = make_case(B, n, torch.float64, random.randrange(2**31))
    f_out = torch.where(torch.isfinite(f_out), f_out, z)
    state.active.fill_(True)
    key, lam, sigma = noise_key(3, 5), 0.95, 0.01
    out = torch.empty_like(z)
    block_step_ref(z, f_out, out, state, damping=lam, sigma=sigma, key=key, tol=1e-12,
                   stop_mode="rel")
    expect = (1 - lam) * z + lam * f_out + sigma * standard_normal_ref(key, B, n).double()
    torch.testing.assert_close(out, expect)
    torch.testing.assert_close(state.abs_res, (expect - z).norm(dim=1))
    torch.testing.assert_close(state.rel_res, (expect - z).norm(dim=1) / (expect.norm(dim=1) + 1e-9))
    assert math.isfinite(float(state.abs_res.sum()))

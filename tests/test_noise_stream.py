"""The block step's noise stream (spec: eqkernels/ops/block_step.py's docstring): its generator
against the published known answers, its float32 programs against exact math, every backend
against the reference bit for bit, and the statistics of a few million draws (moments, KS and
chi-square against N(0, 1), independence of neighbours, of consecutive steps and of seeds).

The statistical tests draw from fresh random seeds (in the failure message); each uses p-value
thresholds of 1e-6, so the suite fails by chance about once in 10^5 runs.
"""
import math
import random
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy import stats

from eqkernels import _backends
from eqkernels.ops import block_step as bs
from eqkernels.ops.block_step import (block_step, new_step_counter, noise_key, philox2x32_ref,
                                      standard_normal_ref)
from eqkernels.ops.tracking import SolveState

P_MIN = 1e-6
BACKENDS = [("cpp", "cpu"), ("triton", "cpu"),
            pytest.param("cuda", "cuda", marks=pytest.mark.gpu),
            pytest.param("triton", "cuda", marks=pytest.mark.gpu)]
IDS = ["cpp-cpu", "triton-cpu", "cuda-cuda", "triton-cuda"]


def _require(backend, device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not _backends._usable(backend, torch.device(device)):
        pytest.skip(f"{backend} on {device}: {_backends.backends()[backend][1]}")


def draw(backend, device, B, n, seed, t, z=None):
    """eps of update t (1-based) of a run seeded `seed`, drawn by `backend` through the op:
    damping 1, f_out = 0, sigma 1, so z_next = 0 * z + 1 * 0 + 1 * eps = eps exactly."""
    z = torch.zeros(B, n, device=device) if z is None else z
    out = torch.full_like(z, float("nan"))
    state = SolveState.start(torch.zeros(B, 1, device=device))
    block_step(z, torch.zeros_like(z), out, state, damping=1.0, sigma=1.0, tol=0.0,
               stop_mode="abs", step=new_step_counter(device, t - 1), seed=seed, backend=backend)
    return out


def fast_draw(B, n, seed, t):
    """A big field from the fastest CPU backend (the compiled one where built): the statistics
    below are of the stream, which every backend draws bit for bit."""
    if _backends.backends()["cpp"][0]:
        return draw("cpp", "cpu", B, n, seed, t)
    return standard_normal_ref(noise_key(seed, t), B, n)


# ---- the generator and the arithmetic ----------------------------------------------------

def test_philox2x32_10_known_answers():
    """Random123's known-answer vectors for Philox2x32-10 (counter, key -> output)."""
    kat = [((0x00000000, 0x00000000), 0x00000000, (0xFF1DAE59, 0x6CD10DF2)),
           ((0xFFFFFFFF, 0xFFFFFFFF), 0xFFFFFFFF, (0x2C3F628B, 0xAB4FD7AD)),
           ((0x243F6A88, 0x85A308D3), 0x13198A2E, (0xDD7CE038, 0xF62A4C12))]
    for (c0, c1), key, expect in kat:
        h0, h1 = philox2x32_ref(torch.tensor([c0]), c1, key)
        assert (int(h0), int(h1)) == expect
        h0, h1 = philox2x32_ref(torch.tensor([c0]), torch.tensor([c1]), torch.tensor([key]))
        assert (int(h0), int(h1)) == expect


def _round_to_float32(x: Fraction) -> float:
    """x rounded to the nearest float32, ties to even (exactly)."""
    f = np.float32(float(x))
    cands = [np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))]
    best = min(cands, key=lambda c: (abs(Fraction(float(c)) - x),
                                     int(np.array(c).view(np.int32)) & 1))
    return float(best)


def test_fma32_rounds_once_even_where_float64_would_round_twice():
    rng = np.random.default_rng(random.randrange(2**31))
    a = rng.standard_normal(20000).astype(np.float32)
    b = rng.standard_normal(20000).astype(np.float32)
    # Where a * b lies within 2**-30 (relative) of a float32 midpoint M, M - a * b is a float32
    # d, and c = d moved one float32 ulp up or down makes the float64 sum land exactly on M
    # while the exact sum does not: rounding through float64 then goes wrong half of the time
    # unless the halfway case moves towards the exact sum first.
    p = a.astype(np.float64) * b.astype(np.float64)
    f = p.astype(np.float32)
    half = np.spacing(np.abs(f)).astype(np.float64) / 2
    mid = np.where(p > f, f + half, f - half)
    near = np.abs(p - mid) < 2.0**-30 * np.abs(mid)
    d = (mid - p).astype(np.float32)
    d = np.nextafter(d, np.where(rng.random(20000) < 0.5, np.inf, -np.inf).astype(np.float32))
    c = np.where(near, d, rng.standard_normal(20000).astype(np.float32))
    keep = near | (rng.random(20000) < 0.05)
    a, b, c = a[keep], b[keep], c[keep]
    got = bs._fma32(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)).numpy()
    twice = 0
    for i in range(len(a)):
        exact = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
        assert float(got[i]) == _round_to_float32(exact), (a[i], b[i], c[i])
        s = float(a[i]) * float(b[i]) + float(c[i])  # float64, then float32: two roundings
        twice += float(np.float32(s)) != _round_to_float32(exact)
    assert twice > 0, "no case where rounding through float64 would be wrong: test too weak"


def _box_muller64(key, c):
    """float64 Box-Muller of the same bits (the spec's exact-math counterpart) and rad."""
    h0, h1 = philox2x32_ref(c, 0, key)
    u0 = ((h0 >> 9) * 2 + 1).double() / 2**24
    rad = torch.sqrt(-2 * torch.log(u0))
    r = ((h1 >> 8) & 0x3FFFFE) + (1 - (1 << 21))
    theta = 2 * math.pi * r.double() / 2**24
    cs = torch.where((h1 >> 31) == 1, -torch.cos(theta), torch.cos(theta))
    sn = torch.sin(theta)
    swap = ((h1 >> 30) & 1) == 1
    return rad * torch.where(swap, sn, cs), rad * torch.where(swap, cs, sn), rad


def test_eps_is_within_two_ulp_of_exact_box_muller():
    key = noise_key(random.randrange(2**31), random.randrange(1, 10**6))
    c = torch.randint(0, 2**31, (1 << 15,), dtype=torch.int64)  # every input: the fit script
    e0, e1 = bs.standard_normal_pairs_ref(key, c)
    x0, x1, rad = _box_muller64(key, c)
    ulp = torch.from_numpy(np.spacing(rad.float().numpy())).double()
    err = torch.maximum((e0.double() - x0).abs(), (e1.double() - x1).abs()) / ulp
    assert float(err.max()) <= 2.0, f"key {key}: {float(err.max()):.2f} ulp of rad"


def test_log_and_sincos_edges():
    """The extreme u0 (2**-24 and 1 - 2**-24: LOG's relative error near 1 stays small) and the
    extreme remainders, against float64."""
    u0 = torch.tensor([2.0**-24, 3 * 2.0**-24, 0.5 - 2.0**-24, 0.5 + 2.0**-24,
                       1 - 3 * 2.0**-24, 1 - 2.0**-24], dtype=torch.float32)
    ln = bs._log32(u0).double()
    exact = torch.log(u0.double())
    ulp = torch.from_numpy(np.spacing(np.abs(exact.float().numpy()))).double()
    assert ((ln - exact).abs() / ulp).max() <= 1.0
    assert (ln < 0).all()
    r = torch.tensor([-(2**21) + 1, -1, 1, 2**21 - 1])
    cs, sn = bs._sincos32(r)
    theta = 2 * math.pi * r.double() / 2**24
    assert ((cs.double() - torch.cos(theta)).abs() <= 1.2e-7).all()
    assert ((sn.double() - torch.sin(theta)).abs() <= 1.2e-7 * torch.sin(theta).abs() + 1e-45).all()


# ---- every backend draws the reference's bits --------------------------------------------

@pytest.mark.parametrize("backend,device", BACKENDS, ids=IDS)
@pytest.mark.parametrize("B,n", [(1, 1), (5, 2), (7, 13), (3, 1025), (4, 6000), (64, 256)])
def test_backends_draw_the_reference_bits(backend, device, B, n):
    _require(backend, device)
    seed, t = random.randrange(-2**31, 2**31), random.randrange(1, 50_000)
    got = draw(backend, device, B, n, seed, t).cpu()
    ref = standard_normal_ref(noise_key(seed, t), B, n)
    assert torch.equal(got, ref), f"seed {seed} step {t}: {int((got != ref).sum())} differ"


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_draws_a_large_field_bit_for_bit(backend):
    """2**24 elements (most of the 2**23 possible u0, so the device's sqrt and log paths meet
    nearly every input) against the compiled CPU kernel (or the reference), bit for bit; and
    the vector paths: rows of n % 8 != 0 (pairs of 2), odd n (single elements), and a z whose
    storage starts off the 16-byte grid."""
    _require(backend, "cuda")
    seed, t = random.randrange(2**31), random.randrange(1, 50_000)
    for B, n in [(256, 65536), (64, 41472), (3, 41474), (5, 999)]:
        got = draw(backend, "cuda", B, n, seed, t).cpu()
        assert torch.equal(got, fast_draw(B, n, seed, t)), f"{B}x{n} seed {seed} step {t}"
    base = torch.zeros(4 * 4096 + 1, device="cuda")
    z = base[1:].view(4, 4096)  # 4-byte aligned only: the kernels must not use 16-byte access
    got = draw(backend, "cuda", 4, 4096, seed, t, z=z).cpu()
    assert torch.equal(got, fast_draw(4, 4096, seed, t))


# ---- statistics of the stream --------------------------------------------------------------

def _phi(x):
    return 0.5 * (1 + torch.erf(x.double() / math.sqrt(2)))


def _chi2_2d(a, b, bins=20):
    """p-value of independence and uniformity of (Phi(a), Phi(b)) on a bins x bins grid."""
    ia = torch.clamp((_phi(a) * bins).long(), max=bins - 1)
    ib = torch.clamp((_phi(b) * bins).long(), max=bins - 1)
    counts = torch.bincount(ia * bins + ib, minlength=bins * bins).double().numpy()
    return stats.chisquare(counts).pvalue


def test_moments_ks_and_chi_square_of_four_million_draws():
    seed, t = random.randrange(2**31), random.randrange(1, 50_000)
    e = fast_draw(1024, 4096, seed, t).flatten().double()
    N = e.numel()
    msg = f"seed {seed} step {t}"
    m, v = float(e.mean()), float(e.var())
    skew = float(((e - m) ** 3).mean() / v**1.5)
    kurt = float(((e - m) ** 4).mean() / v**2 - 3)
    assert abs(m) < 5 / math.sqrt(N), msg
    assert abs(v - 1) < 5 * math.sqrt(2 / N), msg
    assert abs(skew) < 5 * math.sqrt(6 / N), msg
    assert abs(kurt) < 5 * math.sqrt(24 / N), msg
    assert stats.kstest(e.numpy(), "norm").pvalue > P_MIN, msg
    counts = torch.bincount(torch.clamp((_phi(e) * 1000).long(), max=999), minlength=1000)
    assert stats.chisquare(counts.double().numpy()).pvalue > P_MIN, msg
    tail = int((e.abs() > 4).sum())  # P(|N| > 4) = 6.33e-5
    expect = N * 6.334e-5
    assert abs(tail - expect) < 5 * math.sqrt(expect), msg
    assert float(e.abs().max()) <= math.sqrt(48 * math.log(2)) + 1e-6, msg


def test_neighbours_steps_and_seeds_are_independent():
    seed, t = random.randrange(2**31 - 1), random.randrange(1, 50_000)
    msg = f"seed {seed} step {t}"
    e = fast_draw(256, 4096, seed, t).flatten()
    N = e.numel()
    pair0, pair1 = e[0::2], e[1::2]                      # the two outputs of one Box-Muller
    across0, across1 = e[1:-1:2], e[2::2]                # last of a pair, first of the next
    for name, (a, b) in {"within a pair": (pair0, pair1), "across pairs": (across0, across1),
                         "lag 2": (e[:-2], e[2:]), "lag 3": (e[:-3], e[3:]),
                         "next step": (e, fast_draw(256, 4096, seed, t + 1).flatten()),
                         "next seed": (e, fast_draw(256, 4096, seed + 1, t).flatten())}.items():
        r = float(torch.corrcoef(torch.stack([a, b]).double())[0, 1])
        assert abs(r) < 5 / math.sqrt(a.numel()), f"{name}: correlation {r:.2e}, {msg}"
        # squares too: Box-Muller's two outputs share rad, so a broken angle would show here
        r2 = float(torch.corrcoef(torch.stack([a * a, b * b]).double())[0, 1])
        assert abs(r2) < 5 * math.sqrt(2 / a.numel()), f"{name}: corr of squares {r2:.2e}, {msg}"
        assert _chi2_2d(a, b) > P_MIN, f"{name}: 2-d chi-square, {msg}"
    assert N == 2**20

"""Fits the float32 polynomials of the noise stream (eqkernels/ops/constants.py NOISE_*_POLY) and
prints them as exact float32 hex values, with the error of the whole float32 program (as
eqkernels/ops/block_step.py states it) over every input the stream can produce.

    python scripts/fit_noise_polynomials.py

Lawson's iteration (iteratively reweighted least squares) turns a least-squares fit on a dense
grid into a near-minimax one; the coefficients are then rounded to float32. The error table at
the end runs the stream's own reference code (block_step._log32 / _sincos32) on all 2**23
values of u0 and all 2**22 remainders v, against float64 math: the numbers the module docstring
quotes. Needs numpy only (and torch, for the reference).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def lawson(target, powers, x, weight, iters=60):
    """Coefficients c (float64) of sum_k c_k x**powers[k] ~ target(x), near-minimax in the
    weighted error, and that error."""
    A = np.stack([x ** p for p in powers], 1)
    lw = np.full_like(x, 1.0 / len(x))
    y = target(x)
    for _ in range(iters):
        W = np.sqrt(lw) * weight
        c, *_ = np.linalg.lstsq(A * W[:, None], y * W, rcond=None)
        err = np.abs((A @ c - y) * weight)
        lw = lw * err
        lw /= lw.sum()
    return c, err.max()


def hexes(coefs):
    return [float(np.float32(c)).hex() for c in coefs]


def ulps(got, exact):
    """|got - exact| in units of the float32 ulp at |exact|."""
    e32 = np.abs(exact).astype(np.float32)
    ulp = (np.nextafter(e32, np.float32(np.inf)) - e32).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / ulp


def main():
    # ln(1 + t) = t - t^2 / 2 + t^3 P(t), P of degree 7; relative error of ln(1 + t)
    t = np.linspace(math.sqrt(0.5) - 1, math.sqrt(2) - 1, 200001)
    t = t[np.abs(t) > 1e-4]
    c, e = lawson(lambda t: (np.log1p(t) - t + t * t / 2) / t ** 3, range(8), t,
                  np.abs(t ** 3 / np.log1p(t)))
    print(f"NOISE_LOG_POLY (fit rel. error {e:.2e}):", hexes(c))
    # sin(2 pi v) = v S0 + v^3 (S1 + v^2 (S2 + v^2 S3)), cos(2 pi v) = 1 + sum C_k v^(2k + 2)
    v = np.linspace(1e-6, 0.125, 200001)
    c, e = lawson(lambda v: np.sin(2 * np.pi * v) / v, (0, 2, 4, 6), v, np.ones_like(v))
    print(f"NOISE_SIN_POLY (fit rel. error {e / (2 * np.pi):.2e}):", hexes(c))
    c, e = lawson(lambda v: np.cos(2 * np.pi * v) - 1, (2, 4, 6, 8), v,
                  1 / np.cos(2 * np.pi * v))
    print(f"NOISE_COS_POLY (fit rel. error {e:.2e}):", hexes(c))

    import torch
    from eqkernels.ops import block_step as bs
    k = torch.arange(2 ** 23, dtype=torch.int64)
    u0 = (2 * k + 1).to(torch.float32) * 2.0 ** -24
    ln = bs._log32(u0).numpy()
    exact = np.log((2 * k.numpy() + 1) / 2.0 ** 24)
    rad = torch.sqrt(-2.0 * bs._log32(u0).double()).float().numpy()  # correctly rounded
    print(f"LOG over all 2^23 u0: max {ulps(ln, exact).max():.2f} ulp; "
          f"rad: max {ulps(rad, np.sqrt(-2 * exact)).max():.2f} ulp")
    r = torch.arange(-2 ** 21, 2 ** 21, dtype=torch.int64)
    r = r[r % 2 != 0]
    cs, sn = (x.numpy() for x in bs._sincos32(r))
    ang = 2 * np.pi * r.numpy() / 2.0 ** 24
    print(f"COS over all 2^21 v: max {ulps(cs, np.cos(ang)).max():.2f} ulp; "
          f"SIN: max {ulps(sn, np.sin(ang)).max():.2f} ulp")


if __name__ == "__main__":
    main()

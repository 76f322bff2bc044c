"""Phantom gradient: k damped steps from z*, recorded by autograd.

z_{i+1} = (1 - damping) z_i + damping f(z_i), z_0 = z* (detached). The gradient is
that of this short unroll, an inexact but cheap and stable stand-in for the IFT one.
"""
from __future__ import annotations


def phantom(f, z_star, *, steps, damping):
    """f: (B, n) -> (B, n); z_star: (B, n). Returns z_k with its graph."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"phantom steps must be an int >= 1, got {steps!r}")
    if not 0 < damping <= 1:
        raise ValueError(f"phantom damping must be in (0, 1], got {damping!r}")
    z = z_star.detach()
    for _ in range(steps):
        z = (1 - damping) * z + damping * f(z)
    return z

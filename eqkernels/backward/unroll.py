"""Truncated unroll: K undamped fixed-point steps from z*, all recorded by autograd
(backprop through the last K iterations). Memory grows with K, not with max_iter."""
from __future__ import annotations


def unroll(f, z_star, *, steps):
    """f: (B, n) -> (B, n); z_star: (B, n). Returns f^K(z*) with its graph."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"unroll steps must be an int >= 1, got {steps!r}")
    z = z_star.detach()
    for _ in range(steps):
        z = f(z)
    return z

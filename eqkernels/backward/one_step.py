"""One-step (Jacobian-free, JFB) backward: f(z*) with z* detached; the gradient treats
J_f as zero beyond this single application."""
from __future__ import annotations


def one_step(f, z_star):
    """f: (B, n) -> (B, n); z_star: (B, n). Returns f(z*) with its one-step graph."""
    return f(z_star.detach())

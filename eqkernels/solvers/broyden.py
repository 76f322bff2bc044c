"""Limited-memory ("good") Broyden on g(z) = f(z) - z, per-sample stopping.

The inverse Jacobian of g is approximated as H = -I + sum_i u_i v_i^T over the last
m secant updates (a ring buffer); the step is z <- z - H g(z), so the first step is
a plain fixed-point step.
"""
from __future__ import annotations

import torch

from eqkernels.ops.tracking import track_residual_ref
from eqkernels.solvers.base import iterate

# A secant update whose denominator v.dg is this small relative to |v||dg| is
# numerically meaningless; that sample's memory restarts instead.
SECANT_RTOL = 1e-12


def broyden(f, z0, *, max_iter=50, tol=1e-4, stop_mode="abs", m=8, check_every=None,
            on_diverge="warn", trajectory=False, progress=False, backend="auto"):
    """Solve z = f(z). f: (B, n) -> (B, n); z0: (B, n). Returns (z, SolverInfo).

    backend is accepted for a uniform solver signature; Broyden runs in PyTorch.
    """
    if not isinstance(m, int) or m < 1:
        raise ValueError(f"m must be an int >= 1, got {m!r}")

    def make_step(z0):
        B, n = z0.shape
        U = torch.zeros(B, m, n, dtype=z0.dtype, device=z0.device)
        V = torch.zeros_like(U)
        count = torch.zeros(B, dtype=torch.long, device=z0.device)
        prev_z, prev_g = torch.zeros_like(z0), torch.zeros_like(z0)
        has_prev = torch.zeros(B, dtype=torch.bool, device=z0.device)
        rows_all = torch.arange(B, device=z0.device)

        def inv_jac(x):  # H x
            return -x + torch.einsum("bmn,bm->bn", U, torch.einsum("bmn,bn->bm", V, x))

        def inv_jac_t(x):  # H^T x
            return -x + torch.einsum("bmn,bm->bn", V, torch.einsum("bmn,bn->bm", U, x))

        def step(z, fz, state):
            live, g, _ = track_residual_ref(z, fz, state, tol, stop_mode)
            secant = live & has_prev
            dz, dg = z - prev_z, g - prev_g
            v = inv_jac_t(dz)
            denom = (v * dg).sum(dim=1)
            u = (dz - inv_jac(dg)) / denom[:, None]
            scale = v.norm(dim=1) * dg.norm(dim=1)
            ok = secant & (denom.abs() > SECANT_RTOL * scale) & torch.isfinite(u).all(dim=1)
            slot = count % m
            U[rows_all[ok], slot[ok]] = u[ok]
            V[rows_all[ok], slot[ok]] = v[ok]
            count.add_(ok.long())
            reset = secant & ~ok
            U[reset] = 0
            V[reset] = 0
            count.masked_fill_(reset, 0)
            prev_z.copy_(torch.where(live[:, None], z, prev_z))
            prev_g.copy_(torch.where(live[:, None], g, prev_g))
            has_prev.logical_or_(live)
            z.copy_(torch.where(live[:, None], z - inv_jac(g), z))
        return "reference", step

    return iterate(f, z0, make_step, solver="broyden", max_iter=max_iter, tol=tol,
                   stop_mode=stop_mode, check_every=check_every, on_diverge=on_diverge,
                   trajectory=trajectory, progress=progress)

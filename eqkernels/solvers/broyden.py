"""Limited-memory ("good") Broyden on g(z) = f(z) - z, per-sample stopping.

The inverse Jacobian of g is approximated as H = -I + sum_i u_i v_i^T over the last
m secant updates (a ring buffer); the step is z <- z - H g(z), so the first step is
a plain fixed-point step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from eqkernels.ops.tracking import SolveState, track_residual_ref
from eqkernels.solvers.state import SolverState

# A secant update whose denominator v.dg is this small relative to |v||dg| is
# numerically meaningless; that sample's memory restarts instead.
SECANT_RTOL = 1e-12


@dataclass(frozen=True)
class Broyden:
    """Good Broyden with m secant pairs (ring buffer), in PyTorch.

    State buffers: U, V (B, m, n), count (B,) int64, prev_z, prev_g (B, n), has_prev (B,) bool.
    """

    m: int = 8
    backend: str = "auto"  # accepted for a uniform signature; it runs in PyTorch
    name = "broyden"

    def __post_init__(self):
        if isinstance(self.m, bool) or not isinstance(self.m, int) or self.m < 1:
            raise ValueError(f"m must be an int >= 1, got {self.m!r}")

    def init(self, z0) -> SolverState:
        z = z0.detach().clone(memory_format=torch.contiguous_format)
        B, n = z.shape
        U = torch.zeros(B, self.m, n, dtype=z.dtype, device=z.device)
        buffers = dict(U=U, V=torch.zeros_like(U),
                       count=torch.zeros(B, dtype=torch.long, device=z.device),
                       prev_z=torch.zeros_like(z), prev_g=torch.zeros_like(z),
                       has_prev=torch.zeros(B, dtype=torch.bool, device=z.device))
        return SolverState(z=z, track=SolveState.start(z), buffers=buffers, solver=self.name)

    def bind(self, state: SolverState, options):
        b, track, tol, mode, m = state.buffers, state.track, options.tol, options.stop_mode, self.m
        U, V, count = b["U"], b["V"], b["count"]
        prev_z, prev_g, has_prev = b["prev_z"], b["prev_g"], b["has_prev"]
        rows_all = torch.arange(state.batch_size, device=state.z.device)

        def inv_jac(x):  # H x
            return -x + torch.einsum("bmn,bm->bn", U, torch.einsum("bmn,bn->bm", V, x))

        def inv_jac_t(x):  # H^T x
            return -x + torch.einsum("bmn,bm->bn", V, torch.einsum("bmn,bn->bm", U, x))

        def step(z, fz):
            live, g, _ = track_residual_ref(z, fz, track, tol, mode)
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

    def step(self, z, fz, state: SolverState, options):
        return self.bind(state, options)[1](z, fz)


def broyden(f, z0, *, max_iter=50, tol=1e-4, stop_mode="abs", m=8, check_every=None,
            on_diverge="warn", trajectory=False, progress=False, backend="auto", **driver):
    """Solve z = f(z). f: (B, n) -> (B, n); z0: (B, n). Returns (z, SolverInfo).

    backend is accepted for a uniform solver signature; Broyden runs in PyTorch.
    driver: further eqk.solve arguments (state=, return_state=, compact_below=, ...).
    """
    from eqkernels.solvers.driver import SolveOptions, solve
    return solve(f, z0, Broyden(m=m, backend=backend),
                 SolveOptions(max_iter=max_iter, tol=tol, stop_mode=stop_mode,
                              check_every=check_every, on_diverge=on_diverge,
                              trajectory=trajectory, progress=progress), **driver)

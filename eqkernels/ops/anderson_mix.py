"""Fused Anderson mixing step: reference, and the dispatcher over its fast backends.

One call advances every active sample of an Anderson solve by one step:

1. residual bookkeeping (see `tracking.py`): g = f(z) - z, norms, divergence,
   lowest-residual iterate, convergence against tol (converged samples freeze);
2. safeguard: if the residual grew past `restart_growth` x the best so far,
   the sample's history restarts (count = 0);
3. push (z, g) into ring-buffer slot `count % m` and fill that slot's row and
   column of the Gram matrix gram[i, j] = g_i . g_j (one new row, not m^2 dots);
4. solve (gram_k + lam I) y = 1 over the k = min(count, m) valid slots by Cholesky
   in float64, alpha = y / sum(y) -- the same constrained least-squares problem as
   torchdeq's bordered system, so iterates match it;
   if a Cholesky pivot is <= CHOL_PIVOT_RTOL x the largest diagonal (ill-conditioned)
   or not finite, alpha is the one-hot of the new slot (a damped fixed-point step)
   and the history restarts next step;
5. z_out = sum_j alpha_j (X_j + beta G_j) for the samples still live.

The Gram dots, the Cholesky solve and the mix of step 5 are float64 on every backend, the
mix rounded to z's dtype once (the iterate's own rounding noise is what limits how low a
float32 solve's residual can go).

Frozen samples (inactive at entry, or converged/diverged this step) have z_out,
their history and Gram rows left untouched. z_out may be z itself (in place).

The op is a torch.library op (schema: csrc/ops/anderson_mix.cpp; mutated arguments marked):
torch.ops.eqk.anderson_step runs the C++ kernel on CPU tensors and the CUDA one on CUDA
tensors; torch.ops.eqk.anderson_step_triton is the same schema on the Triton kernel.
`anderson_step` below is the dispatcher: one argument check for every backend, then the
backend.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from eqkernels import _backends
from eqkernels.ops import _checks
from eqkernels.ops.constants import CHOL_PIVOT_RTOL, MAX_HISTORY
from eqkernels.ops.tracking import SolveState, best_metric_of, track_residual_ref

__all__ = ["AndersonHistory", "CHOL_PIVOT_RTOL", "MAX_HISTORY", "anderson_step",
           "anderson_step_ref", "bind_anderson_step", "check_args", "resolve_anderson_step"]


@dataclass
class AndersonHistory:
    """Ring-buffer history of one Anderson solve.

    X:     (B, m, n) z.dtype   past iterates
    G:     (B, m, n) z.dtype   their residuals f(x) - x
    gram:  (B, m, m) float64   gram[i, j] = G_i . G_j over valid slots
    count: (B,) int32          pushes since the last restart; next slot is count % m
    """

    X: torch.Tensor
    G: torch.Tensor
    gram: torch.Tensor
    count: torch.Tensor

    @classmethod
    def empty(cls, z0: torch.Tensor, m: int) -> "AndersonHistory":
        B, n = z0.shape
        return cls(
            X=torch.zeros(B, m, n, dtype=z0.dtype, device=z0.device),
            G=torch.zeros(B, m, n, dtype=z0.dtype, device=z0.device),
            gram=torch.zeros(B, m, m, dtype=torch.float64, device=z0.device),
            count=torch.zeros(B, dtype=torch.int32, device=z0.device),
        )

    @property
    def m(self) -> int:
        return self.X.shape[1]


def anderson_step_ref(z, fz, z_out, state: SolveState, hist: AndersonHistory, *,
                      tol: float, stop_mode: str, beta: float, lam: float,
                      restart_growth: float) -> None:
    """Plain-PyTorch Anderson step, in place on z_out, state and hist.

    z, fz, z_out: (B, n) float32/float64 (z_out may alias z).
    """
    B, m = z.shape[0], hist.m
    live, g, metric = track_residual_ref(z, fz, state, tol, stop_mode)

    restart = live & (metric > restart_growth * best_metric_of(state, stop_mode))
    hist.count.copy_(torch.where(restart, torch.zeros_like(hist.count), hist.count))
    slot = (hist.count % m).long()
    rows = torch.arange(B, device=z.device)[live]
    live_slot = slot[live]
    hist.X[rows, live_slot] = z[live]
    hist.G[rows, live_slot] = g[live]
    hist.count.copy_(torch.where(live, hist.count + 1, hist.count))
    k = torch.clamp(hist.count, max=m).long()

    dots = torch.einsum("bmn,bn->bm", hist.G.double(), g.double())
    hist.gram[rows, live_slot, :] = dots[live]
    hist.gram[rows, :, live_slot] = dots[live]

    alpha, failed = _solve_mixing_weights(hist.gram, k, lam)
    onehot = torch.nn.functional.one_hot(slot, m).double()
    alpha = torch.where(failed[:, None], onehot, alpha)
    hist.count.copy_(torch.where(live & failed, torch.zeros_like(hist.count), hist.count))

    mixed = torch.einsum("bm,bmn->bn", alpha, hist.X.double() + beta * hist.G.double())
    z_out.copy_(torch.where(live[:, None], mixed.to(z.dtype), z_out))


def _solve_mixing_weights(gram, k, lam):
    """alpha (B, m) float64 over the first k[b] slots, and failed (B,) bool."""
    B, m, _ = gram.shape
    valid = torch.arange(m, device=gram.device)[None, :] < k[:, None]
    pair_valid = valid[:, :, None] & valid[:, None, :]
    eye = torch.eye(m, dtype=torch.float64, device=gram.device).expand(B, m, m)
    # Invalid slots become identity rows with a zero right-hand side: y = 0 there.
    H = torch.where(pair_valid, gram + lam * eye, eye)
    L, info = torch.linalg.cholesky_ex(H)
    pivots = torch.diagonal(L, dim1=1, dim2=2) ** 2
    max_diag = torch.where(valid, torch.diagonal(H, dim1=1, dim2=2), 0.0).amax(dim=1)
    tiny = (valid & ~(pivots > CHOL_PIVOT_RTOL * max_diag[:, None])).any(dim=1)
    rhs = valid.double()[:, :, None]
    y = torch.cholesky_solve(rhs, L)[:, :, 0]
    alpha = y / y.sum(dim=1, keepdim=True)
    failed = (info != 0) | tiny | ~torch.isfinite(alpha).all(dim=1)
    return torch.where(failed[:, None], torch.zeros_like(alpha), alpha), failed


def check_args(z, fz, z_out, state: SolveState, hist: AndersonHistory) -> None:
    """The op's argument check (the C++ op's, word for word: csrc/ops/anderson_mix.cpp)."""
    _checks.anderson_step(z, fz, z_out, state.active, state.converged, state.diverged,
                          state.nstep, state.abs_res, state.rel_res, state.best_abs,
                          state.best_rel, state.best_z, hist.X, hist.G, hist.gram, hist.count,
                          MAX_HISTORY)


def _reference(z, fz, z_out, state, hist, **params):
    check_args(z, fz, z_out, state, hist)
    anderson_step_ref(z, fz, z_out, state, hist, **params)


def _call_op(op, z, fz, z_out, state, hist, *, tol, stop_mode, beta, lam, restart_growth):
    op(z, fz, z_out, state.active, state.converged, state.diverged, state.nstep,
       state.abs_res, state.rel_res, state.best_abs, state.best_rel, state.best_z,
       hist.X, hist.G, hist.gram, hist.count,
       float(tol), stop_mode == "rel", float(beta), float(lam), float(restart_growth))


def _compiled(z, fz, z_out, state, hist, **params):
    # "cpp" and "cuda": torch.ops.eqk.anderson_step, by device; it checks its arguments
    # itself (it can be called directly), with the same messages.
    _call_op(torch.ops.eqk.anderson_step, z, fz, z_out, state, hist, **params)


def _triton(z, fz, z_out, state, hist, **params):
    from eqkernels.ops.triton.anderson_mix import anderson_step_triton_op
    _call_op(anderson_step_triton_op(), z, fz, z_out, state, hist, **params)


_IMPLEMENTATIONS = {"reference": _reference, "triton": _triton, "cpp": _compiled,
                    "cuda": _compiled}


def resolve_anderson_step(device: torch.device, backend: str = "auto"):
    """(backend name, step function) for tensors on `device`; resolve once per solve.

    backend: "auto" (fastest available for the device), "reference", "cpp", "triton", "cuda".
    The function has anderson_step_ref's signature and returns None (the samples still
    active are read from state.active, on the device).
    """
    name = _backends.pick("anderson_step", device, backend)
    return name, _backends.with_fallback("anderson_step", name, _IMPLEMENTATIONS)


def bind_anderson_step(z, state: SolveState, hist: AndersonHistory, *, tol: float,
                       stop_mode: str, beta: float, lam: float, restart_growth: float,
                       backend: str = "auto"):
    """(backend name, step) for one solve whose iterate z is advanced in place.

    step(z, fz) runs one Anderson step with z_out = z (z must be this z) and returns the
    number of samples still active when the backend knows it for free, else None (read
    state.active). On the CPU, "cpp" binds the compiled kernel to these tensors once
    (eqkernels._C.AndersonStepCpu: the arguments are checked here, a call costs one pybind11
    call instead of a dispatcher call with 16 tensors); while torch.compile traces, and on
    every other backend, each step is a call of the op as in `anderson_step`.
    """
    name, fused = resolve_anderson_step(z.device, backend)
    params = dict(tol=tol, stop_mode=stop_mode, beta=beta, lam=lam, restart_growth=restart_growth)
    if name == "cpp" and z.device.type == "cpu" and not torch.compiler.is_compiling():
        from eqkernels import _C
        return name, _C.AndersonStepCpu(
            z, state.active, state.converged, state.diverged, state.nstep, state.abs_res,
            state.rel_res, state.best_abs, state.best_rel, state.best_z, hist.X, hist.G,
            hist.gram, hist.count, float(tol), stop_mode == "rel", float(beta), float(lam),
            float(restart_growth))

    def step(z, fz):
        fused(z, fz, z, state, hist, **params)
    return name, step


def anderson_step(z, fz, z_out, state: SolveState, hist: AndersonHistory, *,
                  tol: float, stop_mode: str, beta: float, lam: float,
                  restart_growth: float, backend: str = "auto") -> str:
    """One fused Anderson step on the chosen backend; returns the backend's name."""
    name, step = resolve_anderson_step(z.device, backend)
    step(z, fz, z_out, state, hist, tol=tol, stop_mode=stop_mode, beta=beta, lam=lam,
         restart_growth=restart_growth)
    return name

"""DEQ: an nn.Module that returns the fixed point z* = block(z*, x) of a weight-tied block."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from eqkernels import backward as bw
from eqkernels.diagnostics import spectral_radius
from eqkernels.nn.dropout import reset_dropout
from eqkernels.nn.norm import reset_norm
from eqkernels.regularization import JacobianRegularizer
from eqkernels.solvers import get_solver
from eqkernels.solvers.base import validate_options

# Solver state (iterates, history, residuals) is kept in at least float32.
_STATE_DTYPES = (torch.float32, torch.float64)


class DEQ(nn.Module):
    """Deep-equilibrium layer: `z, info = deq(x, z0=None)`.

    block(z, x) -> z' is any module with z' shaped like z. z may have any shape (B, ...);
    solvers see it as (B, n). Stopping is per sample (info.nstep, info.converged, ...).

    solver: "anderson" | "fixed_point" | "broyden" | "damped" (fused damped/noisy loop for
      long fixed-step runs); solver_kwargs go to it (m, lam, beta, damping, noise_std, ...).
    backward: "implicit" (IFT adjoint solve, memory constant in max_iter) | "phantom"
      (phantom_steps damped steps from z*) | "one_step" (JFB) | "unroll" (unroll_steps
      recorded steps from z*). Override per call with deq(x, backward=...).
    backward_solver / backward_max_iter / backward_tol / backward_solver_kwargs: the adjoint
      solve of "implicit"; default to the forward settings.
    spectral_radius: put a power-iteration estimate of rho(J_f(z*)) in info.
    progress: show a progress bar for the forward solve (step, live samples, median residual).
    jac_reg: put a Hutchinson estimate of ||J_f(z*)||_F^2 / n in info.jac_loss in training
      forwards (add it to the loss, weighted); jac_reg_freq: the fraction of training forwards
      that compute it (the others get 0); jac_reg_probes: probe vectors per estimate.
    """

    def __init__(self, block: nn.Module, solver: str = "anderson", max_iter: int = 50,
                 tol: float = 1e-4, backward: str = "implicit", *, stop_mode: str = "abs",
                 solver_kwargs: Optional[dict] = None, backward_solver: Optional[str] = None,
                 backward_max_iter: Optional[int] = None, backward_tol: Optional[float] = None,
                 backward_solver_kwargs: Optional[dict] = None, phantom_steps: int = 5,
                 phantom_damping: float = 0.5, unroll_steps: int = 5,
                 check_every: Optional[int] = None, on_diverge: str = "warn",
                 trajectory: bool = False, spectral_radius: bool = False,
                 progress: bool = False, jac_reg: bool = False, jac_reg_freq: float = 1.0,
                 jac_reg_probes: int = 1):
        super().__init__()
        if not callable(block):
            raise TypeError(f"block must be a callable nn.Module, got {type(block).__name__}")
        self.block = block
        self.solver = get_solver(solver)
        self.solver_name = solver
        self.backward_mode = _check_backward(backward)
        self.adjoint_solver = get_solver(backward_solver or solver)
        self.solver_kwargs = dict(max_iter=max_iter, tol=tol, stop_mode=stop_mode,
                                  check_every=check_every, on_diverge=on_diverge,
                                  **(solver_kwargs or {}))
        same_solver = backward_solver in (None, solver)
        if backward_solver_kwargs is None:  # the forward's options only fit the same solver
            # The adjoint is a deterministic linear fixed point: never inject noise into it.
            backward_solver_kwargs = ({k: v for k, v in (solver_kwargs or {}).items()
                                       if k != "noise_std"} if same_solver else {})
        self.adjoint_kwargs = dict(
            max_iter=backward_max_iter or max_iter, tol=backward_tol or tol, stop_mode=stop_mode,
            check_every=check_every, on_diverge=on_diverge, **backward_solver_kwargs)
        probe = torch.zeros(1, 1)
        validate_options(probe, max_iter=max_iter, tol=tol, stop_mode=stop_mode,
                         check_every=check_every, on_diverge=on_diverge)
        validate_options(probe, max_iter=self.adjoint_kwargs["max_iter"],
                         tol=self.adjoint_kwargs["tol"], stop_mode=stop_mode,
                         check_every=check_every, on_diverge=on_diverge)
        self.phantom_steps, self.phantom_damping = phantom_steps, phantom_damping
        self.unroll_steps = unroll_steps
        self.trajectory = trajectory
        self.progress = progress
        self.want_spectral_radius = spectral_radius
        jac = JacobianRegularizer(jac_reg_freq, jac_reg_probes)  # validates the options either way
        self.jac_reg = jac if jac_reg else None
        self.last_backward_info = None  # SolverInfo of the latest implicit adjoint solve

    def forward(self, x: torch.Tensor, z0: Optional[torch.Tensor] = None, *,
                backward: Optional[str] = None, max_iter: Optional[int] = None):
        """x: (B, ...) input injection; z0: (B, ...) start (zeros shaped like x by default).
        max_iter: this call's forward iteration budget (test-time depth scaling); the
        constructor's by default. The adjoint solve keeps its own.

        Returns (z, info): z shaped like z0, on the graph chosen by the backward mode.
        """
        z0 = _check_inputs(x, z0, self.block)
        # One map per forward: normalised weights and dropout masks fixed for the whole solve.
        reset_norm(self.block)
        reset_dropout(self.block)
        solver_kwargs = self.solver_kwargs
        if max_iter is not None:
            validate_options(torch.zeros(1, 1), max_iter=max_iter, tol=solver_kwargs["tol"],
                             stop_mode=solver_kwargs["stop_mode"],
                             check_every=solver_kwargs["check_every"],
                             on_diverge=solver_kwargs["on_diverge"])
            solver_kwargs = dict(solver_kwargs, max_iter=max_iter)
        shape, B = z0.shape, z0.shape[0]
        state_dtype = z0.dtype if z0.dtype in _STATE_DTYPES else torch.float32

        f = _BlockMap(self.block, x, z0)

        with torch.no_grad():
            z_star, info = self.solver(f, z0.reshape(B, -1).to(state_dtype),
                                       trajectory=self.trajectory, progress=self.progress,
                                       **solver_kwargs)
        if self.want_spectral_radius:
            info.spectral_radius = spectral_radius(f, z_star)
        if self.jac_reg is not None:  # its own f(z*) evaluation: independent of the backward mode
            info.jac_loss = (self.jac_reg(f, z_star) if self.training and torch.is_grad_enabled()
                             else z_star.new_zeros(()))
        z = self._attach_gradient(f, z_star, x, _check_backward(backward or self.backward_mode))
        return z.reshape(shape).to(z0.dtype), info

    def _attach_gradient(self, f, z_star, x, mode):
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.block.parameters()))
        if not needs_grad:
            return z_star
        if mode == "implicit":
            return bw.implicit(f, z_star, adjoint_solver=self.adjoint_solver,
                               adjoint_kwargs=self.adjoint_kwargs, on_info=self._keep_backward_info)
        if mode == "phantom":
            return bw.phantom(f, z_star, steps=self.phantom_steps, damping=self.phantom_damping)
        if mode == "one_step":
            return bw.one_step(f, z_star)
        return bw.unroll(f, z_star, steps=self.unroll_steps)

    def _keep_backward_info(self, info):
        self.last_backward_info = info


class _BlockMap:
    """z_flat (B, n) -> block(z, x) flattened; restrict(rows) gives the map of a sub-batch
    (what the damped solver's batch compaction needs)."""

    def __init__(self, block, x, z0):
        self.block, self.x, self.z0 = block, x, z0

    def __call__(self, z_flat):
        out = self.block(z_flat.view(self.z0.shape).to(self.z0.dtype), self.x)
        _check_block_output(out, self.z0)
        return out.reshape(self.z0.shape[0], -1)

    def restrict(self, rows):
        return _BlockMap(self.block, self.x[rows], self.z0[rows])


def _check_backward(mode):
    if mode not in bw.BACKWARD_MODES:
        raise ValueError(f"backward must be one of {bw.BACKWARD_MODES}, got {mode!r}")
    return mode


def _check_inputs(x, z0, block):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x must have a batch dimension of size >= 1, got shape {tuple(x.shape)}")
    if z0 is None:
        z0 = torch.zeros_like(x)
    elif not isinstance(z0, torch.Tensor):
        raise TypeError(f"z0 must be a torch.Tensor or None, got {type(z0).__name__}")
    if not z0.is_floating_point():
        raise TypeError(f"z0 must be a floating-point tensor, got {z0.dtype}")
    if z0.device != x.device:
        raise ValueError(f"z0 must be on x's device {x.device}, got {z0.device}")
    if z0.dtype != x.dtype:
        raise TypeError(f"z0 must have x's dtype {x.dtype}, got {z0.dtype}")
    if z0.dim() < 1 or z0.shape[0] != x.shape[0]:
        raise ValueError(f"z0 must have shape (B, ...) with B = {x.shape[0]} (x's batch), "
                         f"got {tuple(z0.shape)}")
    param = next(iter(block.parameters()), None) if isinstance(block, nn.Module) else None
    if param is not None and param.device != x.device:
        raise ValueError(f"block parameters are on {param.device} but x is on {x.device}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or Inf")
    if not torch.isfinite(z0).all():
        raise ValueError("z0 contains NaN or Inf")
    return z0.detach()


def _check_block_output(out, z0):
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"block(z, x) must return a tensor, got {type(out).__name__}")
    if out.shape != z0.shape:
        raise ValueError(f"block(z, x) must return z's shape {tuple(z0.shape)}, got "
                         f"{tuple(out.shape)}; pass z0 of the block's output shape")
    if out.device != z0.device:
        raise ValueError(f"block(z, x) returned a tensor on {out.device}, z is on {z0.device}")
    if out.dtype != z0.dtype and not torch.is_autocast_enabled(out.device.type):
        raise TypeError(f"block(z, x) returned {out.dtype} but z0 is {z0.dtype} "
                        f"(outside autocast the block must keep z's dtype)")

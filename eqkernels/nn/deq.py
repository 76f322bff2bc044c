"""DEQ: an nn.Module that returns the fixed point z* = block(z*, x) of a weight-tied block."""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

from eqkernels import backward as bw
from eqkernels.diagnostics import spectral_radius
from eqkernels.nn.dropout import reset_dropout
from eqkernels.nn.norm import reset_norm
from eqkernels.nn.structure import StateSpec, is_structured, leaves, map_batch
from eqkernels.regularization import JacobianRegularizer
from eqkernels.solvers import SOLVER_CLASSES, as_solver
from eqkernels.solvers.driver import OPTION_NAMES, SolveOptions, solve

# Solver state (iterates, history, residuals) is kept in at least float32.
_STATE_DTYPES = (torch.float32, torch.float64)
AGGREGATES = ("lowest_residual", "mean")


class DEQ(nn.Module):
    """Deep-equilibrium layer: `z, info = deq(x, z0=None)`.

    block(z, x) -> z' is any module with z' shaped like z. z (and x) may be a tensor (B, ...)
    or a tuple/list of tensors of different shapes (e.g. multi-resolution states); solvers
    see z packed as (B, n). Stopping is per sample (info.nstep, info.converged, ...).

    solver: a name ("anderson" | "fixed_point" | "broyden" | "damped", the fused damped/noisy
      loop for long fixed-step runs) with solver_kwargs for its options (m, lam, beta, damping,
      noise_std, ...; driver options such as compact_below are accepted there too), or a
      solver object (eqk.Anderson(m=5), ...).
    backward: "implicit" (IFT adjoint solve, memory constant in max_iter) | "phantom"
      (phantom_steps damped steps from z*) | "one_step" (JFB) | "unroll" (unroll_steps
      recorded steps from z*). Override per call with deq(x, backward=...).
    backward_solver / backward_max_iter / backward_tol / backward_solver_kwargs: the adjoint
      solve of "implicit"; default to the forward settings (noise off).
    eval_factor / eval_max_iter: forward budget in eval mode, max_iter * eval_factor or exactly
      eval_max_iter (torchdeq's names).
    n_states / indexing / sup_gap / sup_loc: multi-state supervision in training forwards
      (torchdeq's definitions, see eqkernels.backward.supervision): info.states is the list
      of supervised states with gradients (each shaped like z), for eqk.fp_correction.
    starts / aggregate / start_noise: breadth test-time scaling. Each sample is solved from
      `starts` starts in one batch: its z0 and starts-1 draws z0 + start_noise * N(0, I);
      aggregate "lowest_residual" (per sample, the start with the lowest stop-mode residual),
      "mean", or a callable(z, residual) with z's leaves (B, starts, ...) and residual
      (B, starts) returning z (B, ...). info rows are the B * starts solves (row b * starts +
      k), info.start_residual (B, starts), info.start_index (B,) for lowest_residual.
    validate_inputs: check x and z0 for NaN/Inf and raise (a host sync); None = on CPU only.
      Without it the check is a device flag: info.input_nonfinite (B,) bool.
    spectral_radius: put a power-iteration estimate of rho(J_f(z*)) in info.
    progress: show a progress bar for the forward solve (step, live samples, median residual).
    jac_reg: put a Hutchinson estimate of ||J_f(z*)||_F^2 / n in info.jac_loss in training
      forwards (add it to the loss, weighted); jac_reg_freq: the fraction of training forwards
      that compute it (the others get 0); jac_reg_probes: probe vectors per estimate.
    """

    def __init__(self, block: nn.Module, solver: Union[str, object] = "anderson",
                 max_iter: int = 50, tol: float = 1e-4, backward: str = "implicit", *,
                 stop_mode: str = "abs", solver_kwargs: Optional[dict] = None,
                 backward_solver: Union[str, object, None] = None,
                 backward_max_iter: Optional[int] = None, backward_tol: Optional[float] = None,
                 backward_solver_kwargs: Optional[dict] = None, phantom_steps: int = 5,
                 phantom_damping: float = 0.5, unroll_steps: int = 5,
                 check_every: Optional[int] = None, on_diverge: str = "warn",
                 trajectory: bool = False, spectral_radius: bool = False,
                 progress: bool = False, jac_reg: bool = False, jac_reg_freq: float = 1.0,
                 jac_reg_probes: int = 1, eval_factor: float = 1.0,
                 eval_max_iter: Optional[int] = None, n_states: int = 1,
                 indexing: Optional[Sequence[int]] = None, sup_gap: int = -1,
                 sup_loc: Optional[Sequence[int]] = None, starts: int = 1,
                 aggregate: Union[str, Callable] = "lowest_residual", start_noise: float = 1.0,
                 validate_inputs: Optional[bool] = None):
        super().__init__()
        if not callable(block):
            raise TypeError(f"block must be a callable nn.Module, got {type(block).__name__}")
        self.block = block
        self.backward_mode = _check_backward(backward)
        self.solver_obj, driver = _make_solver(solver, solver_kwargs)
        self.solver_name = self.solver_obj.name
        self.options = SolveOptions(max_iter=max_iter, tol=tol, stop_mode=stop_mode,
                                    check_every=check_every, on_diverge=on_diverge,
                                    trajectory=trajectory, progress=progress, **driver)
        adj_driver = {}
        if backward_solver is None and backward_solver_kwargs is None:
            self.adjoint_obj = self.solver_obj
            if isinstance(self.solver_obj, SOLVER_CLASSES["damped"]):
                # The adjoint is a deterministic linear fixed point: never inject noise into it.
                self.adjoint_obj = dataclasses.replace(self.solver_obj, noise_std=0.0)
        else:
            if backward_solver is None:
                backward_solver = solver if isinstance(solver, str) else self.solver_name
            self.adjoint_obj, adj_driver = _make_solver(backward_solver, backward_solver_kwargs)
            if adj_driver.get("compact_below") is not None:
                raise ValueError("backward_solver_kwargs['compact_below']: the adjoint map cannot "
                                 "be restricted to batch rows; compaction is a forward option")
        self.adjoint_options = SolveOptions(
            max_iter=backward_max_iter or max_iter, tol=backward_tol or tol, stop_mode=stop_mode,
            check_every=check_every, on_diverge=on_diverge, **adj_driver)
        if not eval_factor > 0:
            raise ValueError(f"eval_factor must be > 0, got {eval_factor!r}")
        self.eval_max_iter = eval_max_iter or max(1, int(max_iter * eval_factor))
        self.options.replace(max_iter=self.eval_max_iter)  # validates it
        self.phantom_steps, self.phantom_damping = phantom_steps, phantom_damping
        self.unroll_steps = unroll_steps
        if not isinstance(n_states, int) or n_states < 1:
            raise ValueError(f"n_states must be an int >= 1, got {n_states!r}")
        self.n_states, self.indexing = n_states, list(indexing or [])
        if any(not isinstance(k, int) or not 1 <= k < max_iter for k in self.indexing):
            raise ValueError(f"indexing must be steps in [1, max_iter), got {indexing!r}")
        self.sup_gap, self.sup_loc = sup_gap, list(sup_loc or [])
        if not isinstance(starts, int) or starts < 1:
            raise ValueError(f"starts must be an int >= 1, got {starts!r}")
        if not (aggregate in AGGREGATES or callable(aggregate)):
            raise ValueError(f"aggregate must be one of {AGGREGATES} or a callable, got {aggregate!r}")
        if self.supervises and not hasattr(self.solver_obj, "init"):
            raise ValueError(f"multi-state supervision needs a solver with explicit state "
                             f"(anderson, fixed_point, broyden), not {self.solver_name!r}")
        if starts > 1 and self.supervises:
            raise ValueError("starts > 1 cannot be combined with multi-state supervision "
                             "(n_states / indexing / sup_gap / sup_loc)")
        self.starts, self.aggregate, self.start_noise = starts, aggregate, float(start_noise)
        self.validate_inputs = validate_inputs
        self.want_spectral_radius = spectral_radius
        jac = JacobianRegularizer(jac_reg_freq, jac_reg_probes)  # validates the options either way
        self.jac_reg = jac if jac_reg else None
        self.last_backward_info = None  # SolverInfo of the latest implicit adjoint solve

    @property
    def supervises(self) -> bool:
        return self.n_states > 1 or bool(self.indexing) or self.sup_gap > 0 or bool(self.sup_loc)

    def forward(self, x, z0=None, *, backward: Optional[str] = None,
                max_iter: Optional[int] = None):
        """x: (B, ...) input injection (tensor or tuple/list of tensors); z0: start of the same
        kind as z (zeros shaped like x by default). max_iter: this call's forward budget (test-
        time depth scaling); by default the constructor's (eval_max_iter in eval mode). The
        adjoint solve keeps its own.

        Returns (z, info): z shaped like z0, on the graph chosen by the backward mode.
        """
        mode = _check_backward(backward or self.backward_mode)
        z0_given = z0 is not None
        z0, nonfinite = _check_inputs(x, z0, self.block, self.validate_inputs)
        # One map per forward: normalised weights and dropout masks fixed for the whole solve.
        if isinstance(self.block, nn.Module):  # a plain callable block has none
            reset_norm(self.block)
            reset_dropout(self.block)
        options = self.options
        budget = max_iter if max_iter is not None else (
            options.max_iter if self.training else self.eval_max_iter)
        supervise = self.supervises and self.training and torch.is_grad_enabled()
        steps = bw.supervision_steps(budget, self.n_states, self.indexing) if supervise else []
        if budget != options.max_iter or steps:
            options = options.replace(max_iter=budget, capture=tuple(steps[:-1]))
        spec = StateSpec.of(z0)
        state_dtype = spec.dtype if spec.dtype in _STATE_DTYPES else torch.float32
        z0_flat = spec.pack(z0).to(state_dtype)
        K = self.starts
        if K > 1:
            x = map_batch(x, lambda t: t.repeat_interleave(K, dim=0))
            z0_flat = z0_flat.repeat_interleave(K, dim=0).view(spec.batch, K, -1)
            noise = torch.randn_like(z0_flat[:, 1:]) * self.start_noise
            z0_flat = torch.cat([z0_flat[:, :1], z0_flat[:, 1:] + noise], dim=1).flatten(0, 1)
        f = _BlockMap(self.block, x, spec.with_batch(z0_flat.shape[0]))

        with torch.no_grad():
            try:
                z_star, info = solve(f, z0_flat, self.solver_obj, options)
            except RuntimeError as e:
                # Diagnosed only on failure: a working block pays nothing, and a block that
                # casts its inputs itself is never refused.
                hint = _block_failure_hint(e, x, z0 if z0_given else None, self.block)
                if hint is None:
                    raise
                raise hint from e
        if nonfinite is not None:
            info.input_nonfinite = nonfinite
        if self.want_spectral_radius:
            info.spectral_radius = spectral_radius(f, z_star)
        if self.jac_reg is not None:  # its own f(z*) evaluation: independent of the backward mode
            info.jac_loss = (self.jac_reg(f, z_star) if self.training and torch.is_grad_enabled()
                             else z_star.new_zeros(()))
        if supervise:
            states, z = self._supervised_states(f, (info.captured or []) + [z_star], mode)
            info.states = [spec.unpack(s.to(spec.dtype)) for s in states]
            if states[-1] is z:  # hand back the same object as the last supervised state
                return info.states[-1], info
        else:
            z = self._attach_gradient(f, z_star, mode)
        if K > 1:
            return self._aggregate(z, info, spec), info
        return spec.unpack(z.to(spec.dtype)), info

    def _attach_gradient(self, f, z_star, mode):
        needs_grad = torch.is_grad_enabled() and (
            f.x_requires_grad or any(p.requires_grad for p in _parameters(self.block)))
        if not needs_grad:
            return z_star
        if mode == "implicit":
            return bw.implicit(f, z_star, adjoint_solver=self.adjoint_obj,
                               adjoint_options=self.adjoint_options,
                               on_info=self._keep_backward_info)
        if mode == "phantom":
            return bw.phantom(f, z_star, steps=self.phantom_steps, damping=self.phantom_damping)
        if mode == "one_step":
            return bw.one_step(f, z_star)
        return bw.unroll(f, z_star, steps=self.unroll_steps)

    def _supervised_states(self, f, captured, mode):
        """torchdeq's DEQIndexing: each captured state gets a gradient of its own (phantom
        for the intermediate ones when the mode is implicit), with sup_gap / sup_loc points.
        Returns (states, z): z is the last state's own output (sup_gap may leave it out)."""
        out, z = [], None
        for i, z_k in enumerate(captured):
            last = i == len(captured) - 1
            m = mode if (last or mode != "implicit") else "phantom"
            if m == "phantom":
                sel, z = bw.phantom_states(f, z_k, steps=self.phantom_steps,
                                           damping=self.phantom_damping, sup_gap=self.sup_gap,
                                           sup_loc=self.sup_loc, with_final=True)
                out += sel
            else:
                z = self._attach_gradient(f, z_k, m)
                out.append(z)
        return out, z

    def _aggregate(self, z, info, spec):
        B, K = spec.batch, self.starts
        metric = info.abs_residual if self.options.stop_mode == "abs" else info.rel_residual
        residual = metric.view(B, K)
        info.start_residual = residual
        info.extra["starts"] = K
        z3 = z.view(B, K, -1)
        if self.aggregate == "lowest_residual":
            idx = torch.nan_to_num(residual.double(), nan=float("inf")).argmin(dim=1)
            info.start_index = idx
            pick = z3.gather(1, idx.view(B, 1, 1).expand(B, 1, z3.shape[2])).squeeze(1)
            return spec.unpack(pick.to(spec.dtype))
        if self.aggregate == "mean":
            return spec.unpack(z3.mean(dim=1).to(spec.dtype))
        per_start = map_batch(spec.with_batch(B * K).unpack(z.to(spec.dtype)),
                              lambda t: t.view((B, K) + t.shape[1:]))
        return self.aggregate(per_start, residual)

    def _keep_backward_info(self, info):
        self.last_backward_info = info


class _BlockMap:
    """z_flat (B, n) -> block(z, x) packed to (B, n); restrict(rows) gives the map of a
    sub-batch (what batch compaction needs)."""

    def __init__(self, block, x, spec: StateSpec):
        self.block, self.x, self.spec = block, x, spec
        self.x_requires_grad = any(isinstance(t, torch.Tensor) and t.requires_grad
                                   for t in leaves(x))
        # The per-step fast path of a single-tensor state: one shape compare, no repacking
        # for a (B, n) state, one view each way otherwise.
        self.single = spec.kind is torch.Tensor
        self.full_shape = torch.Size((spec.batch,) + spec.shapes[0]) if self.single else None
        self.is_2d = self.single and len(spec.shapes[0]) == 1
        self.dtype = spec.dtype

    def __call__(self, z_flat):
        if z_flat.dtype is not self.dtype:
            z_flat = z_flat.to(self.dtype)
        if self.single:
            z = z_flat if self.is_2d else z_flat.view(self.full_shape)
            out = self.block(z, self.x)
            if type(out) is torch.Tensor and out.shape == self.full_shape and out.dtype is self.dtype:
                return out if self.is_2d else out.reshape(self.spec.batch, -1)
        else:
            out = self.block(self.spec.unpack(z_flat), self.x)
            if self.spec.matches(out) and leaves(out)[0].shape[0] == z_flat.shape[0]:
                return self.spec.pack(out)
        _check_block_output(out, self.spec.with_batch(z_flat.shape[0]))  # raises, or autocast
        return self.spec.pack(out)

    def restrict(self, rows):
        return _BlockMap(self.block, map_batch(self.x, lambda t: t[rows]),
                         self.spec.with_batch(len(rows)))


def _parameters(block):
    return block.parameters() if isinstance(block, nn.Module) else ()


def _make_solver(solver, solver_kwargs):
    """(solver object, driver options) from a name + kwargs (driver keys split off) or an object."""
    kwargs = dict(solver_kwargs or {})
    driver = {k: kwargs.pop(k) for k in list(kwargs) if k in OPTION_NAMES}
    for k in ("max_iter", "tol", "stop_mode", "check_every", "on_diverge", "trajectory",
              "progress", "capture"):
        if k in driver:
            raise ValueError(f"solver_kwargs[{k!r}]: pass {k} to DEQ itself")
    if isinstance(solver, str):
        return as_solver(solver, **kwargs), driver
    if kwargs:
        raise ValueError(f"solver_kwargs {sorted(kwargs)} cannot be given with a solver object "
                         f"({type(solver).__name__}): set them on the object")
    return as_solver(solver), driver


def _check_backward(mode):
    if mode not in bw.BACKWARD_MODES:
        raise ValueError(f"backward must be one of {bw.BACKWARD_MODES}, got {mode!r}")
    return mode


def _check_inputs(x, z0, block, validate):
    """z0 (detached, zeros like x by default) and, without validate, the (B,) device flag of
    samples whose x or z0 has a NaN/Inf (None with validate: those raise instead)."""
    x_parts = leaves(x)
    if not x_parts or not all(isinstance(t, torch.Tensor) for t in x_parts):
        raise TypeError(f"x must be a torch.Tensor or a tuple/list of tensors, got "
                        f"{type(x).__name__}")
    structured = is_structured(x) or is_structured(z0)
    if not structured and not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    for t in x_parts:
        if t.dim() < 1 or t.shape[0] < 1:
            raise ValueError(f"x must have a batch dimension of size >= 1, got shape {tuple(t.shape)}")
    B, device = x_parts[0].shape[0], x_parts[0].device
    if any(t.shape[0] != B for t in x_parts):
        raise ValueError(f"every tensor of x must have batch size {B}, got "
                         f"{[t.shape[0] for t in x_parts]}")
    if any(t.device != device for t in x_parts):
        raise ValueError(f"every tensor of x must be on {device}")
    z_default = z0 is None
    if z_default:
        z0 = map_batch(x, torch.zeros_like)
    elif not (isinstance(z0, torch.Tensor) or (is_structured(z0) and z0 and
                                              all(isinstance(t, torch.Tensor) for t in z0))):
        raise TypeError(f"z0 must be a torch.Tensor, a tuple/list of tensors, or None, got "
                        f"{type(z0).__name__}")
    z_parts = leaves(z0)
    for t in z_parts:
        if not t.is_floating_point():
            raise TypeError(f"z0 must be a floating-point tensor, got {t.dtype}")
        if t.device != device:
            raise ValueError(f"z0 must be on x's device {device}, got {t.device}")
        if t.dim() < 1 or t.shape[0] != B:
            raise ValueError(f"z0 must have shape (B, ...) with B = {B} (x's batch), "
                             f"got {tuple(t.shape)}")
    if any(t.dtype != z_parts[0].dtype for t in z_parts):
        raise TypeError(f"every tensor of z0 must have one dtype, got {[t.dtype for t in z_parts]}")
    if not structured and z0.dtype != x.dtype:
        raise TypeError(f"z0 must have x's dtype {x.dtype}, got {z0.dtype}")
    param = next(iter(block.parameters()), None) if isinstance(block, nn.Module) else None
    if param is not None and param.device != device:
        raise ValueError(f"block parameters are on {param.device} but x is on {device}")
    x_float = [t for t in x_parts if t.is_floating_point()]
    nonfinite = None
    if validate is None:  # a CPU check is free; on a GPU it would be a host sync
        validate = device.type == "cpu"
    z_given = [] if z_default else z_parts  # zeros need no check
    if validate:
        if not all(_all_finite(t) for t in x_float):
            raise ValueError("x contains NaN or Inf")
        if not all(_all_finite(t) for t in z_given):
            raise ValueError("z0 contains NaN or Inf")
    else:  # device-side flags, no host sync
        nonfinite = torch.zeros(B, dtype=torch.bool, device=device)
        for t in x_float + z_given:
            nonfinite |= ~torch.isfinite(t.reshape(B, -1)).all(dim=1)
    return map_batch(z0, torch.Tensor.detach), nonfinite


def _block_failure_hint(err: RuntimeError, x, z0, block) -> Optional[Exception]:
    """The error naming the argument when the block raised `err` on the DEQ's inputs: x in
    another dtype than the block's parameters, or a given z0 shaped unlike x; else None.
    Costs nothing unless the solve failed (no parameter scan, no host sync per call)."""
    x_parts = leaves(x)
    x_dtypes = {t.dtype for t in x_parts if t.is_floating_point()}
    device_type = x_parts[0].device.type
    params = {p.dtype for p in _parameters(block) if p.is_floating_point()}
    autocast = torch.is_autocast_enabled(device_type)
    if params and x_dtypes and not (x_dtypes & params) and not autocast:
        got = ", ".join(sorted(str(d) for d in x_dtypes))
        want = ", ".join(sorted(str(d) for d in params))
        to = sorted(params, key=str)[0]
        return TypeError(f"x is {got} but the block's parameters are {want}: pass x (and z0) "
                         f"as x.to({to}), or convert the block (block.to({next(iter(x_dtypes))})); "
                         f"the block raised: {err}")
    if z0 is not None and not (is_structured(x) or is_structured(z0)) and z0.shape != x.shape:
        return ValueError(f"z0 has shape {tuple(z0.shape)}, x has {tuple(x.shape)}, and the "
                          f"block could not run on z0: z0 must have the shape of the block's "
                          f"state z (the shape block(z, x) returns); the block raised: {err}")
    return None


def _all_finite(t: torch.Tensor) -> bool:
    """No NaN/Inf in t. One reduction, no bool temporary (on a 2-core CPU isfinite().all()
    of a (64, 256) input cost ~13x a sum); a sum that overflows from finite values falls
    back to the exact check."""
    t = t.detach()  # a check, not part of the graph (float() of a grad tensor warns)
    return math.isfinite(float(t.sum())) or bool(torch.isfinite(t).all())


def _check_block_output(out, spec: StateSpec):
    parts = leaves(out)
    if is_structured(out) != (spec.kind is not torch.Tensor) or len(parts) != len(spec.shapes):
        raise TypeError(f"block(z, x) must return z's structure ({spec.describe()}), got "
                        f"{type(out).__name__}")
    for t, shape in zip(parts, spec.shapes):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"block(z, x) must return a tensor, got {type(t).__name__}")
        if tuple(t.shape) != (spec.batch,) + shape:
            raise ValueError(f"block(z, x) must return z's shape {(spec.batch,) + shape}, got "
                             f"{tuple(t.shape)}; pass z0 of the block's output shape")
        if t.dtype != spec.dtype and not torch.is_autocast_enabled(t.device.type):
            raise TypeError(f"block(z, x) returned {t.dtype} but z0 is {spec.dtype} "
                            f"(outside autocast the block must keep z's dtype)")

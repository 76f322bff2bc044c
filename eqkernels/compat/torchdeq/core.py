"""torchdeq.core on eqkernels: get_deq(args / **kwargs) -> a module called as deq(f, z0).

    deq = get_deq(f_solver="anderson", f_max_iter=30, ift=True)
    z_out, info = deq(func, z_init)        # func(z) -> z (or func(*zs) -> zs for a list z)
    z_star = z_out[-1]

Training mode returns the states torchdeq returns (n_states / indexing, phantom-gradient
steps `grad` with damping `tau`, sup_gap / sup_loc, the last one by IFT with ift=True);
eval mode returns [z*] and solves with f_max_iter * eval_factor (or eval_f_max_iter) steps.
info is torchdeq's dict: abs_lowest, rel_lowest (B,), abs_trace (B, T), nstep (B,) float,
sradius; rel_trace is the placeholder [[-1.]] torchdeq also reports when it has none.

The solves are eqkernels' (per-sample stopping, fused Anderson step, NaN handling), so
step counts compare with torchdeq's but need not be equal. Differences, all documented:
  - core="indexing" with several states runs one solve per segment between the sampled
    steps, each continuing from the previous state (Anderson's history restarts there);
  - "simple_fixed_point_iter" stops at the tolerance like "fixed_point_iter";
  - unknown options, solver_kwargs and call arguments are errors (torchdeq ignores them).
"""
from __future__ import annotations

from typing import Callable, List

import torch
from torch import nn

from eqkernels import backward as bw
from eqkernels.backward.supervision import supervision_steps
from eqkernels.diagnostics import spectral_radius
from eqkernels.nn.dropout import reset_dropout
from eqkernels.nn.norm import reset_norm
from eqkernels.solvers import get_solver
from eqkernels.compat.torchdeq._options import (CORES, DEFAULTS, EXTRA_KWARGS, OPTIONS,
                                                SOLVERS, check_keys, to_dict)

# torchdeq solver name -> eqkernels solver, and each solver's torchdeq kwargs -> ours.
_SOLVER = {"anderson": "anderson", "broyden": "broyden", "fixed_point_iter": "fixed_point",
           "simple_fixed_point_iter": "fixed_point"}
_SOLVER_KWARGS = {"anderson": {"m": "m", "lam": "lam", "tau": "beta"},
                  "broyden": {"LBFGS_thres": "m"},
                  "fixed_point_iter": {"tau": "damping"},
                  "simple_fixed_point_iter": {"tau": "damping"}}
_SRADIUS_ITERS = 100  # torchdeq's power-method length


def get_deq(args=None, **kwargs) -> "DEQ":
    """A DEQ module from torchdeq options: an args object (argparse.Namespace, dict, ...)
    and/or keyword arguments (these win). See add_deq_args for the names and defaults."""
    config = to_dict(args)
    config.update(kwargs)
    check_keys(config, set(kwargs), list(OPTIONS) + list(EXTRA_KWARGS), "get_deq")
    return DEQ({**DEFAULTS, **{k: v for k, v in config.items() if k in OPTIONS}})


def reset_deq(model: nn.Module) -> nn.Module:
    """Recompute normalised weights and redraw variational-dropout masks (torchdeq calls this
    before each training iteration; with eqkernels' norm the cached weights also refresh
    on their own after a backward or an optimizer step)."""
    reset_norm(model)
    reset_dropout(model)
    return model


def _int_list(value, name):
    value = [value] if isinstance(value, int) else list(value)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise TypeError(f"{name} must be an int or a list of ints, got {value!r}")
    return value


def _check(cfg):
    for key in ("f_solver", "b_solver"):
        if cfg[key] not in SOLVERS:
            raise ValueError(f"{key} must be one of {SOLVERS}, got {cfg[key]!r}")
    if cfg["core"] not in CORES:
        raise ValueError(f"core must be one of {CORES}, got {cfg['core']!r}")
    for key in ("f_max_iter", "b_max_iter", "n_states"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise ValueError(f"{key} must be an int >= 1, got {cfg[key]!r}")
    for key in ("f_tol", "b_tol"):
        if not cfg[key] > 0:
            raise ValueError(f"{key} must be > 0, got {cfg[key]!r}")
    for key in ("f_stop_mode", "b_stop_mode"):
        if cfg[key] not in ("abs", "rel"):
            raise ValueError(f"{key} must be 'abs' or 'rel', got {cfg[key]!r}")
    if not 0 < cfg["tau"] <= 1:
        raise ValueError(f"tau must be in (0, 1], got {cfg['tau']!r}")
    if not cfg["eval_factor"] > 0:
        raise ValueError(f"eval_factor must be > 0, got {cfg['eval_factor']!r}")
    grad = _int_list(cfg["grad"], "grad")
    if not grad or min(grad) < 1:
        raise ValueError(f"grad (phantom-gradient steps) must be ints >= 1, got {grad!r}")
    return grad


class _Packed:
    """f on a (B, n) float32/float64 vector for a z that is a tensor or a list of tensors."""

    def __init__(self, func: Callable, z_init):
        self.func = func
        self.is_list = isinstance(z_init, (list, tuple))
        zs = list(z_init) if self.is_list else [z_init]
        if not zs or not all(isinstance(z, torch.Tensor) and z.is_floating_point() for z in zs):
            raise TypeError("z_init must be a floating-point tensor or a list of them")
        B = zs[0].shape[0] if zs[0].dim() >= 1 else 1
        self.shapes = [z.shape for z in zs]
        self.dtypes = [z.dtype for z in zs]
        self.sizes = [z[0].numel() if z.dim() >= 2 else 1 for z in zs]
        self.B = B
        self.state_dtype = (zs[0].dtype if zs[0].dtype in (torch.float32, torch.float64)
                            else torch.float32)

    def pack(self, z):
        zs = list(z) if self.is_list else [z]
        return torch.cat([t.reshape(self.B, -1).to(self.state_dtype) for t in zs], dim=1)

    def unpack(self, flat):
        parts = torch.split(flat, self.sizes, dim=1)
        zs = [p.reshape(s).to(d) for p, s, d in zip(parts, self.shapes, self.dtypes)]
        return zs if self.is_list else zs[0]

    def __call__(self, flat):
        z = self.unpack(flat)
        out = self.func(*z) if self.is_list else self.func(z)
        return self.pack(out)


def _stat(info, device) -> dict:
    """eqkernels' SolverInfo as torchdeq's solver-statistics dict."""
    traj = info.trajectory
    abs_trace = traj.t() if traj is not None else info.abs_residual[:, None]
    return {"abs_lowest": info.abs_residual, "rel_lowest": info.rel_residual,
            "abs_trace": abs_trace, "rel_trace": torch.tensor([[-1.0]], device=device),
            "nstep": info.nstep.to(info.abs_residual.dtype),
            "sradius": torch.tensor([-1.0], device=device)}


class DEQ(nn.Module):
    """What get_deq returns; call it as deq(func, z_init, solver_kwargs=None,
    sradius_mode=False, backward_writer=None) -> (list of states, info dict)."""

    def __init__(self, config: dict):
        super().__init__()
        self.grad_steps = _check(config)
        self.config = dict(config)
        self.f_max_iter = config["f_max_iter"]
        self.eval_f_max_iter = (config["eval_f_max_iter"] if config["eval_f_max_iter"] > 0
                                else max(1, int(self.f_max_iter * config["eval_factor"])))
        self.use_ift = bool(config["ift"] or config["hook_ift"])
        self.indexing = self._compute_f_iter(self.f_max_iter)
        self._grad_for(self.indexing)  # fail now on a grad list that does not align

    def extra_repr(self):
        keys = ("core", "f_solver", "f_max_iter", "f_tol", "b_solver", "ift", "n_states", "grad")
        return ", ".join(f"{k}={self.config[k]!r}" for k in keys)

    # The sampled steps: torchdeq's rules, per core.
    def _compute_f_iter(self, f_max_iter: int) -> List[int]:
        n_states, indexing = self.config["n_states"], _int_list(self.config["indexing"],
                                                                "indexing")
        if self.config["core"] == "indexing":
            return supervision_steps(f_max_iter, n_states, indexing)
        if n_states > 1:  # sliced: the budgets of consecutive solves
            return [f_max_iter // n_states] * n_states
        marks = [0, *indexing, f_max_iter]
        return [b - a for a, b in zip(marks, marks[1:])]

    def _grad_for(self, indexing):
        steps = self.grad_steps
        if len(steps) == 1:
            steps = steps * len(indexing)
        elif len(steps) != len(indexing):
            raise ValueError(f"grad has {len(steps)} entries but {len(indexing)} states are "
                             f"sampled (n_states / indexing): give 1 or {len(indexing)}")
        return steps

    def _solver_call(self, name, solver_kwargs):
        ours = _SOLVER_KWARGS[name]
        out = {}
        for key, value in solver_kwargs.items():
            if key == "f_max_iter":
                continue
            if key == "return_final" and not value or key == "ls" and not value:
                continue
            if key not in ours:
                raise TypeError(f"solver_kwargs: {key!r} is not an option of {name!r} here; "
                                f"known: {sorted(ours) + ['f_max_iter']}")
            if key == "LBFGS_thres" and value is None:
                continue
            out[ours[key]] = value
        return get_solver(_SOLVER[name]), out

    def _solve(self, f, z0, max_iter, solver_kwargs):
        solver, kw = self._solver_call(self.config["f_solver"], solver_kwargs)
        with torch.no_grad():
            return solver(f, z0.detach(), max_iter=max_iter, tol=self.config["f_tol"],
                          stop_mode=self.config["f_stop_mode"], trajectory=True, **kw)

    def _phantom(self, f, z, steps):
        tau, gap = self.config["tau"], self.config["sup_gap"]
        loc = _int_list(self.config["sup_loc"], "sup_loc")
        out = []
        for i in range(steps):
            fz = f(z)
            z = fz if tau == 1 else tau * fz + (1 - tau) * z
            if (gap > 0 and (i + 1) % gap == 0) or (gap <= 0 and loc and i + 1 in loc):
                out.append(z)
        if gap > 0:
            return out
        return out + [z]

    def _ift(self, f, z, writer):
        if not torch.is_grad_enabled():
            return [f(z)]
        on_info = None if writer is None else (lambda info: writer(_stat(info, z.device)))
        return [bw.implicit(f, z, adjoint_solver=get_solver(_SOLVER[self.config["b_solver"]]),
                            adjoint_kwargs=dict(max_iter=self.config["b_max_iter"],
                                                tol=self.config["b_tol"],
                                                stop_mode=self.config["b_stop_mode"]),
                            on_info=on_info)]

    def forward(self, func, z_init, solver_kwargs=None, sradius_mode=False,
                backward_writer=None, **kwargs):
        if kwargs:
            raise TypeError(f"deq(func, z_init, ...): unknown arguments {sorted(kwargs)}; "
                            f"known: solver_kwargs, sradius_mode, backward_writer")
        if not callable(func):
            raise TypeError(f"func must be callable, got {type(func).__name__}")
        solver_kwargs = dict(solver_kwargs or {})
        packed = _Packed(func, z_init)
        z0 = packed.pack([t.detach() for t in z_init] if packed.is_list else z_init.detach())
        budget = solver_kwargs.get("f_max_iter")
        if budget is not None and (not isinstance(budget, (int, float)) or budget < 1):
            raise ValueError(f"solver_kwargs['f_max_iter'] must be a number >= 1, got {budget!r}")

        if not self.training:
            max_iter = int(budget) if budget is not None else self.eval_f_max_iter
            z_star, info = self._solve(packed, z0, max_iter, solver_kwargs)
            stat = _stat(info, z0.device)
            stat["sradius"] = (spectral_radius(packed, z_star, n_iter=_SRADIUS_ITERS)
                               if sradius_mode else torch.zeros(1, device=z0.device))
            return [packed.unpack(z_star)], stat

        indexing = (self._compute_f_iter(int(budget)) if budget is not None else self.indexing)
        grads = self._grad_for(indexing)
        last = len(indexing) - 1
        z_out, infos = [], []
        z, done = z0, 0
        for k, (mark, steps) in enumerate(zip(indexing, grads)):
            # sliced: `mark` is this solve's budget; indexing: the step to reach in total.
            n = mark if self.config["core"] == "sliced" else mark - done
            if n >= 1:
                z, info = self._solve(packed, z, int(n), solver_kwargs)
                infos.append(info)
            done += max(n, 0)
            z = z.detach()
            if k == last and self.use_ift:
                states = self._ift(packed, z, backward_writer)
            else:
                states = self._phantom(packed, z, steps)
            z_out += states
            if self.config["core"] == "sliced" and states:
                z = states[-1]  # the next slice continues from the gradient step's output
        stat = _stat(infos[-1], z0.device) if infos else _stat_empty(z0)
        if self.config["core"] == "indexing" and len(infos) > 1:
            stat["nstep"] = sum(i.nstep for i in infos).to(stat["nstep"].dtype)
            stat["abs_trace"] = torch.cat([_stat(i, z0.device)["abs_trace"] for i in infos],
                                          dim=1)
        return [packed.unpack(s) for s in z_out], stat


def _stat_empty(z0):
    B = z0.shape[0]
    zero = torch.zeros(B, device=z0.device, dtype=z0.dtype)
    return {"abs_lowest": zero, "rel_lowest": zero, "abs_trace": zero[:, None],
            "rel_trace": torch.tensor([[-1.0]], device=z0.device), "nstep": zero,
            "sradius": torch.tensor([-1.0], device=z0.device)}


__all__ = ["get_deq", "reset_deq", "DEQ"]

"""torchdeq.core on eqkernels: get_deq(args / **kwargs) -> a module called as deq(f, z0).

    deq = get_deq(args)                    # an argparse Namespace: the program's own names
    deq = get_deq(f_solver="anderson", f_max_iter=30, ift=True)   # are ignored, typos not
    z_out, info = deq(func, z_init)        # func(z) -> z (or func(*zs) -> zs for a list z)
    z_star = z_out[-1]

The graphs are torchdeq's: DEQIndexing samples states of one solve at the `indexing` /
n_states steps (fewer when the solve stops early) and applies a gradient functor to each;
DEQSliced solves in slices, each resuming from the previous slice's gradient output. The
last functor is IFT with ift / hook_ift, else phantom gradients (grad, tau, sup_gap,
sup_loc). In eval mode: [z*] from f_max_iter * eval_factor (or eval_f_max_iter) steps.
solver_kwargs={"f_max_iter": n} overrides the budget of one call (0 skips the solver);
other solver_kwargs go to the solver function, which ignores (with a warning) what it does
not take, as torchdeq's do. info is a SolverStat (solver/stat.py).

The solves are eqkernels' (per-sample stopping, fused Anderson step, NaN freezing); the
option stop_rule="batch" gives torchdeq's whole-batch stopping. See the README's table of
differences.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from eqkernels.backward.supervision import supervision_steps
from eqkernels.compat.torchdeq._options import (EXTENSIONS, KNOWN, STOP_RULES, check_kwargs,
                                                read)
from eqkernels.compat.torchdeq.dropout import reset_dropout
from eqkernels.compat.torchdeq.grad import backward_factory, make_pair
from eqkernels.compat.torchdeq.loss import power_method
from eqkernels.compat.torchdeq.norm import reset_norm
from eqkernels.compat.torchdeq.solver import get_solver
from eqkernels.compat.torchdeq.utils.config import DEQConfig
from eqkernels.compat.torchdeq.utils.layer_utils import deq_decorator

_SRADIUS_ITERS = 100  # torchdeq's power-method length
# deq(...) keyword arguments torchdeq's forward swallows (**kwargs) without effect.
_CALL_HINTS = {"writer": " (the backward solve's monitor is backward_writer)"}


def _count(value, name, minimum=0):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum \
            or int(value) != value:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _int_list(value, name):
    value = [value] if isinstance(value, int) else value
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise TypeError(f"{name} must be an int or a list of ints, got {value!r}")
    return list(value)


class DEQBase(nn.Module):
    """torchdeq's DEQ base class (same constructor): options come from `args` (any config
    object; its entries win over the keyword defaults, as in torchdeq) and **kwargs, which
    must be option names. Subclasses define _compute_f_iter, _solve_fixed_point, forward."""

    def __init__(self, args=None, f_solver="fixed_point_iter", b_solver="fixed_point_iter",
                 no_stat=None, f_max_iter=40, b_max_iter=40, f_tol=1e-3, b_tol=1e-6,
                 f_stop_mode="abs", b_stop_mode="abs", eval_factor=1.0, eval_f_max_iter=0,
                 **kwargs):
        super().__init__()
        check_kwargs(kwargs, KNOWN, type(self).__name__)
        self.args = DEQConfig(args)
        self.args.update(**kwargs)
        get = self.args.get
        self.f_solver_name = get("f_solver", f_solver)
        self.b_solver_name = get("b_solver", b_solver)
        self.f_solver = get_solver(self.f_solver_name)
        self.b_solver = get_solver(self.b_solver_name)
        no_stat = get("no_stat", no_stat)
        self.no_stat = (self.f_solver_name == "simple_fixed_point_iter") if no_stat is None \
            else bool(no_stat)
        self.f_max_iter = _count(get("f_max_iter", f_max_iter), "f_max_iter")
        self.b_max_iter = _count(get("b_max_iter", b_max_iter), "b_max_iter")
        self.f_tol, self.b_tol = get("f_tol", f_tol), get("b_tol", b_tol)
        self.f_stop_mode = get("f_stop_mode", f_stop_mode)
        self.b_stop_mode = get("b_stop_mode", b_stop_mode)
        for key in ("f_tol", "b_tol"):
            if isinstance(getattr(self, key), bool) or not isinstance(
                    getattr(self, key), (int, float)) or not getattr(self, key) > 0:
                raise ValueError(f"{key} must be a number > 0, got {getattr(self, key)!r}")
        for key in ("f_stop_mode", "b_stop_mode"):
            if getattr(self, key) not in ("abs", "rel"):
                raise ValueError(f"{key} must be 'abs' or 'rel', got {getattr(self, key)!r}")
        eval_f_max_iter = _count(get("eval_f_max_iter", eval_f_max_iter), "eval_f_max_iter")
        eval_factor = get("eval_factor", eval_factor)
        if not isinstance(eval_factor, (int, float)) or eval_factor < 0:
            raise ValueError(f"eval_factor must be a number >= 0, got {eval_factor!r}")
        self.eval_f_max_iter = eval_f_max_iter if eval_f_max_iter > 0 \
            else int(self.f_max_iter * eval_factor)
        self.stop_rule = get("stop_rule", EXTENSIONS["stop_rule"])
        if self.stop_rule not in STOP_RULES:
            raise ValueError(f"stop_rule must be one of {STOP_RULES}, got {self.stop_rule!r}")
        self.hook = None
        self._warned = set()

    def extra_repr(self):
        return (f"f_solver={self.f_solver_name!r}, f_max_iter={self.f_max_iter}, "
                f"f_tol={self.f_tol}, b_solver={self.b_solver_name!r}, "
                f"stop_rule={self.stop_rule!r}")

    def _rule(self, solver):
        """stop_rule for solvers that take it (eqkernels' own); others get nothing."""
        if getattr(solver, "accepts_stop_rule", False):
            return {"stop_rule": self.stop_rule}
        if self.stop_rule != "sample" and "rule" not in self._warned:
            self._warned.add("rule")
            warnings.warn(f"stop_rule={self.stop_rule!r} has no effect on the registered "
                          f"solver {getattr(solver, '__name__', solver)!r}", stacklevel=4)
        return {}

    def _make_grads(self, grad, ift, hook_ift, tau, sup_gap, sup_loc):
        get = self.args.get
        grad = get("grad", grad)
        if isinstance(grad, int) and not isinstance(grad, bool):
            grad = [grad]
        grad = _int_list(grad, "grad")
        if not grad or min(grad) < 1:
            raise ValueError(f"grad (phantom-gradient steps) must be ints >= 1, got {grad!r}")
        tau, sup_gap = get("tau", tau), get("sup_gap", sup_gap)
        sup_loc = _int_list(get("sup_loc", sup_loc) or [], "sup_loc")
        produce = [backward_factory(grad_type=k, tau=tau, sup_gap=sup_gap, sup_loc=sup_loc)
                   for k in make_pair(self.indexing, grad)]
        if get("ift", ift) or get("hook_ift", hook_ift):
            kwargs = dict(max_iter=self.b_max_iter, tol=self.b_tol, stop_mode=self.b_stop_mode,
                          **self._rule(self.b_solver))
            produce[-1] = backward_factory(grad_type="ift", hook_ift=get("hook_ift", hook_ift),
                                           b_solver=self.b_solver, b_solver_kwargs=kwargs)
        return produce

    def _ignore_call_kwargs(self, kwargs):
        for key in sorted(set(kwargs) - self._warned):
            self._warned.add(key)
            warnings.warn(f"deq(func, z_init, ...): {key!r} is not an argument of torchdeq's "
                          f"DEQ call; ignored, as torchdeq ignores it"
                          f"{_CALL_HINTS.get(key, '')}", stacklevel=3)

    def _solver_kwargs(self, solver_kwargs):
        solver_kwargs = {} if solver_kwargs is None else dict(solver_kwargs)
        budget = solver_kwargs.get("f_max_iter")
        if budget is not None and type(budget) in (int, float):
            solver_kwargs["f_max_iter"] = _count(budget, "solver_kwargs['f_max_iter']")
        return solver_kwargs

    def _call_solver(self, deq_func, z_init, max_iter, solver_kwargs, indexing=None):
        kwargs = {k: v for k, v in solver_kwargs.items() if k != "f_max_iter"}
        kwargs = {**self._rule(self.f_solver), **kwargs}
        with torch.no_grad():
            return self.f_solver(deq_func, x0=z_init, max_iter=max_iter, tol=self.f_tol,
                                 stop_mode=self.f_stop_mode, indexing=indexing, **kwargs)

    def _sradius(self, deq_func, z_star):
        """(B,) largest |eigenvalue| of J_f(z*) by 100 power-method steps (torchdeq's)."""
        with torch.enable_grad():
            z = z_star.detach().requires_grad_()
            fz = deq_func(z)
        return power_method(fz, z, n_iters=_SRADIUS_ITERS)[1]

    def _eval(self, deq_func, z_init, solver_kwargs, sradius_mode):
        budget = solver_kwargs.get("f_max_iter", self.eval_f_max_iter)
        z_star, _, info = self._call_solver(deq_func, z_init, budget, solver_kwargs)
        info["sradius"] = (self._sradius(deq_func, z_star) if sradius_mode
                           else torch.zeros(1, device=_device(z_star)))
        return [deq_func.vec2list(z_star)], info

    def _compute_f_iter(self, f_max_iter):
        raise NotImplementedError

    def forward(self, func, z_init, solver_kwargs=None, sradius_mode=False,
                backward_writer=None, **kwargs):
        raise NotImplementedError


def _device(z):
    return z.device if torch.is_tensor(z) else z[0].device


class DEQIndexing(DEQBase):
    """One solve; the states at the sampled steps (indexing / n_states; fewer if the solve
    stops early) each get a gradient functor. Constructor as torchdeq's."""

    def __init__(self, args=None, ift=False, hook_ift=False, grad=1, tau=1.0, sup_gap=-1,
                 sup_loc=None, n_states=1, indexing=None, **kwargs):
        super().__init__(args=args, **kwargs)
        self.arg_n_states = n_states
        self.arg_indexing = [] if indexing is None else indexing
        self.indexing = self._compute_f_iter(self.f_max_iter)
        self.produce_grad = self._make_grads(grad, ift, hook_ift, tau, sup_gap, sup_loc)

    def _compute_f_iter(self, f_max_iter):
        """Steps whose states are sampled: n_states evenly spaced ones ending at f_max_iter,
        else [*indexing, f_max_iter]."""
        n_states = _count(self.args.get("n_states", self.arg_n_states), "n_states", 1)
        indexing = _int_list(self.args.get("indexing", self.arg_indexing) or [], "indexing")
        return supervision_steps(int(f_max_iter), n_states, indexing)

    def _solve_fixed_point(self, deq_func, z_init, f_max_iter=None, indexing=None,
                           solver_kwargs=None, **kwargs):
        """(z*, states at `indexing` (training only), info)."""
        return self._call_solver(deq_func, z_init, f_max_iter, solver_kwargs or {},
                                 indexing=indexing if self.training else None)

    def forward(self, func, z_init, solver_kwargs=None, sradius_mode=False,
                backward_writer=None, **kwargs):
        """(list of states, info): the gradient-tracked sampled states in training, [z*] in
        eval. func(z) -> z for a tensor z, func(*zs) -> zs for a list."""
        self._ignore_call_kwargs(kwargs)
        deq_func, z_init = deq_decorator(func, z_init, no_stat=self.no_stat)
        solver_kwargs = self._solver_kwargs(solver_kwargs)
        if not self.training:
            return self._eval(deq_func, z_init, solver_kwargs, sradius_mode)
        budget = solver_kwargs.get("f_max_iter", self.f_max_iter)
        indexing = self._compute_f_iter(budget) if "f_max_iter" in solver_kwargs \
            else self.indexing
        _, trajectory, info = self._solve_fixed_point(deq_func, z_init, f_max_iter=budget,
                                                      indexing=indexing,
                                                      solver_kwargs=solver_kwargs)
        z_out = []
        for z_pred, produce in zip(trajectory, self.produce_grad):
            z_out += produce(self, deq_func, deq_func.detach(z_pred), writer=backward_writer)
        return [deq_func.vec2list(z) for z in z_out], info


class DEQSliced(DEQBase):
    """The solve cut into slices (n_states equal ones, or at the indexing steps); each
    slice's output gets a gradient functor and the next slice resumes from that functor's
    output. Constructor as torchdeq's."""

    def __init__(self, args=None, ift=False, hook_ift=False, grad=1, tau=1.0, sup_gap=-1,
                 sup_loc=None, n_states=1, indexing=None, **kwargs):
        super().__init__(args, **kwargs)
        self.arg_n_states = n_states
        self.arg_indexing = [] if indexing is None else indexing
        self.indexing = self._compute_f_iter(self.f_max_iter)
        self.produce_grad = self._make_grads(grad, ift, hook_ift, tau, sup_gap, sup_loc)

    def _compute_f_iter(self, f_max_iter):
        """Budgets of the slices: n_states x (f_max_iter // n_states), else the gaps between
        0, the indexing steps and f_max_iter."""
        n_states = _count(self.args.get("n_states", self.arg_n_states), "n_states", 1)
        f_max_iter = int(f_max_iter)
        if n_states > 1:
            return [f_max_iter // n_states] * n_states
        marks = [0, *_int_list(self.args.get("indexing", self.arg_indexing) or [],
                               "indexing"), f_max_iter]
        return [b - a for a, b in zip(marks, marks[1:])]

    def _solve_fixed_point(self, deq_func, z_init, f_max_iter=None, solver_kwargs=None,
                           **kwargs):
        """(z*, info) of one slice."""
        z_star, _, info = self._call_solver(deq_func, z_init, f_max_iter, solver_kwargs or {})
        return z_star, info

    def forward(self, func, z_init, solver_kwargs=None, sradius_mode=False,
                backward_writer=None, **kwargs):
        """(list of states, info of the last slice) in training, ([z*], info) in eval."""
        self._ignore_call_kwargs(kwargs)
        deq_func, z_star = deq_decorator(func, z_init, no_stat=self.no_stat)
        solver_kwargs = self._solver_kwargs(solver_kwargs)
        if not self.training:
            return self._eval(deq_func, z_star, solver_kwargs, sradius_mode)
        indexing = self._compute_f_iter(solver_kwargs["f_max_iter"]) \
            if "f_max_iter" in solver_kwargs else self.indexing
        z_out = []
        for budget, produce in zip(indexing, self.produce_grad):
            z_star, info = self._solve_fixed_point(deq_func, z_star, f_max_iter=budget,
                                                   solver_kwargs=solver_kwargs)
            z_out += produce(self, deq_func, deq_func.detach(z_star), writer=backward_writer)
            z_star = z_out[-1]
        return [deq_func.vec2list(z) for z in z_out], info


_core = {"indexing": DEQIndexing, "sliced": DEQSliced}
_BUILTIN_CORES = dict(_core)


def register_deq(deq_type, core):
    """Register a DEQ class (e.g. a DEQBase subclass) for get_deq(core=deq_type)."""
    if not isinstance(deq_type, str) or not deq_type:
        raise TypeError(f"deq_type must be a non-empty str, got {deq_type!r}")
    if not callable(core):
        raise TypeError(f"core must be a class, got {type(core).__name__}")
    _core[deq_type] = core


def get_deq(args=None, **kwargs):
    """A DEQ module from torchdeq options: `args` (argparse.Namespace, dict, DEQConfig, ...;
    only the option names are read) updated by keyword arguments (which must be option
    names, for the built-in cores). core: "sliced" (default) | "indexing" | a registered one."""
    config = read(args, kwargs, strict=False)
    core = config.get("core", "sliced")
    if core not in _core:
        raise ValueError(f"core must be one of the registered DEQ classes {sorted(_core)}, "
                         f"got {core!r} (add one with register_deq)")
    if _core[core] is _BUILTIN_CORES.get(core):
        check_kwargs(kwargs, KNOWN, "get_deq")
    return _core[core](config)


def reset_deq(model):
    """Recompute the normalised weights and redraw the variational-dropout masks of model
    (torchdeq calls it before each training iteration)."""
    reset_norm(model)
    reset_dropout(model)


__all__ = ["get_deq", "reset_deq", "register_deq", "DEQBase", "DEQSliced", "DEQIndexing"]

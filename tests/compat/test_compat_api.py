"""eqkernels.compat.torchdeq covers torchdeq's public API with torchdeq's signatures and
defaults, reads configurations as torchdeq does (the program's own options ignored, keyword
typos refused), and its small functions compute what torchdeq's compute."""
import argparse
import importlib
import inspect
import types

import pytest
import torch
from torch import nn

import eqkernels.compat.torchdeq as compat

torchdeq = pytest.importorskip("torchdeq")

MODULES = ["", ".core", ".solver", ".solver.anderson", ".solver.broyden", ".solver.fp_iter",
           ".solver.stat", ".solver.utils", ".norm", ".norm.base_norm", ".norm.weight_norm",
           ".norm.spectral_norm", ".loss", ".loss.correction", ".loss.jacobian", ".dropout",
           ".grad", ".utils", ".utils.mem", ".utils.init", ".utils.config", ".utils.arg_utils",
           ".utils.layer_utils"]
# Parameters eqkernels adds (keyword-only in effect: they come after torchdeq's).
EXTENSIONS = {"stop_rule"}


def _public(mod):
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [n for n, v in vars(mod).items() if not n.startswith("_")
                 and (isinstance(v, types.ModuleType) and v.__name__.startswith("torchdeq")
                      or (callable(v) and getattr(v, "__module__", "").startswith("torchdeq")))]
    return sorted(names)


def _check_signature(ours, theirs, where):
    p_ours = inspect.signature(ours).parameters
    p_theirs = inspect.signature(theirs).parameters
    for name, p in p_theirs.items():
        assert name in p_ours, f"{where}: parameter {name!r} missing"
        q = p_ours[name]
        assert q.kind == p.kind, f"{where}: {name!r} is {q.kind}, torchdeq's {p.kind}"
        if p.default is not inspect.Parameter.empty or q.default is not inspect.Parameter.empty:
            assert q.default == p.default or (name == "b_solver_kwargs" and q.default is None), \
                f"{where}: default of {name!r} is {q.default!r}, torchdeq's {p.default!r}"
    order = [n for n in p_ours if n in p_theirs]
    assert order == list(p_theirs), f"{where}: parameter order {order}"
    extra = set(p_ours) - set(p_theirs)
    assert extra <= EXTENSIONS, f"{where}: extra parameters {extra}"


@pytest.mark.parametrize("suffix", MODULES)
def test_every_public_name_exists_with_torchdeqs_signature(suffix):
    theirs = importlib.import_module("torchdeq" + suffix)
    ours = importlib.import_module("eqkernels.compat.torchdeq" + suffix)
    for name in _public(theirs):
        assert hasattr(ours, name), f"torchdeq{suffix}.{name} is missing"
        a, b = getattr(ours, name), getattr(theirs, name)
        where = f"torchdeq{suffix}.{name}"
        if isinstance(b, types.ModuleType):
            continue
        if inspect.isclass(b):
            _check_signature(a.__init__, b.__init__, where)
            for method in ("apply", "compute_weight", "remove", "__call__", "from_final_step",
                           "from_solver_info", "reset_mask", "forward", "_solve_fixed_point",
                           "_compute_f_iter", "list2vec", "vec2list", "detach"):
                if method in vars(b) and not method.startswith("_") or method in (
                        "_solve_fixed_point", "_compute_f_iter") and method in vars(b):
                    assert hasattr(a, method), f"{where}.{method} is missing"
        elif callable(b):
            _check_signature(a, b, where)


def test_add_deq_args_declares_torchdeqs_options_without_choices():
    def actions(lib):
        parser = argparse.ArgumentParser()
        lib.add_deq_args(parser)
        return {a.dest: a for a in parser._actions if a.dest != "help"}
    ours, theirs = actions(compat), actions(torchdeq)
    assert list(ours) == list(theirs)
    for name, a in theirs.items():
        b = ours[name]
        assert (b.default, b.type, b.nargs, type(b), b.option_strings) == \
            (a.default, a.type, a.nargs, type(a), a.option_strings), name
        assert b.choices is None  # torchdeq restricts --b_solver; registered names must parse


def test_get_deq_reads_namespaces_like_torchdeq_and_refuses_keyword_typos():
    args = argparse.Namespace(f_solver="anderson", f_max_iter=12, eval_n_layer=24,
                              eval_tgt_len=150, eval_interval=4000, lr=1e-3, f_tols=1.0)
    deq = compat.get_deq(args)  # the program's own names -- even a near-miss -- are ignored
    assert deq.f_max_iter == 12 and deq.f_solver_name == "anderson" and deq.f_tol == 1e-3
    deq = compat.get_deq({"core": "indexing", "n_states": 2}, f_max_iter=8)
    assert type(deq).__name__ == "DEQIndexing" and deq.indexing == [4, 8]
    with pytest.raises(TypeError, match="unknown option 'f_max_iters'.*did you mean 'f_max_iter'"):
        compat.get_deq(f_max_iters=10)
    with pytest.raises(TypeError, match="unknown option"):
        compat.core.DEQSliced(f_max_itr=3)
    with pytest.raises(ValueError, match="core must be one of the registered"):
        compat.get_deq(core="unrolled")
    with pytest.raises(ValueError, match="stop_rule must be one of"):
        compat.get_deq(stop_rule="all")
    with pytest.raises(ValueError, match=r"Unable to align.*give 1 or 3"):
        compat.get_deq(n_states=3, grad=[1, 2])
    with pytest.raises(ValueError, match="f_max_iter must be an int >= 0"):
        compat.get_deq(f_max_iter=-1)
    # torchdeq's keyword defaults lose to args entries, as in torchdeq
    assert compat.core.DEQIndexing(dict(f_max_iter=9), f_max_iter=5).f_max_iter == 9


def test_register_deq_core_and_its_own_options():
    class HalfDEQ(compat.core.DEQSliced):
        def __init__(self, args=None, **kwargs):
            super().__init__(args, **kwargs)
            self.half = self.args.get("half", True)

    compat.register_deq("half_sliced", HalfDEQ)
    deq = compat.get_deq(core="half_sliced", f_max_iter=6, half=False)  # its own option
    assert isinstance(deq, HalfDEQ) and deq.half is False
    z_out, _ = deq(lambda z: 0.5 * z + 1, torch.zeros(2, 3))
    torch.testing.assert_close(z_out[-1], torch.full((2, 3), 2.0), atol=0.1, rtol=0)


def test_mem_gc_matches_a_plain_call_and_torchdeqs():
    from torchdeq.utils.mem import mem_gc as tdq_mem_gc
    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 5))
    x = torch.randn(3, 5, requires_grad=True)
    grads = []
    for call in (lambda: block(x), lambda: compat.mem_gc(block, (x,)),
                 lambda: tdq_mem_gc(block, (x,))):
        block.zero_grad()
        x.grad = None
        call().square().sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in block.parameters()])
    for ours, ref in ((grads[1], grads[0]), (grads[1], grads[2])):
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a, b)
    with torch.no_grad():
        torch.testing.assert_close(compat.mem_gc(block, (x,)), block(x))
    # parameters get gradients when no input requires grad (a phantom step from detached
    # z*), and dropout inside draws the same mask in the recomputation
    noisy = nn.Sequential(nn.Linear(5, 7), nn.Dropout(0.5), nn.Linear(7, 5))
    grads = []
    for call in (lambda: noisy(x.detach()), lambda: compat.mem_gc(noisy, (x.detach(), ))):
        noisy.zero_grad()
        torch.manual_seed(1)
        call().square().sum().backward()
        grads.append([p.grad.clone() for p in noisy.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_small_functions_compute_what_torchdeqs_compute():
    for lib_seed in range(2):
        torch.manual_seed(lib_seed)
        ref = torchdeq.mixed_init((3, 4))
        torch.manual_seed(lib_seed)
        torch.testing.assert_close(compat.mixed_init((3, 4)), ref)
    xs, y = [torch.randn(4, 3) for _ in range(3)], torch.randn(4, 3)
    crit = lambda p, t: (p - t).square().mean()  # noqa: E731
    for wf, kw in (("exp", dict(gamma=0.7)), ("linear", dict(gamma=0.9, bias=0.1))):
        torch.testing.assert_close(compat.fp_correction(crit, (xs, y), weight_func=wf, **kw),
                                   torchdeq.fp_correction(crit, (xs, y), weight_func=wf, **kw))
    # torchdeq's "const" calls .cuda(): compare with its definition
    torch.testing.assert_close(compat.fp_correction(crit, (xs, y), weight_func="const", c=2.0),
                               2.0 * sum(crit(x, y) for x in xs))
    for lib in (compat, torchdeq):
        lib.register_weight_func("last_only", lambda n, k, **kw: float(k == n - 1))
    torch.testing.assert_close(compat.fp_correction(crit, (xs, y), weight_func="last_only"),
                               crit(xs[-1], y))
    with pytest.raises(TypeError, match="gama"):
        compat.fp_correction(crit, (xs, y), weight_func="exp", gama=0.5)
    z = torch.randn(2, 5, requires_grad=True)
    for fn in ("jac_reg", "power_method"):
        torch.manual_seed(0)
        ref = getattr(torchdeq, fn)(torch.tanh(2 * z), z, 3)
        torch.manual_seed(0)
        out = getattr(compat, fn)(torch.tanh(2 * z), z, 3)
        torch.testing.assert_close(out, ref)


def test_backward_factory_functors_match_torchdeqs():
    from eqkernels.compat.torchdeq.utils.layer_utils import DEQWrapper
    from torchdeq.grad import backward_factory as tdq_factory
    torch.manual_seed(0)
    W = nn.Parameter(0.3 * torch.randn(6, 6))
    z_star = torch.randn(3, 6)
    func = DEQWrapper(lambda z: torch.tanh(z @ W.T + 1), z_star)
    with torch.no_grad():  # a fixed point: IFT's Jacobian point (z* or f(z*)) then agrees
        for _ in range(200):
            z_star = func(z_star)
    for kwargs in (dict(grad_type=3, tau=0.6), dict(grad_type=4, sup_gap=2),
                   dict(grad_type=3, sup_loc=[1])):
        outs = [factory(**kwargs)(None, func, z_star) for factory in
                (compat.grad.backward_factory, tdq_factory)]
        assert len(outs[0]) == len(outs[1])
        for a, b in zip(*outs):
            torch.testing.assert_close(a, b)
    grads = []
    for factory, solver in ((compat.grad.backward_factory, compat.get_solver("anderson")),
                            (tdq_factory, torchdeq.get_solver("anderson"))):
        W.grad = None
        out = factory("ift", b_solver=solver, b_solver_kwargs=dict(max_iter=50, tol=1e-9))(
            None, func, z_star)
        out[0].sum().backward()
        grads.append(W.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_solver_utils_let_a_torchdeq_style_solver_run_unchanged():
    from eqkernels.compat.torchdeq.solver import utils as U

    def picard(func, x0, max_iter=50, tol=1e-3, stop_mode="abs", indexing=None, **kwargs):
        bsz = U.batch_flatten(x0).shape[0]
        trace, lowest, steps = U.init_solver_info(bsz, x0.device)
        x, best = x0, x0
        for k in range(max_iter):
            fx = func(x)
            d = U.batch_flatten(fx - x).norm(dim=1)
            best = U.update_state(best, fx, k + 1, stop_mode, d,
                                  d / U.batch_flatten(fx).norm(dim=1), trace, lowest, steps)
            x = fx
        return best, [], U.solver_stat_from_info(stop_mode, lowest, trace, steps)

    compat.register_solver("picard_utils", picard)
    f = lambda z: 0.5 * z + 1  # noqa: E731
    z, _, info = compat.get_solver("picard_utils")(f, torch.zeros(2, 3), max_iter=30)
    assert info["abs_trace"].shape == (2, 31) and 20 <= float(info["nstep"].min())
    torch.testing.assert_close(z, torch.full((2, 3), 2.0))

"""The fused ops are torch.library ops: schemas that mark what they mutate, CPU/CUDA/Meta
kernels registered per dispatch key, opcheck over shapes and dtypes, one argument check with
the same message on every backend, and torch.compile(fullgraph=True) through them."""
import copy
import random

import pytest
import torch

import eqkernels as eqk
from eqkernels import _backends
from eqkernels.ops import _checks
from eqkernels.ops.anderson_mix import AndersonHistory, anderson_step
from eqkernels.ops.block_step import block_step, new_step_counter, resolve_block_step
from eqkernels.ops.tracking import SolveState
from ops_cases import anderson_args, block_step_args

needs_ext = pytest.mark.skipif(not _backends.backends()["cpp"][0],
                               reason="compiled extension not built")

BLOCK_MUTATED = ("z_next", "active", "converged", "diverged", "nstep", "abs_res", "rel_res",
                 "step")
ANDERSON_MUTATED = ("z_out", "active", "converged", "diverged", "nstep", "abs_res", "rel_res",
                    "best_abs", "best_rel", "best_z", "X", "G", "gram", "count")


def _mutated(schema):
    return {a.name for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write}


@needs_ext
def test_schemas_mark_exactly_the_mutated_arguments_and_every_dispatch_key_has_a_kernel():
    assert _mutated(torch.ops.eqk.block_step.default._schema) == set(BLOCK_MUTATED)
    assert _mutated(torch.ops.eqk.anderson_step.default._schema) == set(ANDERSON_MUTATED)
    keys = ["CPU", "Meta"] + (["CUDA"] if eqk._C.with_cuda else [])
    for op in ("eqk::block_step", "eqk::anderson_step"):
        for key in keys:
            assert torch._C._dispatch_has_kernel_for_dispatch_key(op, key), (op, key)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("B,n", [(1, 1), (5, 7), (33, 130)])
def test_opcheck_block_step(B, n, dtype):
    seed = random.randrange(2**31)
    args = block_step_args(B, n, dtype, seed)
    torch.library.opcheck(torch.ops.eqk.block_step.default, args)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B,n,m", [(1, 1, 1), (4, 9, 3), (17, 66, 6), (3, 40, 16)])
def test_opcheck_anderson_step(B, n, m, dtype):
    seed = random.randrange(2**31)
    torch.library.opcheck(torch.ops.eqk.anderson_step.default, anderson_args(B, n, m, dtype, seed))


@pytest.mark.interpreter
@pytest.mark.parametrize("op", ["block_step", "anderson_step"])
def test_opcheck_triton_ops_interpreted(op):
    if not _backends._usable("triton", torch.device("cpu")):
        pytest.skip(_backends.backends()["triton"][1])
    seed = random.randrange(2**31)
    if op == "block_step":
        from eqkernels.ops.triton.block_step import block_step_triton_op
        torch.library.opcheck(block_step_triton_op(), block_step_args(6, 9, torch.float32, seed))
    else:
        from eqkernels.ops.triton.anderson_mix import anderson_step_triton_op
        torch.library.opcheck(anderson_step_triton_op(),
                              anderson_args(6, 9, 3, torch.float64, seed))


# ---- one argument check, one message, every backend --------------------------------------

def _bad_block_cases(B=4, n=6):
    """(what is wrong, args) with exactly one defect each."""
    good = block_step_args(B, n, torch.float32, 1)
    cases = []

    def bad(what, i, t):
        a = list(good)
        a[i] = t
        cases.append((what, tuple(a)))
    bad("z 3-D", 0, torch.zeros(B, n, 1))
    bad("z float16", 0, torch.zeros(B, n, dtype=torch.float16))
    bad("f_out shape", 1, torch.zeros(B, n + 1))
    bad("z_next dtype", 2, torch.zeros(B, n, dtype=torch.float64))
    bad("active length", 3, torch.ones(B - 1, dtype=torch.bool))
    bad("nstep dtype", 6, torch.zeros(B, dtype=torch.int64))
    bad("abs_res length 1", 7, torch.zeros(1))
    bad("rel_res dtype", 8, torch.zeros(B, dtype=torch.float64))
    bad("step shape", 9, torch.zeros(2, dtype=torch.int64))
    bad("f_out strided", 1, torch.zeros(n, B).t())
    bad("z_next on meta", 2, torch.zeros(B, n, device="meta"))
    return cases


def _bad_anderson_cases(B=4, n=6, m=3):
    good = anderson_args(B, n, m, torch.float32, 2)
    cases = []

    def bad(what, i, t):
        a = list(good)
        a[i] = t
        cases.append((what, tuple(a)))
    bad("z int", 0, torch.zeros(B, n, dtype=torch.int32))
    bad("fz shape", 1, torch.zeros(B, n - 1))
    bad("abs_res length 1", 7, torch.zeros(1))   # the kernel once wrote past its end
    bad("rel_res length 1", 8, torch.zeros(1))
    bad("best_abs length 1", 9, torch.zeros(1))
    bad("best_rel length 1", 10, torch.zeros(1))
    bad("best_z shape", 11, torch.zeros(B + 1, n))
    bad("X m = 17", 12, torch.zeros(B, 17, n))
    bad("G dtype", 13, torch.zeros(B, m, n, dtype=torch.float64))
    bad("gram float32", 14, torch.zeros(B, m, m))
    bad("count length", 15, torch.zeros(B + 2, dtype=torch.int32))
    bad("X strided", 12, torch.zeros(B, n, m).transpose(1, 2))
    return cases


def _message(fn, *args):
    with pytest.raises(ValueError) as err:
        fn(*args)
    return str(err.value)


@needs_ext
@pytest.mark.parametrize("what,args", _bad_block_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_block_step_rejects_alike_in_python_and_cpp(what, args):
    py = _message(_checks.block_step, *args[:10])
    assert py.startswith("block_step: ")
    assert _message(torch.ops.eqk.block_step, *args) == py, what


@needs_ext
@pytest.mark.parametrize("what,args", _bad_anderson_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_anderson_step_rejects_alike_in_python_and_cpp(what, args):
    py = _message(_checks.anderson_step, *args[:16], 16)
    assert py.startswith("anderson_step: ")
    assert _message(torch.ops.eqk.anderson_step, *args) == py, what


def test_every_backend_rejects_a_short_residual_with_the_same_message():
    B, n = 5, 8
    z = torch.randn(B, n)
    state = SolveState.start(z)
    state.abs_res = torch.zeros(1)
    hist = AndersonHistory.empty(z, 4)
    msgs = set()
    for backend in ("reference", "cpp", "triton"):
        if not _backends._usable(backend, torch.device("cpu")):
            continue
        with pytest.raises(ValueError) as err:
            anderson_step(z, torch.tanh(z), z.clone(), state, hist, tol=1e-6, stop_mode="abs",
                          beta=1.0, lam=1e-4, restart_growth=10.0, backend=backend)
        msgs.add(str(err.value))
    assert msgs == {"anderson_step: abs_res must be a (5,) torch.float32 tensor, got shape [1] "
                    "and dtype torch.float32"}


# ---- torch.compile(fullgraph=True) through the op ----------------------------------------

def _loop_inputs(seed, B=6, n=16):
    gen = torch.Generator().manual_seed(seed)
    W = 0.3 * torch.randn(n, n, generator=gen) / n ** 0.5
    x = torch.randn(B, n, generator=gen)
    z = torch.randn(B, n, generator=gen)
    state = SolveState.start(torch.zeros(B, 1))
    return z, x, W, state, new_step_counter()


@needs_ext
@pytest.mark.parametrize("backend", ["cpp", "reference"])
def test_compiled_k_step_loop_has_no_graph_break_and_matches_eager(backend):
    """K steps of a user block + the fused update, under torch.compile(fullgraph=True) with
    inductor on CPU, give the eager loop's iterates, state and counter."""
    seed, K = random.randrange(2**31), 8
    _, step_fn = resolve_block_step(torch.device("cpu"), backend)

    def loop(z, x, W, state, step):
        for _ in range(K):
            f_out = torch.tanh(z @ W + x)  # the user block
            step_fn(z, f_out, z, state, damping=0.8, sigma=0.02, tol=1e-30, stop_mode="abs",
                    step=step, seed=1234)
        return z

    z, x, W, state, step = _loop_inputs(seed)
    z_e, st_e, step_e = z.clone(), copy.deepcopy(state), step.clone()
    loop(z_e, x, W, st_e, step_e)
    torch._dynamo.reset()
    # inductor for the compiled op (it generates C++ for the block); aot_eager for the
    # reference (the same trace, without a second C++ compile: CI time)
    compiled = torch.compile(loop, fullgraph=True,
                             backend="inductor" if backend == "cpp" else "aot_eager")
    compiled(z, x, W, state, step)
    assert int(step) == int(step_e) == K
    torch.testing.assert_close(z, z_e, rtol=1e-5, atol=1e-6)
    assert torch.equal(state.nstep, st_e.nstep)
    torch.testing.assert_close(state.abs_res, st_e.abs_res, rtol=1e-5, atol=1e-6)


@needs_ext
def test_compiled_looped_update_matches_eager():
    """The public LoopedUpdate inside a compiled K-step loop: same iterates and counter."""
    seed, K, B, n = random.randrange(2**31), 6, 4, 12
    gen = torch.Generator().manual_seed(seed)
    W = 0.3 * torch.randn(n, n, generator=gen) / n ** 0.5
    z0 = torch.randn(B, n, generator=gen)

    def loop(z, upd):
        for _ in range(K):
            upd(z, torch.tanh(z @ W))
        return z

    ref, upd_ref = z0.clone(), eqk.LoopedUpdate(B, damping=0.9, noise_std=0.05, seed=seed)
    loop(ref, upd_ref)
    torch._dynamo.reset()
    z, upd = z0.clone(), eqk.LoopedUpdate(B, damping=0.9, noise_std=0.05, seed=seed)
    torch.compile(loop, fullgraph=True, backend="aot_eager")(z, upd)
    assert int(upd.step_counter) == int(upd_ref.step_counter) == K
    torch.testing.assert_close(z, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(upd.step_norm, upd_ref.step_norm, rtol=1e-5, atol=1e-6)

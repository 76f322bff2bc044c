"""The looped-transformer block ops (token_mix, swiglu_gate_up, down_residual_sumsq,
rmsnorm_update): every Triton kernel against its PyTorch reference (interpreted on CPU; the
CUDA cases are marked gpu), float32 to a relative 1e-5, bfloat16 no further from the float64
reference than the eager bfloat16 path (PyTorch ops in bfloat16, as the Sudoku model ran them),
the update's noise against block_step's stream, opcheck on every op, and the argument checks.
Seeds are drawn per test and named in the failure message.
"""
import copy
import random

import pytest
import torch
from torch.nn import functional as F

from eqkernels import _backends
from eqkernels.nn.looped_transformer import _swiglu_channels, _swiglu_tokens, rms_norm
from eqkernels.ops.block_step import (block_step, new_step_counter, noise_key, residual_dtype,
                                      standard_normal_ref)
from eqkernels.ops.rmsnorm_update import rmsnorm_update, rmsnorm_update_ref
from eqkernels.ops.swiglu import (down_residual_sumsq, down_residual_sumsq_ref, swiglu_gate_up,
                                  swiglu_gate_up_ref)
from eqkernels.ops.token_mix import prepare_token_mix, token_chunks, token_mix, token_mix_ref
from eqkernels.ops.tracking import SolveState

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
FP32_RTOL = 1e-5  # the bar for float32: max |ours - ref| / max |ref|


def _grid(cpu_cases, cuda_cases):
    """(device, *case) parameters: the whole grid interpreted on CPU, a subset on CUDA (each
    new constexpr combination is a Triton compile there, within the GPU suite's time)."""
    return ([("cpu",) + tuple(c) for c in cpu_cases]
            + [pytest.param("cuda", *c, marks=pytest.mark.gpu) for c in cuda_cases])


def _require_triton(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not _backends._usable("triton", torch.device(device)):
        pytest.skip(f"triton on {device}: {_backends.backends()['triton'][1]}")


def _rel(out, ref):
    return float((out.double() - ref.double()).abs().max() / ref.double().abs().max())


def _rms(out, ref):
    return float((out.double() - ref.double()).pow(2).mean().sqrt())


def _no_worse_than_eager(ours, eager, ref, what):
    """bfloat16: ours no further from the float64 reference than the eager bfloat16 path, by
    RMS error, and within twice its largest error (flash-attention's criterion)."""
    e_ours, e_eager = _rms(ours, ref), _rms(eager, ref)
    m_ours = float((ours.double() - ref).abs().max())
    m_eager = float((eager.double() - ref).abs().max())
    assert e_ours <= e_eager, f"{what}: rms error {e_ours:.3g} > eager bf16's {e_eager:.3g}"
    assert m_ours <= 2 * m_eager, f"{what}: max error {m_ours:.3g} > 2x eager's {m_eager:.3g}"


# ---- token_mix ------------------------------------------------------------------------------

def _token_case(B, T, C, I, dtype, seed, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(B, T, C, generator=gen)
    inj = torch.randn(B, T, C, generator=gen)
    scale = torch.rand(B, T, generator=gen) + 0.5
    w_gu = torch.randn(2 * I, T, generator=gen) / T ** 0.5
    w_d = torch.randn(T, I, generator=gen) / I ** 0.5
    cast = (lambda t: t.to(device, dtype))
    return cast(h), cast(inj), scale.to(device), cast(w_gu), cast(w_d)


TOKEN_SHAPES = [(2, 81, 32, 256), (3, 9, 40, 48), (2, 20, 16, 32)]  # the Sudoku-like T = 81 once
LOADS = ["plain", "inj", "in_scale", "in_sumsq"]


@pytest.mark.parametrize("device,B,T,C,I,load", _grid(
    [s + (ld,) for s in TOKEN_SHAPES for ld in LOADS],
    [TOKEN_SHAPES[0] + (ld,) for ld in ("inj", "in_sumsq")]))
def test_token_mix_float32_matches_reference(device, B, T, C, I, load):
    _require_triton(device)
    seed = random.randrange(2**31)
    h, inj, scale, w_gu, w_d = _token_case(B, T, C, I, torch.float32, seed, device)
    kw = {"plain": {}, "inj": dict(inj=inj), "in_scale": dict(in_scale=scale),
          "in_sumsq": dict(in_sumsq=scale * C)}[load]
    out = token_mix(h, w_gu, w_d, eps=1e-5, backend="triton", **kw)
    ref = token_mix_ref(h.double(), w_gu.double(), w_d.double(), eps=1e-5,
                        **{k: v.double() for k, v in kw.items()})
    assert out.dtype == h.dtype and out.shape == h.shape
    assert _rel(out, ref) < FP32_RTOL, f"seed {seed}: {_rel(out, ref):.3g}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("load", ["inj", "in_scale"])
def test_token_mix_bfloat16_no_worse_than_eager(device, load):
    """Eager bf16 (the Sudoku model's path): z + inj, or the normalised input, rounded to bf16,
    then rms_norm(h + _swiglu_tokens(h), dim=1) in bf16 ops."""
    _require_triton(device)
    seed = random.randrange(2**31)
    h, inj, scale, w_gu, w_d = _token_case(2, 81, 32, 256, torch.bfloat16, seed, device)
    if load == "inj":
        kw, x64, x_eager = dict(inj=inj), h.double() + inj.double(), h + inj
    else:
        kw = dict(in_scale=scale)
        x64 = h.double() * scale.double()[..., None]
        x_eager = (h.float() * scale[..., None]).to(torch.bfloat16)
    ours = token_mix(h, w_gu, w_d, eps=1e-5, backend="triton", **kw)
    ref = token_mix_ref(x64, w_gu.double(), w_d.double(), eps=1e-5)
    eager = rms_norm(x_eager + _swiglu_tokens(x_eager, w_gu, w_d), 1e-5, dim=1)
    assert ours.dtype == torch.bfloat16
    _no_worse_than_eager(ours, eager, ref, f"token_mix seed {seed}")


def test_token_mix_tiles_and_packing():
    """Every tile configuration gives the same result; the packed weights are the transposed,
    zero-padded copies the kernel expects; a caller-made pack equals the per-call one."""
    _require_triton("cpu")
    seed = random.randrange(2**31)
    h, inj, _, w_gu, w_d = _token_case(2, 81, 48, 64, torch.float32, seed)
    packed = prepare_token_mix(w_gu, w_d)
    assert token_chunks(81) == (64, 32) and token_chunks(9) == (16, 0) and token_chunks(64) == (64, 0)
    assert packed.gate_up_t.shape == (96, 128) and packed.down_t.shape == (64, 96)
    assert torch.equal(packed.gate_up_t[:81], w_gu.t()) and not packed.gate_up_t[81:].any()
    assert torch.equal(packed.down_t[:, :81], w_d.t()) and not packed.down_t[:, 81:].any()
    base = token_mix(h, w_gu, w_d, eps=1e-5, inj=inj, backend="triton")
    for tiles in [(16, 16, 4, 1), (32, 64, 4, 2)]:
        out = token_mix(h, w_gu, w_d, eps=1e-5, inj=inj, backend="triton", tiles=tiles,
                        packed=packed)
        torch.testing.assert_close(out, base, rtol=2e-6, atol=2e-6, msg=f"seed {seed} {tiles}")


def test_token_mix_reference_is_the_sudoku_models_math():
    """In float32 the reference is exactly rms_norm(h + _swiglu_tokens(h), dim=1)."""
    seed = random.randrange(2**31)
    h, _, _, w_gu, w_d = _token_case(3, 81, 24, 256, torch.float32, seed)
    torch.testing.assert_close(token_mix_ref(h, w_gu, w_d, eps=1e-5),
                               rms_norm(h + _swiglu_tokens(h, w_gu, w_d), 1e-5, dim=1),
                               rtol=1e-6, atol=1e-6)


# ---- swiglu ---------------------------------------------------------------------------------

def _swiglu_case(M, C, I, dtype, seed, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(M, C, generator=gen)
    w_gu = torch.randn(2 * I, C, generator=gen) / C ** 0.5
    w_d = torch.randn(C, I, generator=gen) / I ** 0.5
    return (t.to(device, dtype) for t in (x, w_gu, w_d))


SWIGLU_SHAPES = [(162, 64, 256), (37, 40, 48)]


@pytest.mark.parametrize("device,M,C,I,variant", _grid(
    [s + (v,) for s in SWIGLU_SHAPES for v in ("fused", "cublas")],
    [SWIGLU_SHAPES[0] + (v,) for v in ("fused", "cublas")]))
def test_swiglu_float32_matches_reference(device, M, C, I, variant):
    _require_triton(device)
    seed = random.randrange(2**31)
    x, w_gu, w_d = _swiglu_case(M, C, I, torch.float32, seed, device)
    a = swiglu_gate_up(x, w_gu, backend="triton", variant=variant)
    a_ref = swiglu_gate_up_ref(x.double(), w_gu.double())
    assert a.shape == (M, I) and a.dtype == x.dtype
    assert _rel(a, a_ref) < FP32_RTOL, f"seed {seed}: gate_up {_rel(a, a_ref):.3g}"
    out, ss = down_residual_sumsq(a, w_d, x, backend="triton", variant=variant)
    out_ref, ss_ref = down_residual_sumsq_ref(a.double(), w_d.double(), x.double())
    assert out.shape == (M, C) and ss.shape == (M,) and ss.dtype == torch.float32
    assert _rel(out, out_ref) < FP32_RTOL, f"seed {seed}: down {_rel(out, out_ref):.3g}"
    assert _rel(ss, ss_ref) < FP32_RTOL, f"seed {seed}: sumsq {_rel(ss, ss_ref):.3g}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", ["fused", "cublas"])
def test_swiglu_bfloat16_no_worse_than_eager_and_sumsq_of_stored_values(device, variant):
    _require_triton(device)
    seed = random.randrange(2**31)
    x, w_gu, w_d = _swiglu_case(162, 64, 256, torch.bfloat16, seed, device)
    a = swiglu_gate_up(x, w_gu, backend="triton", variant=variant)
    gate, up = F.linear(x, w_gu).chunk(2, dim=-1)
    _no_worse_than_eager(a, F.silu(gate) * up, swiglu_gate_up_ref(x.double(), w_gu.double()),
                         f"gate_up seed {seed}")
    out, ss = down_residual_sumsq(a, w_d, x, backend="triton", variant=variant)
    out_ref, _ = down_residual_sumsq_ref(a.double(), w_d.double(), x.double())
    _no_worse_than_eager(out, x + F.linear(a, w_d), out_ref, f"down seed {seed}")
    # sumsq is of out as stored (bf16), not of the float32 value before rounding
    exact = out.double().pow(2).sum(-1)
    assert _rel(ss, exact) < 1e-6, f"seed {seed}: sumsq {_rel(ss, exact):.3g}"


def test_swiglu_tiles_leading_dims_and_split_sumsq():
    """Tile configurations agree (N_SPLIT > 1 sums partials in a fixed order); (B, T, C)
    inputs keep their leading shape."""
    _require_triton("cpu")
    seed = random.randrange(2**31)
    x, w_gu, w_d = _swiglu_case(2 * 9, 64, 48, torch.float32, seed)
    x3 = x.view(2, 9, 64)
    a = swiglu_gate_up(x3, w_gu, backend="triton")
    assert a.shape == (2, 9, 48)
    torch.testing.assert_close(swiglu_gate_up(x3, w_gu, backend="triton", tiles=(16, 16, 16, 4, 1)),
                               a, rtol=2e-6, atol=2e-6)
    out, ss = down_residual_sumsq(a, w_d, x3, backend="triton")
    assert out.shape == (2, 9, 64) and ss.shape == (2, 9)
    for tiles in [(16, 16, 16, 3, 4, 1), (16, 32, 16, 2, 4, 1)]:
        o2, s2 = down_residual_sumsq(a, w_d, x3, backend="triton", tiles=tiles)
        torch.testing.assert_close(o2, out, rtol=2e-6, atol=2e-6, msg=f"seed {seed} {tiles}")
        torch.testing.assert_close(s2, ss, rtol=2e-6, atol=0, msg=f"seed {seed} {tiles}")
        o3, s3 = down_residual_sumsq(a, w_d, x3, backend="triton", tiles=tiles)
        assert torch.equal(s3, s2), "split sums of squares must be deterministic"


# ---- rmsnorm_update -------------------------------------------------------------------------

def _update_case(B, T, C, dtype, seed, device="cpu"):
    """A mid-run state: a frozen sample, one whose block output is NaN (diverges)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(B, T, C, generator=gen).to(device, dtype)
    r = (3 * torch.randn(B, T, C, generator=gen)).to(device, dtype)
    if B > 2:
        r[1, T // 2, C // 3] = float("nan")
    ss = r.to(residual_dtype(dtype)).pow(2).sum(-1)
    st = SolveState.start(torch.zeros(B, 1, dtype=residual_dtype(dtype), device=device))
    st.active.copy_(torch.rand(B, generator=gen) < 0.8)
    st.active[1] = True
    st.nstep.copy_(torch.randint(0, 50, (B,), generator=gen, dtype=torch.int32))
    return z, r, ss, st


def _run_update(fn, z, r, ss, st, seed, t, **kw):
    out = torch.full_like(z, float("nan"))  # poisoned: rows active on entry must be written
    st = copy.deepcopy(st)
    step = new_step_counter(z.device, t)
    fn(z, r, ss, out, st, eps=1e-5, damping=0.9, sigma=0.05, tol=1e-3, stop_mode="rel",
       step=step, seed=seed, **kw)
    assert int(step) == t + 1
    return out, st


DTYPES3 = [torch.float32, torch.bfloat16, torch.float64]


@pytest.mark.parametrize("device,dtype,tiles", _grid(
    [(dt, t) for dt in DTYPES3 for t in [(), (4, 32, 3, 4)]],
    [(dt, t) for dt in DTYPES3[:2] for t in [(), (4, 32, 3, 4)]]))
def test_rmsnorm_update_matches_reference(device, dtype, tiles):
    _require_triton(device)
    seed, t = random.randrange(2**31), random.randrange(10_000)
    z, r, ss, st = _update_case(6, 9, 24, dtype, seed, device)
    out_ref, st_ref = _run_update(rmsnorm_update_ref, z, r, ss, st, seed, t)
    out, st_tr = _run_update(
        lambda *a, **k: rmsnorm_update(*a, backend="triton", tiles=tiles, **k), z, r, ss, st,
        seed, t)
    frozen = ~st.active
    assert torch.isnan(out[frozen]).all(), "a frozen sample's row was written"
    for name in ("active", "converged", "diverged", "nstep"):
        assert torch.equal(getattr(st_tr, name), getattr(st_ref, name)), f"seed {seed}: {name}"
    assert bool(st_tr.diverged[1]), "the NaN sample must be flagged"
    # eps: float32 ln / cos of different libraries (numpy here, torch in the reference)
    tol = {torch.float32: 2e-6, torch.bfloat16: 1e-2, torch.float64: 1e-6}[dtype]
    torch.testing.assert_close(out, out_ref, rtol=tol, atol=tol, equal_nan=True,
                               msg=f"seed {seed}")
    for name in ("abs_res", "rel_res"):
        torch.testing.assert_close(getattr(st_tr, name), getattr(st_ref, name), rtol=tol,
                                   atol=tol, equal_nan=True, msg=f"seed {seed}: {name}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tiles", [(), (4, 32, 3, 4)], ids=["one-program", "split-rows"])
@pytest.mark.parametrize("C", [24, 7], ids=["C-even-pairs", "C-odd"])
def test_rmsnorm_update_noise_is_block_steps_stream(device, tiles, C):
    """z_next - [(1 - l) z + l f_out] is sigma * standard_normal_ref(noise_key(seed, t + 1)),
    whether a row holds whole noise pairs (C even) or a pair straddles two rows (C odd)."""
    _require_triton(device)
    seed, t = random.randrange(2**31), random.randrange(10_000)
    B, T = 3, 9
    z, r, ss, st = _update_case(B, T, C, torch.float32, seed, device)
    r[1] = 1.0
    ss = r.pow(2).sum(-1)
    st.active.fill_(True)
    out = torch.empty_like(z)
    step = new_step_counter(device, t)
    rmsnorm_update(z, r, ss, out, st, eps=1e-5, damping=0.5, sigma=0.5, tol=0.0,
                   stop_mode="abs", step=step, seed=seed, backend="triton", tiles=tiles)
    f = r.double() * torch.rsqrt(ss.double() / C + 1e-5)[..., None]
    eps = (out.double() - 0.5 * z.double() - 0.5 * f) / 0.5
    expect = standard_normal_ref(noise_key(seed, t + 1), B, T * C, device).view(B, T, C)
    torch.testing.assert_close(eps, expect.double(), rtol=0, atol=2e-5, msg=f"seed {seed}")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the inf row
@pytest.mark.parametrize("backend", ["reference", "triton", "cpp"])
def test_looped_update_normed_equals_update_of_rms_norm(backend):
    """upd.normed(z, r, sumsq, eps) == upd(z, rms_norm(r)) over a few steps: the same noise
    stream, step counter, step norms and divergence flags (float32; f_out's rounding only)."""
    import eqkernels as eqk
    if backend == "triton":
        _require_triton("cpu")
    if backend == "cpp" and not _backends._usable("cpp", torch.device("cpu")):
        pytest.skip("compiled extension not built")
    seed = random.randrange(2**31)
    gen = torch.Generator().manual_seed(seed)
    B, T, C = 4, 9, 32
    z0 = torch.randn(B, T, C, generator=gen)
    rs = [3 * torch.randn(B, T, C, generator=gen) for _ in range(3)]
    rs[1][2, 0, 0] = float("inf")
    a = eqk.LoopedUpdate(B, damping=0.8, noise_std=0.1, seed=seed, backend=backend)
    b = eqk.LoopedUpdate(B, damping=0.8, noise_std=0.1, seed=seed, backend="reference")
    assert a.normed_backend == backend
    za, zb = z0.clone(), z0.clone()
    for r in rs:
        a.normed(za, r, r.pow(2).sum(-1), 1e-5)
        b(zb, F.rms_norm(r, (C,), eps=1e-5))
        assert torch.equal(a.diverged, b.diverged)
        torch.testing.assert_close(a.step_norm, b.step_norm, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert bool(a.diverged[2]) and int(a.step_counter) == int(b.step_counter) == 3
    torch.testing.assert_close(za, zb, rtol=1e-5, atol=1e-5, equal_nan=True, msg=f"seed {seed}")


# ---- torch.library registration ---------------------------------------------------------------

def _opcheck_cases(device):
    seed = random.randrange(2**31)
    h, inj, scale, w_gu, w_d = _token_case(2, 20, 16, 32, torch.float32, seed, device)
    packed = prepare_token_mix(w_gu, w_d)
    x, gu, wd = _swiglu_case(20, 16, 32, torch.float32, seed, device)
    a = swiglu_gate_up_ref(x, gu)
    z, r, ss, st = _update_case(4, 5, 8, torch.float32, seed, device)
    return {
        "token_mix": ("token_mix_triton_op", "token_mix",
                      [(h, packed.gate_up_t, packed.down_t, inj, None, False, 1e-5, []),
                       (h, packed.gate_up_t, packed.down_t, None, scale, False, 1e-5,
                        [16, 16, 4, 1]),
                       (h, packed.gate_up_t, packed.down_t, None, scale, True, 1e-5, [])]),
        "gate_up": ("swiglu_gate_up_triton_op", "swiglu",
                    [(x, gu, False, []), (x, gu, True, [])]),
        "down": ("down_residual_sumsq_triton_op", "swiglu",
                 [(a, wd, x, False, []), (a, wd, x, False, [16, 16, 16, 2, 4, 1]),
                  (a, wd, x, True, [])]),
        "rmsnorm_update": ("rmsnorm_update_triton_op", "rmsnorm_update",
                           [(z, r, ss, torch.zeros_like(z), st.active, st.converged, st.diverged,
                             st.nstep, st.abs_res, st.rel_res, new_step_counter(device, 5), seed,
                             0.9, 0.05, 1e-3, True, 1e-5, [])]),
    }


# Interpreted, a Triton kernel is invisible to AOT tracing (wrap_triton does not capture the
# interpreter's functions), so the aot_dispatch checks run on the GPU only (the gpu case).
INTERPRETED_OPCHECKS = ("test_schema", "test_autograd_registration", "test_faketensor")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["token_mix", "gate_up", "down", "rmsnorm_update"])
def test_opcheck_triton_ops(op, device):
    _require_triton(device)
    import importlib
    factory, module, cases = _opcheck_cases(device)[op]
    mod = importlib.import_module(f"eqkernels.ops.triton.{module}")
    kw = dict(test_utils=INTERPRETED_OPCHECKS) if device == "cpu" else {}
    for args in cases:
        torch.library.opcheck(getattr(mod, factory)(), args, **kw)


def test_ops_are_registered_with_their_schemas():
    _require_triton("cpu")
    from eqkernels.ops.triton.rmsnorm_update import rmsnorm_update_triton_op
    from eqkernels.ops.triton.swiglu import (down_residual_sumsq_triton_op,
                                             swiglu_gate_up_triton_op)
    from eqkernels.ops.triton.token_mix import token_mix_triton_op
    for factory in (token_mix_triton_op, swiglu_gate_up_triton_op, down_residual_sumsq_triton_op,
                    rmsnorm_update_triton_op):
        factory()
    mutated = {a.name for a in torch.ops.eqk.rmsnorm_update_triton.default._schema.arguments
               if a.alias_info is not None and a.alias_info.is_write}
    assert mutated == {"z_next", "active", "converged", "diverged", "nstep", "abs_res",
                       "rel_res", "step"}
    for name in ("token_mix_triton", "swiglu_gate_up_triton", "down_residual_sumsq_triton"):
        schema = getattr(torch.ops.eqk, name).default._schema
        assert not any(a.alias_info is not None and a.alias_info.is_write
                       for a in schema.arguments), name
    # meta tensors: shapes only (the fake kernels), nothing launched
    h = torch.empty(2, 81, 64, device="meta")
    out = torch.ops.eqk.token_mix_triton(h, torch.empty(96, 512, device="meta"),
                                         torch.empty(256, 96, device="meta"), None, None, False,
                                         1e-5, [])
    assert out.shape == h.shape and out.device.type == "meta"
    a = torch.ops.eqk.swiglu_gate_up_triton(torch.empty(7, 64, device="meta"),
                                            torch.empty(96, 64, device="meta"), False, [])
    assert a.shape == (7, 48)
    o, s = torch.ops.eqk.down_residual_sumsq_triton(a, torch.empty(64, 48, device="meta"),
                                                    torch.empty(7, 64, device="meta"), False, [])
    assert o.shape == (7, 64) and s.shape == (7,) and s.dtype == torch.float32


# ---- dispatch and argument checks ---------------------------------------------------------------

def test_cpu_default_is_the_reference_without_a_warning(recwarn):
    seed = random.randrange(2**31)
    h, inj, _, w_gu, w_d = _token_case(2, 9, 16, 32, torch.float32, seed)
    assert torch.equal(token_mix(h, w_gu, w_d, eps=1e-5, inj=inj),
                       token_mix_ref(h, w_gu, w_d, eps=1e-5, inj=inj))
    x, gu, wd = _swiglu_case(9, 16, 32, torch.float32, seed)
    assert torch.equal(swiglu_gate_up(x, gu), swiglu_gate_up_ref(x, gu))
    assert not [w for w in recwarn if "eqkernels" in str(w.message)]
    with pytest.raises(ValueError, match=r"token_mix: backend must be 'auto' or one of"):
        token_mix(h, w_gu, w_d, eps=1e-5, backend="cpp")
    with pytest.raises(ValueError, match=r"variant must be one of"):
        swiglu_gate_up(x, gu, variant="cutlass")


def _bad_token_mix():
    h = torch.randn(2, 9, 16)
    gu, d = torch.randn(64, 9), torch.randn(9, 32)
    yield "h 2-D", (h[0], gu, d), {}, r"token_mix: h must be a \(B, T, C\) tensor, got shape \[9, 16\]"
    yield "h int", (h.int(), gu, d), {}, r"token_mix: h must be torch.float32, torch.bfloat16 or"
    yield "w_gate_up odd", (h, gu[:63], d), {}, r"token_mix: w_gate_up must be a \(2I, T\) = \(2I, 9\)"
    yield "w_gate_up T", (h, torch.randn(64, 8), d), {}, r"w_gate_up must be a \(2I, T\)"
    yield "w_down shape", (h, gu, d.t()), {}, r"token_mix: w_down must be a \(T, I\) = \(9, 32\) matrix, got shape \[32, 9\]"
    yield "w_down dtype", (h, gu, d.double()), {}, r"token_mix: w_down must have h's dtype torch.float32, got torch.float64"
    yield "inj shape", (h, gu, d), dict(inj=h[:1]), r"token_mix: inj must have h's shape \[2, 9, 16\]"
    yield "in_scale shape", (h, gu, d), dict(in_scale=torch.ones(2, 8)), r"token_mix: in_scale must be a \(2, 9\) \(or \(18,\)\) torch.float32 tensor"
    yield "in_scale dtype", (h, gu, d), dict(in_scale=torch.ones(2, 9, dtype=torch.float64)), r"in_scale must be a \(2, 9\).*got shape \[2, 9\] and dtype torch.float64"
    yield "h strided", (h.transpose(0, 1).contiguous().transpose(0, 1), gu, d), {}, r"token_mix: h must be contiguous"
    yield "w on meta", (h, gu.to("meta"), d), {}, r"token_mix: w_gate_up must be on h's device cpu, got meta"
    yield "in_sumsq shape", (h, gu, d), dict(in_sumsq=torch.ones(18, 1)), r"token_mix: in_sumsq must be a \(2, 9\) \(or \(18,\)\) torch.float32 tensor"
    yield "scale and sumsq", (h, gu, d), dict(in_scale=torch.ones(2, 9), in_sumsq=torch.ones(2, 9)), r"token_mix: pass in_scale or in_sumsq, not both"


@pytest.mark.parametrize("what,args,kw,msg", list(_bad_token_mix()), ids=lambda v: v if isinstance(v, str) and " " in v else "")
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_token_mix_rejects_bad_arguments_alike_on_every_backend(what, args, kw, msg, backend):
    if backend == "triton":
        _require_triton("cpu")
    with pytest.raises(ValueError, match=msg):
        token_mix(*args, eps=1e-5, backend=backend, **kw)


def _bad_swiglu():
    x, gu, d = torch.randn(5, 16), torch.randn(64, 16), torch.randn(16, 32)
    a = torch.randn(5, 32)
    yield "gate_up x int", swiglu_gate_up, (x.long(), gu), r"swiglu_gate_up: x must be torch.float32"
    yield "gate_up w C", swiglu_gate_up, (x, gu[:, :8]), r"swiglu_gate_up: w_gate_up must be a \(2I, C\) = \(2I, 16\) matrix"
    yield "gate_up w dtype", swiglu_gate_up, (x, gu.bfloat16()), r"swiglu_gate_up: w_gate_up must have x's dtype"
    yield "gate_up x strided", swiglu_gate_up, (x.t().contiguous().t(), gu), r"swiglu_gate_up: x must be contiguous"
    yield "down w shape", down_residual_sumsq, (a, d.t(), x), r"down_residual_sumsq: w_down must be a \(C, I\) = \(16, 32\) matrix, got shape \[32, 16\]"
    yield "down residual rows", down_residual_sumsq, (a, d, x[:4]), r"down_residual_sumsq: residual must be a \(..., C\) tensor with a's leading shape"
    yield "down residual dtype", down_residual_sumsq, (a, d, x.double()), r"down_residual_sumsq: residual must have a's dtype"
    yield "down a on meta", down_residual_sumsq, (a, d.to("meta"), x), r"down_residual_sumsq: w_down must be on a's device cpu, got meta"


@pytest.mark.parametrize("what,fn,args,msg", list(_bad_swiglu()), ids=lambda v: v if isinstance(v, str) and " " in v else "")
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_swiglu_rejects_bad_arguments_alike_on_every_backend(what, fn, args, msg, backend):
    if backend == "triton":
        _require_triton("cpu")
    with pytest.raises(ValueError, match=msg):
        fn(*args, backend=backend)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_rmsnorm_update_rejects_bad_arguments(backend):
    if backend == "triton":
        _require_triton("cpu")
    z, r, ss, st = _update_case(3, 4, 8, torch.float32, 1)
    kw = dict(eps=1e-5, damping=0.9, sigma=0.0, tol=0.0, stop_mode="abs",
              step=new_step_counter(), backend=backend)
    for args, msg in [((z, r[:, :3], ss, z), r"rmsnorm_update: r must have z's shape \[3, 4, 8\]"),
                      ((z, r.double(), ss, z), r"rmsnorm_update: r must have z's dtype"),
                      ((z, r, ss[:, :3], z), r"rmsnorm_update: sumsq must be a \(3, 4\) \(or \(12,\)\) torch.float32 tensor"),
                      ((z, r, ss.double(), z), r"sumsq must be a \(3, 4\).*dtype torch.float64"),
                      ((z[0, 0], r[0, 0], ss[0, :1], z[0, 0]), r"rmsnorm_update: z must be a \(B, ..., C\) tensor")]:
        with pytest.raises(ValueError, match=msg):
            rmsnorm_update(*args, st, **kw)
    with pytest.raises(ValueError, match=r"rmsnorm_update: eps must be a float >= 0"):
        rmsnorm_update(z, r, ss, z, st, **dict(kw, eps=-1.0))
    bad = copy.deepcopy(st)
    bad.nstep = bad.nstep.long()
    with pytest.raises(ValueError, match=r"rmsnorm_update: nstep must be a \(3,\) torch.int32"):
        rmsnorm_update(z, r, ss, z, bad, **kw)


def test_block_step_reference_is_unchanged_by_the_normed_path():
    """rmsnorm_update_ref is block_step_ref on the unrounded normed output: with r already
    normalised (sumsq = C, eps = 0) it is block_step on r itself, same noise and flags."""
    seed, t = random.randrange(2**31), random.randrange(1000)
    z, r, _, st = _update_case(4, 6, 16, torch.float64, seed)
    r = torch.nan_to_num(r)
    r = r / r.pow(2).mean(-1, keepdim=True).sqrt()
    ss = torch.full((4, 6), 16.0, dtype=torch.float64)
    out1, st1 = _run_update(rmsnorm_update_ref, z, r, ss, st, seed, t)
    out1e = torch.full_like(z, float("nan"))
    st2 = copy.deepcopy(st)
    block_step(z.view(4, -1), r.view(4, -1), out1e.view(4, -1), st2, damping=0.9, sigma=0.05,
               tol=1e-3, stop_mode="rel", step=new_step_counter(None, t), seed=seed,
               backend="reference")
    # eps = 1e-5 in _run_update vs 0 here: f differs by ~eps / 2 relative
    torch.testing.assert_close(out1, out1e, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert torch.equal(st1.diverged, st2.diverged) and torch.equal(st1.nstep, st2.nstep)

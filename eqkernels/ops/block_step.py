"""Fused block-step epilogue: damped update, noise, residual norms and halting in one pass.

After the block has computed f_out = block(z + injection) (its GEMMs stay in
PyTorch), one op does, for every sample b that is active on entry:

    z_next = (1 - damping) * z + damping * f_out + sigma * eps
    abs_res = ||z_next - z||,   rel_res = abs_res / (||z_next|| + REL_EPS)
    nstep += 1; a non-finite norm marks the sample diverged, a stop-mode residual
    below tol marks it converged; either one deactivates it.

Samples inactive on entry are left untouched (their z_next row is not written).
z_next may alias z. Arithmetic is in float32 (float64 for float64 z), norms are
accumulated in float32 or wider even for bfloat16 z; residuals are stored as
float32 (float64 for float64 z).

The noise is counter-based, so every backend draws the same eps, bit for bit. Element i of the
flattened (B, n) tensor (i mod 2**32) at step key k belongs to the pair c = i >> 1, whose two
elements 2c and 2c + 1 are the two outputs of one Box-Muller transform (integer arithmetic mod
2**32, bit j = (h >> j) & 1):

    (h0, h1) = Philox2x32-10(counter (c, 0), key k)      Salmon et al., SC11 (below)
    u0 = (2 (h0 >> 9) + 1) / 2**24                        in (0, 1), exact in float32
    rad = sqrt(-2 * LOG(u0))
    r = 2 ((h1 >> 9) & (2**21 - 1)) + 1 - 2**21;  v = r / 2**24 in (-1/8, 1/8), exact
    C = COS(v), negated when bit 31 of h1 is set;  S = SIN(v)
    (eps[2c], eps[2c + 1]) = (rad * C, rad * S), or (rad * S, rad * C) when bit 30 of h1 is set

(2 pi v is an angle within 1/8 turn of 0; the sign puts it around 0 or 1/2 turn, the swap
reflects it to around 1/4 or 3/4 turn: the angle is uniform over the 2**23 odd multiples of
2 pi / 2**24. rad <= sqrt(48 ln 2) = 5.77: P(|N| > 5.77) = 8e-9 is cut off.)
Philox2x32-10: (L, R) = (c, 0); ten rounds of (L, R) <- (hi(M L) ^ k_i ^ R, lo(M L)) with
hi/lo the halves of the 64-bit product, M = PHILOX_M = 0xD256D193, k_i = k + i * PHILOX_W
(0x9E3779B9); (h0, h1) = (L, R). Ten rounds is the generator's standard (it passes TestU01's
BigCrush with margin); a pair costs ten 32x32->64 multiplies, 5 an element.
LOG, COS and SIN are fixed float32 programs (coefficients: constants.NOISE_*_POLY, exact
float32 values; fma = one rounding; every other operation rounded to float32 on its own):
    LOG(u):  ix = bits(u) as int32;  e = (ix - 0x3f3504f3) >> 23 (arithmetic);
             t = float(ix - e * 2**23 as bits) - 1;
             q = Q8;  q = fma(q, t, Q_j) for j = 7 .. 0;
             LOG = fma(float(e), LN2, fma(t * t, q, t))
    w = v * v
    SIN(v) = fma(v, S0, v * (w * fma(fma(S3, w, S2), w, S1)))
    COS(v) = fma(w, fma(fma(fma(C3, w, C2), w, C1), w, C0), 1)
and sqrt is the correctly rounded one. Against exact math, over every possible u0 and every v
(scripts/fit_noise_polynomials.py): LOG within 0.86 ulp, rad 0.96 ulp, SIN 1.08 ulp, COS
0.99 ulp; eps within 2 ulp of rad (1.92 the worst of 4M pairs; tests/test_noise_stream.py).
The stream repeats every 2**32 elements.
Every backend evaluates exactly these operations: the C++ and CUDA kernels through
csrc/common/kernel_common.h (one source for both), Triton through the helpers of
ops/triton/block_step.py, this module in PyTorch (fma through float64, exactly). So eps is
bit-identical on every backend; only the epilogue's own mul/add may be contracted into an FMA
by a compiler that is not told otherwise (Triton inside torch.compile: 1 ulp of z_next there).
(Until 2026-12 the stream hashed four lowbias32 rounds an element and used one Box-Muller
output, with each library's own log and cos; runs seeded before then draw other noise now.)
The key of update number t of a run seeded with `seed` is `noise_key(seed, t)`. The op reads
t from the device: `step` is a (1,) int64 tensor counting the updates drawn so far; a call
draws the key noise_key(seed, step + 1) and stores step + 1, on the device, so a CUDA graph
of K captured updates draws K different noise fields on every replay, and a run is
reproducible from its seed (the same stream as passing noise_key(seed, t) by hand).

The op is a torch.library op (schema: csrc/ops/block_step.cpp; mutated arguments marked):
torch.ops.eqk.block_step runs the C++ kernel on CPU tensors and the CUDA one on CUDA tensors;
torch.ops.eqk.block_step_triton is the same schema on the Triton kernel. `block_step` below is
the dispatcher: it checks the arguments once (one message for every backend), picks a backend,
and calls it.
"""
from __future__ import annotations

from typing import Optional

import torch

from eqkernels import _backends
from eqkernels.ops import _checks
from eqkernels.ops._checks import STATE_DTYPES, residual_dtype  # noqa: F401 (public here)
from eqkernels.ops.constants import HASH_MUL as _HASH_MUL
from eqkernels.ops.constants import MASK32 as _MASK32
from eqkernels.ops.constants import (NOISE_COS_POLY, NOISE_LN2, NOISE_LOG_POLY, NOISE_SIN_POLY,
                                     NOISE_STEP_OFFSET, PHILOX_M, PHILOX_ROUNDS, PHILOX_W,
                                     REL_EPS)
from eqkernels.ops.tracking import STOP_MODES, SolveState



def lowbias32(x: int) -> int:
    """Wellons' lowbias32 on a Python int (the host side of the noise stream)."""
    x &= _MASK32
    x ^= x >> 16
    x = (x * _HASH_MUL[0]) & _MASK32
    x ^= x >> 15
    x = (x * _HASH_MUL[1]) & _MASK32
    x ^= x >> 16
    return x


def noise_key(seed: int, step: int) -> int:
    """The 32-bit noise key of iteration `step` of a run seeded with `seed`."""
    return lowbias32(lowbias32(seed) ^ lowbias32(step + NOISE_STEP_OFFSET))


def new_step_counter(device=None, start: int = 0) -> torch.Tensor:
    """A (1,) int64 step counter on `device`: the updates drawn so far (start)."""
    return torch.full((1,), int(start), dtype=torch.int64, device=device)


def _inv_xorshift(x: int, s: int) -> int:
    y = x
    for _ in range(32 // s + 1):
        y = x ^ (y >> s)
    return y & _MASK32


def _inv_lowbias32(x: int) -> int:
    x = _inv_xorshift(x & _MASK32, 16)
    x = (x * pow(_HASH_MUL[1], -1, 2**32)) & _MASK32
    x = _inv_xorshift(x, 15)
    x = (x * pow(_HASH_MUL[0], -1, 2**32)) & _MASK32
    return _inv_xorshift(x, 16)


def counter_for_key(key: int) -> int:
    """The counter value c with noise_key(0, c + 1) == key: runs an explicit (legacy) key
    through the counter-based op (lowbias32 is a bijection of uint32, so c exists)."""
    return (_inv_lowbias32(_inv_lowbias32(key)) - NOISE_STEP_OFFSET - 1) & _MASK32


def noise_key_t(seed: int, step: torch.Tensor) -> torch.Tensor:
    """noise_key(seed, step) on the device: step an int64 tensor, the keys int64 in [0, 2**32)."""
    h = _lowbias32_t((step + NOISE_STEP_OFFSET) & _MASK32)
    return _lowbias32_t(h ^ lowbias32(seed))


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    # x * c mod 2**32 without overflowing int64: split c into 16-bit halves.
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _MASK32


def _lowbias32_t(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 elementwise on an int64 tensor holding uint32 values."""
    x = x ^ (x >> 16)
    x = _mul32(x, _HASH_MUL[0])
    x = x ^ (x >> 15)
    x = _mul32(x, _HASH_MUL[1])
    return x ^ (x >> 16)


def _fma32(a: torch.Tensor, b, c) -> torch.Tensor:
    """fma(a, b, c) of float32 values rounded once to float32, computed exactly in float64:
    a * b is exact there; the sum rounds once, and rounding that to float32 can only differ
    from one rounding when it lands exactly halfway between two floats while the exact sum does
    not: then it moves one float64 ulp towards the exact sum (TwoSum's error) first."""
    p = a.double() * (b.double() if isinstance(b, torch.Tensor) else float(b))
    cd = c.double() if isinstance(c, torch.Tensor) else torch.full_like(p, float(c))
    s = p + cd
    bb = s - p
    err = (p - (s - bb)) + (cd - bb)
    bits = s.view(torch.int64)
    halfway = (bits & 0x1FFFFFFF) == 0x10000000
    toward = torch.where((err > 0) == (s > 0), 1, -1)
    bits = torch.where(halfway & (err != 0), bits + toward, bits)
    return bits.view(torch.float64).to(torch.float32)


def _umul32(x: torch.Tensor, c: int):
    """(hi, lo) 32-bit halves of x * c for int64 tensors x of uint32 values and a uint32 c,
    without overflowing int64 (16-bit halves of x)."""
    x1, x0 = x >> 16, x & 0xFFFF
    p0 = x0 * c                          # < 2**48
    p1 = x1 * c                          # < 2**48
    lo = (p0 + ((p1 & 0xFFFF) << 16)) & _MASK32
    hi = (p1 + (p0 >> 16)) >> 16
    return hi, lo


def philox2x32_ref(c0: torch.Tensor, c1, key):
    """Philox2x32-10 (module docstring) of counters (c0, c1) (int64 tensors of uint32 values, or
    c1 an int) under a uint32 key (an int or an int64 tensor of one element): (h0, h1)."""
    for i in range(PHILOX_ROUNDS):
        hi, lo = _umul32(c0, PHILOX_M)
        c0, c1 = hi ^ ((key + i * PHILOX_W) & _MASK32) ^ c1, lo
    return c0, c1


def _log32(u: torch.Tensor) -> torch.Tensor:
    """LOG of the module docstring on float32 u > 0 (normal)."""
    ix = u.view(torch.int32)
    e = (ix - 0x3F3504F3) >> 23
    t = (ix - e * (1 << 23)).view(torch.float32) - 1.0
    q = torch.full_like(t, NOISE_LOG_POLY[8])
    for coef in NOISE_LOG_POLY[7::-1]:
        q = _fma32(q, t, coef)
    return _fma32(e.to(torch.float32), NOISE_LN2, _fma32(t * t, q, t))


def _sincos32(r: torch.Tensor):
    """(COS(v), SIN(v)) of the module docstring for v = r / 2**24, r an integer tensor."""
    v = r.to(torch.float32) * 2.0**-24
    w = v * v
    ps = _fma32(_fma32(torch.full_like(w, NOISE_SIN_POLY[3]), w, NOISE_SIN_POLY[2]), w,
                NOISE_SIN_POLY[1])
    sn = _fma32(v, NOISE_SIN_POLY[0], v * (w * ps))
    pc = torch.full_like(w, NOISE_COS_POLY[3])
    for coef in NOISE_COS_POLY[2::-1]:
        pc = _fma32(pc, w, coef)
    return _fma32(w, pc, 1.0), sn


def standard_normal_pairs_ref(key, c: torch.Tensor):
    """(eps[2c], eps[2c + 1]) float32 for pair counters c (an int64 tensor of values in
    [0, 2**31)) at step key `key` (an int, or an int64 tensor of one element)."""
    key = key.reshape(()) if isinstance(key, torch.Tensor) else key
    h0, h1 = philox2x32_ref(c, 0, key & _MASK32)
    u0 = ((h0 >> 9) * 2 + 1).to(torch.float32) * 2.0**-24
    # sqrt correctly rounded: float64 then float32 (exact: 53 >= 2 * 24 + 2 bits), because
    # torch's float32 sqrt on the CPU is not (1 ulp off for a third of these inputs)
    rad = torch.sqrt((-2.0 * _log32(u0)).double()).to(torch.float32)
    cs, sn = _sincos32(((h1 >> 8) & 0x3FFFFE) + (1 - (1 << 21)))
    cs = torch.where(((h1 >> 31) & 1) == 1, -cs, cs)
    swap = ((h1 >> 30) & 1) == 1
    return rad * torch.where(swap, sn, cs), rad * torch.where(swap, cs, sn)


def standard_normal_ref(key, B: int, n: int, device=None) -> torch.Tensor:
    """(B, n) float32 eps of the noise stream at key `key` (see the module docstring).

    key: an int, or an int64 tensor of one element (a key computed on the device)."""
    N = B * n
    pairs = torch.arange((N + 1) // 2, device=device, dtype=torch.int64) & (_MASK32 >> 1)
    e0, e1 = standard_normal_pairs_ref(key, pairs)
    return torch.stack((e0, e1), dim=1).reshape(-1)[:N].reshape(B, n)


def block_step_ref(z, f_out, z_next, state: SolveState, *, damping: float, sigma: float,
                   tol: float, stop_mode: str, step: Optional[torch.Tensor] = None,
                   seed: int = 0, key: Optional[int] = None) -> None:
    """Plain-PyTorch epilogue, in place on z_next, state and step (see the module docstring).

    z, f_out, z_next: (B, n) of one dtype in STATE_DTYPES (z_next may alias z);
    state.abs_res / rel_res: (B,) residual_dtype(z.dtype). best_* fields are not used.
    step: (1,) int64 step counter (drawn: noise_key(seed, step + 1); stored: step + 1), or
    key: an explicit noise key instead (then nothing counts).
    """
    B, n = z.shape
    act = state.active.clone()
    wide = torch.float64 if z.dtype == torch.float64 else torch.float32
    zw, fw = z.to(wide), f_out.to(wide)
    new = (1.0 - damping) * zw + damping * fw
    if key is None:
        key = noise_key_t(seed, step + 1)
        step += 1
    if sigma != 0:
        new = new + sigma * standard_normal_ref(key, B, n, z.device).to(wide)
    new_t = new.to(z.dtype)  # what is stored; the norms are of the stored values
    diff = new_t.to(torch.float64) - z.to(torch.float64)
    abs64 = diff.norm(dim=1)
    next_norm64 = new_t.to(torch.float64).norm(dim=1)
    rel64 = abs64 / (next_norm64 + REL_EPS)

    state.nstep += act.to(state.nstep.dtype)
    state.abs_res.copy_(torch.where(act, abs64.to(state.abs_res.dtype), state.abs_res))
    state.rel_res.copy_(torch.where(act, rel64.to(state.rel_res.dtype), state.rel_res))
    finite = torch.isfinite(abs64) & torch.isfinite(next_norm64)
    state.diverged |= act & ~finite
    metric = abs64 if stop_mode == "abs" else rel64
    done = act & finite & (metric < tol)
    state.converged |= done
    state.active.copy_(act & finite & ~done)
    z_next.copy_(torch.where(act[:, None], new_t, z_next))


def check_args(z, f_out, z_next, state: SolveState, step: torch.Tensor) -> None:
    """The op's argument check (the C++ op's, word for word: csrc/ops/block_step.cpp)."""
    _checks.block_step(z, f_out, z_next, state.active, state.converged, state.diverged,
                       state.nstep, state.abs_res, state.rel_res, step)


def _counter(step, seed, key, device):
    if key is None:
        if step is None:
            raise ValueError("block_step: pass step (the (1,) int64 noise step counter) or key")
        return step, seed
    return new_step_counter(device, counter_for_key(int(key))), 0  # legacy explicit key


def _reference(z, f_out, z_next, state, *, damping, sigma, tol, stop_mode, step=None, seed=0,
               key=None):
    check_args(z, f_out, z_next, state, new_step_counter(z.device) if step is None else step)
    block_step_ref(z, f_out, z_next, state, damping=damping, sigma=sigma, tol=tol,
                   stop_mode=stop_mode, step=step, seed=seed, key=key)


def _call_op(op, z, f_out, z_next, state, damping, sigma, tol, stop_mode, step, seed, key):
    step, seed = _counter(step, seed, key, z.device)
    op(z, f_out, z_next, state.active, state.converged, state.diverged, state.nstep,
       state.abs_res, state.rel_res, step, int(seed), float(damping), float(sigma), float(tol),
       stop_mode == "rel")


def _compiled(z, f_out, z_next, state, *, damping, sigma, tol, stop_mode, step=None, seed=0,
              key=None):
    # The C++ op checks the arguments itself (it can be called directly): same messages.
    _call_op(torch.ops.eqk.block_step, z, f_out, z_next, state, damping, sigma, tol, stop_mode,
             step, seed, key)


def _triton(z, f_out, z_next, state, *, damping, sigma, tol, stop_mode, step=None, seed=0,
            key=None):
    from eqkernels.ops.triton.block_step import block_step_triton_op
    _call_op(block_step_triton_op(), z, f_out, z_next, state, damping, sigma, tol, stop_mode,
             step, seed, key)


_IMPLEMENTATIONS = {"reference": _reference, "triton": _triton, "cpp": _compiled,
                    "cuda": _compiled}


def resolve_block_step(device: torch.device, backend: str = "auto"):
    """(backend name, step function) for tensors on `device`; resolve once per solve.

    The function is step(z, f_out, z_next, state, *, damping, sigma, tol, stop_mode,
    step=None, seed=0, key=None): block_step_ref's arguments, the noise drawn from the step
    counter `step` (or an explicit legacy `key`). It returns None: the samples still active
    are read from state.active, on the device.
    """
    name = _backends.pick("block_step", device, backend)
    return name, _backends.with_fallback("block_step", name, _IMPLEMENTATIONS)


def block_step(z, f_out, z_next, state: SolveState, *, damping: float, sigma: float, tol: float,
               stop_mode: str, step: Optional[torch.Tensor] = None, seed: int = 0,
               key: Optional[int] = None, backend: str = "auto") -> str:
    """One fused epilogue on the chosen backend; returns the backend's name."""
    if stop_mode not in STOP_MODES:
        raise ValueError(f"stop_mode must be one of {STOP_MODES}, got {stop_mode!r}")
    name, fn = resolve_block_step(z.device, backend)
    fn(z, f_out, z_next, state, damping=damping, sigma=sigma, tol=tol, stop_mode=stop_mode,
       step=step, seed=seed, key=key)
    return name

"""Triton backend of the fused block-step epilogue (semantics: `eqkernels.ops.block_step`).

Two launches. The update kernel takes BLOCK_B samples (1 for wide rows; several when rows
are short, so the small per-sample work is shared) and one chunk of CHUNK columns of them (on a
GPU a wide row is split over several programs, so B = 64 rows still fill every SM and the
last wave is short), and makes one pass over it in BLOCK_N steps: load z and f_out, form
    new = (1 - damping) z + damping f_out + sigma eps      (in W = float32/float64),
store it to z_next as T (rows active on entry only), and accumulate ||T(new) - z||^2 and
||T(new)||^2 in float64, written per (row, chunk) to a float64 workspace. The finish kernel
sums each row's chunks (in a fixed order: deterministic) and writes nstep, the residuals and
the halting flags, and advances the step counter (program 0, after the update kernel has read
it: no host read, so a CUDA graph of K updates draws K different noise fields).
eps is the counter-based stream of the reference, bit for bit: the helpers below evaluate the
same float32 operations (module docstring of ops/block_step.py). Pairs: when n is even every
row starts on an even flat index, so a tile draws BLOCK_N / 2 pairs and updates its even
columns with their first outputs and its odd columns with their second (two half tiles, no
interleaving shuffle); for odd n each element draws its own pair and keeps its half.
Runs compiled on CUDA tensors, or under TRITON_INTERPRET=1 on CPU tensors.

Noise helpers (stable names; other kernels import them, e.g. a fused update's epilogue). All
take and return tensors of any shape; uint32 counters, float32 results:
    _noise_key(seed, step) -> key             block_step.noise_key: seed uint32, step int64
    _lowbias32(x) -> uint32                   Wellons' mixer (the key derivation's)
    _philox2x32(c0, c1, key) -> (h0, h1)      Philox2x32-10, uint32 in and out
    _standard_normal_pair(c, key, INTERPRETED) -> (eps[2c], eps[2c + 1])
                                              c: pair counters (flat index >> 1) in [0, 2**31)
    _standard_normal(idx, key, INTERPRETED) -> eps[idx]
                                              idx: flat indices (mod 2**32); draws idx's whole
                                              pair and keeps one half: twice the work of the
                                              pair helper per element (kept for callers that
                                              index elements; prefer the pair helper and
                                              even / odd columns, or tl.interleave(eps0, eps1))
    _fma32(a, b, c, INTERPRETED) -> fma       float32 fma rounded once, also interpreted
INTERPRETED (constexpr): the interpreter's tl.fma rounds twice under triton 3.6, so there the
fma is computed exactly in float64 (as the PyTorch reference does).

Launches run under the tensors' device (torch.cuda.device), with fp fusion off
(enable_fp_fusion=False: no c_z*z + c_f*f or new + sigma*eps contracted into an FMA, so the
noiseless step rounds as the reference's separate mul/add; inside torch.compile, which does
not forward that launch option, the compiled kernel may contract them: agreement then is to
an ulp of the update, not bitwise; eps itself has no mul/add pair left to contract). Column
offsets are 64-bit (cols * stride_n may pass 2**31).
The op: `block_step_triton_op()`, eqk::block_step_triton, eqk::block_step's schema.

Interpreter (triton 3.9) pitfalls avoided below: `~` on booleans is mistyped (we
compare with 0 instead), and so is a *scalar* comparison broadcast into a block
(every per-sample flag here is a (BLOCK_B,) vector, never a scalar); float32 ->
bfloat16 casts truncate (we round to nearest even by hand); annotated float
arguments arrive as Python floats (no .to: we use tl.full).
"""
from __future__ import annotations

import contextlib
import functools

import torch
import triton
import triton.language as tl

from eqkernels.ops import _checks
from eqkernels.ops.constants import HASH_MUL as _HASH_MUL
from eqkernels.ops.constants import MASK32 as _MASK32
from eqkernels.ops.constants import (NOISE_COS_POLY, NOISE_LN2, NOISE_LOG_POLY, NOISE_SIN_POLY,
                                     NOISE_STEP_OFFSET, PHILOX_M, PHILOX_ROUNDS, PHILOX_W,
                                     REL_EPS)

# Elements of one (BLOCK_B, BLOCK_N) tile on a GPU: 4 a thread at 8 warps without noise; with
# noise 512 (256 pairs: one a thread), whose hash / Box-Muller temporaries stay in registers
# (scripts/triton_aot.py checks: no spill). The interpreter pays per operation, not per
# element, so it takes big tiles.
_TILE_ELEMS_GPU = 1024
_TILE_ELEMS_GPU_NOISE = 512
_TILE_ELEMS_INTERPRETED = 1 << 16
_MAX_BLOCK_N_INTERPRETED = 4096
# Columns of one program on a GPU: tiles a program streams before it hands its partial sums
# on. Wide rows are split (n = 41472: 6 chunks of 8192), narrow ones are one chunk.
_CHUNK_TILES_GPU = 8
_NUM_WARPS = 8
_FINISH_ROWS = 128  # rows of one finish program
_HASH_MUL0 = tl.constexpr(_HASH_MUL[0])  # lowbias32's multipliers (ops/constants.py)
_HASH_MUL1 = tl.constexpr(_HASH_MUL[1])
_STEP_OFFSET = tl.constexpr(NOISE_STEP_OFFSET)
# (one constexpr global each: a jitted function cannot index a list of them)
_LOG0, _LOG1, _LOG2, _LOG3, _LOG4, _LOG5, _LOG6, _LOG7, _LOG8 = (
    tl.constexpr(c) for c in NOISE_LOG_POLY)
_SIN0, _SIN1, _SIN2, _SIN3 = (tl.constexpr(c) for c in NOISE_SIN_POLY)
_COS0, _COS1, _COS2, _COS3 = (tl.constexpr(c) for c in NOISE_COS_POLY)
_LN2 = tl.constexpr(NOISE_LN2)
_PHILOX_M = tl.constexpr(PHILOX_M)
_PHILOX_W = tl.constexpr(PHILOX_W)
_PHILOX_ROUNDS = tl.constexpr(PHILOX_ROUNDS)
# Launch options the spec's bit parity needs (see the module docstring).
LAUNCH_OPTIONS = dict(enable_fp_fusion=False)


def launch_guard(device: torch.device):
    """Context that makes `device` current for a launch (Triton launches on the current
    device's stream, whatever the tensors' device)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


@triton.jit
def _offsets(rows64, cols, stride_b, stride_n):
    """(BLOCK_B, BLOCK_N) element offsets rows * stride_b + cols * stride_n in int64: a
    column term (n - 1) * stride_n may pass 2**31 even where stride_n fits int32."""
    return rows64[:, None] * stride_b + cols.to(tl.int64) * stride_n


@triton.jit
def _noise_key(seed, step):
    """block_step.noise_key(seed, step) for a uint32 seed and an int64 step."""
    s = step.to(tl.uint32) + tl.full([], _STEP_OFFSET, tl.uint32)
    return _lowbias32(_lowbias32(seed) ^ _lowbias32(s))


@triton.jit
def _lowbias32(x):
    """Wellons' lowbias32 on uint32 x: multiplies wrap mod 2**32, shifts are logical."""
    x = x ^ (x >> 16)
    x = x * tl.full([], _HASH_MUL0, tl.uint32)
    x = x ^ (x >> 15)
    x = x * tl.full([], _HASH_MUL1, tl.uint32)  # > 2**31: a bare literal would be int64
    return x ^ (x >> 16)


@triton.jit
def _fma32(a, b, c, INTERPRETED: tl.constexpr):
    """float32 a * b + c rounded once. Interpreted: exactly in float64 (block_step._fma32's
    algorithm; the interpreter's tl.fma rounds twice under triton 3.6)."""
    if INTERPRETED:
        # (b, c may be float constexprs: fp64 + a Python float stays fp64, exactly)
        p = a.to(tl.float64) * b
        cd = tl.zeros_like(p) + c
        s = p + cd
        bb = s - p
        err = (p - (s - bb)) + (cd - bb)
        bits = s.to(tl.int64, bitcast=True)
        halfway = (bits & 0x1FFFFFFF) == 0x10000000
        toward = tl.where((err > 0) == (s > 0), 1, -1).to(tl.int64)
        bits = tl.where(halfway & (err != 0), bits + toward, bits)
        return bits.to(tl.float64, bitcast=True).to(tl.float32)
    else:
        return tl.fma(a, b, c)


@triton.jit
def _log32(u, INTERPRETED: tl.constexpr):
    """LOG of the spec (ops/block_step.py) on float32 u > 0."""
    ix = u.to(tl.int32, bitcast=True)
    e = (ix - 0x3F3504F3) >> 23  # arithmetic shift of int32
    t = (ix - e * 8388608).to(tl.float32, bitcast=True) - 1.0
    q = _fma32(tl.full(t.shape, _LOG8, tl.float32), t, _LOG7, INTERPRETED)
    q = _fma32(q, t, _LOG6, INTERPRETED)
    q = _fma32(q, t, _LOG5, INTERPRETED)
    q = _fma32(q, t, _LOG4, INTERPRETED)
    q = _fma32(q, t, _LOG3, INTERPRETED)
    q = _fma32(q, t, _LOG2, INTERPRETED)
    q = _fma32(q, t, _LOG1, INTERPRETED)
    q = _fma32(q, t, _LOG0, INTERPRETED)
    return _fma32(e.to(tl.float32), _LN2, _fma32(t * t, q, t, INTERPRETED), INTERPRETED)


@triton.jit
def _philox2x32(c0, c1, key):
    """Philox2x32-10 of uint32 counters (c0, c1) under a uint32 key: (h0, h1) (ops/block_step.py)."""
    m = tl.full([], _PHILOX_M, tl.uint32)
    for i in tl.static_range(_PHILOX_ROUNDS):
        ki = key + tl.full([], (i * _PHILOX_W) & 0xFFFFFFFF, tl.uint32)
        hi = tl.umulhi(c0, m)  # ptxas makes umulhi and the low product one IMAD.WIDE
        c0, c1 = hi ^ ki ^ c1, c0 * m
    return c0, c1


@triton.jit
def _standard_normal_pair(c, key, INTERPRETED: tl.constexpr):
    """(eps[2c], eps[2c + 1]) float32 of the reference stream for uint32 pair counters c."""
    h0, h1 = _philox2x32(c, tl.zeros_like(c), key)
    # u0 = (2 (h0 >> 9) + 1) / 2**24: 1.m from the bits minus (1 - 2**-24), exactly
    u0 = ((h0 >> 9) | 0x3F800000).to(tl.float32, bitcast=True) - 0.99999994039535522
    rad = tl.sqrt_rn(-2.0 * _log32(u0, INTERPRETED))
    v = (((h1 >> 8) & 0x3FFFFE).to(tl.int32) + (1 - 0x200000)).to(tl.float32) * 5.9604644775390625e-08
    w = v * v
    ps = _fma32(_fma32(tl.full(w.shape, _SIN3, tl.float32), w, _SIN2, INTERPRETED), w,
                _SIN1, INTERPRETED)
    sn = _fma32(v, _SIN0, v * (w * ps), INTERPRETED)
    pc = _fma32(tl.full(w.shape, _COS3, tl.float32), w, _COS2, INTERPRETED)
    pc = _fma32(pc, w, _COS1, INTERPRETED)
    pc = _fma32(pc, w, _COS0, INTERPRETED)
    cs = _fma32(w, pc, 1.0, INTERPRETED)
    cs = tl.where((h1 >> 31) != 0, -cs, cs)
    swap = ((h1 >> 30) & 1) != 0
    return rad * tl.where(swap, sn, cs), rad * tl.where(swap, cs, sn)


@triton.jit
def _standard_normal(idx, key, INTERPRETED: tl.constexpr):
    """eps[idx] of the reference stream for uint32 flat indices idx (mod 2**32): idx's pair,
    one half of it (twice the pair helper's work an element)."""
    e0, e1 = _standard_normal_pair(idx >> 1, key, INTERPRETED)
    return tl.where((idx & 1) != 0, e1, e0)


@triton.jit
def _to_bf16_rne(x):
    """float32 -> bfloat16 rounded to nearest even (the interpreter's cast truncates)."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    bits = tl.where(x != x, 0x7FC0, bits)  # NaN stays a (quiet) NaN, never rounds to inf
    return bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def _update_tile(z_ptr, f_ptr, out_ptr, rows64, cols, cmask, eps, stride_zb, stride_zn,
                 stride_fb, stride_fn, stride_ob, stride_on, cz, cf, sig, W: tl.constexpr,
                 HAS_NOISE: tl.constexpr, INTERPRETED: tl.constexpr):
    """new = cz z + cf f (+ sig eps) on one tile, stored as T where cmask; returns the tile's
    (T(new) - z)^2 and T(new)^2 in float64 (0 outside cmask)."""
    T = z_ptr.dtype.element_ty
    zv = tl.load(z_ptr + _offsets(rows64, cols, stride_zb, stride_zn), mask=cmask, other=0.0)
    fv = tl.load(f_ptr + _offsets(rows64, cols, stride_fb, stride_fn), mask=cmask, other=0.0)
    new = cz * zv.to(W) + cf * fv.to(W)
    if HAS_NOISE:
        new = new + sig * eps.to(W)
    # what is stored; the norms are of the stored values
    if INTERPRETED and T == tl.bfloat16:
        new_t = _to_bf16_rne(new)
    else:
        new_t = new.to(T)
    # z_next may alias z: every thread's loads of this tile must be done before any thread
    # overwrites it (the store's layout need not match the loads').
    tl.debug_barrier()
    tl.store(out_ptr + _offsets(rows64, cols, stride_ob, stride_on), new_t, mask=cmask)
    q64 = new_t.to(tl.float64)
    d64 = q64 - zv.to(tl.float64)
    return tl.where(cmask, d64 * d64, 0.0), tl.where(cmask, q64 * q64, 0.0)


@triton.jit(do_not_specialize=["seed"])
def _block_step_kernel(
    z_ptr, f_ptr, out_ptr,                        # (B, n) data dtype T, strided
    active_ptr,                                   # (B,) bool (read only here)
    step_ptr,                                     # (1,) int64 step counter (read only here)
    ws_ptr,                                       # (B, n_chunks, 2) float64 partial sums
    B, n, chunk,                                  # chunk: columns of one program
    stride_zb, stride_zn, stride_fb, stride_fn, stride_ob, stride_on,
    seed,                                         # run seed mod 2**32 (may arrive as int64)
    # float64 annotations: an unannotated Python float would arrive as fp32
    c_z: tl.float64, c_f: tl.float64, sigma: tl.float64,
    W: tl.constexpr,          # arithmetic dtype: float64 for float64 T, else float32
    HAS_NOISE: tl.constexpr,  # sigma != 0 (the reference adds no noise term at all then)
    PAIRED: tl.constexpr,     # n even: every row starts on a pair, draw BLOCK_N / 2 pairs
    INTERPRETED: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    # Inactive samples (and padding rows) are frozen: nothing changes for them.
    act = tl.load(active_ptr + rows, mask=rows < B, other=0) != 0
    if tl.max(act.to(tl.int32), axis=0) == 0:
        return
    rows64 = rows.to(tl.int64)  # 64-bit offsets: B * n can pass 2**31
    col_idx = tl.arange(0, BLOCK_N)
    # Scalars are rounded to W once, as PyTorch does with a Python scalar times a tensor.
    # (tl.full: under the interpreter the arguments are Python floats, without .to.)
    cz = tl.full([], c_z, W)
    cf = tl.full([], c_f, W)
    sig = tl.full([], sigma, W)
    key = _noise_key(seed.to(tl.uint32), tl.load(step_ptr) + 1)
    lo = tl.program_id(1) * chunk
    hi = tl.minimum(lo + chunk, n)

    # Lane-wise partial sums of (T(new) - z)^2 and T(new)^2, reduced once after the loop.
    if HAS_NOISE and PAIRED:
        # Tiles of BLOCK_N / 2 pairs: the even and the odd columns as two (BLOCK_B, BLOCK_N / 2)
        # halves, each taking one Box-Muller output (no interleaving shuffle between layouts).
        half = tl.arange(0, BLOCK_N // 2)
        dd_acc = tl.zeros([BLOCK_B, BLOCK_N // 2], dtype=tl.float64)
        qq_acc = tl.zeros([BLOCK_B, BLOCK_N // 2], dtype=tl.float64)
        for start in range(lo, hi, BLOCK_N):
            # pair c = (b n + start) / 2 + j, mod 2**31 (flat index mod 2**32)
            c = (rows64[:, None] * (n // 2) + (start // 2 + half)[None, :]).to(tl.uint32)
            e0, e1 = _standard_normal_pair(c & 0x7FFFFFFF, key, INTERPRETED)
            cols = (start + 2 * half)[None, :]
            dd, qq = _update_tile(z_ptr, f_ptr, out_ptr, rows64, cols, act[:, None] & (cols < hi),
                                  e0, stride_zb, stride_zn, stride_fb, stride_fn, stride_ob,
                                  stride_on, cz, cf, sig, W, True, INTERPRETED)
            dd_acc += dd
            qq_acc += qq
            cols = cols + 1
            dd, qq = _update_tile(z_ptr, f_ptr, out_ptr, rows64, cols, act[:, None] & (cols < hi),
                                  e1, stride_zb, stride_zn, stride_fb, stride_fn, stride_ob,
                                  stride_on, cz, cf, sig, W, True, INTERPRETED)
            dd_acc += dd
            qq_acc += qq
    else:
        dd_acc = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float64)
        qq_acc = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float64)
        for start in range(lo, hi, BLOCK_N):
            cols = (start + col_idx)[None, :]
            eps = 0.0
            if HAS_NOISE:  # odd n: rows start on either half of a pair; one pair an element
                eps = _standard_normal((rows64[:, None] * n + cols).to(tl.uint32), key,
                                       INTERPRETED)
            dd, qq = _update_tile(z_ptr, f_ptr, out_ptr, rows64, cols, act[:, None] & (cols < hi),
                                  eps, stride_zb, stride_zn, stride_fb, stride_fn, stride_ob,
                                  stride_on, cz, cf, sig, W, HAS_NOISE, INTERPRETED)
            dd_acc += dd
            qq_acc += qq
    n_chunks = tl.num_programs(1)
    ws = ws_ptr + (rows64 * n_chunks + tl.program_id(1)) * 2
    tl.store(ws, tl.sum(dd_acc, axis=1), mask=act)
    tl.store(ws + 1, tl.sum(qq_acc, axis=1), mask=act)


@triton.jit
def _bookkeeping(rows, act, dd, qq, active_ptr, converged_ptr, diverged_ptr, nstep_ptr,
                 abs_res_ptr, rel_res_ptr, tol, rel_eps, REL_MODE: tl.constexpr):
    """block_step's per-sample bookkeeping (eqkernels/ops/tracking.py) for rows active on entry,
    from the summed squares dd = ||z_next - z||^2 and qq = ||z_next||^2 (float64)."""
    R = abs_res_ptr.dtype.element_ty
    abs_res = tl.sqrt(dd)
    next_norm = tl.sqrt(qq)
    # (rel_eps is a float64 argument: a Python float meeting only constants is fp32.)
    rel_res = abs_res / (next_norm + rel_eps)
    nstep = tl.load(nstep_ptr + rows, mask=act, other=0)
    # On a GPU each per-sample value is held (and loaded) by many threads while one
    # of them stores it: all of them must have read it before it changes.
    tl.debug_barrier()
    tl.store(nstep_ptr + rows, nstep + 1, mask=act)
    tl.store(abs_res_ptr + rows, abs_res.to(R), mask=act)
    tl.store(rel_res_ptr + rows, rel_res.to(R), mask=act)
    # inf - inf and nan - nan are nan: x - x == 0 exactly when x is finite
    finite = ((abs_res - abs_res) == 0) & ((next_norm - next_norm) == 0)
    if REL_MODE:
        metric = rel_res
    else:
        metric = abs_res
    done = act & finite & (metric < tol)
    tl.store(diverged_ptr + rows, 1, mask=act & (finite == 0))
    tl.store(converged_ptr + rows, 1, mask=done)
    tl.store(active_ptr + rows, 0, mask=act & ((finite == 0) | done))


@triton.jit
def _block_step_finish_kernel(
    active_ptr, converged_ptr, diverged_ptr,      # (B,) bool
    nstep_ptr,                                    # (B,) int32
    abs_res_ptr, rel_res_ptr,                     # (B,) residual dtype R
    step_ptr,                                     # (1,) int64 step counter: advanced here
    ws_ptr,                                       # (B, N_CHUNKS, 2) float64 partial sums
    B,
    tol: tl.float64, rel_eps: tl.float64,
    N_CHUNKS: tl.constexpr,
    CHUNKS_PAD: tl.constexpr,  # next power of two >= N_CHUNKS
    REL_MODE: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    """Per row active on entry: sum the chunks' partial sums, then the bookkeeping
    (tracking.py). Program 0 advances the step counter (every update kernel read it)."""
    if tl.program_id(0) == 0:
        tl.store(step_ptr, tl.load(step_ptr) + 1)
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    act = tl.load(active_ptr + rows, mask=rows < B, other=0) != 0
    ks = tl.arange(0, CHUNKS_PAD)[None, :]
    off = (rows.to(tl.int64) * N_CHUNKS)[:, None] * 2 + ks * 2
    wmask = act[:, None] & (ks < N_CHUNKS)
    dd = tl.sum(tl.load(ws_ptr + off, mask=wmask, other=0.0), axis=1)
    qq = tl.sum(tl.load(ws_ptr + off + 1, mask=wmask, other=0.0), axis=1)
    _bookkeeping(rows, act, dd, qq, active_ptr, converged_ptr, diverged_ptr, nstep_ptr,
                 abs_res_ptr, rel_res_ptr, tol, rel_eps, REL_MODE)


def _block_sizes(B, n, interpreted, noisy=False):
    """(BLOCK_B, BLOCK_N): one sample per program on wide rows, several on short ones."""
    budget = (_TILE_ELEMS_INTERPRETED if interpreted
              else _TILE_ELEMS_GPU_NOISE if noisy else _TILE_ELEMS_GPU)
    cap_n = _MAX_BLOCK_N_INTERPRETED if interpreted else budget
    BLOCK_N = min(triton.next_power_of_2(max(n, 1)), max(cap_n, 16))
    BLOCK_B = min(triton.next_power_of_2(B), max(budget // BLOCK_N, 1))
    return BLOCK_B, BLOCK_N


def kernel_config(B: int, n: int, dtype: torch.dtype, sigma: float, stop_rel: bool,
                  interpreted: bool = False) -> dict:
    """The update kernel's constexprs and num_warps, and its column chunk (scripts/triton_aot.py
    compiles these); the finish kernel's in `finish_config`."""
    noisy = float(sigma) != 0
    BLOCK_B, BLOCK_N = _block_sizes(B, n, interpreted, noisy)
    # interpreted: one program a row (the interpreter pays per program)
    chunk = max(n, 1) if interpreted else BLOCK_N * _CHUNK_TILES_GPU
    return dict(W=tl.float64 if dtype == torch.float64 else tl.float32,
                HAS_NOISE=noisy, PAIRED=n % 2 == 0, INTERPRETED=interpreted,
                BLOCK_B=BLOCK_B, BLOCK_N=BLOCK_N, num_warps=_NUM_WARPS, chunk=chunk)


def finish_config(n_chunks: int, stop_rel: bool) -> dict:
    """The finish kernel's constexprs."""
    return dict(N_CHUNKS=n_chunks, CHUNKS_PAD=triton.next_power_of_2(n_chunks),
                REL_MODE=bool(stop_rel), BLOCK_B=_FINISH_ROWS, num_warps=4)


_SCHEMA = ("(Tensor z, Tensor f_out, Tensor(a!) z_next, Tensor(b!) active, "
           "Tensor(c!) converged, Tensor(d!) diverged, Tensor(e!) nstep, Tensor(f!) abs_res, "
           "Tensor(g!) rel_res, Tensor(h!) step, int seed, float damping, float sigma, "
           "float tol, bool stop_rel) -> ()")  # eqk::block_step's (csrc/ops/block_step.cpp)


Tensor = torch.Tensor


def block_step_triton(z: Tensor, f_out: Tensor, z_next: Tensor, active: Tensor,
                      converged: Tensor, diverged: Tensor, nstep: Tensor, abs_res: Tensor,
                      rel_res: Tensor, step: Tensor, seed: int, damping: float, sigma: float, tol: float,
                      stop_rel: bool) -> None:
    """Fused block-step epilogue in Triton, in place on z_next, the state and step (see
    block_step.py; the arguments of eqk::block_step). z_next may alias z."""
    _checks.block_step(z, f_out, z_next, active, converged, diverged, nstep, abs_res, rel_res,
                       step)
    B, n = z.shape
    if B == 0 or _interpreting_fake(z):
        step.add_(1)  # every update advances the stream, B = 0 too
        return
    cfg = kernel_config(B, n, z.dtype, sigma, stop_rel, interpreted=z.device.type == "cpu")
    chunk = cfg.pop("chunk")
    n_chunks = triton.cdiv(max(n, 1), chunk)
    ws = torch.empty((B, n_chunks, 2), dtype=torch.float64, device=z.device)
    fin = finish_config(n_chunks, stop_rel)
    options = {} if torch.compiler.is_compiling() else LAUNCH_OPTIONS
    with launch_guard(z.device):
        torch.library.wrap_triton(_block_step_kernel)[
            (triton.cdiv(B, cfg["BLOCK_B"]), n_chunks)](
            z, f_out, z_next, active, step, ws, B, n, chunk,
            z.stride(0), z.stride(1), f_out.stride(0), f_out.stride(1),
            z_next.stride(0), z_next.stride(1),
            int(seed) & _MASK32, 1.0 - float(damping), float(damping), float(sigma),
            **cfg, **options)
        torch.library.wrap_triton(_block_step_finish_kernel)[
            (triton.cdiv(B, fin["BLOCK_B"]),)](
            active, converged, diverged, nstep, abs_res, rel_res, step, ws, B,
            float(tol), float(REL_EPS), **fin, **options)


def _interpreting_fake(z) -> bool:
    """Fake tensors (shape propagation) meeting the interpreter, which would run the kernel
    on them: nothing to compute. (Compiled, wrap_triton's fake kernel handles them.)"""
    from torch._subclasses.fake_tensor import is_fake
    return z.device.type != "cuda" and is_fake(z)


@functools.lru_cache(maxsize=None)
def block_step_triton_op():
    """torch.ops.eqk.block_step_triton (registered on first use): block_step_triton as a
    torch.library.triton_op with eqk::block_step's schema."""
    return torch.library.triton_op(
        "eqk::block_step_triton", block_step_triton, schema=_SCHEMA,
        mutates_args=("z_next", "active", "converged", "diverged", "nstep", "abs_res",
                      "rel_res", "step"))

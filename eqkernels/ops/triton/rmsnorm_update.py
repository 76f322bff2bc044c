"""Triton backend of the normed block-step update (semantics: `eqkernels.ops.rmsnorm_update`).

z, r, z_next are viewed as (B, R, C): R rows of C per sample, sumsq one value per row. Program
(b, p) takes rows [p * RP, (p + 1) * RP) of sample b (P = cdiv(R, RP) programs a sample: 1 for
big batches; more for small ones, so that every SM has work) and streams them in
(BLOCK_R x BLOCK_C) tiles: load z and r, form

    new = (1 - damping) z + damping * r * rsqrt(sumsq[row] / C + eps) + sigma * eps_noise

in W (float32, float64 for float64 z), store it as z's dtype (samples active on entry only),
and accumulate ||T(new) - z||^2 and ||T(new)||^2 in float64. The normed block output is never
written. With P = 1 the program then does block_step's bookkeeping (nstep, residuals, halting
flags); with P > 1 it writes its two partial sums and a second small kernel adds them in a
fixed order and does the bookkeeping.

The noise is block_step's stream, drawn by block_step's own Triton helpers (imported, never
copied: a change of the stream there is a change here): element i of the flattened (B, n)
sample rows, key noise_key(seed, step + 1) read from the device step counter, which the op
then advances. Launched with fp fusion off like block_step (the update's multiply-adds round
as the reference's separate operations).
The op: `rmsnorm_update_triton_op()`, torch.ops.eqk.rmsnorm_update_triton.
"""
from __future__ import annotations

from typing import List

import torch
import triton
import triton.language as tl

from eqkernels.ops import _looped_checks
from eqkernels.ops.constants import MASK32 as _MASK32
from eqkernels.ops.constants import REL_EPS
from eqkernels.ops.triton._looped_common import cast_to, interpreted, launch_guard, nothing_to_run
from eqkernels.ops.triton.block_step import (LAUNCH_OPTIONS, _bookkeeping, _noise_key,
                                             _standard_normal, _standard_normal_pair)

# Elements of one tile: block_step's budgets (registers with the noise temporaries live).
_TILE_ELEMS = 1024
_TILE_ELEMS_NOISE = 512  # 256 pairs: one a thread at 8 warps in each half (block_step's)
_TILE_ELEMS_INTERPRETED = 1 << 14
_NUM_WARPS = 8
_FINISH_ELEMS = 1024  # (BLOCK_B x BLOCK_P) float64 partials of the finishing kernel, twice
# Programs to aim for when a batch is small (4 per SM of an H200): samples split across rows.
TARGET_PROGRAMS = 528


@triton.jit
def _row_scale(sumsq_ptr, b, R, C, rows, rmask, epsw, W: tl.constexpr):
    """rsqrt(sumsq / C + eps) of the tile's rows, in W (IEEE sqrt: the reference's rsqrt)."""
    ss = tl.load(sumsq_ptr + b.to(tl.int64) * R + rows, mask=rmask, other=1.0).to(W)
    if W == tl.float64:
        return 1.0 / tl.sqrt(ss / C + epsw)
    else:
        return 1.0 / tl.sqrt_rn(ss / C + epsw)


@triton.jit
def _normed_tile(z_ptr, r_ptr, out_ptr, offs, mask, scale, eps_n, cz, cf, sig, W: tl.constexpr,
                 HAS_NOISE: tl.constexpr, INTERPRETED: tl.constexpr):
    """new = cz z + cf r scale (+ sig eps) on one tile of flat offsets, stored as T where mask;
    returns the tile's (T(new) - z)^2 and T(new)^2 in float64 (0 outside mask)."""
    T = z_ptr.dtype.element_ty
    zv = tl.load(z_ptr + offs, mask=mask, other=0.0)
    rv = tl.load(r_ptr + offs, mask=mask, other=0.0)
    new = cz * zv.to(W) + cf * (rv.to(W) * scale[:, None])
    if HAS_NOISE:
        new = new + sig * eps_n.to(W)
    new_t = cast_to(new, T, INTERPRETED)
    tl.debug_barrier()  # z_next may alias z: all loads of the tile before the store
    tl.store(out_ptr + offs, new_t, mask=mask)
    q64 = new_t.to(tl.float64)
    d64 = q64 - zv.to(tl.float64)
    return tl.where(mask, d64 * d64, 0.0), tl.where(mask, q64 * q64, 0.0)


@triton.jit(do_not_specialize=["seed"])
def _rmsnorm_update_kernel(
    z_ptr, r_ptr, sumsq_ptr, out_ptr,            # (B, R, C) dtype T; sumsq (B, R) fp32/fp64
    active_ptr, converged_ptr, diverged_ptr,     # (B,) bool
    nstep_ptr, abs_res_ptr, rel_res_ptr,         # (B,) int32, residual dtype
    part_ptr,                                    # (2, B, P) float64 partial sums (P > 1)
    step_ptr,                                    # (1,) int64 step counter (read only here)
    B, R, C, RP, P,
    seed,
    c_z: tl.float64, c_f: tl.float64, sigma: tl.float64, tol: tl.float64,
    rel_eps: tl.float64, eps: tl.float64,
    W: tl.constexpr,
    HAS_NOISE: tl.constexpr, REL_MODE: tl.constexpr, SPLIT: tl.constexpr,
    PAIRED: tl.constexpr,     # C even: every row starts on a noise pair
    INTERPRETED: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    b = tl.program_id(0)
    p = tl.program_id(1)
    bvec = b + tl.zeros([1], dtype=tl.int32)     # per-sample flags as (1,) vectors (interpreter)
    act = tl.load(active_ptr + bvec) != 0
    if tl.max(act.to(tl.int32), axis=0) == 0:
        return
    n = R * C
    base = b.to(tl.int64) * n
    cz = tl.full([], c_z, W)
    cf = tl.full([], c_f, W)
    sig = tl.full([], sigma, W)
    epsw = tl.full([], eps, W)
    key32 = _noise_key(seed.to(tl.uint32), tl.load(step_ptr) + 1)
    r_idx = tl.arange(0, BLOCK_R)
    row_end = tl.minimum((p + 1) * RP, R)
    if HAS_NOISE and PAIRED:
        # C even: a tile's even and odd columns as two (BLOCK_R, BLOCK_C / 2) halves, each
        # taking one output of the pair draw (block_step's layout, no interleaving shuffle).
        half = tl.arange(0, BLOCK_C // 2)
        dd_acc = tl.zeros([BLOCK_R, BLOCK_C // 2], dtype=tl.float64)
        qq_acc = tl.zeros([BLOCK_R, BLOCK_C // 2], dtype=tl.float64)
        for r0 in range(p * RP, row_end, BLOCK_R):
            rows = r0 + r_idx
            rmask = rows < row_end
            scale = _row_scale(sumsq_ptr, b, R, C, rows, rmask, epsw, W)
            for c0 in range(0, C, BLOCK_C):
                cols = c0 + 2 * half
                mask = rmask[:, None] & (cols[None, :] < C)
                offs = base + rows[:, None].to(tl.int64) * C + cols[None, :]
                # pair (flat index mod 2**32) / 2 = (index / 2) mod 2**31
                e0, e1 = _standard_normal_pair((offs >> 1).to(tl.uint32) & 0x7FFFFFFF, key32,
                                               INTERPRETED)
                dd, qq = _normed_tile(z_ptr, r_ptr, out_ptr, offs, mask, scale, e0, cz, cf, sig,
                                      W, True, INTERPRETED)
                dd_acc += dd
                qq_acc += qq
                dd, qq = _normed_tile(z_ptr, r_ptr, out_ptr, offs + 1, mask, scale, e1, cz, cf,
                                      sig, W, True, INTERPRETED)
                dd_acc += dd
                qq_acc += qq
    else:
        c_idx = tl.arange(0, BLOCK_C)
        dd_acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float64)
        qq_acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float64)
        for r0 in range(p * RP, row_end, BLOCK_R):
            rows = r0 + r_idx
            rmask = rows < row_end
            scale = _row_scale(sumsq_ptr, b, R, C, rows, rmask, epsw, W)
            for c0 in range(0, C, BLOCK_C):
                cols = c0 + c_idx
                mask = rmask[:, None] & (cols[None, :] < C)
                offs = base + rows[:, None].to(tl.int64) * C + cols[None, :]
                eps_n = 0.0
                if HAS_NOISE:  # C odd: a pair straddles two rows, each element draws its own
                    eps_n = _standard_normal(offs.to(tl.uint32), key32, INTERPRETED)
                dd, qq = _normed_tile(z_ptr, r_ptr, out_ptr, offs, mask, scale, eps_n, cz, cf,
                                      sig, W, HAS_NOISE, INTERPRETED)
                dd_acc += dd
                qq_acc += qq
    dd = tl.sum(tl.sum(dd_acc, axis=1), axis=0) + tl.zeros([1], dtype=tl.float64)
    qq = tl.sum(tl.sum(qq_acc, axis=1), axis=0) + tl.zeros([1], dtype=tl.float64)
    if SPLIT:
        slot = b.to(tl.int64) * P + p + tl.zeros([1], dtype=tl.int64)
        tl.store(part_ptr + slot, dd)
        tl.store(part_ptr + B * P + slot, qq)
    else:
        _bookkeeping(bvec, act, dd, qq, active_ptr, converged_ptr, diverged_ptr, nstep_ptr,
                     abs_res_ptr, rel_res_ptr, tol, rel_eps, REL_MODE)


@triton.jit
def _finish_kernel(part_ptr, active_ptr, converged_ptr, diverged_ptr, nstep_ptr, abs_res_ptr,
                   rel_res_ptr, B, P, tol: tl.float64, rel_eps: tl.float64,
                   REL_MODE: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr):
    """The partial sums of P programs a sample, added in order, then the bookkeeping."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    act = tl.load(active_ptr + rows, mask=rows < B, other=0) != 0
    ps = tl.arange(0, BLOCK_P)
    m = act[:, None] & (ps[None, :] < P)
    offs = rows[:, None].to(tl.int64) * P + ps[None, :]
    dd = tl.sum(tl.load(part_ptr + offs, mask=m, other=0.0), axis=1)
    qq = tl.sum(tl.load(part_ptr + B * P + offs, mask=m, other=0.0), axis=1)
    _bookkeeping(rows, act, dd, qq, active_ptr, converged_ptr, diverged_ptr, nstep_ptr,
                 abs_res_ptr, rel_res_ptr, tol, rel_eps, REL_MODE)


def kernel_config(B: int, R: int, C: int, dtype: torch.dtype, sigma: float, stop_rel: bool,
                  tiles=(), interpreted: bool = False) -> dict:
    """Constexprs, launch options, RP and P of one launch (scripts/triton_aot.py compiles these).

    tiles: (BLOCK_R, BLOCK_C, P, num_warps), P = 0 for the automatic split; empty: defaults."""
    noisy = float(sigma) != 0
    budget = (_TILE_ELEMS_INTERPRETED if interpreted
              else _TILE_ELEMS_NOISE if noisy else _TILE_ELEMS)
    BLOCK_C = min(triton.next_power_of_2(max(C, 1)), budget)
    BLOCK_R = max(1, min(triton.next_power_of_2(max(R, 1)), budget // BLOCK_C))
    P, warps = 0, _NUM_WARPS
    if tiles:
        BLOCK_R, BLOCK_C, P, warps = tiles
    if P == 0:
        P = 1 if interpreted else max(1, min(R, triton.cdiv(TARGET_PROGRAMS, max(B, 1))))
    RP = triton.cdiv(max(R, 1), min(max(P, 1), max(R, 1)))
    P = triton.cdiv(max(R, 1), RP)  # no program without rows
    return dict(W=tl.float64 if dtype == torch.float64 else tl.float32, HAS_NOISE=noisy,
                REL_MODE=bool(stop_rel), SPLIT=P > 1, PAIRED=C % 2 == 0, INTERPRETED=interpreted,
                BLOCK_R=BLOCK_R, BLOCK_C=BLOCK_C, num_warps=warps, RP=RP, P=P)


def finish_config(B: int, P: int, stop_rel: bool) -> dict:
    """Constexprs of the finishing kernel (split samples: P partial sums each)."""
    BLOCK_P = triton.next_power_of_2(max(P, 1))
    BLOCK_B = max(1, min(triton.next_power_of_2(max(B, 1)), _FINISH_ELEMS // BLOCK_P))
    return dict(REL_MODE=bool(stop_rel), BLOCK_B=BLOCK_B, BLOCK_P=BLOCK_P, num_warps=4)


def _check_tiles(tiles) -> None:
    if tiles and (len(tiles) != 4 or any(not isinstance(v, int) or v < 0 for v in tiles)
                  or any(v < 1 or v & (v - 1) for v in (tiles[0], tiles[1], tiles[3]))):
        raise ValueError(f"rmsnorm_update: tiles must be (BLOCK_R, BLOCK_C, P, num_warps), "
                         f"powers of two but P (0: automatic), got {tuple(tiles)}")


Tensor = torch.Tensor


def rmsnorm_update_triton(z: Tensor, r: Tensor, sumsq: Tensor, z_next: Tensor, active: Tensor,
                          converged: Tensor, diverged: Tensor, nstep: Tensor, abs_res: Tensor,
                          rel_res: Tensor, step: Tensor, seed: int, damping: float,
                          sigma: float, tol: float, stop_rel: bool, eps: float,
                          tiles: List[int]) -> None:
    """The normed update in Triton, in place on z_next, the state and step (see
    eqkernels.ops.rmsnorm_update). z_next may alias z."""
    _looped_checks.rmsnorm_update(z, r, sumsq, z_next, active, converged, diverged, nstep,
                                  abs_res, rel_res, step, eps)
    _check_tiles(tiles)
    B, C = z.shape[0], z.shape[-1]
    R = z[0].numel() // C if B and C else 0
    if B * R * C > 0 and not nothing_to_run(z):
        interp = interpreted(z.device)
        cfg = kernel_config(B, R, C, z.dtype, sigma, stop_rel, tuple(tiles), interp)
        RP, P = cfg.pop("RP"), cfg.pop("P")
        part = torch.empty((2, B, P) if P > 1 else (1,), dtype=torch.float64, device=z.device)
        options = {} if torch.compiler.is_compiling() else LAUNCH_OPTIONS
        with launch_guard(z.device):
            torch.library.wrap_triton(_rmsnorm_update_kernel)[(B, P)](
                z, r, sumsq, z_next, active, converged, diverged, nstep, abs_res, rel_res,
                part, step, B, R, C, RP, P, int(seed) & _MASK32,
                1.0 - float(damping), float(damping), float(sigma), float(tol), float(REL_EPS),
                float(eps), **cfg, **options)
            if P > 1:
                fin = finish_config(B, P, stop_rel)
                torch.library.wrap_triton(_finish_kernel)[(triton.cdiv(B, fin["BLOCK_B"]),)](
                    part, active, converged, diverged, nstep, abs_res, rel_res, B, P,
                    float(tol), float(REL_EPS), **fin)
    step.add_(1)  # after the kernel read it, on the same stream


# Registered when this module is first imported (the dispatcher imports it as it resolves the
# backend, outside any torch.compile trace).
_OP = torch.library.triton_op(
    "eqk::rmsnorm_update_triton", rmsnorm_update_triton,
    mutates_args=("z_next", "active", "converged", "diverged", "nstep", "abs_res", "rel_res",
                  "step"))


def rmsnorm_update_triton_op():
    """torch.ops.eqk.rmsnorm_update_triton."""
    return _OP

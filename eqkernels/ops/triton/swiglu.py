"""Triton backend of the channel SwiGLU GEMMs (semantics: `eqkernels.ops.swiglu`).

swiglu_gate_up, variant "fused": one (BLOCK_M x BLOCK_N) tile of a = silu(x W_gate^T) *
(x W_up^T) per program. The gate and up chunks of w_gate_up (rows n and I + n) are two dots
into two float32 accumulators of one layout, so each thread holds the gate and the up value of
the same outputs: the SiLU * up epilogue runs in registers and only `a` is written (EqR's
layout used as is; no interleaved copy). Programs walk the N tiles of one row block before the
next (the weights, 3 MB at C = 512, I = 1536 in bf16, stay in L2; each x row block is read from
memory once).

down_residual_sumsq, variant "fused": a program owns BLOCK_M rows and walks N_PER_PROGRAM
tiles of BLOCK_N output columns; each tile is a K loop of dots, then the epilogue adds the
residual, rounds to the output dtype, stores, and adds the squares of the stored values to the
rows' running sum. With N_SPLIT = 1 a program covers all C columns and writes sumsq directly;
with N_SPLIT > 1 (small batches: more programs) each writes a partial sum, and the partials
(N_SPLIT, M) are added in a fixed order afterwards (deterministic; no atomics).

Variant "cublas": torch.matmul (cuBLAS; its output rounded to the dtype) followed by one fused
Triton kernel per op: SiLU * up, or the residual add with the sum of squares.

Dots: bfloat16 operands on tensor cores (wgmma on sm_90), float32 operands as full-precision
dots (input_precision="ieee", no TF32); float32 accumulation throughout.
The ops: torch.ops.eqk.swiglu_gate_up_triton, torch.ops.eqk.down_residual_sumsq_triton.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import triton
import triton.language as tl

from eqkernels.ops import _looped_checks
from eqkernels.ops.triton._looped_common import (TL_DTYPES, cast_to, dot_operand, interpreted,
                                                 launch_guard, nothing_to_run)

# Shared memory a block may use, by compute capability major*10+minor (sm_80: 163 KB, sm_90:
# 227 KB); candidates whose pipelined tiles do not fit are left out.
SMEM_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}


@triton.jit
def _gate_up_kernel(
    x_ptr,            # (M, K) dtype D
    w_ptr,            # (2I, K) D: gate rows, then up rows
    a_ptr,            # (M, I) D
    M, K, I,
    INPUT_PRECISION: tl.constexpr, INTERPRETED: tl.constexpr,
    EVEN_K: tl.constexpr, EVEN_N: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    n_tiles = tl.cdiv(I, BLOCK_N)
    pid_m = pid // n_tiles           # N fastest: one x row block at a time, from L2
    pid_n = pid % n_tiles
    D: tl.constexpr = x_ptr.dtype.element_ty
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + rm[:, None].to(tl.int64) * K + rk[None, :]
    wg_ptrs = w_ptr + rn[None, :] * K + rk[:, None]          # (BLOCK_K, BLOCK_N): W_gate^T
    wu_ptrs = wg_ptrs + I * K                                # W_up^T
    m_mask = rm[:, None] < M
    n_mask = rn[None, :] < I
    acc_g = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        if EVEN_K:
            xm = m_mask
            wm = n_mask
        else:
            xm = m_mask & (rk[None, :] < K - k0)
            wm = n_mask & (rk[:, None] < K - k0)
        x = dot_operand(tl.load(x_ptrs, mask=xm, other=0.0), INTERPRETED)
        if EVEN_N and EVEN_K:
            wg = tl.load(wg_ptrs)
            wu = tl.load(wu_ptrs)
        else:
            wg = tl.load(wg_ptrs, mask=wm, other=0.0)
            wu = tl.load(wu_ptrs, mask=wm, other=0.0)
        acc_g = tl.dot(x, dot_operand(wg, INTERPRETED), acc=acc_g,
                       input_precision=INPUT_PRECISION)
        acc_u = tl.dot(x, dot_operand(wu, INTERPRETED), acc=acc_u,
                       input_precision=INPUT_PRECISION)
        x_ptrs += BLOCK_K
        wg_ptrs += BLOCK_K
        wu_ptrs += BLOCK_K
    a = acc_g / (1.0 + tl.exp(-acc_g)) * acc_u             # silu(gate) * up
    tl.store(a_ptr + rm[:, None].to(tl.int64) * I + rn[None, :], cast_to(a, D, INTERPRETED),
             mask=m_mask & n_mask)


@triton.jit
def _down_kernel(
    a_ptr,            # (M, K) dtype D (K = I)
    w_ptr,            # (N, K) D (N = C)
    r_ptr,            # (M, N) D residual
    out_ptr,          # (M, N) D
    ss_ptr,           # (N_SPLIT, M) float32 partial sums of squares
    M, K, N,
    INPUT_PRECISION: tl.constexpr, INTERPRETED: tl.constexpr,
    EVEN_K: tl.constexpr, EVEN_N: tl.constexpr,
    N_PER_PROGRAM: tl.constexpr,     # BLOCK_N tiles a program walks (cdiv(N, BLOCK_N * N_SPLIT))
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    D: tl.constexpr = a_ptr.dtype.element_ty
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rk = tl.arange(0, BLOCK_K)
    m_mask = rm[:, None] < M
    rows64 = rm[:, None].to(tl.int64)
    ss = tl.zeros([BLOCK_M], dtype=tl.float32)
    for j in range(0, N_PER_PROGRAM):
        rn = (pid_n * N_PER_PROGRAM + j) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = rn[None, :] < N
        a_ptrs = a_ptr + rows64 * K + rk[None, :]
        w_ptrs = w_ptr + rn[None, :] * K + rk[:, None]       # (BLOCK_K, BLOCK_N): W_down^T
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            if EVEN_K:
                am = m_mask
                wm = n_mask
            else:
                am = m_mask & (rk[None, :] < K - k0)
                wm = n_mask & (rk[:, None] < K - k0)
            a = dot_operand(tl.load(a_ptrs, mask=am, other=0.0), INTERPRETED)
            if EVEN_N and EVEN_K:
                w = tl.load(w_ptrs)
            else:
                w = tl.load(w_ptrs, mask=wm, other=0.0)
            acc = tl.dot(a, dot_operand(w, INTERPRETED), acc=acc, input_precision=INPUT_PRECISION)
            a_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        mask = m_mask & n_mask
        offs = rows64 * N + rn[None, :]
        res = tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        out = cast_to(acc + res, D, INTERPRETED)
        tl.store(out_ptr + offs, out, mask=mask)
        o = out.to(tl.float32)                                 # the stored values' squares
        ss += tl.sum(tl.where(mask, o * o, 0.0), axis=1)
    tl.store(ss_ptr + pid_n * M + rm, ss, mask=rm < M)


@triton.jit
def _silu_mul_kernel(gu_ptr, a_ptr, M, I, INTERPRETED: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """a = silu(gu[:, :I]) * gu[:, I:] for gu (M, 2I), float32 math (the cuBLAS variant)."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rm[:, None] < M) & (rn[None, :] < I)
    rows64 = rm[:, None].to(tl.int64)
    g = tl.load(gu_ptr + rows64 * (2 * I) + rn[None, :], mask=mask, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + rows64 * (2 * I) + I + rn[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(a_ptr + rows64 * I + rn[None, :],
             cast_to(g / (1.0 + tl.exp(-g)) * u, a_ptr.dtype.element_ty, INTERPRETED), mask=mask)


@triton.jit
def _add_sumsq_kernel(t_ptr, r_ptr, out_ptr, ss_ptr, M, N, INTERPRETED: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """out = r + t (float32 add, rounded once), ss = row sums of out^2 as stored (the cuBLAS
    variant's epilogue)."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rows64 = rm[:, None].to(tl.int64)
    ss = tl.zeros([BLOCK_M], dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N)
        mask = (rm[:, None] < M) & (rn[None, :] < N)
        offs = rows64 * N + rn[None, :]
        t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        r = tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        out = cast_to(r + t, out_ptr.dtype.element_ty, INTERPRETED)
        tl.store(out_ptr + offs, out, mask=mask)
        o = out.to(tl.float32)
        ss += tl.sum(tl.where(mask, o * o, 0.0), axis=1)
    tl.store(ss_ptr + rm, ss, mask=rm < M)


# ---- tile configurations ------------------------------------------------------------------
# gate_up: (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages); down: (BLOCK_M, BLOCK_N, BLOCK_K,
# N_SPLIT, num_warps, num_stages). Defaults first, per (dtype, arch); scripts/triton_aot.py
# compiles each for its arch (no spills; registers a thread by ptxas, triton 3.9, in brackets).
# bfloat16 on sm_90 (wgmma): gate_up's two 128 x 128 accumulators (gate, up) at 8 warps are one
# 128 x 256 tile [211]; the down GEMM walks C = 512 in 128-wide tiles [216] so a row's sum of
# squares completes in one program (128 x 256 down tiles spill: the epilogue's residual and
# squares are live on top). Shared memory a stage: (BLOCK_M + 2 BLOCK_N) BLOCK_K elements
# (gate_up), (BLOCK_M + BLOCK_N) BLOCK_K (down). sm_80 (mma.sync, operands in registers): the
# 64-deep 128 x 128 x 2 gate_up tiles spill; narrower K there. Two CTAs an SM (one's epilogue
# behind the other's main loop) need <= 32K registers and <= 113 KB shared memory each: the
# 4-warp, 3-stage candidates.
GATE_UP_CANDIDATES = {
    (torch.bfloat16, 90): ((128, 128, 64, 8, 3), (128, 128, 64, 8, 4), (128, 64, 64, 4, 4),
                           (128, 64, 64, 4, 3), (64, 128, 64, 4, 4), (128, 128, 32, 8, 5),
                           (256, 64, 64, 8, 3)),
    (torch.bfloat16, 80): ((128, 128, 32, 8, 4), (64, 128, 64, 4, 4), (64, 64, 64, 4, 4)),
    (torch.float32, 90): ((64, 64, 16, 8, 2), (32, 64, 16, 4, 2), (64, 32, 32, 8, 2)),
    (torch.float32, 80): ((64, 64, 16, 8, 2), (32, 64, 16, 4, 2), (64, 32, 32, 8, 2)),
}
DOWN_CANDIDATES = {
    (torch.bfloat16, 90): ((128, 128, 64, 1, 8, 4), (64, 256, 64, 1, 8, 3),
                           (128, 128, 64, 1, 8, 3), (64, 128, 64, 1, 4, 3),
                           (128, 128, 64, 2, 8, 4), (64, 128, 64, 4, 4, 4)),
    (torch.bfloat16, 80): ((128, 128, 64, 1, 8, 3), (64, 256, 64, 1, 8, 3),
                           (64, 128, 64, 4, 4, 4)),
    (torch.float32, 90): ((64, 64, 16, 1, 8, 2), (32, 64, 32, 1, 4, 2), (64, 64, 16, 4, 8, 2)),
    (torch.float32, 80): ((64, 64, 16, 1, 8, 2), (32, 64, 32, 1, 4, 2), (64, 64, 16, 4, 8, 2)),
}
_INTERPRETED_GATE_UP = (64, 256, 128, 4, 1)   # the interpreter pays per operation
_INTERPRETED_DOWN = (64, 256, 128, 1, 4, 1)
_EPILOGUE_TILES = dict(silu_mul=(16, 256, 4), add_sumsq=(16, 256, 4))  # BLOCK_M, BLOCK_N, warps
_INTERPRETED_EPILOGUE = (64, 512, 4)


def _arch(device: torch.device) -> int:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return 10 * major + minor
    return 90


def _table(tables, dtype, arch):
    return tables[(dtype, 90 if arch >= 90 else 80)]


def _smem_ok(stage_elems: int, stages: int, dtype: torch.dtype, arch: int) -> bool:
    return stage_elems * stages * dtype.itemsize <= SMEM_LIMIT.get(arch, SMEM_LIMIT[80])


def _fit(n: int, block: int) -> int:
    return min(block, max(16, triton.next_power_of_2(n)))


def gate_up_candidates(M: int, C: int, I: int, dtype: torch.dtype, arch: int = 90) -> List[tuple]:
    """gate_up tile configurations worth timing for (M, C) x (C, I) (the first: the default);
    the GPU suite's sweep calls swiglu_gate_up(..., backend="triton", tiles=t) for each."""
    cands = [t for t in _table(GATE_UP_CANDIDATES, dtype, arch)
             if _smem_ok((t[0] + 2 * t[1]) * t[2], t[4], dtype, arch)]
    if triton.cdiv(M, cands[0][0]) * triton.cdiv(I, cands[0][1]) < 264:
        cands.sort(key=lambda t: t[0] * t[1])  # small M: smaller tiles, more programs
    return cands


def down_candidates(M: int, I: int, C: int, dtype: torch.dtype, arch: int = 90) -> List[tuple]:
    """down_residual_sumsq tile configurations worth timing (the first: the default)."""
    cands = [t for t in _table(DOWN_CANDIDATES, dtype, arch)
             if _smem_ok((t[0] + t[1]) * t[2], t[5], dtype, arch)]
    if triton.cdiv(M, cands[0][0]) < 264:
        cands.sort(key=lambda t: (t[0] * t[1] / t[3]))  # small M: split C across programs
    return cands


def gate_up_config(M, K, I, dtype, tiles=(), interpreted=False, arch=90) -> dict:
    """Constexprs and launch options of one gate_up launch (scripts/triton_aot.py compiles
    these)."""
    if tiles:
        BM, BN, BK, warps, stages = tiles
    elif interpreted:
        BM, BN, BK, warps, stages = _INTERPRETED_GATE_UP
    else:
        BM, BN, BK, warps, stages = gate_up_candidates(M, K, I, dtype, arch)[0]
    BM, BN, BK = _fit(M, BM), _fit(I, BN), _fit(K, BK)
    return dict(INPUT_PRECISION="ieee", INTERPRETED=interpreted, EVEN_K=K % BK == 0,
                EVEN_N=I % BN == 0, BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=BK, num_warps=warps,
                num_stages=stages)


def down_config(M, K, N, dtype, tiles=(), interpreted=False, arch=90) -> dict:
    """Constexprs, launch options and N_SPLIT of one down_residual_sumsq launch."""
    if tiles:
        BM, BN, BK, split, warps, stages = tiles
    elif interpreted:
        BM, BN, BK, split, warps, stages = _INTERPRETED_DOWN
    else:
        BM, BN, BK, split, warps, stages = down_candidates(M, K, N, dtype, arch)[0]
    BM, BN, BK = _fit(M, BM), _fit(N, BN), _fit(K, BK)
    n_tiles = triton.cdiv(N, BN)
    split = max(1, min(split, n_tiles))
    per = triton.cdiv(n_tiles, split)
    split = triton.cdiv(n_tiles, per)  # no program without a tile
    return dict(INPUT_PRECISION="ieee", INTERPRETED=interpreted, EVEN_K=K % BK == 0,
                EVEN_N=N % BN == 0, N_PER_PROGRAM=per, BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=BK,
                num_warps=warps, num_stages=stages, N_SPLIT=split)


def epilogue_config(kind: str, interpreted: bool = False) -> dict:
    BM, BN, warps = _INTERPRETED_EPILOGUE if interpreted else _EPILOGUE_TILES[kind]
    return dict(INTERPRETED=interpreted, BLOCK_M=BM, BLOCK_N=BN, num_warps=warps)


def _check_tiles(op: str, tiles, n: int, what: str) -> None:
    if tiles and (len(tiles) != n or any(not isinstance(v, int) or v < 1 for v in tiles)
                  or any(v & (v - 1) for v in tiles[:3])):
        raise ValueError(f"{op}: tiles must be {what}, the first three powers of two, got "
                         f"{tuple(tiles)}")


def _check_supported(op: str, name: str, t: torch.Tensor) -> None:
    if t.dtype not in TL_DTYPES:
        raise ValueError(f"{op}: the triton backend runs float32 and bfloat16 {name}, got "
                         f"{t.dtype}")


Tensor = torch.Tensor


def swiglu_gate_up_triton(x: Tensor, w_gate_up: Tensor, cublas: bool, tiles: List[int]) -> Tensor:
    """swiglu_gate_up in Triton (see the module docstring); returns a, (..., I) in x's dtype."""
    op = "swiglu_gate_up"
    _looped_checks.swiglu_gate_up(x, w_gate_up)
    _check_supported(op, "x", x)
    _check_tiles(op, tiles, 5, "(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages)")
    I, K = w_gate_up.shape[0] // 2, x.shape[-1]
    M = x.numel() // K if K else 0
    a = torch.empty(x.shape[:-1] + (I,), dtype=x.dtype, device=x.device)
    if M * I == 0 or nothing_to_run(x):
        return a
    interp = interpreted(x.device)
    with launch_guard(x.device):
        if cublas:
            gu = torch.matmul(x.reshape(M, K), w_gate_up.t())
            cfg = epilogue_config("silu_mul", interp)
            grid = (triton.cdiv(M, cfg["BLOCK_M"]), triton.cdiv(I, cfg["BLOCK_N"]))
            torch.library.wrap_triton(_silu_mul_kernel)[grid](gu, a, M, I, **cfg)
        else:
            cfg = gate_up_config(M, K, I, x.dtype, tuple(tiles), interp, _arch(x.device))
            grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(I, cfg["BLOCK_N"]),)
            torch.library.wrap_triton(_gate_up_kernel)[grid](x, w_gate_up, a, M, K, I, **cfg)
    return a


def down_residual_sumsq_triton(a: Tensor, w_down: Tensor, residual: Tensor, cublas: bool,
                               tiles: List[int]) -> Tuple[Tensor, Tensor]:
    """down_residual_sumsq in Triton (see the module docstring); returns (out, sumsq)."""
    op = "down_residual_sumsq"
    _looped_checks.down_residual_sumsq(a, w_down, residual)
    _check_supported(op, "a", a)
    _check_tiles(op, tiles, 6, "(BLOCK_M, BLOCK_N, BLOCK_K, N_SPLIT, num_warps, num_stages)")
    N, K = w_down.shape
    M = residual.numel() // N if N else 0
    out = torch.empty_like(residual)
    interp = interpreted(a.device)
    if cublas:
        sumsq = torch.empty(residual.shape[:-1], dtype=torch.float32, device=a.device)
        if M * N and not nothing_to_run(a):
            with launch_guard(a.device):
                t = torch.matmul(a.reshape(M, K), w_down.t())
                cfg = epilogue_config("add_sumsq", interp)
                torch.library.wrap_triton(_add_sumsq_kernel)[(triton.cdiv(M, cfg["BLOCK_M"]),)](
                    t, residual, out, sumsq, M, N, **cfg)
        elif M and not N:
            sumsq.zero_()
        return out, sumsq
    cfg = down_config(M, K, N, a.dtype, tuple(tiles), interp, _arch(a.device))
    split = cfg.pop("N_SPLIT")
    rows = tuple(residual.shape[:-1])
    sumsq = torch.empty(rows, dtype=torch.float32, device=a.device)
    part = sumsq if split == 1 else torch.empty((split,) + rows, dtype=torch.float32,
                                                device=a.device)
    if M * N and not nothing_to_run(a):
        with launch_guard(a.device):
            torch.library.wrap_triton(_down_kernel)[(triton.cdiv(M, cfg["BLOCK_M"]), split)](
                a, w_down, residual, out, part, M, K, N, **cfg)
    elif M and not N:
        part.zero_()
    if split > 1:  # partial sums added in a fixed order (no atomics): the same bits every run
        torch.sum(part, 0, out=sumsq)
    return out, sumsq


# Registered when this module is first imported (the dispatcher imports it as it resolves the
# backend, outside any torch.compile trace).
_GATE_UP_OP = torch.library.triton_op("eqk::swiglu_gate_up_triton", swiglu_gate_up_triton,
                                      mutates_args=())
_DOWN_OP = torch.library.triton_op("eqk::down_residual_sumsq_triton", down_residual_sumsq_triton,
                                   mutates_args=())


def swiglu_gate_up_triton_op():
    """torch.ops.eqk.swiglu_gate_up_triton."""
    return _GATE_UP_OP


def down_residual_sumsq_triton_op():
    """torch.ops.eqk.down_residual_sumsq_triton."""
    return _DOWN_OP

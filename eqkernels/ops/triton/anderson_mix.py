"""Triton backend of the fused Anderson step (semantics: `eqkernels.ops.anderson_mix`).

Three launches (the CUDA kernel's structure, csrc/cuda/anderson_mix.cu):
  dots    each program takes BLOCK_B samples and one chunk of their columns (on a GPU a wide row
          is split over several programs, so every SM gets work whatever B is) and streams
          z, f(z) and the old history residuals G once: residual norms and the dots g . G_j for
          every old slot, accumulated in float64, written per (sample, chunk) to a workspace;
  decide  per BLOCK_B samples: the chunks' sums (in chunk order: deterministic), the decisions
          (divergence, best iterate, convergence, restart), the new Gram row/column and the
          k x k Cholesky solve, in registers; the mixing plan (flags, slot, rows to read,
          weights) goes to the workspace;
  mix     programs as in dots, in reverse order (the chunks dots read last are likeliest to be
          in L2 still): push (z, g) into the ring buffer, copy the best iterate and write
          z_out = sum_j alpha_j (X_j + beta G_j).
Tiles are (sample b, history slot i, column) or (sample b, slot i, slot j).
Runs compiled on CUDA tensors, or under TRITON_INTERPRET=1 on CPU tensors (one chunk a row:
the interpreter pays per program).

Tile budget: BLOCK_B is capped by the history tile (BLOCK_B, M_PAD, BLOCK_N) *and* by the
Gram / Cholesky tiles (BLOCK_B, M_PAD, M_PAD), which for small n would otherwise grow without
bound (B = 1024, m = 16, n = 4 spilled 34 KB on sm_90). Launches run under the tensors' device,
with fp fusion off (see ops/triton/block_step.py), 64-bit column offsets.
The op: `anderson_step_triton_op()`, eqk::anderson_step_triton, eqk::anderson_step's schema.

Interpreter (triton 3.9) pitfalls avoided below: `~` on booleans is mistyped (we
compare with 0 instead), and so is a *scalar* comparison broadcast into a block
(every per-sample flag here is a (BLOCK_B,) vector, never a scalar).
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from eqkernels.ops import _checks
from eqkernels.ops.constants import CHOL_PIVOT_RTOL, MAX_HISTORY, REL_EPS
from eqkernels.ops.triton.block_step import (LAUNCH_OPTIONS, _interpreting_fake, _offsets,
                                             launch_guard)

# Elements of one (BLOCK_B, M_PAD, BLOCK_N) history tile. On a GPU this bounds the
# float64 partial sums a program keeps in registers (~16 doubles a thread at 4 warps);
# the interpreter pays per operation, not per element, so it takes big tiles.
_TILE_ELEMS_GPU = 2048
# Elements of one (BLOCK_B, M_PAD, M_PAD) float64 Gram / Cholesky tile on a GPU (H, L, A and
# their temporaries are live at once): 256 keeps the m = 16 solve at BLOCK_B = 1.
_GRAM_ELEMS_GPU = 256
_TILE_ELEMS_INTERPRETED = 1 << 17
_MAX_BLOCK_N_INTERPRETED = 1024
_NUM_WARPS = 4
# Columns of one dots / mix program on a GPU: tiles it streams (n = 8192, m = 8: 4 chunks).
_CHUNK_TILES_GPU = 8
# Plan columns of the workspace after the weights: flags (1 live, 2 improved), slot, rows read.
_PLAN_COLS = 3
_PLAN_INTS = tl.constexpr(_PLAN_COLS)


@triton.jit
def _anderson_dots_kernel(
    z_ptr, fz_ptr,                                # (B, n) data dtype T, strided
    active_ptr, count_ptr,                        # (B,) bool, int32 (read only here)
    G_ptr,                                        # (B, M, n) T, contiguous
    part_ptr,                                     # (B, n_chunks, M_PAD + 2) float64
    B, n, chunk,
    stride_zb, stride_zn, stride_fb, stride_fn,
    M: tl.constexpr, M_PAD: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    act = tl.load(active_ptr + rows, mask=rows < B, other=0) != 0
    if tl.max(act.to(tl.int32), axis=0) == 0:
        return
    rows64 = rows.to(tl.int64)  # 64-bit offsets: B * M * n can pass 2**31
    si = tl.arange(0, M_PAD)[None, :]                # (1, M_PAD) history slot
    hist_row = (rows64 * M)[:, None] * n + si.to(tl.int64) * n  # (BLOCK_B, M_PAD) row starts
    col_idx = tl.arange(0, BLOCK_N)
    count = tl.load(count_ptr + rows, mask=act, other=0)
    old_valid = (si < tl.minimum(count, M)[:, None]) & act[:, None]
    lo = tl.program_id(1) * chunk
    hi = tl.minimum(lo + chunk, n)

    # |g|^2, |f(z)|^2 and g . G_j over the old slots, in float64: lane-wise partial sums,
    # reduced once after the loop.
    gg_acc = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float64)
    ff_acc = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float64)
    dot_acc = tl.zeros([BLOCK_B, M_PAD, BLOCK_N], dtype=tl.float64)
    for start in range(lo, hi, BLOCK_N):
        cols = (start + col_idx)[None, :]
        cmask = act[:, None] & (cols < hi)
        zv = tl.load(z_ptr + _offsets(rows64, cols, stride_zb, stride_zn), mask=cmask, other=0.0)
        fv = tl.load(fz_ptr + _offsets(rows64, cols, stride_fb, stride_fn), mask=cmask, other=0.0)
        g64 = (fv - zv).to(tl.float64)  # the residual is formed in T, like the reference
        f64 = fv.to(tl.float64)
        gg_acc += g64 * g64
        ff_acc += f64 * f64
        Gt = tl.load(G_ptr + hist_row[:, :, None] + cols.to(tl.int64)[:, None, :],
                     mask=old_valid[:, :, None] & cmask[:, None, :], other=0.0)
        dot_acc += Gt.to(tl.float64) * g64[:, None, :]
    base = part_ptr + (rows64 * tl.num_programs(1) + tl.program_id(1)) * (M_PAD + 2)
    tl.store(base, tl.sum(gg_acc, axis=1), mask=act)
    tl.store(base + 1, tl.sum(ff_acc, axis=1), mask=act)
    tl.store(base[:, None] + 2 + si, tl.sum(dot_acc, axis=2), mask=act[:, None])


@triton.jit
def _anderson_decide_kernel(
    active_ptr, converged_ptr, diverged_ptr,      # (B,) bool
    nstep_ptr, count_ptr,                         # (B,) int32
    abs_res_ptr, rel_res_ptr, best_abs_ptr, best_rel_ptr,  # (B,) T
    gram_ptr,                                     # (B, M, M) float64, contiguous
    part_ptr,                                     # (B, N_CHUNKS, M_PAD + 2) float64
    plan_ptr,                                     # (B, M_PAD + _PLAN_INTS) float64: the plan
    B,
    # float64 annotations: an unannotated Python float would arrive as fp32
    tol: tl.float64, lam: tl.float64, restart_growth: tl.float64,
    rel_eps: tl.float64, pivot_rtol: tl.float64,
    REL_MODE: tl.constexpr,
    M: tl.constexpr,       # history size m
    M_PAD: tl.constexpr,   # next power of two >= m
    N_CHUNKS: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    act = tl.load(active_ptr + rows, mask=rows < B, other=0) != 0
    rows64 = rows.to(tl.int64)
    T = abs_res_ptr.dtype.element_ty
    si = tl.arange(0, M_PAD)[None, :]                # (1, M_PAD) history slot
    si3 = tl.arange(0, M_PAD)[None, :, None]         # (1, M_PAD, 1)
    plan = plan_ptr + rows64 * (M_PAD + _PLAN_INTS)
    if tl.max(act.to(tl.int32), axis=0) == 0:
        tl.store(plan + M_PAD, 0.0, mask=rows < B)   # flags: nothing to mix
        return
    count = tl.load(count_ptr + rows, mask=act, other=0)

    # ---- the chunks' partial sums, in chunk order -------------------------------------
    gg = tl.zeros([BLOCK_B], dtype=tl.float64)
    ff = tl.zeros([BLOCK_B], dtype=tl.float64)
    dots = tl.zeros([BLOCK_B, M_PAD], dtype=tl.float64)
    for c in range(N_CHUNKS):
        base = part_ptr + (rows64 * N_CHUNKS + c) * (M_PAD + 2)
        gg += tl.load(base, mask=act, other=0.0)
        ff += tl.load(base + 1, mask=act, other=0.0)
        dots += tl.load(base[:, None] + 2 + si, mask=act[:, None], other=0.0)
    old_valid = (si < tl.minimum(count, M)[:, None]) & act[:, None]
    dots = tl.where(old_valid, dots, 0.0)
    abs_res = tl.sqrt(gg)
    fz_norm = tl.sqrt(ff)
    rel_res = abs_res / (fz_norm + rel_eps)

    # ---- bookkeeping (tracking.py) -----------------------------------------------------
    nstep = tl.load(nstep_ptr + rows, mask=act, other=0)
    if REL_MODE:
        metric = rel_res
        best_old = tl.load(best_rel_ptr + rows, mask=act, other=0).to(tl.float64)
    else:
        metric = abs_res
        best_old = tl.load(best_abs_ptr + rows, mask=act, other=0).to(tl.float64)
    # On a GPU each per-sample value is held (and loaded) by many threads while one
    # of them stores it: all of them must have read it before it changes.
    tl.debug_barrier()
    tl.store(nstep_ptr + rows, nstep + 1, mask=act)
    tl.store(abs_res_ptr + rows, abs_res.to(T), mask=act)
    tl.store(rel_res_ptr + rows, rel_res.to(T), mask=act)
    # inf - inf and nan - nan are nan: x - x == 0 exactly when x is finite
    finite = ((abs_res - abs_res) == 0) & ((fz_norm - fz_norm) == 0)
    ok = act & finite
    improved = ok & (metric < best_old)
    tl.store(best_abs_ptr + rows, abs_res.to(T), mask=improved)
    tl.store(best_rel_ptr + rows, rel_res.to(T), mask=improved)
    # The restart test reads the best metric as stored, i.e. rounded to T.
    best_new = tl.where(improved, metric.to(T).to(tl.float64), best_old)
    converging = ok & (metric < tol)
    live = ok & (metric >= tol)
    tl.store(diverged_ptr + rows, 1, mask=act & (finite == 0))
    tl.store(converged_ptr + rows, 1, mask=converging)
    tl.store(active_ptr + rows, 0, mask=act & (live == 0))

    # ---- safeguard and push: the new residual goes to slot count % M -----------------
    restart = metric > restart_growth * best_new  # false for nan; inf growth never restarts
    count = tl.where(restart, 0, count)
    slot = count % M
    count = count + 1
    k = tl.minimum(count, M)
    valid = si < k[:, None]                      # (BLOCK_B, M_PAD)
    is_slot = si == slot[:, None]
    new_dots = tl.where(is_slot, gg[:, None], dots)  # the new slot's own entry is g . g

    # ---- Gram matrix with the new row/column, and its Cholesky solve ----------------
    # Built in registers, never re-read after the store below: a thread that loads
    # after another stored sees new values only in the slot row/column it replaces.
    ii = si3                                  # (1, M_PAD, 1) row i
    jj = tl.arange(0, M_PAD)[None, None, :]   # (1, 1, M_PAD) column j
    k3 = k[:, None, None]
    slot3 = slot[:, None, None]
    pair_valid = (ii < k3) & (jj < k3) & act[:, None, None]
    gram_ptrs = gram_ptr + (rows64 * M * M)[:, None, None] + ii * M + jj
    A = tl.load(gram_ptrs, mask=pair_valid, other=0.0)
    A = tl.where(ii == slot3, new_dots[:, None, :], tl.where(jj == slot3, new_dots[:, :, None], A))
    tl.store(gram_ptrs, A,
             mask=pair_valid & ((ii == slot3) | (jj == slot3)) & live[:, None, None])
    # Invalid slots get identity rows and a zero right-hand side, so y = 0 there.
    diag = ii == jj
    # (lam meets a float64 tensor directly: under the interpreter a Python float that
    # meets only constants becomes fp32.)
    H = tl.where(pair_valid, tl.where(diag, A + lam, A), tl.where(diag, 1.0, 0.0))
    max_diag = tl.max(tl.where(valid, tl.sum(tl.where(diag, H, 0.0), axis=2), 0.0), axis=1)

    # Right-looking Cholesky H = L L^T fused with the forward solve L w = 1_valid.
    # Slots m..M_PAD-1 are padding (identity rows, zero weight): the loops skip them.
    # Column j is read at rows >= j only: the lower triangle, like LAPACK's potrf.
    L = tl.zeros([BLOCK_B, M_PAD, M_PAD], dtype=tl.float64)
    rhs = tl.where(valid, 1.0, 0.0).to(tl.float64)
    w = tl.zeros([BLOCK_B, M_PAD], dtype=tl.float64)
    pivots = tl.full([BLOCK_B, M_PAD], 1.0, dtype=tl.float64)  # padding: identity
    for j in tl.static_range(M):
        col = tl.sum(tl.where(jj == j, H, 0.0), axis=2)          # H[:, j] as updated so far
        piv = tl.sum(tl.where(si == j, col, 0.0), axis=1)        # L[j, j] ** 2
        pivots = tl.where(si == j, piv[:, None], pivots)
        l_jj = tl.sqrt(piv)[:, None]
        l_col = tl.where(si > j, col / l_jj, tl.where(si == j, l_jj, 0.0))
        L = tl.where(jj == j, l_col[:, :, None], L)
        H -= tl.where((ii > j) & (jj > j), l_col[:, :, None] * l_col[:, None, :], 0.0)
        w_j = tl.sum(tl.where(si == j, rhs, 0.0), axis=1)[:, None] / l_jj
        w = tl.where(si == j, w_j, w)
        rhs -= tl.where(si > j, l_col * w_j, 0.0)
    # Backward solve L^T y = w, one column of L^T (a row of L) at a time.
    l_diag = tl.sqrt(pivots)
    y = tl.zeros([BLOCK_B, M_PAD], dtype=tl.float64)
    for jr in tl.static_range(M):
        j = M - 1 - jr
        y_j = tl.sum(tl.where(si == j, w / l_diag, 0.0), axis=1)[:, None]
        y = tl.where(si == j, y_j, y)
        l_row = tl.sum(tl.where(ii == j, L, 0.0), axis=1)        # L[j, :]
        w -= tl.where(si < j, l_row * y_j, 0.0)
    alpha = y / tl.sum(y, axis=1)[:, None]

    # Ill-conditioned (tiny or non-finite pivot) or non-finite weights: damped
    # fixed-point step from the new slot, and the history restarts next step.
    pivot_ok = (pivots > pivot_rtol * max_diag[:, None]) & ((pivots - pivots) == 0)
    bad = (valid & (pivot_ok == 0)) | ((alpha - alpha) != 0)
    failed = tl.sum(bad.to(tl.int32), axis=1) > 0
    alpha = tl.where(failed[:, None], tl.where(is_slot, 1.0, 0.0).to(tl.float64), alpha)
    count = tl.where(failed, 0, count)
    tl.store(count_ptr + rows, count, mask=live)

    # ---- the plan mix follows: weights, flags, slot, old rows read ----------------------
    flags = tl.where(live, 1, 0) + tl.where(improved, 2, 0)
    n_read = tl.where(failed, 0, k)  # old rows the mix reads from memory (a failed solve: none)
    tl.store(plan[:, None] + si, alpha, mask=(rows < B)[:, None])
    tl.store(plan + M_PAD, flags.to(tl.float64), mask=rows < B)
    tl.store(plan + M_PAD + 1, slot.to(tl.float64), mask=rows < B)
    tl.store(plan + M_PAD + 2, n_read.to(tl.float64), mask=rows < B)


@triton.jit
def _anderson_mix_kernel(
    z_ptr, fz_ptr, out_ptr, best_z_ptr,           # (B, n) data dtype T, strided
    X_ptr, G_ptr,                                 # (B, M, n) T, contiguous
    plan_ptr,                                     # (B, M_PAD + _PLAN_INTS) float64
    B, n, chunk,
    stride_zb, stride_zn, stride_fb, stride_fn,
    stride_ob, stride_on, stride_bb, stride_bn,
    beta: tl.float64,
    M: tl.constexpr, M_PAD: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # Reverse order: dots streamed the last programs' columns last (likeliest still in L2).
    pid0 = tl.num_programs(0) - 1 - tl.program_id(0)
    pid1 = tl.num_programs(1) - 1 - tl.program_id(1)
    rows = pid0 * BLOCK_B + tl.arange(0, BLOCK_B)
    rows64 = rows.to(tl.int64)
    plan = plan_ptr + rows64 * (M_PAD + _PLAN_INTS)
    flags = tl.load(plan + M_PAD, mask=rows < B, other=0.0).to(tl.int32)
    live = (flags & 1) != 0
    improved = (flags & 2) != 0
    need = live | improved
    if tl.max(need.to(tl.int32), axis=0) == 0:
        return
    T = z_ptr.dtype.element_ty
    si = tl.arange(0, M_PAD)[None, :]                # (1, M_PAD) history slot
    hist_row = (rows64 * M)[:, None] * n + si.to(tl.int64) * n  # (BLOCK_B, M_PAD) row starts
    col_idx = tl.arange(0, BLOCK_N)
    slot = tl.load(plan + M_PAD + 1, mask=live, other=0.0).to(tl.int32)
    n_read = tl.load(plan + M_PAD + 2, mask=live, other=0.0).to(tl.int32)
    alpha = tl.load(plan[:, None] + si, mask=live[:, None], other=0.0)
    is_slot = si == slot[:, None]
    read_hist = (si < n_read[:, None]) & (si != slot[:, None]) & live[:, None]
    new_row = (rows64 * M + slot) * n     # (BLOCK_B,) start of the pushed row
    lo = pid1 * chunk
    hi = tl.minimum(lo + chunk, n)
    for start in range(lo, hi, BLOCK_N):
        cols = (start + col_idx)[None, :]
        in_n = cols < hi
        zv = tl.load(z_ptr + _offsets(rows64, cols, stride_zb, stride_zn),
                     mask=need[:, None] & in_n, other=0.0)
        tl.store(best_z_ptr + _offsets(rows64, cols, stride_bb, stride_bn), zv,
                 mask=improved[:, None] & in_n)
        lmask = live[:, None] & in_n
        g = tl.load(fz_ptr + _offsets(rows64, cols, stride_fb, stride_fn),
                    mask=lmask, other=0.0) - zv
        hist_mask = read_hist[:, :, None] & in_n[:, None, :]
        hist_off = hist_row[:, :, None] + cols.to(tl.int64)[:, None, :]
        Xt = tl.load(X_ptr + hist_off, mask=hist_mask, other=0.0, eviction_policy="evict_first")
        Gt = tl.load(G_ptr + hist_off, mask=hist_mask, other=0.0, eviction_policy="evict_first")
        Xt = tl.where(is_slot[:, :, None], zv[:, None, :], Xt)
        Gt = tl.where(is_slot[:, :, None], g[:, None, :], Gt)
        mixed = tl.sum(alpha[:, :, None] * (Xt.to(tl.float64) + beta * Gt.to(tl.float64)),
                       axis=1)
        tl.store(X_ptr + new_row[:, None] + cols.to(tl.int64), zv, mask=lmask)
        tl.store(G_ptr + new_row[:, None] + cols.to(tl.int64), g, mask=lmask)
        # z_out may alias z: every thread's loads of this chunk must be done
        # before any thread overwrites it (threads may hold other elements).
        tl.debug_barrier()
        tl.store(out_ptr + _offsets(rows64, cols, stride_ob, stride_on), mixed.to(T),
                 mask=lmask)


def _block_sizes(B, n, M_PAD, interpreted):
    """(BLOCK_B, BLOCK_N): one sample per program on wide rows, several on short ones, as many
    as both the history tile and (on a GPU) the Gram tile budgets allow."""
    budget = _TILE_ELEMS_INTERPRETED if interpreted else _TILE_ELEMS_GPU
    cap_n = _MAX_BLOCK_N_INTERPRETED if interpreted else budget // M_PAD
    BLOCK_N = min(triton.next_power_of_2(max(n, 1)), max(cap_n, 16))
    # Several short rows a program: the dots' float64 sums |g|^2 and |fz|^2 ride along the
    # history rows, so count at least two (at m = 1, 8 rows of 256 spilled on sm_90, triton 3.6).
    cap_b = max(budget // (max(M_PAD, 2) * BLOCK_N), 1)
    if not interpreted:
        cap_b = min(cap_b, max(_GRAM_ELEMS_GPU // (M_PAD * M_PAD), 1))
    BLOCK_B = min(triton.next_power_of_2(B), cap_b)
    return BLOCK_B, BLOCK_N


def kernel_config(B: int, n: int, m: int, stop_rel: bool, interpreted: bool = False) -> dict:
    """The constexprs and num_warps of the three launches (scripts/triton_aot.py compiles
    these), and the column chunk of a dots / mix program."""
    M_PAD = triton.next_power_of_2(m)
    BLOCK_B, BLOCK_N = _block_sizes(B, n, M_PAD, interpreted)
    chunk = max(n, 1) if interpreted else BLOCK_N * _CHUNK_TILES_GPU
    return dict(REL_MODE=bool(stop_rel), M=m, M_PAD=M_PAD, BLOCK_B=BLOCK_B, BLOCK_N=BLOCK_N,
                num_warps=_NUM_WARPS, chunk=chunk)


def stream_config(cfg: dict) -> dict:
    """The dots / mix kernels' constexprs and num_warps."""
    return {k: cfg[k] for k in ("M", "M_PAD", "BLOCK_B", "BLOCK_N", "num_warps")}


def decide_config(cfg: dict, n_chunks: int) -> dict:
    """The decide kernel's constexprs and num_warps."""
    return dict(REL_MODE=cfg["REL_MODE"], M=cfg["M"], M_PAD=cfg["M_PAD"], N_CHUNKS=n_chunks,
                BLOCK_B=cfg["BLOCK_B"], num_warps=cfg["num_warps"])


_SCHEMA = ("(Tensor z, Tensor fz, Tensor(a!) z_out, Tensor(b!) active, Tensor(c!) converged, "
           "Tensor(d!) diverged, Tensor(e!) nstep, Tensor(f!) abs_res, Tensor(g!) rel_res, "
           "Tensor(h!) best_abs, Tensor(i!) best_rel, Tensor(j!) best_z, Tensor(k!) X, "
           "Tensor(l!) G, Tensor(m!) gram, Tensor(n!) count, float tol, bool stop_rel, "
           "float beta, float lam, float restart_growth) -> ()")  # eqk::anderson_step's


Tensor = torch.Tensor


def anderson_step_triton(z: Tensor, fz: Tensor, z_out: Tensor, active: Tensor,
                         converged: Tensor, diverged: Tensor, nstep: Tensor, abs_res: Tensor,
                         rel_res: Tensor, best_abs: Tensor, best_rel: Tensor, best_z: Tensor,
                         X: Tensor, G: Tensor, gram: Tensor, count: Tensor, tol: float,
                         stop_rel: bool, beta: float, lam: float, restart_growth: float) -> None:
    """Fused Anderson step in Triton, in place on z_out, the state and history (see
    anderson_mix.py; the arguments of eqk::anderson_step)."""
    _checks.anderson_step(z, fz, z_out, active, converged, diverged, nstep, abs_res, rel_res,
                          best_abs, best_rel, best_z, X, G, gram, count, MAX_HISTORY)
    B, n = z.shape
    if B == 0 or _interpreting_fake(z):
        return
    m = X.shape[1]
    cfg = kernel_config(B, n, m, stop_rel, interpreted=z.device.type == "cpu")
    chunk = cfg["chunk"]
    n_chunks = triton.cdiv(max(n, 1), chunk)
    M_PAD = cfg["M_PAD"]
    part = torch.empty((B, n_chunks, M_PAD + 2), dtype=torch.float64, device=z.device)
    plan = torch.empty((B, M_PAD + _PLAN_COLS), dtype=torch.float64, device=z.device)
    grid = (triton.cdiv(B, cfg["BLOCK_B"]), n_chunks)
    stream = stream_config(cfg)
    options = {} if torch.compiler.is_compiling() else LAUNCH_OPTIONS
    with launch_guard(z.device):
        torch.library.wrap_triton(_anderson_dots_kernel)[grid](
            z, fz, active, count, G, part, B, n, chunk,
            z.stride(0), z.stride(1), fz.stride(0), fz.stride(1), **stream, **options)
        torch.library.wrap_triton(_anderson_decide_kernel)[(grid[0],)](
            active, converged, diverged, nstep, count, abs_res, rel_res, best_abs, best_rel,
            gram, part, plan, B,
            float(tol), float(lam), float(restart_growth), float(REL_EPS),
            float(CHOL_PIVOT_RTOL), **decide_config(cfg, n_chunks), **options)
        torch.library.wrap_triton(_anderson_mix_kernel)[grid](
            z, fz, z_out, best_z, X, G, plan, B, n, chunk,
            z.stride(0), z.stride(1), fz.stride(0), fz.stride(1),
            z_out.stride(0), z_out.stride(1), best_z.stride(0), best_z.stride(1),
            float(beta), **stream, **options)


@functools.lru_cache(maxsize=None)
def anderson_step_triton_op():
    """torch.ops.eqk.anderson_step_triton (registered on first use): anderson_step_triton as
    a torch.library.triton_op with eqk::anderson_step's schema."""
    return torch.library.triton_op(
        "eqk::anderson_step_triton", anderson_step_triton, schema=_SCHEMA,
        mutates_args=("z_out", "active", "converged", "diverged", "nstep", "abs_res",
                      "rel_res", "best_abs", "best_rel", "best_z", "X", "G", "gram", "count"))

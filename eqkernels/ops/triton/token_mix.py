"""Triton backend of token_mix (semantics: `eqkernels.ops.token_mix`).

One program per (sample, tile of BLOCK_C channels) holds the sample's (T x BLOCK_C) slab on
chip, channel-major (the tile is x^T: BLOCK_C rows of T tokens, loaded straight from the
(B, T, C) layout, coalesced along C; nothing is transposed in memory), and runs the token MLP
as GEMMs whose M dimension is the channel tile:

    for each chunk of BLOCK_I hidden units i:
        g^T, u^T = x^T W_gate[i]^T, x^T W_up[i]^T            (BLOCK_C x BLOCK_I, float32)
        y^T     += (silu(g) * u)^T W_down[:, i]^T            (BLOCK_C x T, float32)
    y = x + y;  out = y * rsqrt(mean_t y^2 + eps)            (the norm over T: a row reduction)

T is padded inside the kernel, never in memory: the token axis is two power-of-two chunks
T_A + T_B (81 = 64 + 17 -> 64 + 32 = 96, not 128), each a K (first GEMMs) or N (second GEMM)
block of its own, masked on load. The latent is read once (h, and inj when given) and written
once; the weights (2 I T + T I elements) come from L2 for every program.

x = (h + inj) * in_scale is formed in float32 and rounded to h's dtype once: that is the GEMM
operand and the residual (for bfloat16, eager PyTorch rounds z + inj, or the normalised input,
to bfloat16 alike; for float32 nothing is rounded). GEMM operands are in h's dtype (bfloat16 on
tensor cores, float32 as full-precision float32 dots: input_precision="ieee"); accumulation,
SiLU * up (rounded to h's dtype as the down GEMM's operand), the residual add and the norm are
float32.
The op: `token_mix_triton_op()`, torch.ops.eqk.token_mix_triton.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import triton
import triton.language as tl

from eqkernels.ops import _looped_checks
from eqkernels.ops.token_mix import MAX_T_TRITON as MAX_T
from eqkernels.ops.token_mix import token_chunks
from eqkernels.ops.triton._looped_common import (TL_DTYPES, cast_to, dot_operand, interpreted,
                                                 launch_guard, nothing_to_run)


@triton.jit
def _load_x_t(h_b, inj_b, scale_b, c, t, T, C, eps, HAS_INJ: tl.constexpr,
              HAS_SCALE: tl.constexpr, SCALE_FROM_SUMSQ: tl.constexpr):
    """x^T for channels c (rows) and tokens t (columns) of one sample (h_b, inj_b, scale_b:
    its base pointers): ((h + inj) * scale) in float32, 0 on padding; scale_b holds the rows'
    sums of squares when SCALE_FROM_SUMSQ (scale = rsqrt(s / C + eps))."""
    mask = (c[:, None] < C) & (t[None, :] < T)
    offs = t[None, :] * C + c[:, None]  # int32: one sample's T * C < 2**31
    x = tl.load(h_b + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_INJ:
        x += tl.load(inj_b + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_SCALE:
        s = tl.load(scale_b + t, mask=t < T, other=1.0)
        if SCALE_FROM_SUMSQ:
            s = 1.0 / tl.sqrt_rn(s / C + eps)
        x = x * s[None, :]
    return x


@triton.jit
def _load_w(ptr, rows, cols, stride, n_cols, EVEN: tl.constexpr):
    """A (rows x cols) chunk of a packed weight (row stride `stride`); columns >= n_cols are
    0 unless EVEN (every chunk full)."""
    p = ptr + rows[:, None] * stride + cols[None, :]
    if EVEN:
        return tl.load(p)
    else:
        return tl.load(p, mask=cols[None, :] < n_cols, other=0.0)


@triton.jit
def _load_wd(ptr, rows, cols, n_rows, T_PAD: tl.constexpr, EVEN: tl.constexpr):
    """A (BLOCK_I x T chunk) of packed W_down^T (I, T_PAD): rows >= n_rows are 0 unless EVEN."""
    p = ptr + rows[:, None] * T_PAD + cols[None, :]
    if EVEN:
        return tl.load(p)
    else:
        return tl.load(p, mask=rows[:, None] < n_rows, other=0.0)


@triton.jit
def _token_mix_kernel(
    h_ptr, inj_ptr, scale_ptr,        # (B, T, C) dtype D; inj like h or unused; scale (B, T) fp32
                                      # (or the rows' sums of squares: SCALE_FROM_SUMSQ)
    wgu_ptr,                          # (T_PAD, 2I) D: [W_gate^T | W_up^T], rows >= T zero
    wd_ptr,                           # (I, T_PAD) D: W_down^T, columns >= T zero
    out_ptr,                          # (B, T, C) dtype D
    T, C, I, n_ctiles,
    eps,
    HAS_INJ: tl.constexpr, HAS_SCALE: tl.constexpr, SCALE_FROM_SUMSQ: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,    # "ieee" for float32 (no TF32); bfloat16 ignores it
    INTERPRETED: tl.constexpr,
    T_A: tl.constexpr, T_B: tl.constexpr,
    EVEN_I: tl.constexpr,             # I % BLOCK_I == 0: no masks on the weight chunks
    BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
):
    T_PAD: tl.constexpr = T_A + T_B
    pid = tl.program_id(0)
    b = pid // n_ctiles
    c = (pid % n_ctiles) * BLOCK_C + tl.arange(0, BLOCK_C)
    D: tl.constexpr = h_ptr.dtype.element_ty
    base = b.to(tl.int64) * T * C
    h_b, inj_b, out_b = h_ptr + base, inj_ptr + base, out_ptr + base
    scale_b = scale_ptr + b.to(tl.int64) * T
    # x rounded to D: the GEMM operand, and the residual (eager rounds z + inj, or the
    # normalised input, to D alike; float32 is exact). No float32 copy stays live.
    ta = tl.arange(0, T_A)
    xa = cast_to(_load_x_t(h_b, inj_b, scale_b, c, ta, T, C, eps, HAS_INJ, HAS_SCALE,
                           SCALE_FROM_SUMSQ), D, INTERPRETED)
    xa_d = dot_operand(xa, INTERPRETED)
    ya = tl.zeros([BLOCK_C, T_A], dtype=tl.float32)
    if T_B > 0:
        tb = T_A + tl.arange(0, T_B)
        xb = cast_to(_load_x_t(h_b, inj_b, scale_b, c, tb, T, C, eps, HAS_INJ, HAS_SCALE,
                               SCALE_FROM_SUMSQ), D, INTERPRETED)
        xb_d = dot_operand(xb, INTERPRETED)
        yb = tl.zeros([BLOCK_C, T_B], dtype=tl.float32)

    for i0 in range(0, I, BLOCK_I):
        i = i0 + tl.arange(0, BLOCK_I)
        # g^T, u^T = x^T [W_gate^T | W_up^T] chunks (T x BLOCK_I each)
        wg = _load_w(wgu_ptr, ta, i, 2 * I, I, EVEN_I)
        wu = _load_w(wgu_ptr + I, ta, i, 2 * I, I, EVEN_I)
        g = tl.dot(xa_d, dot_operand(wg, INTERPRETED), input_precision=INPUT_PRECISION)
        u = tl.dot(xa_d, dot_operand(wu, INTERPRETED), input_precision=INPUT_PRECISION)
        if T_B > 0:
            wg = _load_w(wgu_ptr, tb, i, 2 * I, I, EVEN_I)
            wu = _load_w(wgu_ptr + I, tb, i, 2 * I, I, EVEN_I)
            g = tl.dot(xb_d, dot_operand(wg, INTERPRETED), acc=g,
                       input_precision=INPUT_PRECISION)
            u = tl.dot(xb_d, dot_operand(wu, INTERPRETED), acc=u,
                       input_precision=INPUT_PRECISION)
        a = g / (1.0 + tl.exp(-g)) * u                     # silu(g) * u, float32
        a_d = dot_operand(cast_to(a, D, INTERPRETED), INTERPRETED)
        # y^T += (silu(g) u)^T W_down^T chunk (BLOCK_I x T)
        ya = tl.dot(a_d, dot_operand(_load_wd(wd_ptr, i, ta, I, T_PAD, EVEN_I), INTERPRETED),
                    acc=ya, input_precision=INPUT_PRECISION)
        if T_B > 0:
            yb = tl.dot(a_d,
                        dot_operand(_load_wd(wd_ptr, i, tb, I, T_PAD, EVEN_I), INTERPRETED),
                        acc=yb, input_precision=INPUT_PRECISION)

    # the residual, from the dot operand itself (the copy already live across the loop)
    ya += xa_d.to(tl.float32)
    sumsq = tl.sum(ya * ya, axis=1)                         # padding columns are exactly 0
    if T_B > 0:
        yb += xb_d.to(tl.float32)
        sumsq += tl.sum(yb * yb, axis=1)
    rs = 1.0 / tl.sqrt_rn(sumsq / T + eps)
    tl.store(out_b + ta[None, :] * C + c[:, None], cast_to(ya * rs[:, None], D, INTERPRETED),
             mask=(c[:, None] < C) & (ta[None, :] < T))
    if T_B > 0:
        tl.store(out_b + tb[None, :] * C + c[:, None],
                 cast_to(yb * rs[:, None], D, INTERPRETED),
                 mask=(c[:, None] < C) & (tb[None, :] < T))


# Candidate tiles (BLOCK_C, BLOCK_I, num_warps, num_stages) for a GPU sweep, default first, per
# dtype and arch (scripts/triton_aot.py compiles each for its arch: no spills).
# bfloat16, sm_90 (wgmma; T = 81 -> 96 on chip): registers a thread (ptxas, triton 3.9):
# (128, 32, 8, 2) 165, (64, 32, 4, 2) 163, (128, 64, 8, 2) 221, (64, 64, 4, 1) 248; (256, 32, 8)
# spills. num_stages 2 streams the next weight chunks in (cp.async) behind the MMAs. Wider
# channel tiles re-read the weights (124 KB at T = 81, I = 256) from L2 fewer times: each of the
# B * C / BLOCK_C programs reads them once. sm_80 (mma.sync, both operands in registers): the
# 64-wide hidden chunks spill there.
# float32 (full-precision FMA dots keep both operands in registers): small tiles, 8 warps.
CANDIDATES = {
    (torch.bfloat16, 90): ((128, 32, 8, 2), (64, 32, 4, 2), (128, 64, 8, 2), (128, 32, 8, 1),
                           (64, 64, 4, 1)),
    (torch.bfloat16, 80): ((128, 32, 8, 2), (64, 32, 4, 2), (128, 32, 8, 1)),
    (torch.float32, 90): ((32, 32, 8, 1), (64, 16, 8, 1), (32, 16, 4, 1)),
    (torch.float32, 80): ((32, 32, 8, 1), (64, 16, 8, 1), (32, 16, 4, 1)),
}
_INTERPRETED_TILES = (128, 256, 4, 1)  # the interpreter pays per operation, not per element


def arch_of(device: torch.device) -> int:
    """90 for Hopper and newer, 80 below (the candidate tables' keys)."""
    if device.type == "cuda":
        return 90 if torch.cuda.get_device_capability(device)[0] >= 9 else 80
    return 90


def candidate_tiles(B: int, T: int, C: int, I: int, dtype: torch.dtype,
                    arch: int = 90) -> List[tuple]:
    """Tile configurations worth timing for this shape (the first is the default): the GPU
    suite's sweep calls token_mix(..., backend="triton", tiles=t) for each."""
    table = CANDIDATES[(dtype, 90 if arch >= 90 else 80)]
    cands = [t for t in table if t[0] <= max(16, triton.next_power_of_2(C))] or [table[-1]]
    if B * triton.cdiv(C, cands[0][0]) < 264 and len(cands) > 1:
        # small batches: narrower channel tiles first, so that every SM (132 on an H200) works
        cands.sort(key=lambda t: t[0])
    return cands


def kernel_config(B: int, T: int, C: int, I: int, dtype: torch.dtype, tiles=(),
                  interpreted: bool = False, arch: int = 90) -> dict:
    """Constexprs and launch options of one launch (scripts/triton_aot.py compiles these)."""
    T_A, T_B = token_chunks(T)
    if tiles:
        BLOCK_C, BLOCK_I, num_warps, num_stages = tiles
    elif interpreted:
        BLOCK_C, BLOCK_I, num_warps, num_stages = _INTERPRETED_TILES
    else:
        BLOCK_C, BLOCK_I, num_warps, num_stages = candidate_tiles(B, T, C, I, dtype, arch)[0]
    BLOCK_C = min(BLOCK_C, max(16, triton.next_power_of_2(C)))
    BLOCK_I = min(BLOCK_I, max(16, triton.next_power_of_2(I)))
    return dict(INPUT_PRECISION="ieee", INTERPRETED=interpreted, T_A=T_A, T_B=T_B,
                EVEN_I=I % BLOCK_I == 0, BLOCK_C=BLOCK_C, BLOCK_I=BLOCK_I, num_warps=num_warps,
                num_stages=num_stages)


def _check_tiles(tiles) -> None:
    if tiles and (len(tiles) != 4 or any(not isinstance(v, int) or v < 1 for v in tiles)
                  or any(v & (v - 1) for v in tiles[:3])):
        raise ValueError(f"token_mix: tiles must be (BLOCK_C, BLOCK_I, num_warps, num_stages), "
                         f"powers of two but the last, got {tuple(tiles)}")


def check_supported(h: torch.Tensor) -> None:
    """What the Triton kernel adds to the op's argument check."""
    if h.dtype not in TL_DTYPES:
        raise ValueError(f"token_mix: the triton backend runs float32 and bfloat16 h, got "
                         f"{h.dtype}")
    if h.shape[1] > MAX_T:
        raise ValueError(f"token_mix: the triton backend keeps T tokens on chip, T <= {MAX_T}; "
                         f"got h of shape {list(h.shape)}")


Tensor = torch.Tensor


def token_mix_triton(h: Tensor, gate_up_t: Tensor, down_t: Tensor, inj: Optional[Tensor],
                     in_scale: Optional[Tensor], scale_is_sumsq: bool, eps: float,
                     tiles: List[int]) -> Tensor:
    """token_mix in Triton (see the module docstring) on the packed weights
    (eqkernels.ops.token_mix.prepare_token_mix): returns the new (B, T, C) tensor.
    scale_is_sumsq: in_scale holds the rows' sums of squares (scale = rsqrt(s / C + eps))."""
    _looped_checks.token_mix_packed(h, gate_up_t, down_t, sum(token_chunks(h.shape[1]))
                                    if h.dim() == 3 else 0, inj, in_scale, eps,
                                    "in_sumsq" if scale_is_sumsq else "in_scale")
    check_supported(h)
    _check_tiles(tiles)
    out = torch.empty_like(h)
    B, T, C = h.shape
    I = down_t.shape[0]
    if B * C > 0 and not nothing_to_run(h):
        cfg = kernel_config(B, T, C, I, h.dtype, tuple(tiles), interpreted(h.device),
                            arch_of(h.device))
        n_ctiles = triton.cdiv(C, cfg["BLOCK_C"])
        kernel = torch.library.wrap_triton(_token_mix_kernel)
        with launch_guard(h.device):
            kernel[(B * n_ctiles,)](
                h, h if inj is None else inj, h if in_scale is None else in_scale,
                gate_up_t, down_t, out, T, C, I, n_ctiles, float(eps),
                HAS_INJ=inj is not None, HAS_SCALE=in_scale is not None,
                SCALE_FROM_SUMSQ=bool(scale_is_sumsq), **cfg)
    return out


# Registered when this module is first imported (the dispatcher imports it as it resolves the
# backend, outside any torch.compile trace): token_mix_triton as a torch.library.triton_op (its
# fake kernel: the same function on fake tensors).
_OP = torch.library.triton_op("eqk::token_mix_triton", token_mix_triton, mutates_args=())


def token_mix_triton_op():
    """torch.ops.eqk.token_mix_triton."""
    return _OP

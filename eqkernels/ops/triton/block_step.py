"""Triton backend of the fused block-step epilogue (semantics: `eqkernels.ops.block_step`).

Each program takes BLOCK_B samples (1 for wide rows; several when rows are short,
so the small per-sample work is shared) and makes one pass over their rows in
BLOCK_N chunks: load z and f_out, form
    new = (1 - damping) z + damping f_out + sigma eps      (in W = float32/float64),
store it to z_next as T (rows active on entry only), and accumulate
||T(new) - z||^2 and ||T(new)||^2 in float64. After the loop it writes nstep, the
residuals and the halting flags. eps is the counter-based stream of the reference
(lowbias32 hashes in uint32, Box-Muller in float32), so every backend draws it alike.
Runs compiled on CUDA tensors, or under TRITON_INTERPRET=1 on CPU tensors.

The noise key is derived in the kernel from the step counter tensor (noise_key(seed,
step + 1)); the op then advances the counter with a torch op, after the kernel, on the same
stream: no host read, so a CUDA graph of K updates draws K different noise fields.
Launches run under the tensors' device (torch.cuda.device), with fp fusion off
(enable_fp_fusion=False: no c_z*z + c_f*f or new + sigma*eps contracted into an FMA, so the
noiseless step rounds as the reference's separate mul/add; inside torch.compile, which does
not forward that launch option, the compiled kernel may contract them: agreement then is to
an ulp of the update, not bitwise). Column offsets are 64-bit (cols * stride_n may pass 2**31).
The op: `block_step_triton_op()`, eqk::block_step_triton, eqk::block_step's schema.

Interpreter (triton 3.9) pitfalls avoided below: `~` on booleans is mistyped (we
compare with 0 instead), and so is a *scalar* comparison broadcast into a block
(every per-sample flag here is a (BLOCK_B,) vector, never a scalar); float32 ->
bfloat16 casts truncate (we round to nearest even by hand); annotated float
arguments arrive as Python floats (no .to: we use tl.full); and libdevice is
unavailable. Compiled, eps uses libdevice's logf/cosf (the routines behind CUDA's,
which the reference runs on CUDA tensors) and IEEE sqrt; interpreted, numpy's float32
log/cos, which differ from PyTorch's CPU ones in the last bit or two of some eps.
"""
from __future__ import annotations

import contextlib
import functools

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from eqkernels.ops import _checks
from eqkernels.ops.constants import HASH_MUL as _HASH_MUL
from eqkernels.ops.constants import MASK32 as _MASK32
from eqkernels.ops.constants import NOISE_STEP_OFFSET, REL_EPS

# Elements of one (BLOCK_B, BLOCK_N) tile. On a GPU this bounds the two float64
# partial sums and the noise temporaries a program keeps in registers: 4 elements a
# thread at 8 warps is ~65 registers on sm_90 with noise (ptxas), vs ~230 at 16;
# the interpreter pays per operation, not per element, so it takes big tiles.
_TILE_ELEMS_GPU = 1024
# The noisy step keeps the hash / Box-Muller temporaries of every element live too: at 1024
# elements as (2, 512), and at 512 as (4..16, 128..32) in float64, ptxas spilled 8-24 B on
# sm_80 at its 64-register choice (scripts/triton_aot.py); 256 (one element a thread at 8
# warps) stays under 64 registers without a spill.
_TILE_ELEMS_GPU_NOISE = 256
_TILE_ELEMS_INTERPRETED = 1 << 16
_MAX_BLOCK_N_INTERPRETED = 4096
_NUM_WARPS = 8
_HASH_MUL0 = tl.constexpr(_HASH_MUL[0])  # lowbias32's multipliers (ops/constants.py)
_HASH_MUL1 = tl.constexpr(_HASH_MUL[1])
_STEP_OFFSET = tl.constexpr(NOISE_STEP_OFFSET)
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
def _uniform(idx, j, key):
    """u_j of the reference stream for uint32 counters idx: (h >> 8 + 0.5) / 2**24, float32."""
    h = _lowbias32(_lowbias32(idx * 2 + j) ^ key)
    # float32 throughout: h >> 8 + 0.5 rounds in float32 near 2**24, as in the reference
    return ((h >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)


@triton.jit
def _standard_normal(idx, key, INTERPRETED: tl.constexpr):
    """eps of the reference stream for uint32 counters idx: Box-Muller in float32."""
    u0 = _uniform(idx, 0, key)
    theta = 6.283185307179586 * _uniform(idx, 1, key)  # 2 pi rounded to float32, like torch
    if INTERPRETED:
        return tl.sqrt_rn(-2.0 * tl.log(u0)) * tl.cos(theta)
    else:
        return tl.sqrt_rn(-2.0 * libdevice.log(u0)) * libdevice.cos(theta)


@triton.jit
def _to_bf16_rne(x):
    """float32 -> bfloat16 rounded to nearest even (the interpreter's cast truncates)."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    bits = tl.where(x != x, 0x7FC0, bits)  # NaN stays a (quiet) NaN, never rounds to inf
    return bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit(do_not_specialize=["seed"])
def _block_step_kernel(
    z_ptr, f_ptr, out_ptr,                        # (B, n) data dtype T, strided
    active_ptr, converged_ptr, diverged_ptr,      # (B,) bool
    nstep_ptr,                                    # (B,) int32
    abs_res_ptr, rel_res_ptr,                     # (B,) residual dtype R
    step_ptr,                                     # (1,) int64 step counter (read only here)
    B, n,
    stride_zb, stride_zn, stride_fb, stride_fn, stride_ob, stride_on,
    seed,                                         # run seed mod 2**32 (may arrive as int64)
    # float64 annotations: an unannotated Python float would arrive as fp32
    c_z: tl.float64, c_f: tl.float64, sigma: tl.float64, tol: tl.float64,
    rel_eps: tl.float64,
    W: tl.constexpr,          # arithmetic dtype: float64 for float64 T, else float32
    HAS_NOISE: tl.constexpr,  # sigma != 0 (the reference adds no noise term at all then)
    REL_MODE: tl.constexpr,
    INTERPRETED: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    # Inactive samples (and padding rows) are frozen: nothing changes for them.
    act = tl.load(active_ptr + rows, mask=rows < B, other=0) != 0
    if tl.max(act.to(tl.int32), axis=0) == 0:
        return
    T = z_ptr.dtype.element_ty
    R = abs_res_ptr.dtype.element_ty
    rows64 = rows.to(tl.int64)  # 64-bit offsets: B * n can pass 2**31
    col_idx = tl.arange(0, BLOCK_N)
    # Scalars are rounded to W once, as PyTorch does with a Python scalar times a tensor.
    # (tl.full: under the interpreter the arguments are Python floats, without .to.)
    cz = tl.full([], c_z, W)
    cf = tl.full([], c_f, W)
    sig = tl.full([], sigma, W)
    key32 = _noise_key(seed.to(tl.uint32), tl.load(step_ptr) + 1)

    # Lane-wise partial sums of (T(new) - z)^2 and T(new)^2, reduced once after the loop.
    dd_acc = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float64)
    qq_acc = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float64)
    for start in range(0, n, BLOCK_N):
        cols = (start + col_idx)[None, :]
        cmask = act[:, None] & (cols < n)
        zv = tl.load(z_ptr + _offsets(rows64, cols, stride_zb, stride_zn), mask=cmask, other=0.0)
        fv = tl.load(f_ptr + _offsets(rows64, cols, stride_fb, stride_fn), mask=cmask, other=0.0)
        new = cz * zv.to(W) + cf * fv.to(W)
        if HAS_NOISE:
            # Counter of element (b, i) in the flattened (B, n) tensor, mod 2**32.
            idx = (rows64[:, None] * n + cols).to(tl.uint32)
            eps = _standard_normal(idx, key32, INTERPRETED)
            new = new + sig * eps.to(W)
        # what is stored; the norms are of the stored values
        if INTERPRETED and T == tl.bfloat16:
            new_t = _to_bf16_rne(new)
        else:
            new_t = new.to(T)
        # z_next may alias z: every thread's loads of this chunk must be done before any
        # thread overwrites it (the store's layout need not match the loads').
        tl.debug_barrier()
        tl.store(out_ptr + _offsets(rows64, cols, stride_ob, stride_on), new_t, mask=cmask)
        q64 = new_t.to(tl.float64)
        d64 = q64 - zv.to(tl.float64)
        dd_acc += tl.where(cmask, d64 * d64, 0.0)
        qq_acc += tl.where(cmask, q64 * q64, 0.0)
    abs_res = tl.sqrt(tl.sum(dd_acc, axis=1))
    next_norm = tl.sqrt(tl.sum(qq_acc, axis=1))
    # (rel_eps is a float64 argument: a Python float meeting only constants is fp32.)
    rel_res = abs_res / (next_norm + rel_eps)

    # ---- bookkeeping (tracking.py) -----------------------------------------------------
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
    """The constexprs and num_warps one launch uses (scripts/triton_aot.py compiles these)."""
    BLOCK_B, BLOCK_N = _block_sizes(B, n, interpreted, noisy=float(sigma) != 0)
    return dict(W=tl.float64 if dtype == torch.float64 else tl.float32,
                HAS_NOISE=float(sigma) != 0, REL_MODE=bool(stop_rel), INTERPRETED=interpreted,
                BLOCK_B=BLOCK_B, BLOCK_N=BLOCK_N, num_warps=_NUM_WARPS)


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
    if B > 0 and not _interpreting_fake(z):
        cfg = kernel_config(B, n, z.dtype, sigma, stop_rel, interpreted=z.device.type == "cpu")
        kernel = torch.library.wrap_triton(_block_step_kernel)
        options = {} if torch.compiler.is_compiling() else LAUNCH_OPTIONS
        with launch_guard(z.device):
            kernel[(triton.cdiv(B, cfg["BLOCK_B"]),)](
                z, f_out, z_next, active, converged, diverged, nstep, abs_res, rel_res, step,
                B, n,
                z.stride(0), z.stride(1), f_out.stride(0), f_out.stride(1),
                z_next.stride(0), z_next.stride(1),
                int(seed) & _MASK32,
                1.0 - float(damping), float(damping), float(sigma), float(tol), float(REL_EPS),
                **cfg, **options,
            )
    step.add_(1)  # after the kernel read it, on the same stream


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

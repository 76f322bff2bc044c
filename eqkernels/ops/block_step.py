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

The noise is counter-based, so every backend draws the same eps: element i of the
flattened (B, n) tensor at step key k takes two uniforms
    u_j = (hash(hash(2 i + j) ^ k) >> 8 + 0.5) / 2**24,  j = 0, 1
(hash = Wellons' 32-bit "lowbias32" mixer, all arithmetic mod 2**32) and
    eps = sqrt(-2 ln u_0) * cos(2 pi u_1)           (Box-Muller, in float32).
The uniforms are bit-identical on every backend; ln and cos are each backend's own float32
versions (vectorised polynomials in the C++ kernel, libdevice on CUDA), so eps agrees to a
few float32 ulp (|d eps| < 1e-6 measured), not bit for bit, and float64 state inherits that.
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

import math
from typing import Optional

import torch

from eqkernels import _backends
from eqkernels.ops import _checks
from eqkernels.ops._checks import STATE_DTYPES, residual_dtype  # noqa: F401 (public here)
from eqkernels.ops.constants import HASH_MUL as _HASH_MUL
from eqkernels.ops.constants import MASK32 as _MASK32
from eqkernels.ops.constants import NOISE_STEP_OFFSET, REL_EPS
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


def standard_normal_ref(key, B: int, n: int, device=None) -> torch.Tensor:
    """(B, n) float32 eps of the noise stream at key `key` (see the module docstring).

    key: an int, or an int64 tensor of one element (a key computed on the device)."""
    idx = torch.arange(B * n, device=device, dtype=torch.int64) & _MASK32
    key = key.reshape(()) if isinstance(key, torch.Tensor) else key
    u = []
    for j in (0, 1):
        h = _lowbias32_t(_lowbias32_t((2 * idx + j) & _MASK32) ^ (key & _MASK32))
        u.append(((h >> 8).to(torch.float32) + 0.5) * (1.0 / 2**24))
    eps = torch.sqrt(-2.0 * torch.log(u[0])) * torch.cos((2.0 * math.pi) * u[1])
    return eps.reshape(B, n)


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

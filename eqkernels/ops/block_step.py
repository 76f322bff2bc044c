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
`noise_key(seed, step)` gives k; a run is reproducible from its seed.
"""
from __future__ import annotations

import math

import torch

from eqkernels import _backends
from eqkernels.ops.tracking import REL_EPS, STOP_MODES, SolveState

_MASK32 = 0xFFFFFFFF
_HASH_MUL = (0x7FEB352D, 0x846CA68B)
STATE_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


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
    return lowbias32(lowbias32(seed) ^ lowbias32(step + 0x9E3779B9))


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


def standard_normal_ref(key: int, B: int, n: int, device=None) -> torch.Tensor:
    """(B, n) float32 eps of the noise stream at key `key` (see the module docstring)."""
    idx = torch.arange(B * n, device=device, dtype=torch.int64) & _MASK32
    u = []
    for j in (0, 1):
        h = _lowbias32_t(_lowbias32_t((2 * idx + j) & _MASK32) ^ (key & _MASK32))
        u.append(((h >> 8).to(torch.float32) + 0.5) * (1.0 / 2**24))
    eps = torch.sqrt(-2.0 * torch.log(u[0])) * torch.cos((2.0 * math.pi) * u[1])
    return eps.reshape(B, n)


def residual_dtype(z_dtype: torch.dtype) -> torch.dtype:
    """Dtype of the per-sample residuals for state of dtype z_dtype."""
    return torch.float64 if z_dtype == torch.float64 else torch.float32


def block_step_ref(z, f_out, z_next, state: SolveState, *, damping: float, sigma: float,
                   key: int, tol: float, stop_mode: str) -> None:
    """Plain-PyTorch epilogue, in place on z_next and state (see the module docstring).

    z, f_out, z_next: (B, n) of one dtype in STATE_DTYPES (z_next may alias z);
    state.abs_res / rel_res: (B,) residual_dtype(z.dtype). best_* fields are not used.
    """
    B, n = z.shape
    act = state.active.clone()
    wide = torch.float64 if z.dtype == torch.float64 else torch.float32
    zw, fw = z.to(wide), f_out.to(wide)
    new = (1.0 - damping) * zw + damping * fw
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


def _block_step_triton(z, f_out, z_next, state, **params):
    from eqkernels.ops.triton.block_step import block_step_triton
    return block_step_triton(z, f_out, z_next, state, **params)


def _block_step_compiled(z, f_out, z_next, state, *, damping, sigma, key, tol, stop_mode):
    # The CPU kernel returns the samples still active; CUDA returns -1 (it would sync).
    n_active = _backends.extension().block_step(
        z, f_out, z_next, state.active, state.converged, state.diverged, state.nstep,
        state.abs_res, state.rel_res, float(damping), float(sigma), int(key) & _MASK32,
        float(tol), stop_mode == "rel")
    return n_active if n_active >= 0 else None


_IMPLEMENTATIONS = {"reference": block_step_ref, "triton": _block_step_triton,
                    "cpp": _block_step_compiled, "cuda": _block_step_compiled}


def resolve_block_step(device: torch.device, backend: str = "auto"):
    """(backend name, step function) for tensors on `device`; resolve once per solve.

    The function has block_step_ref's signature and returns the number of samples still
    active where the backend knows it for free (C++ CPU), else None.
    """
    name = _backends.pick("block_step", device, backend)
    return name, _IMPLEMENTATIONS[name]


def block_step(z, f_out, z_next, state: SolveState, *, damping: float, sigma: float, key: int,
               tol: float, stop_mode: str, backend: str = "auto") -> str:
    """One fused epilogue on the chosen backend; returns the backend's name."""
    if stop_mode not in STOP_MODES:
        raise ValueError(f"stop_mode must be one of {STOP_MODES}, got {stop_mode!r}")
    name, step = resolve_block_step(z.device, backend)
    step(z, f_out, z_next, state, damping=damping, sigma=sigma, key=key, tol=tol,
         stop_mode=stop_mode)
    return name

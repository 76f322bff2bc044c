"""A looped model's damped update as one stateful object: the public API over block_step.

Looped / equilibrium-reasoning models (EqR, HRM, TRM) update latents with

    z <- (1 - damping) z + damping * f_out + noise_std * eps,   f_out = block(z + injection)

many times per forward. `LoopedUpdate` is one run of such updates: it owns the seed and
the step counter of the counter-based noise stream (eqkernels.ops.block_step), the
per-sample step norms ||z_next - z|| of the latest update, the divergence flags, and the
backend, resolved once. Three ways to apply an update, drawing the same noise:

    upd = eqk.LoopedUpdate(batch=B, damping=0.95, noise_std=0.01, seed=0)
    upd(z, f_out)                  # fused, in place on z (inference; no autograd)
    z = upd.differentiable(z, f_out)   # plain PyTorch ops autograd records (training)
    upd.normed(z, r, sumsq, eps)   # f_out = rms_norm(r) over C folded in (fused, in place)

Every call advances the step counter by one, so a run interleaving both kinds is the
same stream as a run of either. A sample whose update turns NaN/Inf is frozen by the
fused op (its row is no longer written) and flagged in `diverged`.

The step counter lives on the device ((1,) int64): the fused op derives the key
noise_key(seed, step + 1) from it and advances it, and `differentiable` does the same with
tensor ops. Nothing in an update reads device memory on the host, so K updates (with the
block between them) can be captured in a CUDA graph and replayed, each replay drawing K new
noise fields, bit-identical to the eager loop. `steps` is a host-side count of the updates
made eagerly (no sync); updates inside a torch.compile'd region or a CUDA-graph replay are not
counted (a compiled graph would otherwise be specialised on, and recompiled for, every value).
"""
from __future__ import annotations

from typing import Optional

import torch

from eqkernels.ops.block_step import (STATE_DTYPES, new_step_counter, noise_key, noise_key_t,
                                      resolve_block_step, standard_normal_ref)
from eqkernels.ops.rmsnorm_update import check_args as _check_normed_args
from eqkernels.ops.rmsnorm_update import resolve_rmsnorm_update
from eqkernels.ops.tracking import SolveState


class LoopedUpdate:
    """One run of fused damped updates on latents shaped (B, ...).

    batch: B. damping in (0, 1]; noise_std >= 0; seed: int (None draws one from torch's RNG);
    device: where the latents live; backend: "auto" or a name from eqk.backends().
    """

    def __init__(self, batch: int, *, damping: float, noise_std: float = 0.0,
                 seed: Optional[int] = None, device=None, backend: str = "auto"):
        if not isinstance(batch, int) or batch < 0:
            raise ValueError(f"batch must be an int >= 0, got {batch!r}")
        if not 0 < damping <= 1:
            raise ValueError(f"damping must be in (0, 1], got {damping!r}")
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
        if seed is None:
            seed = int(torch.randint(2**31 - 1, ()).item())
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        self.damping, self.noise_std, self.seed = float(damping), float(noise_std), seed
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.backend, self._fused = resolve_block_step(self.device, backend)
        # normed(): the update with the block's last RMSNorm folded in (its own backends)
        self.normed_backend, self._normed = resolve_rmsnorm_update(self.device, backend)
        self.steps = 0  # host-side count of updates made
        self.step_counter = new_step_counter(self.device)  # the device copy the kernels read
        # The residual slots are float32; a float64 run switches them on its first update.
        self._state = SolveState.start(torch.zeros(batch, 1, device=self.device))

    @property
    def batch(self) -> int:
        return self._state.active.shape[0]

    @property
    def step_norm(self) -> torch.Tensor:
        """(B,) ||z_next - z|| of each sample's latest update (inf before the first)."""
        return self._state.abs_res

    @property
    def diverged(self) -> torch.Tensor:
        """(B,) bool: the sample's latent became NaN/Inf; it is frozen from then on."""
        return self._state.diverged

    def _check(self, z: torch.Tensor, f_out: torch.Tensor) -> None:
        if z.shape[0] != self.batch:
            raise ValueError(f"z must have batch size {self.batch}, got shape {tuple(z.shape)}")
        if f_out.shape != z.shape:
            raise ValueError(f"f_out must have z's shape {tuple(z.shape)}, got {tuple(f_out.shape)}")
        if z.dtype not in STATE_DTYPES:
            raise TypeError(f"z must be one of {STATE_DTYPES}, got {z.dtype}")
        if z.device != self.device and not (z.device.type == self.device.type == "cuda"
                                            and self.device.index is None):
            raise ValueError(f"z is on {z.device}, this update runs on {self.device}")

    def _match_residual_dtype(self, dtype: torch.dtype) -> None:
        want = torch.float64 if dtype == torch.float64 else torch.float32
        st = self._state
        if st.abs_res.dtype != want:
            st.abs_res, st.rel_res = st.abs_res.to(want), st.rel_res.to(want)

    def __call__(self, z: torch.Tensor, f_out: torch.Tensor) -> torch.Tensor:
        """z <- (1-damping) z + damping f_out + noise_std eps, fused and in place; returns z.

        z: (B, ...) contiguous, float32 / bfloat16 / float64; f_out: z's shape (any of those
        dtypes; cast to z's). Not recorded by autograd.
        """
        self._check(z, f_out)
        if not z.is_contiguous():
            raise ValueError("z must be contiguous: it is updated in place")
        self._match_residual_dtype(z.dtype)
        if not torch.compiler.is_compiling():
            self.steps += 1
        flat = z.view(self.batch, -1)
        f_flat = f_out.detach().to(z.dtype).reshape(self.batch, -1)
        st = self._state
        st.active.copy_(~st.diverged)  # never "converged": halting is the caller's decision
        with torch.no_grad():
            self._fused(flat, f_flat, flat, st, damping=self.damping, sigma=self.noise_std,
                        step=self.step_counter, seed=self.seed, tol=0.0, stop_mode="abs")
        return z

    def normed(self, z: torch.Tensor, r: torch.Tensor, sumsq: torch.Tensor,
               eps: float) -> torch.Tensor:
        """z <- (1-damping) z + damping * r * rsqrt(sumsq / C + eps) + noise_std eps, in place;
        returns z. The same update as self(z, rms_norm(r)) (same noise, step counter, step
        norms, divergence flags), except that the normed block output is never rounded to z's
        dtype, nor written: one fused kernel on CUDA (eqkernels.ops.rmsnorm_update).

        z: (B, ..., C) contiguous, float32 / bfloat16 / float64; r: the block's output before
        its last RMSNorm over C, z's shape and dtype; sumsq: r's per-row sum of squares,
        (B, ...) or flat, float32 (float64 for float64 z), as down_residual_sumsq returns it.
        Not recorded by autograd.
        """
        self._check(z, r)
        if not z.is_contiguous():
            raise ValueError("z must be contiguous: it is updated in place")
        self._match_residual_dtype(z.dtype)
        st = self._state
        _check_normed_args(z, r, sumsq, z, st, self.step_counter, eps)
        if not torch.compiler.is_compiling():
            self.steps += 1
        st.active.copy_(~st.diverged)  # never "converged": halting is the caller's decision
        with torch.no_grad():
            self._normed(z, r.detach(), sumsq.detach(), z, st, eps=float(eps),
                         damping=self.damping, sigma=self.noise_std, tol=0.0, stop_mode="abs",
                         step=self.step_counter, seed=self.seed)
        return z

    def noise(self, step: int, shape, dtype=torch.float32) -> torch.Tensor:
        """eps of update number `step` (1-based) for latents of `shape` (B, ...)."""
        B = shape[0]
        n = 1
        for s in shape[1:]:
            n *= s
        eps = standard_normal_ref(noise_key(self.seed, step), B, n, self.device)
        return eps.reshape(shape).to(dtype)

    def differentiable(self, z: torch.Tensor, f_out: torch.Tensor) -> torch.Tensor:
        """The same update as plain PyTorch ops (autograd records it); returns a new tensor.

        Arithmetic in float32 (float64 for float64 z), stored in z's dtype, as the fused op.
        """
        self._check(z, f_out)
        if not torch.compiler.is_compiling():
            self.steps += 1
        wide = torch.float64 if z.dtype == torch.float64 else torch.float32
        new = (1.0 - self.damping) * z.to(wide) + self.damping * f_out.to(wide)
        with torch.no_grad():
            key = noise_key_t(self.seed, self.step_counter + 1)  # on the device, no sync
            self.step_counter += 1
        if self.noise_std:
            n = z[0].numel() if z.shape[0] else 0
            eps = standard_normal_ref(key, self.batch, n, z.device).reshape(z.shape)
            new = new + self.noise_std * eps.to(wide)
        new = new.to(z.dtype)
        with torch.no_grad():
            self._match_residual_dtype(z.dtype)
            diff = (new.detach().double() - z.detach().double()).reshape(self.batch, -1)
            norm = diff.norm(dim=1)
            self._state.abs_res.copy_(norm.to(self._state.abs_res.dtype))
            self._state.diverged |= ~torch.isfinite(norm)
        return new

    def take(self, rows: torch.Tensor) -> None:
        """Keep only batch rows `rows` (compaction); the noise of later updates is drawn at the
        samples' new batch positions."""
        st = self._state
        for name in ("active", "converged", "diverged", "nstep", "abs_res", "rel_res",
                     "best_abs", "best_rel", "best_z"):
            setattr(st, name, getattr(st, name)[rows])

"""2-D incompressible Navier-Stokes in vorticity form on the periodic unit square, pseudo-spectral.

    w_t + u . grad(w) = nu Lap(w) + f,    Lap(psi) = -w,    u = (d psi/dy, -d psi/dx)

Fields are real (..., N, N) tensors with w[..., i, j] = w(x_i, y_j), x_i = i / N. Space is
spectral (torch.fft.rfft2 over the last two dims) with the 2/3 rule on the advection term;
time is Crank-Nicolson for diffusion and Heun (RK2) for advection and forcing, as in the
data generator of the Fourier-neural-operator paper. `sample_vorticity` draws the initial
fields: a Gaussian random field on the modes the 2/3 rule keeps. Everything follows the
input's dtype (float64 for reference solutions, float32 for speed).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

TWO_PI = 2 * math.pi


def wavenumbers(grid: int, *, dtype=torch.float64, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Angular wavenumbers of rfft2 on a grid x grid field: kx (grid, 1), ky (1, grid // 2 + 1),
    both 2 pi times integers (kx along dim -2, all frequencies; ky along dim -1, half)."""
    kx = TWO_PI * torch.fft.fftfreq(grid, d=1.0 / grid, dtype=dtype, device=device)
    ky = TWO_PI * torch.fft.rfftfreq(grid, d=1.0 / grid, dtype=dtype, device=device)
    return kx.view(grid, 1), ky.view(1, -1)


def dealias_mask(grid: int, *, device=None) -> torch.Tensor:
    """(grid, grid // 2 + 1) bool: the rfft2 modes the 2/3 rule keeps (|n_x|, |n_y| < grid / 3).
    Products of two kept fields alias nothing back onto kept modes."""
    nx = torch.fft.fftfreq(grid, d=1.0 / grid, device=device).abs().view(grid, 1)
    ny = torch.fft.rfftfreq(grid, d=1.0 / grid, device=device).view(1, -1)
    return (nx < grid / 3) & (ny < grid / 3)


def fno_forcing(grid: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """(grid, grid): f(x, y) = 0.1 (sin 2 pi (x + y) + cos 2 pi (x + y)), the FNO paper's forcing."""
    x = torch.arange(grid, dtype=dtype, device=device) / grid
    s = TWO_PI * (x.view(grid, 1) + x.view(1, grid))
    return 0.1 * (torch.sin(s) + torch.cos(s))


def sample_vorticity(n: int, grid: int, seed: int, *, alpha: float = 2.5, tau: float = 7.0,
                     std: float = 1.0, dtype=torch.float64) -> torch.Tensor:
    """(n, grid, grid) zero-mean Gaussian random fields with spectrum
    (4 pi^2 |k|^2 + tau^2)^(-alpha) on the 2/3-rule modes, scaled so the expected pointwise
    standard deviation is `std`. Deterministic in `seed` (a CPU generator of its own)."""
    if n < 1 or grid < 4:
        raise ValueError(f"n must be >= 1 and grid >= 4, got n={n}, grid={grid}")
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, grid, grid, generator=gen, dtype=dtype)
    kx, ky = wavenumbers(grid, dtype=dtype)
    amplitude = (kx ** 2 + ky ** 2 + tau ** 2) ** (-alpha / 2)
    amplitude = amplitude * dealias_mask(grid)
    amplitude[0, 0] = 0.0  # zero mean
    # Expected variance of irfft2(rfft2(white) * a) is the mean of a^2 over the full spectrum;
    # the half spectrum counts the columns that stand for two conjugate modes twice.
    weight = torch.full_like(amplitude, 2.0)
    weight[:, 0] = 1.0
    if grid % 2 == 0:
        weight[:, -1] = 1.0
    variance = (weight * amplitude ** 2).sum() / grid ** 2
    amplitude = amplitude * (std / variance.sqrt())
    return torch.fft.irfft2(torch.fft.rfft2(noise) * amplitude, s=(grid, grid))


class VorticitySolver:
    """Steps vorticity fields (B, N, N) forward in time. nu: viscosity; dt: time step;
    forcing: (N, N) or None (unforced)."""

    def __init__(self, grid: int, *, nu: float, dt: float, forcing: Optional[torch.Tensor] = None,
                 dtype=torch.float64, device=None):
        if nu < 0 or dt <= 0:
            raise ValueError(f"nu must be >= 0 and dt > 0, got nu={nu}, dt={dt}")
        if forcing is not None and forcing.shape != (grid, grid):
            raise ValueError(f"forcing must have shape ({grid}, {grid}), got {tuple(forcing.shape)}")
        self.grid, self.nu, self.dt = grid, nu, dt
        self.kx, self.ky = wavenumbers(grid, dtype=dtype, device=device)
        k2 = self.kx ** 2 + self.ky ** 2
        self.inv_k2 = torch.where(k2 > 0, 1.0 / k2.clamp_min(1e-30), torch.zeros_like(k2))
        self.mask = dealias_mask(grid, device=device)
        half_diffusion = 0.5 * dt * nu * k2
        self.explicit_diffusion = 1 - half_diffusion   # Crank-Nicolson: (1 - dt/2 nu k^2) w
        self.implicit_diffusion = 1 + half_diffusion   #                / (1 + dt/2 nu k^2)
        if forcing is None:
            forcing = torch.zeros(grid, grid, dtype=dtype, device=device)
        self.forcing_hat = torch.fft.rfft2(forcing.to(dtype=dtype, device=device))

    def advection_hat(self, w_hat: torch.Tensor) -> torch.Tensor:
        """rfft2 of u . grad(w), 2/3-dealiased, for w_hat = rfft2(w) (B, N, N // 2 + 1)."""
        s = (self.grid, self.grid)
        psi_hat = w_hat * self.inv_k2
        u = torch.fft.irfft2(1j * self.ky * psi_hat, s=s)     # d psi / dy
        v = torch.fft.irfft2(-1j * self.kx * psi_hat, s=s)    # -d psi / dx
        w_x = torch.fft.irfft2(1j * self.kx * w_hat, s=s)
        w_y = torch.fft.irfft2(1j * self.ky * w_hat, s=s)
        return torch.fft.rfft2(u * w_x + v * w_y) * self.mask

    def step_hat(self, w_hat: torch.Tensor) -> torch.Tensor:
        """One Heun / Crank-Nicolson step in spectral space."""
        dt = self.dt
        explicit = self.explicit_diffusion * w_hat + dt * self.forcing_hat
        n0 = self.advection_hat(w_hat)
        predictor = (explicit - dt * n0) / self.implicit_diffusion
        n1 = self.advection_hat(predictor)
        return (explicit - 0.5 * dt * (n0 + n1)) / self.implicit_diffusion

    def solve(self, w0: torch.Tensor, t_end: float) -> torch.Tensor:
        """w0: (B, N, N) -> w(t_end) (B, N, N), same dtype. t_end must be a multiple of dt."""
        if w0.shape[-2:] != (self.grid, self.grid):
            raise ValueError(f"w0 must have shape (B, {self.grid}, {self.grid}), "
                             f"got {tuple(w0.shape)}")
        steps = round(t_end / self.dt)
        if steps < 0 or abs(steps * self.dt - t_end) > 1e-9 * max(1.0, t_end):
            raise ValueError(f"t_end must be a non-negative multiple of dt={self.dt}, got {t_end}")
        w_hat = torch.fft.rfft2(w0)
        for _ in range(steps):
            w_hat = self.step_hat(w_hat)
        return torch.fft.irfft2(w_hat, s=(self.grid, self.grid))

"""Scientific computing: the solution operator of 2-D Navier-Stokes, learned by an implicit
Fourier neural operator.

Data: initial vorticity w0 (a Gaussian random field) -> w(T) under
    w_t + u . grad(w) = nu Lap(w) + f,   f = 0.1 (sin 2 pi (x + y) + cos 2 pi (x + y)),
solved here pseudo-spectrally (domains.navier_stokes) on the periodic unit square.

Model: z <- GELU(L z + x), x = lift(w0, coordinates), L = spectral convolution on the lowest
modes + pointwise channel mixing; the prediction is w0 + project(z). L is rescaled on every
call so the block is a contraction in z with constant <= `contraction`: the iteration then
converges from any start, which is what keeps the prediction stable far past the training
depth. Metric: relative L2 error ||pred - w(T)|| / ||w(T)|| per sample.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterable, Iterator, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from domains.domain import Batch, Domain, RunConfig
from domains.model import ImplicitModel
from domains.navier_stokes import VorticitySolver, fno_forcing, sample_vorticity

# sup |GELU'(t)|, so the block's contraction bound holds through the activation.
GELU_LIPSCHITZ = 1.13


class SpectralMixing(nn.Module):
    """L z = W z + irfft2(R_k zhat_k on the lowest `modes` x `modes` modes of each sign of kx).

    z: (B, C, N, N) -> (B, C, N, N), N >= 2 modes. R_k, W are scaled together so the
    operator norm of L (in L2 over the grid) is at most `bound`. The scaling takes an SVD of
    every kept mode's C x C matrix; inside `weights_fixed()` that is done once, not per call.
    """

    def __init__(self, channels: int, modes: int, bound: float):
        super().__init__()
        if not 0 < bound:
            raise ValueError(f"bound must be > 0, got {bound}")
        self.channels, self.modes, self.bound = channels, modes, bound
        # R as real and imaginary parts, so .double() converts it like every other parameter.
        scale = 1.0 / channels
        self.r_real = nn.Parameter(scale * torch.randn(2, modes, modes, channels, channels))
        self.r_imag = nn.Parameter(scale * torch.randn(2, modes, modes, channels, channels))
        self.w = nn.Parameter(torch.randn(channels, channels) / math.sqrt(channels))
        self._fixed: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    @contextlib.contextmanager
    def weights_fixed(self):
        """Computes the scaled weights once (in the caller's grad mode) for every call inside."""
        self._fixed = self.scaled_weights()
        try:
            yield
        finally:
            self._fixed = None

    def scaled_weights(self):
        """(R + W on the kept modes, W), both times min(1, bound / ||L||_2)."""
        r = torch.complex(self.r_real, self.r_imag)
        kept = r + self.w.to(r.dtype)  # what L does to a kept mode
        norms = torch.linalg.matrix_norm(torch.cat([kept.flatten(0, 2), self.w.to(r.dtype)[None]]),
                                         ord=2)
        scale = self.bound / torch.maximum(norms.max(), norms.new_tensor(self.bound))
        return r * scale, self.w * scale

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 4 or z.shape[1] != self.channels:
            raise ValueError(f"z must have shape (B, {self.channels}, N, N), got {tuple(z.shape)}")
        r, w = self._fixed if self._fixed is not None else self.scaled_weights()
        return spectral_conv(z, r) + F.conv2d(z, w[:, :, None, None])


def spectral_conv(z: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """z: (B, I, N, N) real, r: (2, m, m, O, I) complex -> (B, O, N, N): mode (kx, ky) of the
    output is r[., kx, ky] @ zhat(kx, ky) for 0 <= ky < m and |kx| < m (r[0]: kx >= 0,
    r[1]: kx < 0), zero elsewhere. Needs N >= 2 m."""
    B, _, N, _ = z.shape
    m = r.shape[1]
    if N < 2 * m:
        raise ValueError(f"z must have a grid of at least {2 * m} points, got {tuple(z.shape)}")
    z_hat = torch.fft.rfft2(z)
    out_hat = z_hat.new_zeros(B, r.shape[3], N, N // 2 + 1)
    out_hat[:, :, :m, :m] = torch.einsum("xyoi,bixy->boxy", r[0], z_hat[:, :, :m, :m])
    out_hat[:, :, -m:, :m] = torch.einsum("xyoi,bixy->boxy", r[1], z_hat[:, :, -m:, :m])
    return torch.fft.irfft2(out_hat, s=(N, N))


class SpectralLift(nn.Module):
    """u: (B, 1, N, N) -> (B, C, N, N): a pointwise map of (u, coordinates) plus a spectral
    convolution of u, so the injection already holds nonlocal features (velocity, gradients)."""

    def __init__(self, channels: int, modes: int):
        super().__init__()
        self.pointwise = nn.Conv2d(1 + 4, channels, 1)
        self.r_real = nn.Parameter(torch.randn(2, modes, modes, channels, 1) / modes)
        self.r_imag = nn.Parameter(torch.randn(2, modes, modes, channels, 1) / modes)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        coords = periodic_coordinates(u).expand(u.shape[0], -1, -1, -1)
        return (self.pointwise(torch.cat([u, coords], dim=1))
                + spectral_conv(u, torch.complex(self.r_real, self.r_imag)))


class FourierBlock(nn.Module):
    """block(z, x) = GELU(L z + x): z, x (B, C, N, N); Lipschitz in z <= contraction < 1."""

    def __init__(self, channels: int, modes: int, contraction: float):
        super().__init__()
        if not 0 < contraction < 1:
            raise ValueError(f"contraction must be in (0, 1), got {contraction}")
        self.mix = SpectralMixing(channels, modes, bound=contraction / GELU_LIPSCHITZ)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.mix(z) + x)


def periodic_coordinates(like: torch.Tensor) -> torch.Tensor:
    """(1, 4, N, N): sin and cos of 2 pi x and 2 pi y, in like's dtype and device."""
    N = like.shape[-1]
    t = 2 * math.pi * torch.arange(N, dtype=like.dtype, device=like.device) / N
    x, y = t.view(N, 1).expand(N, N), t.view(1, N).expand(N, N)
    return torch.stack([x.sin(), x.cos(), y.sin(), y.cos()])[None]


class ImplicitFNO(ImplicitModel):
    """u: initial vorticity (B, 1, N, N) -> predicted w(T) (B, 1, N, N)."""

    def __init__(self, *, width: int, modes: int, contraction: float, train_iters: int,
                 damping: float, backward: str, **deq_kwargs):
        super().__init__(FourierBlock(width, modes, contraction), train_iters=train_iters,
                         damping=damping, backward=backward, **deq_kwargs)
        self.lift = SpectralLift(width, modes)
        self.project = nn.Sequential(nn.Conv2d(width, 2 * width, 1), nn.GELU(),
                                     nn.Conv2d(2 * width, 1, 1))

    def inject(self, u: torch.Tensor) -> torch.Tensor:
        if u.dim() != 4 or u.shape[1] != 1 or u.shape[2] != u.shape[3]:
            raise ValueError(f"u must have shape (B, 1, N, N), got {tuple(u.shape)}")
        return self.lift(u)

    def readout(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return u + self.project(z)

    # The block's weight scaling is computed once per input batch, not once per iteration.
    def forward(self, u: torch.Tensor, iters: Optional[int] = None) -> torch.Tensor:
        with self.deq.block.mix.weights_fixed():
            return super().forward(u, iters)

    @torch.no_grad()
    def predictions_at(self, u: torch.Tensor, depths: Iterable[int]
                       ) -> Iterator[Tuple[int, torch.Tensor, torch.Tensor]]:
        with self.deq.block.mix.weights_fixed():
            yield from super().predictions_at(u, depths)


def relative_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) ||pred - target|| / ||target|| over all but the batch dim."""
    return (pred - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1).clamp_min(1e-12)


class PDEDomain(Domain):
    """Navier-Stokes vorticity at time T from the initial vorticity."""
    name = "pde"
    metric = "relative L2 error"
    higher_is_better = False

    configs = {
        "small": RunConfig(
            train_iters=8, train_steps=300, batch_size=32, lr=5e-3, warmup_steps=20,
            n_train=512, n_test=128, eval_max_iters=400,
            model=dict(width=16, modes=11, contraction=0.7, damping=1.0, backward="phantom"),
            data=dict(grid=32, nu=1e-3, t_end=0.5, dt=0.05, alpha=2.5, tau=7.0, std=1.0)),
        "gpu": RunConfig(
            train_iters=8, train_steps=5000, batch_size=32, lr=2e-3, warmup_steps=200,
            n_train=4096, n_test=512, eval_max_iters=800, lipschitz_samples=32,
            model=dict(width=64, modes=22, contraction=0.7, damping=1.0, backward="phantom"),
            data=dict(grid=64, nu=1e-3, t_end=0.5, dt=0.025, alpha=2.5, tau=7.0, std=1.0)),
    }

    def make_data(self, n: int, seed: int, cfg: RunConfig, *, hard: bool = False) -> Batch:
        d = cfg.data
        w0 = sample_vorticity(n, d["grid"], seed, alpha=d["alpha"], tau=d["tau"], std=d["std"])
        solver = VorticitySolver(d["grid"], nu=d["nu"], dt=d["dt"], forcing=fno_forcing(d["grid"]))
        w_end = solver.solve(w0, d["t_end"])
        return dict(input=w0[:, None].float(), target=w_end[:, None].float())

    def reference_map(self, u: torch.Tensor, cfg: RunConfig) -> torch.Tensor:
        d = cfg.data
        solver = VorticitySolver(d["grid"], nu=d["nu"], dt=d["dt"],
                                 forcing=fno_forcing(d["grid"], dtype=u.dtype, device=u.device))
        return solver.solve(u[:, 0], d["t_end"])[:, None]

    def build_model(self, cfg: RunConfig) -> ImplicitFNO:
        m = dict(cfg.model)
        return ImplicitFNO(width=m.pop("width"), modes=m.pop("modes"),
                           contraction=m.pop("contraction"), train_iters=cfg.train_iters,
                           damping=m.pop("damping"), backward=m.pop("backward"), **m)

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return relative_l2(pred, batch["target"]).mean()

    def quality(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return relative_l2(pred, batch["target"])


DOMAIN = PDEDomain()

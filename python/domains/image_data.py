"""Synthetic grayscale images, a circular blur operator with its adjoint, and PSNR.

Images are (n, 1, N, N) in [0, 1]: a smooth ramp background with a few occluding filled
rectangles and discs, some of them striped (a texture the blur removes). The blur is a circular
convolution done by FFT, A x = irfft2(rfft2(x) H) with H the transfer function of a k x k
kernel centred at pixel (0, 0); its adjoint is A^T y = irfft2(rfft2(y) conj(H)). Both follow the
input's dtype (float32 for training, float64 for the Lipschitz estimate) and are differentiable;
so is solve_normal, (A^T A + mu I)^{-1} by FFT, the data-consistency step of deblurring.
"""
from __future__ import annotations

import math
import torch
from torch import nn

# Per shape slot: the probability that it is drawn (the first slot is always drawn).
SHAPE_PROB = 0.7
# Shapes whose fill is striped rather than flat.
STRIPED_PROB = 0.3


def random_shape_images(n: int, size: int, seed: int, *, max_shapes: int = 5,
                        dtype=torch.float32) -> torch.Tensor:
    """(n, 1, size, size) images in [0, 1], deterministic in `seed` (a CPU generator of its own).

    Each image: background level + linear ramp, then up to `max_shapes` rectangles or discs
    (radius / half-side 10-35% of the side) painted over each other, each a flat level or
    a level plus stripes of period 3-8 pixels.
    """
    if n < 1 or size < 4 or max_shapes < 1:
        raise ValueError(f"need n >= 1, size >= 4 and max_shapes >= 1, got n={n}, size={size}, "
                         f"max_shapes={max_shapes}")
    gen = torch.Generator().manual_seed(seed)

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(n, *shape, generator=gen, dtype=torch.float64)

    coords = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    y, x = coords.view(1, size, 1), coords.view(1, 1, size)
    slope = uniform(-0.3, 0.3, 2, 1, 1)
    image = uniform(0.1, 0.4, 1, 1) + slope[:, 0] * (x - 0.5) + slope[:, 1] * (y - 0.5)
    for slot in range(max_shapes):
        cx, cy = uniform(0.15, 0.85, 1, 1), uniform(0.15, 0.85, 1, 1)
        half_w, half_h = uniform(0.1, 0.35, 1, 1), uniform(0.1, 0.35, 1, 1)
        is_disc = torch.rand(n, 1, 1, generator=gen) < 0.5
        rect = ((x - cx).abs() < half_w) & ((y - cy).abs() < half_h)
        disc = (x - cx) ** 2 + (y - cy) ** 2 < half_w ** 2
        drawn = torch.rand(n, 1, 1, generator=gen) < (1.0 if slot == 0 else SHAPE_PROB)
        inside = torch.where(is_disc, disc, rect) & drawn
        angle = uniform(0, math.pi, 1, 1)
        period = uniform(3.0, 8.0, 1, 1) / size
        striped = (torch.rand(n, 1, 1, generator=gen) < STRIPED_PROB).double()
        stripes = torch.sin(2 * math.pi * (x * angle.cos() + y * angle.sin()) / period)
        fill = uniform(0.2, 0.85, 1, 1) + striped * uniform(0.05, 0.15, 1, 1) * stripes
        image = torch.where(inside, fill, image)
    return image.clamp(0.0, 1.0).unsqueeze(1).to(dtype)


def gaussian_kernel(sigma: float, *, radius: int = 0) -> torch.Tensor:
    """(2r + 1, 2r + 1) float64 Gaussian with standard deviation `sigma` pixels, summing to 1;
    r = ceil(3 sigma) unless `radius` is given."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = radius or math.ceil(3 * sigma)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    kernel = g.view(-1, 1) * g.view(1, -1)
    return kernel / kernel.sum()


class BlurOperator(nn.Module):
    """Circular convolution with a (k, k) kernel (k odd, centre at index k // 2) on
    (..., size, size) images: forward(x) = A x, adjoint(y) = A^T y.

    The transfer function is kept as two real buffers, so `.double()` moves it to float64
    with the rest of a model.
    """

    def __init__(self, kernel: torch.Tensor, size: int):
        super().__init__()
        k = kernel.shape[-1]
        if kernel.dim() != 2 or kernel.shape[0] != k or k % 2 == 0 or k > size:
            raise ValueError(f"kernel must have shape (k, k) with k odd and <= size={size}, "
                             f"got {tuple(kernel.shape)}")
        self.size = size
        padded = torch.zeros(size, size, dtype=torch.float64)
        padded[:k, :k] = kernel.double()
        transfer = torch.fft.rfft2(torch.roll(padded, (-(k // 2), -(k // 2)), dims=(0, 1)))
        self.register_buffer("transfer_real", transfer.real.clone())
        self.register_buffer("transfer_imag", transfer.imag.clone())

    def _apply_transfer(self, x: torch.Tensor, conjugate: bool) -> torch.Tensor:
        if x.shape[-2:] != (self.size, self.size):
            raise ValueError(f"images must have shape (..., {self.size}, {self.size}), "
                             f"got {tuple(x.shape)}")
        imag = -self.transfer_imag if conjugate else self.transfer_imag
        transfer = torch.complex(self.transfer_real.to(x.dtype), imag.to(x.dtype))
        return torch.fft.irfft2(torch.fft.rfft2(x) * transfer, s=(self.size, self.size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A x: x (..., size, size) -> (..., size, size), x's dtype."""
        return self._apply_transfer(x, conjugate=False)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """A^T y: y (..., size, size) -> (..., size, size), y's dtype."""
        return self._apply_transfer(y, conjugate=True)

    def solve_normal(self, rhs: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """(A^T A + mu I)^{-1} rhs for rhs (..., size, size) and mu > 0 (a scalar tensor or
        float); differentiable in both."""
        if rhs.shape[-2:] != (self.size, self.size):
            raise ValueError(f"rhs must have shape (..., {self.size}, {self.size}), "
                             f"got {tuple(rhs.shape)}")
        power = (self.transfer_real ** 2 + self.transfer_imag ** 2).to(rhs.dtype)
        return torch.fft.irfft2(torch.fft.rfft2(rhs) / (power + mu), s=(self.size, self.size))


def blurred_measurements(images: torch.Tensor, operator: BlurOperator, noise_std: float,
                         seed: int) -> torch.Tensor:
    """y = A x + noise_std * N(0, I), the noise deterministic in `seed`; images' shape and dtype."""
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=gen, dtype=torch.float64).to(images.dtype)
    return operator(images) + noise_std * noise


def psnr(pred: torch.Tensor, target: torch.Tensor, *, peak: float = 1.0) -> torch.Tensor:
    """(B,) 10 log10(peak^2 / MSE) per sample for (B, ...) images; +inf where they are equal."""
    if pred.shape != target.shape:
        raise ValueError(f"pred must have target's shape {tuple(target.shape)}, "
                         f"got {tuple(pred.shape)}")
    mse = (pred - target).square().flatten(1).mean(dim=1)
    return 10 * torch.log10(peak ** 2 / mse)

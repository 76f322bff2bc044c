"""Image deblurring as an implicit model: z <- s v + (1 - s) m + t W_out relu(W_in v + b),
v = argmin_v ||A v - y||^2 + mu ||v - z||^2 = (A^T A + mu I)^{-1} (A^T y + mu z),
an exact data-consistency (proximal) step followed by a learned prior (half-quadratic splitting).

A is a known Gaussian blur (circular, by FFT) and y = A x + noise the measurement of a synthetic
image x (domains.image_data). The model's input u is y. inject computes, once per input,
A^T y (all the data step needs besides z) and, from an unconstrained conv net on A^T y, the
prior's mean image m = A^T y + correction and its bias maps b; the state z (B, 1, N, N)
starts at A^T y. The mean term keeps the fixed point from shrinking towards 0 (s < 1).

The block is a contraction in z by construction, so any number of test-time iterations
converges to one fixed point instead of drifting: the data step is non-expansive (its
gain mu / (|H|^2 + mu) <= 1 per frequency), W_in and W_out are circular convs rescaled to
operator norm 1 (exact, from their FFT), relu is 1-Lipschitz, and s + t <= `contraction` < 1.
The contraction does not cap how little the fixed point regularises: mu is learned, and small
mu leaves the data step close to a deconvolution. Metric: PSNR (peak 1).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn
from torch.nn import functional as F

from domains.domain import Batch, Domain, RunConfig
from domains.image_data import (BlurOperator, blurred_measurements, gaussian_kernel, psnr,
                                random_shape_images)
from domains.model import ImplicitModel

# The measurement noise draws from its own stream, never the one the images came from.
NOISE_SEED_OFFSET = 1 << 40
# A conv's operator norm is divided by at least this (guards a kernel that is all zeros).
MIN_OPERATOR_NORM = 1e-6
# The untrained block is mostly the linear data step mixed with A^T y: the features' last conv
# (the mean's correction and the biases) starts small.
FEATURE_OUTPUT_GAIN = 0.1


def circular_conv(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """h (B, C_in, N, N), weight (C_out, C_in, k, k), k odd -> (B, C_out, N, N), periodic."""
    pad = weight.shape[-1] // 2
    return F.conv2d(F.pad(h, (pad, pad, pad, pad), mode="circular"), weight)


def single_channel_conv_norm(weight: torch.Tensor, size: int) -> torch.Tensor:
    """Exact operator norm (l2 -> l2) of the circular conv on size x size images with weight
    (C, 1, k, k) or (1, C, k, k): max over frequencies of the C-vector of kernel FFTs."""
    if weight.shape[0] != 1 and weight.shape[1] != 1:
        raise ValueError(f"weight must have one input or one output channel, got "
                         f"{tuple(weight.shape)}")
    spectrum = torch.fft.rfft2(weight.flatten(0, 1), s=(size, size))  # (C, size, size//2+1)
    return spectrum.abs().square().sum(dim=0).max().sqrt()


class PriorFeatures(nn.Module):
    """(B, 1, N, N) A^T y -> (B, 1 + width, N, N) [the prior mean's correction, the biases b]:
    `layers` circular 3x3 convs with GELU between."""

    def __init__(self, width: int, layers: int):
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        channels = [1] + [width] * (layers - 1) + [1 + width]
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="circular")
                                   for c_in, c_out in zip(channels, channels[1:]))
        with torch.no_grad():
            self.convs[-1].weight.mul_(FEATURE_OUTPUT_GAIN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, conv in enumerate(self.convs):
            h = conv(h) if i == len(self.convs) - 1 else F.gelu(conv(h))
        return h


class ContractiveDeblurStep(nn.Module):
    """block(z, x) = s v + (1 - s) m + t W_out relu(W_in v + b),
    v = (A^T A + mu I)^{-1} (A^T y + mu z).

    z: (B, 1, N, N); x: (B, 2 + width, N, N) = [A^T y, m, b]. mu = exp(log_mu) > 0,
    s = contraction sigmoid(.), t = (contraction - s) sigmoid(.), W_in, W_out of operator
    norm 1, so ||block(z, x) - block(z', x)|| <= contraction ||z - z'||.
    """

    def __init__(self, operator: BlurOperator, *, width: int, kernel: int, contraction: float,
                 mu_init: float):
        super().__init__()
        if not 0 < contraction < 1:
            raise ValueError(f"contraction must be in (0, 1), got {contraction}")
        if not mu_init > 0:
            raise ValueError(f"mu_init must be > 0, got {mu_init}")
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd, got {kernel}")
        self.operator = operator
        self.width = width
        self.contraction = contraction
        self.log_mu = nn.Parameter(torch.tensor(float(mu_init)).log())
        self.skip_logit = nn.Parameter(torch.tensor(0.0))
        self.gain_logit = nn.Parameter(torch.tensor(0.0))
        self.w_in = nn.Parameter(torch.randn(width, 1, kernel, kernel) / kernel)
        self.w_out = nn.Parameter(torch.randn(1, width, kernel, kernel) / kernel)

    def mu(self) -> torch.Tensor:
        """The data step's proximal weight: small trusts the measurement, large keeps z."""
        return self.log_mu.exp()

    def mixing(self):
        """(s, t): the weights of the skip and the prior paths, s + t <= contraction."""
        s = self.contraction * torch.sigmoid(self.skip_logit)
        return s, (self.contraction - s) * torch.sigmoid(self.gain_logit)

    def forward(self, z: torch.Tensor, x: Tuple[torch.Tensor, torch.Tensor, torch.Tensor]
                ) -> torch.Tensor:
        """z (B, 1, N, N); x = (A^T y (B, 1, N, N), prior mean (B, 1, N, N), biases
        (B, width, N, N))."""
        A, size = self.operator, self.operator.size
        at_y, mean, bias = x
        mu = self.mu()
        v = A.solve_normal(at_y + mu * z, mu)
        w_in = self.w_in / single_channel_conv_norm(self.w_in, size).clamp_min(MIN_OPERATOR_NORM)
        w_out = self.w_out / single_channel_conv_norm(self.w_out, size).clamp_min(
            MIN_OPERATOR_NORM)
        s, t = self.mixing()
        prior = circular_conv(F.relu(circular_conv(v, w_in) + bias), w_out)
        return s * v + (1 - s) * mean + t * prior


class DeblurModel(ImplicitModel):
    """u = y (B, 1, N, N) blurred noisy image -> (B, 1, N, N) estimate of the sharp image."""

    def __init__(self, operator: BlurOperator, *, width: int, feature_layers: int, kernel: int,
                 contraction: float, mu_init: float, train_iters: int, damping: float = 1.0,
                 backward: str = "phantom", **deq_kwargs):
        block = ContractiveDeblurStep(operator, width=width, kernel=kernel,
                                      contraction=contraction, mu_init=mu_init)
        super().__init__(block, train_iters=train_iters, damping=damping, backward=backward,
                         **deq_kwargs)
        self.operator = operator
        self.features = PriorFeatures(width, feature_layers)

    def inject(self, u: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """u (B, 1, N, N) -> (A^T u, prior mean m, biases b): (B, 1 | 1 | width, N, N)."""
        at_y = self.operator.adjoint(u)
        features = self.features(at_y)
        return at_y, at_y + features[:, :1], features[:, 1:]

    def init_state(self, x) -> torch.Tensor:
        return x[0].detach().clone()

    def readout(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return z


class ImageDomain(Domain):
    """Deblurring synthetic shape images; cfg.data: size (pixels per side), blur_sigma
    (pixels), noise_std, max_shapes; cfg.model: width, feature_layers, kernel, contraction,
    mu_init, damping, backward, deq (extra eqk.DEQ kwargs)."""
    name = "image"
    metric = "PSNR (dB)"
    higher_is_better = True
    configs = {
        "small": RunConfig(
            train_iters=8, train_steps=300, batch_size=32, lr=2e-3, warmup_steps=20,
            n_train=2048, n_test=128, eval_max_iters=400,
            model=dict(width=32, feature_layers=4, kernel=3, contraction=0.9, mu_init=0.05,
                       damping=1.0, backward="phantom",
                       deq=dict(phantom_steps=5, phantom_damping=0.5)),
            data=dict(size=24, blur_sigma=1.5, noise_std=0.01, max_shapes=5)),
        "gpu": RunConfig(
            train_iters=12, train_steps=20000, batch_size=64, lr=1e-3, warmup_steps=500,
            n_train=100_000, n_test=1024, eval_max_iters=1200,
            model=dict(width=64, feature_layers=8, kernel=5, contraction=0.9, mu_init=0.05,
                       damping=1.0, backward="phantom",
                       deq=dict(phantom_steps=8, phantom_damping=0.5)),
            data=dict(size=64, blur_sigma=2.0, noise_std=0.01, max_shapes=8)),
    }

    def operator(self, cfg: RunConfig) -> BlurOperator:
        """The measurement operator the data and the model share."""
        return BlurOperator(gaussian_kernel(cfg.data["blur_sigma"]), cfg.data["size"])

    def make_data(self, n: int, seed: int, cfg: RunConfig, *, hard: bool = False) -> Batch:
        """input: (n, 1, N, N) float32 measurements y; target: (n, 1, N, N) sharp images."""
        d = cfg.data
        images = random_shape_images(n, d["size"], seed, max_shapes=d["max_shapes"],
                                     dtype=torch.float64)
        y = blurred_measurements(images, self.operator(cfg), d["noise_std"],
                                 seed + NOISE_SEED_OFFSET)
        return dict(input=y.float(), target=images.float())

    def build_model(self, cfg: RunConfig) -> DeblurModel:
        m = cfg.model
        return DeblurModel(self.operator(cfg), width=m["width"], feature_layers=m["feature_layers"],
                           kernel=m["kernel"], contraction=m["contraction"],
                           mu_init=m["mu_init"], train_iters=cfg.train_iters,
                           damping=m["damping"], backward=m["backward"], **m.get("deq", {}))

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return (pred - batch["target"]).square().mean()

    def quality(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return psnr(pred, batch["target"])

    def extra_metrics(self, pred: torch.Tensor, batch: Batch) -> dict:
        # The measurement's own PSNR: what the model improves on (the same at every depth).
        return dict(measurement_psnr=psnr(batch["input"].to(pred.dtype), batch["target"]))


DOMAIN = ImageDomain()

"""torchdeq.utils.init: mixed_init."""
from __future__ import annotations

import torch


def mixed_init(z_shape, device=None):
    """A tensor of shape z_shape, N(0, 1) on a random half of its entries and 0 elsewhere
    (the path-independence initialisation); draws from torch's global generator as torchdeq
    does (the Gaussian first, then the Bernoulli(0.5) mask), so the same seed gives the same z."""
    z = torch.randn(*z_shape, device=device)
    keep = torch.zeros_like(z).bernoulli_(0.5)
    return z * keep


__all__ = ["mixed_init"]

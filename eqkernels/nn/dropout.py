"""Variational dropout for DEQ blocks: one mask per forward, the same at every solver step.

Ordinary dropout draws a new mask at every call, so f changes between solver steps and
there is no fixed point to converge to. These layers draw their mask at the first call
after `reset_dropout(module)` (`eqk.DEQ` calls it at the start of every forward) and reuse
it until the next reset, so the solve, the backward and any regulariser all see one map.
Masks are per sample (the batch is part of the mask shape) and scaled by 1 / (1 - p), on
the input's device and dtype, drawn from torch's global generator. In eval mode (or p = 0)
the layers are the identity.

Which elements share a mask entry (torchdeq's layer names):
  VariationalDropout        every element has its own entry (mask shaped like x);
  VariationalDropout{1,2,3}d  whole channels: x (B, L.., D) with token_first=True (mask
                            (B, 1.., D)), or (B, D, L..) otherwise (mask (B, D, 1..));
  VariationalDropToken{1,2,3}d  whole tokens / positions: mask (B, L.., 1) or (B, 1, L..).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class _VariationalDropoutBase(nn.Module):
    """Common part: the mask, its reset and its application."""

    ndim: Optional[int] = None  # spatial/sequence dims after (B, D); None = any shape

    def __init__(self, p: float = 0.5):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ValueError(f"p (dropout probability) must be a number in [0, 1), got {p!r}")
        self.p = float(p)
        self.mask: Optional[torch.Tensor] = None

    def mask_shape(self, x: torch.Tensor) -> tuple:
        raise NotImplementedError

    def reset_mask(self) -> None:
        self.mask = None

    def _check_rank(self, x):
        if self.ndim is not None and x.dim() != self.ndim + 2:
            raise ValueError(f"{type(self).__name__} expects a {self.ndim + 2}-D input "
                             f"(B, ...), got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        self._check_rank(x)
        shape = self.mask_shape(x)
        if self.mask is None:
            keep = torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(1 - self.p)
            self.mask = keep / (1 - self.p)
        elif tuple(self.mask.shape) != tuple(shape):
            raise ValueError(
                f"{type(self).__name__}: this forward's input {tuple(x.shape)} needs a mask "
                f"of shape {tuple(shape)}, but the current one is {tuple(self.mask.shape)}; "
                f"call eqk.nn.reset_dropout(module) when the batch or shape changes")
        return x * self.mask

    def extra_repr(self):
        return f"p={self.p}"


class VariationalDropout(_VariationalDropoutBase):
    """One mask entry per element (mask shaped like x)."""

    def mask_shape(self, x):
        return tuple(x.shape)


class _ChannelOrToken(_VariationalDropoutBase):
    drop_tokens = False

    def __init__(self, p: float = 0.5, token_first: bool = True):
        super().__init__(p)
        if not isinstance(token_first, bool):
            raise TypeError(f"token_first must be a bool, got {token_first!r}")
        self.token_first = token_first

    def mask_shape(self, x):
        B, shape = x.shape[0], list(x.shape[1:])
        feat = len(shape) - 1 if self.token_first else 0  # the feature (channel) axis
        if self.drop_tokens:  # one entry per token: the feature axis collapses
            shape[feat] = 1
        else:  # one entry per channel: the token axes collapse
            shape = [d if i == feat else 1 for i, d in enumerate(shape)]
        return (B, *shape)

    def extra_repr(self):
        return f"p={self.p}, token_first={self.token_first}"


class VariationalDropout1d(_ChannelOrToken):
    """Drops whole channels of (B, L, D) (token_first=True) or (B, D, L) inputs."""
    ndim = 1


class VariationalDropout2d(_ChannelOrToken):
    """Drops whole channels of (B, H, W, D) (token_first=True) or (B, D, H, W) inputs."""
    ndim = 2


class VariationalDropout3d(_ChannelOrToken):
    """Drops whole channels of (B, T, H, W, D) (token_first=True) or (B, D, T, H, W) inputs."""
    ndim = 3


class VariationalDropToken1d(_ChannelOrToken):
    """Drops whole tokens of (B, L, D) (token_first=True) or (B, D, L) inputs."""
    ndim, drop_tokens = 1, True


class VariationalDropToken2d(_ChannelOrToken):
    """Drops whole positions of (B, H, W, D) (token_first=True) or (B, D, H, W) inputs."""
    ndim, drop_tokens = 2, True


class VariationalDropToken3d(_ChannelOrToken):
    """Drops whole positions of (B, T, H, W, D) (token_first=True) or (B, D, T, H, W) inputs."""
    ndim, drop_tokens = 3, True


def reset_dropout(module: nn.Module) -> nn.Module:
    """Forget every variational-dropout mask inside module: the next call draws new ones."""
    if not isinstance(module, nn.Module):  # a plain callable block has no masks
        return module
    for mod in module.modules():
        if isinstance(mod, _VariationalDropoutBase):
            mod.reset_mask()
    return module

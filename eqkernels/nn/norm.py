"""Weight-norm and spectral-norm wrappers for the linear/conv layers of a block.

Keeping ||W|| in check keeps f contractive, which is what lets the fixed point exist
and the solvers converge; these re-parametrise every matching layer in place.
"""
from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrizations, parametrize

NORMED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _layers(module, types):
    return [mod for mod in module.modules() if isinstance(mod, types)]


def apply_weight_norm(module: nn.Module, types=NORMED_LAYERS) -> nn.Module:
    """W = g * V / ||V|| on every layer of `types` inside `module`; returns module."""
    for layer in _layers(module, types):
        if not parametrize.is_parametrized(layer, "weight"):
            parametrizations.weight_norm(layer, "weight")
    return module


def apply_spectral_norm(module: nn.Module, types=NORMED_LAYERS,
                        n_power_iterations: int = 1) -> nn.Module:
    """W / sigma_max(W) on every layer of `types` inside `module`; returns module."""
    for layer in _layers(module, types):
        if not parametrize.is_parametrized(layer, "weight"):
            parametrizations.spectral_norm(layer, "weight",
                                           n_power_iterations=n_power_iterations)
    return module


def remove_norm(module: nn.Module, types=NORMED_LAYERS) -> nn.Module:
    """Bake the current normalised weights back into plain parameters."""
    for layer in _layers(module, types):
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight")
    return module

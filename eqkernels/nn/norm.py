"""DEQ-aware weight normalisation of the linear/conv layers of a block.

Keeping ||W|| in check keeps f contractive, which is what lets the fixed point exist and
the solvers converge. In a DEQ the block is called tens of times per forward, and it must be
the *same* map for the whole solve: a spectral norm that re-runs its power iteration at every
call (torch's `spectral_norm` in training mode) changes f between solver steps, and the
solve stops converging. So here a normalised weight is computed once, by `reset_norm(module)`
(`eqk.DEQ` calls it at the start of every forward), and that tensor is reused by every call
until one of:
  - the next `reset_norm`;
  - a backward pass has flowed through it (its graph is spent);
  - the raw weight or scale was changed in place (an optimizer step) or moved;
  - it was computed without a graph and is now needed with one.
Without a valid cached tensor each access computes the weight afresh (as torch's
parametrisations do), so calling the block outside a DEQ is always correct.

    W = W_raw * min(clip_value, s / ||W_raw||)      (the min only with clip=True)

where ||.|| is sigma_max (spectral norm, one power-iteration step per reset in training
mode) or the per-output-channel L2 norm (weight norm), and s is a learnable per-output-
channel scale (learn_scale=True) or the constant target_norm. The weights are
re-parametrised in place with torch.nn.utils.parametrize (state_dict, .to(), deepcopy and
DDP work as usual); `remove_norm` bakes the current normalised weights back in. A state dict
saved by torchdeq's apply_norm (weight_g / weight_v, weight_orig / weight_u / weight_v) loads
into a layer normalised here with the same norm type.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence, Union

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

NORMED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
                 nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# The weight dimension that indexes output channels (what the scale and norm are per).
_OUT_DIM = {nn.ConvTranspose1d: 1, nn.ConvTranspose2d: 1, nn.ConvTranspose3d: 1}
NORM_TYPES = ("spectral_norm", "weight_norm", "none")
# Power-iteration steps run once at registration so sigma is accurate from the first call.
_INIT_POWER_ITERATIONS = 15


def out_channel_dim(layer_type) -> int:
    """The weight dimension that indexes output channels of a NORMED_LAYERS type (0 or 1)."""
    return _OUT_DIM.get(layer_type, 0)


def weight_matrix(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """weight as an (h, w) matrix whose rows index `dim` (the output channels)."""
    if dim != 0:
        weight = weight.movedim(dim, 0)
    return weight.reshape(weight.shape[0], -1)


def channel_norm(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """L2 norm of each slice of weight along `dim`, shaped to broadcast against weight."""
    keep = [1] * weight.dim()
    keep[dim] = weight.shape[dim]
    return weight_matrix(weight, dim).norm(dim=1).reshape(keep)


def power_iteration(mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor, steps: int,
                    eps: float):
    """`steps` power-iteration steps on mat (h, w) from u (h,), v (w,); new (u, v)."""
    for _ in range(steps):
        v = F.normalize(mat.t().mv(u), dim=0, eps=eps)
        u = F.normalize(mat.mv(v), dim=0, eps=eps)
    return u, v


def rescale(weight: torch.Tensor, norm: torch.Tensor, scale, clip: bool,
            clip_value: float) -> torch.Tensor:
    """weight * min(clip_value, scale / norm) (the min only with clip): the normalised weight."""
    factor = scale / norm
    if clip:
        factor = factor.clamp(max=clip_value)
    return weight * factor


class _DEQNorm(nn.Module):
    """Parametrisation W_raw -> W_raw * min(clip_value, s / ||W_raw||), cached per forward."""

    def __init__(self, weight: torch.Tensor, dim: int, *, kind: str, learn_scale: bool,
                 target_norm: float, clip: bool, clip_value: float, n_power_iterations: int,
                 eps: float):
        super().__init__()
        self.kind, self.dim = kind, dim
        self.learn_scale, self.target_norm = learn_scale, float(target_norm)
        self.clip, self.clip_value = clip, float(clip_value)
        self.n_power_iterations, self.eps = n_power_iterations, eps
        with torch.no_grad():
            mat = weight_matrix(weight, dim)
            if kind == "spectral_norm":
                u = F.normalize(torch.randn(mat.shape[0], dtype=weight.dtype,
                                            device=weight.device), dim=0, eps=eps)
                v = F.normalize(torch.randn(mat.shape[1], dtype=weight.dtype,
                                            device=weight.device), dim=0, eps=eps)
                self.register_buffer("_u", u)
                self.register_buffer("_v", v)
                self._power_iteration(mat, _INIT_POWER_ITERATIONS)
                init = torch.full_like(channel_norm(weight, dim), self.target_norm)
            else:  # weight norm: s starts at ||W_raw|| so W is unchanged at first
                init = channel_norm(weight, dim)
        if learn_scale:
            self.g = nn.Parameter(init.clone())
        self._cache: Optional[torch.Tensor] = None
        self._cache_key = None

    def _power_iteration(self, mat, steps):
        u, v = power_iteration(mat, self._u, self._v, steps, self.eps)
        self._u.copy_(u)
        self._v.copy_(v)

    def _norm(self, weight):
        """||W_raw||, shaped to broadcast against weight (a scalar for sigma_max)."""
        if self.kind == "spectral_norm":
            mat = weight_matrix(weight, self.dim)
            if self.training:
                with torch.no_grad():
                    self._power_iteration(mat.detach(), self.n_power_iterations)
            # u, v are updated in place by later resets: autograd must see these values.
            u = self._u.clone(memory_format=torch.contiguous_format)
            v = self._v.clone(memory_format=torch.contiguous_format)
            return torch.dot(u, mat.mv(v))
        return channel_norm(weight, self.dim)

    def compute(self, weight):
        scale = self.g if self.learn_scale else self.target_norm
        return rescale(weight, self._norm(weight), scale, self.clip, self.clip_value)

    def _key(self, weight):
        g = self.g if self.learn_scale else None
        return (weight._version, weight.data_ptr(), weight.dtype, weight.device,
                None if g is None else (g._version, g.data_ptr()))

    def _cache_valid(self, weight):
        cache = self._cache
        if cache is None or self._cache_key != self._key(weight):
            return False
        needs_graph = torch.is_grad_enabled() and (
            weight.requires_grad or (self.learn_scale and self.g.requires_grad))
        return not (needs_graph and cache.grad_fn is None)

    def _release(self, grad):
        self._cache = None  # the backward has used (and freed) this tensor's graph

    def reset(self, weight):
        """Compute the normalised weight now and keep it until it is invalid (see module doc)."""
        self._cache = None
        out = self.compute(weight)
        self._cache, self._cache_key = out, self._key(weight)
        if out.requires_grad:
            out.register_hook(self._release)
        return out

    def forward(self, weight):
        if self._cache_valid(weight):
            return self._cache
        return self.compute(weight)

    def __getstate__(self):  # a cached non-leaf tensor can be neither deep-copied nor pickled
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        state = dict(state)
        state["_cache"], state["_cache_key"] = None, None
        return state

    def extra_repr(self):
        return (f"{self.kind}, dim={self.dim}, learn_scale={self.learn_scale}, "
                f"target_norm={self.target_norm}, clip={self.clip}, clip_value={self.clip_value}")


def name_list(value, name) -> list:
    """A filter argument (None, one name, or names) as a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    value = list(value)
    if not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} must be a string or a list of strings, got {value!r}")
    return value


def _normed_layers(module, types, filter_out, prefix_filter_out):
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    filter_out = name_list(filter_out, "filter_out")
    prefix_filter_out = name_list(prefix_filter_out, "prefix_filter_out")
    for name, layer in module.named_modules():
        if not isinstance(layer, types) or not isinstance(getattr(layer, "weight", None),
                                                          torch.Tensor):
            continue
        if any(name.startswith(p) for p in prefix_filter_out):
            continue
        if any(s in name for s in filter_out):
            continue
        yield name, layer


def apply_norm(module: nn.Module, norm_type: str = "weight_norm", *,
               filter_out: Union[str, Sequence[str], None] = None,
               prefix_filter_out: Union[str, Sequence[str], None] = None,
               learn_scale: bool = True, target_norm: float = 1.0, clip: bool = False,
               clip_value: float = 1.0, n_power_iterations: int = 1, eps: float = 1e-12,
               types: tuple = NORMED_LAYERS) -> nn.Module:
    """Normalise the weight of every layer of `types` inside `module`, in place; returns module.

    norm_type: "spectral_norm" (||.|| = sigma_max, by power iteration) | "weight_norm"
      (per-output-channel L2 norm) | "none" (leave the module as it is).
    filter_out: skip layers whose qualified name (as in module.named_modules()) contains any
      of these strings; prefix_filter_out: skip names starting with any of these.
    learn_scale: a learnable per-output-channel scale s (a parameter `g` of the
      parametrisation), initialised to target_norm (spectral) or ||W_raw|| (weight norm);
      otherwise s = target_norm.
    clip: W = W_raw * min(clip_value, s / ||W_raw||), so a layer already inside the target is
      left alone (with the defaults: "sigma_max(W) <= 1").
    Defaults follow torchdeq's apply_norm. Layers whose weight is already parametrised are
    skipped.
    """
    if norm_type not in NORM_TYPES:
        raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}")
    if not isinstance(n_power_iterations, int) or n_power_iterations < 1:
        raise ValueError(f"n_power_iterations must be an int >= 1, got {n_power_iterations!r}")
    if not target_norm > 0:
        raise ValueError(f"target_norm must be > 0, got {target_norm!r}")
    if not clip_value > 0:
        raise ValueError(f"clip_value must be > 0, got {clip_value!r}")
    if norm_type == "none":
        return module
    for _, layer in list(_normed_layers(module, types, filter_out, prefix_filter_out)):
        if parametrize.is_parametrized(layer, "weight"):
            continue
        dim = out_channel_dim(type(layer))
        norm = _DEQNorm(layer.weight.detach(), dim, kind=norm_type, learn_scale=learn_scale,
                        target_norm=target_norm, clip=clip, clip_value=clip_value,
                        n_power_iterations=n_power_iterations, eps=eps)
        norm.train(layer.training)
        parametrize.register_parametrization(layer, "weight", norm, unsafe=True)
        layer._register_load_state_dict_pre_hook(_from_torchdeq_names)
    return module


# A torchdeq checkpoint's names for a normalised layer's entries -> this module's names.
_TORCHDEQ_NAMES = {
    "weight_norm": {"weight_v": "parametrizations.weight.original",
                    "weight_g": "parametrizations.weight.0.g"},
    "spectral_norm": {"weight_orig": "parametrizations.weight.original",
                      "weight_g": "parametrizations.weight.0.g",
                      "weight_u": "parametrizations.weight.0._u",
                      "weight_v": "parametrizations.weight.0._v"},
}


def _from_torchdeq_names(state_dict, prefix, *args):
    """Load-state-dict pre-hook: a state dict saved from torchdeq's apply_norm (weight_g /
    weight_v, or weight_orig / weight_g / weight_u / weight_v) loads into a layer normalised
    here; entries already in this module's names are left alone."""
    if prefix + "weight_v" not in state_dict and prefix + "weight_orig" not in state_dict:
        return
    kind = "spectral_norm" if prefix + "weight_orig" in state_dict else "weight_norm"
    for theirs, ours in _TORCHDEQ_NAMES[kind].items():
        if prefix + theirs in state_dict and prefix + ours not in state_dict:
            state_dict[prefix + ours] = state_dict.pop(prefix + theirs)


def apply_weight_norm(module: nn.Module, types=NORMED_LAYERS, **kwargs) -> nn.Module:
    """W = g * W_raw / ||W_raw|| (learnable per-output-channel g) on every layer of `types`."""
    kwargs.setdefault("learn_scale", True)
    return apply_norm(module, "weight_norm", types=types, **kwargs)


def apply_spectral_norm(module: nn.Module, types=NORMED_LAYERS, n_power_iterations: int = 1,
                        **kwargs) -> nn.Module:
    """W = target_norm * W_raw / sigma_max(W_raw) on every layer of `types`; returns module.

    kwargs as in apply_norm (learn_scale=False here unless asked; clip, filter_out, ...).
    sigma_max is estimated by power iteration, one step per DEQ forward in training mode.
    """
    kwargs.setdefault("learn_scale", False)
    return apply_norm(module, "spectral_norm", types=types,
                      n_power_iterations=n_power_iterations, **kwargs)


def _norm_params(module) -> Iterable:
    """(layer, weight name) of every weight parametrised by a DEQ norm inside module."""
    for layer in module.modules():
        if not parametrize.is_parametrized(layer):
            continue
        for name, plist in layer.parametrizations.items():
            if any(isinstance(p, _DEQNorm) for p in plist):
                yield layer, name


def reset_norm(module: nn.Module) -> nn.Module:
    """Compute every normalised weight inside `module` once (one power-iteration step each
    in training mode) and reuse it for the following calls; see the module docstring for
    how long. Call it at the start of a forward that iterates the block (eqk.DEQ does)."""
    if not isinstance(module, nn.Module):  # a plain callable block has no weights to reset
        return module
    for layer, name in _norm_params(module):
        plist = layer.parametrizations[name]
        weight = plist.original
        for p in plist:  # a chain of parametrisations: each sees the previous one's output
            weight = p.reset(weight) if isinstance(p, _DEQNorm) else p(weight)
    return module


def remove_norm(module: nn.Module, types=NORMED_LAYERS) -> nn.Module:
    """Bake the current normalised weights back into plain parameters (no power-iteration
    update); also removes torch's own weight parametrisations on layers of `types`."""
    for layer in module.modules():
        if not isinstance(layer, types) or not parametrize.is_parametrized(layer, "weight"):
            continue
        for p in layer.parametrizations["weight"]:
            p.eval()
            if isinstance(p, _DEQNorm):
                p._cache = None
        with torch.no_grad():
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return module

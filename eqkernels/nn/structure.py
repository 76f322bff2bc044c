"""Structured DEQ states and inputs: a tensor, or a tuple/list of tensors of different shapes.

Solvers see one (B, n) matrix; the block sees the structure it was given. `StateSpec`
records the leaves' shapes (each (B, ...), one dtype) and packs / unpacks between the two:

    spec = StateSpec.of(z0)            # z0: tensor or tuple/list of (B, ...) tensors
    flat = spec.pack(z0)               # (B, n), n = sum of the leaves' per-sample sizes
    z = spec.unpack(flat)              # the same structure; leaves are views of flat

An input x may be any tensor or tuple/list of tensors with leading dimension B (leaves of
any dtype); `map_batch(x, fn)` applies a batch-row operation (index, repeat) to each leaf.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

import torch


def is_structured(obj) -> bool:
    return isinstance(obj, (tuple, list))


def leaves(obj):
    return list(obj) if is_structured(obj) else [obj]


def map_batch(obj, fn: Callable):
    """fn applied to every tensor leaf of obj (tensor or tuple/list); structure kept."""
    if is_structured(obj):
        return type(obj)(fn(t) for t in obj)
    return fn(obj)


@dataclass(frozen=True)
class StateSpec:
    shapes: Tuple[Tuple[int, ...], ...]   # per-leaf sample shapes (without B)
    sizes: Tuple[int, ...]                # per-leaf numel per sample
    kind: type                            # torch.Tensor, tuple or list
    dtype: torch.dtype
    batch: int

    @classmethod
    def of(cls, z) -> "StateSpec":
        parts = leaves(z)
        shapes = tuple(tuple(t.shape[1:]) for t in parts)
        sizes = tuple(int(torch.Size(s).numel()) for s in shapes)
        kind = type(z) if is_structured(z) else torch.Tensor
        return cls(shapes=shapes, sizes=sizes, kind=kind, dtype=parts[0].dtype,
                   batch=parts[0].shape[0])

    @property
    def n(self) -> int:
        return sum(self.sizes)

    def with_batch(self, batch: int) -> "StateSpec":
        return StateSpec(self.shapes, self.sizes, self.kind, self.dtype, batch)

    def pack(self, z) -> torch.Tensor:
        """(B, n) matrix of z's leaves, each flattened per sample (one copy for a tuple)."""
        if self.kind is torch.Tensor:
            return z.reshape(z.shape[0], -1)
        return torch.cat([t.reshape(t.shape[0], -1) for t in z], dim=1)

    def unpack(self, flat: torch.Tensor):
        """The structure of leaves viewed from flat (B, n); B may differ from self.batch."""
        B = flat.shape[0]
        if self.kind is torch.Tensor:
            return flat.reshape((B,) + self.shapes[0])
        parts = torch.split(flat, self.sizes, dim=1)
        return self.kind(p.reshape((B,) + s) for p, s in zip(parts, self.shapes))

    def matches(self, out) -> bool:
        """Cheap per-call check of the block's output: same structure, shapes and dtype."""
        if self.kind is torch.Tensor:
            return (type(out) is torch.Tensor or isinstance(out, torch.Tensor)) and \
                out.dim() == len(self.shapes[0]) + 1 and out.shape[1:] == self.shapes[0] and \
                out.dtype == self.dtype
        if not isinstance(out, (tuple, list)) or len(out) != len(self.shapes):
            return False
        return all(isinstance(t, torch.Tensor) and t.shape[1:] == s and t.dtype == self.dtype
                   for t, s in zip(out, self.shapes))

    def describe(self) -> str:
        if self.kind is torch.Tensor:
            return str((self.batch,) + self.shapes[0])
        return f"{self.kind.__name__} of " + ", ".join(str((self.batch,) + s) for s in self.shapes)

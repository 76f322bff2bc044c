"""torchdeq.utils.mem: mem_gc, gradient checkpointing of one module call."""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def mem_gc(func, in_args=None):
    """func(*in_args) without keeping its activations: the backward recomputes them and
    takes the vector-Jacobian product for the inputs that require grad and func's parameters
    (torch.utils.checkpoint, non-reentrant; RNG state is replayed, so dropout is the same).

    func: an nn.Module or callable; in_args: a tuple of its positional arguments (tensors or
    anything else). Returns what func returns."""
    if not callable(func):
        raise TypeError(f"mem_gc: func must be callable, got {type(func).__name__}")
    in_args = tuple(in_args) if in_args else ()
    if not torch.is_grad_enabled():  # inside a solve: nothing to save anyway
        return func(*in_args)
    return checkpoint(func, *in_args, use_reentrant=False)


__all__ = ["mem_gc"]

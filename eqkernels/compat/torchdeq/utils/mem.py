"""torchdeq.utils.mem: mem_gc, gradient checkpointing of one module call.

The call runs without recording a graph; the backward runs it again with a graph and takes
the vector-Jacobian product for the inputs that require grad and for the module's
parameters, which are passed to the autograd Function explicitly -- so they get gradients
even when no input requires grad (a phantom-gradient step from a detached z*), which
torch's reentrant checkpoint does not do. (torch's non-reentrant checkpoint does, but costs
~20x a small layer's own time per call on CPU here.) The CPU generator's state (and the
current CUDA device's, for CUDA inputs) is replayed, so dropout draws the same masks.
"""
from __future__ import annotations

import torch
from torch import nn


class _Recompute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, func, layout, *args):
        """layout: (number of call arguments, which of them are tensors); args: the call
        arguments, then the parameters."""
        n_args, is_tensor = layout
        ctx.func, ctx.layout = func, layout
        ctx.rng = torch.get_rng_state()
        call = args[:n_args]
        cuda = [a for a, t in zip(call, is_tensor) if t and a.is_cuda]
        ctx.cuda_rng = (cuda[0].device, torch.cuda.get_rng_state(cuda[0].device)) \
            if cuda else None
        ctx.non_tensors = [None if t else a for a, t in zip(call, is_tensor)]
        ctx.save_for_backward(*[a for a, t in zip(call, is_tensor) if t], *args[n_args:])
        with torch.no_grad():
            return func(*call)

    @staticmethod
    def backward(ctx, *grad_outputs):
        n_args, is_tensor = ctx.layout
        saved = ctx.saved_tensors
        n_tensors = sum(is_tensor)
        tensors, params = iter(saved[:n_tensors]), list(saved[n_tensors:])
        call = [next(tensors).detach().requires_grad_(needs) if t else value
                for t, value, needs in zip(is_tensor, ctx.non_tensors,
                                           ctx.needs_input_grad[2:2 + n_args])]
        with torch.random.fork_rng(devices=[ctx.cuda_rng[0]] if ctx.cuda_rng else []):
            torch.set_rng_state(ctx.rng)
            if ctx.cuda_rng:
                torch.cuda.set_rng_state(ctx.cuda_rng[1], ctx.cuda_rng[0])
            with torch.enable_grad():
                out = ctx.func(*call)
        outs = [out] if torch.is_tensor(out) else list(out)
        pairs = [(o, g) for o, g in zip(outs, grad_outputs)
                 if torch.is_tensor(o) and o.requires_grad and g is not None]
        wrt = [a for a in call if torch.is_tensor(a) and a.requires_grad] + params
        # retain_graph: the recomputation may reach graphs built outside this call and used
        # by others (a normalised weight computed once per reset), which must survive
        grads = torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs],
                                    allow_unused=True, retain_graph=True) \
            if pairs and wrt else [None] * len(wrt)
        grads = iter(grads)
        call_grads = [next(grads) if torch.is_tensor(a) and a.requires_grad else None
                      for a in call]
        return (None, None, *call_grads, *list(grads))


def mem_gc(func, in_args=None):
    """func(*in_args) without keeping its activations (see the module doc).

    func: an nn.Module (its parameters that require grad get gradients) or a callable;
    in_args: a tuple of its positional arguments (tensors or anything else). Returns what
    func returns (a tensor or a tuple of tensors)."""
    if not callable(func):
        raise TypeError(f"mem_gc: func must be callable, got {type(func).__name__}")
    in_args = tuple(in_args) if in_args else ()
    if not torch.is_grad_enabled():  # inside a solve: nothing to save anyway
        return func(*in_args)
    params = [p for p in func.parameters() if p.requires_grad] \
        if isinstance(func, nn.Module) else []
    layout = (len(in_args), tuple(torch.is_tensor(a) for a in in_args))
    return _Recompute.apply(func, layout, *in_args, *params)


__all__ = ["mem_gc"]

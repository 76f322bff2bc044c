"""Helpers shared by the Triton kernels of the looped-transformer block ops (token_mix, swiglu,
rmsnorm_update): casts and dot operands that behave alike compiled and interpreted, and the
launch-side predicates.

Interpreter (triton 3.9) pitfalls handled here: a tl.dot of bfloat16 operands returns garbage
(the operands are widened to float32 first: exact, and a float32-accumulated product, what the
tensor cores compute), and float32 -> bfloat16 casts truncate (rounded to nearest even by hand,
block_step's helper).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from eqkernels.ops.triton.block_step import _to_bf16_rne, launch_guard  # noqa: F401

TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16}


@triton.jit
def cast_to(x, T: tl.constexpr, INTERPRETED: tl.constexpr):
    """x (float32) rounded to dtype T, to nearest even on every path."""
    if INTERPRETED and T == tl.bfloat16:
        return _to_bf16_rne(x)
    else:
        return x.to(T)


@triton.jit
def dot_operand(x, INTERPRETED: tl.constexpr):
    """x as a tl.dot operand: itself compiled (tensor cores take bfloat16), widened to float32
    interpreted (exact; the interpreter's bfloat16 dot is wrong)."""
    if INTERPRETED:
        return x.to(tl.float32)
    else:
        return x


def interpreted(device: torch.device) -> bool:
    """Triton runs interpreted on CPU tensors (TRITON_INTERPRET=1), compiled on CUDA ones."""
    return device.type != "cuda"


def nothing_to_run(t: torch.Tensor) -> bool:
    """Meta tensors, or fake tensors meeting the interpreter (which would run the kernel on
    them): shape propagation only, no launch. (Compiled, wrap_triton's fake kernel handles
    fake CUDA tensors, and torch.compile records the kernel itself.)

    An interpreted kernel cannot be recorded by torch.compile's tracing (wrap_triton does not
    capture the interpreter's functions): a traced call on CPU tensors raises rather than
    leaving the kernel out of the graph."""
    from torch._subclasses.fake_tensor import FakeTensor, is_fake
    if t.device.type == "meta" or (t.device.type != "cuda" and isinstance(t, FakeTensor)):
        return True
    if t.device.type != "cuda" and is_fake(t):
        raise RuntimeError("eqkernels: a Triton kernel running under the interpreter "
                           "(TRITON_INTERPRET=1, CPU tensors) cannot be traced by "
                           "torch.compile; use backend='reference' on CPU")
    return False

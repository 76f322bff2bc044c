"""Fused ops: one module per op, each with its PyTorch reference and its dispatcher.

Importing this package loads the compiled extension when it is there, which registers the
torch.library ops torch.ops.eqk.block_step / anderson_step (never an import error: without
it only the reference and Triton backends remain; eqkernels.backends() says why).
"""
from eqkernels import _backends

_backends._load_extension()
from eqkernels.ops.anderson_mix import AndersonHistory, anderson_step, anderson_step_ref
from eqkernels.ops.tracking import SolveState, track_residual_ref

__all__ = ["AndersonHistory", "anderson_step", "anderson_step_ref", "SolveState",
           "track_residual_ref"]

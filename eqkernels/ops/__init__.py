"""Fused ops: one module per op, each with its PyTorch reference and its dispatcher."""
from eqkernels.ops.anderson_mix import AndersonHistory, anderson_step, anderson_step_ref
from eqkernels.ops.tracking import SolveState, track_residual_ref

__all__ = ["AndersonHistory", "anderson_step", "anderson_step_ref", "SolveState",
           "track_residual_ref"]

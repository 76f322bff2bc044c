"""Fused ops: one module per op, each with its PyTorch reference and its dispatcher.

Importing this package loads the compiled extension when it is there, which registers the
torch.library ops torch.ops.eqk.block_step / anderson_step (never an import error: without
it only the reference and Triton backends remain; eqkernels.backends() says why). The
looped-transformer block ops (token_mix, swiglu_gate_up, down_residual_sumsq, rmsnorm_update)
register their Triton ops (torch.ops.eqk.*_triton) on first use.
"""
from eqkernels import _backends

_backends._load_extension()
from eqkernels.ops.anderson_mix import AndersonHistory, anderson_step, anderson_step_ref
from eqkernels.ops.rmsnorm_update import rmsnorm_update
from eqkernels.ops.swiglu import down_residual_sumsq, prepare_gate_up, swiglu_gate_up
from eqkernels.ops.token_mix import prepare_token_mix, token_mix
from eqkernels.ops.tracking import SolveState, track_residual_ref

__all__ = ["AndersonHistory", "anderson_step", "anderson_step_ref", "SolveState",
           "track_residual_ref", "token_mix", "prepare_token_mix", "swiglu_gate_up",
           "prepare_gate_up", "down_residual_sumsq", "rmsnorm_update"]

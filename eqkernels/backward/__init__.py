"""Backward modes: how gradients reach the block's parameters and x from z*."""
from eqkernels.backward.implicit import implicit
from eqkernels.backward.one_step import one_step
from eqkernels.backward.phantom import phantom
from eqkernels.backward.supervision import fp_correction, phantom_states, supervision_steps
from eqkernels.backward.unroll import unroll

BACKWARD_MODES = ("implicit", "phantom", "one_step", "unroll")

__all__ = ["implicit", "one_step", "phantom", "unroll", "BACKWARD_MODES", "fp_correction",
           "phantom_states", "supervision_steps"]

"""Numbers every backend of the fused ops must agree on: one definition, here.

This is a leaf module (it imports nothing from eqkernels), so the reference ops, the
Triton kernels, the solvers and the tests all read it without an import cycle. The
compiled module keeps its own copies in csrc/common/kernel_common.h (C++ and CUDA
cannot import Python); `eqkernels._C.constants()` returns them and
tests/test_ops_constants.py asserts they equal these.
"""

# Added to ||f(z)|| (Anderson) or ||z_next|| (block step) in the relative residual, so a
# zero image cannot divide by zero (torchdeq's constant, so stopping decisions agree).
REL_EPS = 1e-9

# A Cholesky pivot at or below this fraction of the largest diagonal entry marks the
# Anderson small system as ill-conditioned (the step falls back to a damped one).
CHOL_PIVOT_RTOL = 1e-12

# Largest Anderson history m: the fused kernels keep the m x m system on the stack / in
# registers / in shared memory sized by it.
MAX_HISTORY = 16

# The counter-based noise stream (eqkernels/ops/block_step.py states it bit by bit):
# Wellons' lowbias32 multipliers, the 32-bit mask, and the offset added to a step
# number before it is hashed into that step's key.
HASH_MUL = (0x7FEB352D, 0x846CA68B)
MASK32 = 0xFFFFFFFF
NOISE_STEP_OFFSET = 0x9E3779B9

ALL = dict(REL_EPS=REL_EPS, CHOL_PIVOT_RTOL=CHOL_PIVOT_RTOL, MAX_HISTORY=MAX_HISTORY,
           HASH_MUL0=HASH_MUL[0], HASH_MUL1=HASH_MUL[1], MASK32=MASK32,
           NOISE_STEP_OFFSET=NOISE_STEP_OFFSET)

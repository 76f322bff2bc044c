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

# The noise stream's generator, Philox2x32-10 (Salmon et al., SC11): its multiplier and the
# Weyl increment of its round keys.
PHILOX_M = 0xD256D193
PHILOX_W = 0x9E3779B9
PHILOX_ROUNDS = 10

# The noise stream's float32 polynomials (eqkernels/ops/block_step.py), as exact float32 values
# (hex, so every backend reads the same bits), fitted (Lawson's near-minimax) by
# scripts/fit_noise_polynomials.py. The C++/CUDA copies are in csrc/common/kernel_common.h;
# the bitwise stream tests check them (tests/test_noise_stream.py), not ALL below.
# ln(1 + t) = t + t^2 Q(t) on [sqrt(1/2) - 1, sqrt(2) - 1]; Q's coefficients, t^0 first.
NOISE_LOG_POLY = tuple(float.fromhex(h) for h in (
    "-0x1.fffff8p-2", "0x1.55555p-2", "-0x1.000426p-2", "0x1.99a3fap-3", "-0x1.54277cp-3",
    "0x1.227146p-3", "-0x1.0f366ap-3", "0x1.084968p-3", "-0x1.383702p-4"))
# sin(2 pi v) = v S0 + v w (S1 + w (S2 + w S3)), w = v^2, on [-1/8, 1/8].
NOISE_SIN_POLY = tuple(float.fromhex(h) for h in (
    "0x1.921fb6p+2", "-0x1.4abbbap+5", "0x1.465ec8p+6", "-0x1.2d9c22p+6"))
# cos(2 pi v) = 1 + w (C0 + w (C1 + w (C2 + w C3))) on [-1/8, 1/8].
NOISE_COS_POLY = tuple(float.fromhex(h) for h in (
    "-0x1.3bd3ccp+4", "0x1.03c1dep+6", "-0x1.55c5e2p+6", "0x1.d9d5e8p+5"))
NOISE_LN2 = float.fromhex("0x1.62e43p-1")  # ln 2 rounded to float32

ALL = dict(REL_EPS=REL_EPS, CHOL_PIVOT_RTOL=CHOL_PIVOT_RTOL, MAX_HISTORY=MAX_HISTORY,
           HASH_MUL0=HASH_MUL[0], HASH_MUL1=HASH_MUL[1], MASK32=MASK32,
           NOISE_STEP_OFFSET=NOISE_STEP_OFFSET)

"""One constants module (a leaf), its compiled copies equal to it, and the noise key's
device and compiled versions equal to the Python one."""
import ast
import pathlib
import random

import pytest
import torch

from eqkernels import _backends
from eqkernels.ops import constants
from eqkernels.ops.block_step import (counter_for_key, lowbias32, noise_key, noise_key_t)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_constants_module_is_a_leaf():
    tree = ast.parse((ROOT / "eqkernels/ops/constants.py").read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert imports == [], "eqkernels/ops/constants.py must import nothing"


def test_python_users_read_the_one_definition():
    from eqkernels.ops import anderson_mix, tracking
    from eqkernels.ops import block_step as bs
    assert tracking.REL_EPS is constants.REL_EPS
    assert anderson_mix.CHOL_PIVOT_RTOL is constants.CHOL_PIVOT_RTOL
    assert anderson_mix.MAX_HISTORY == constants.MAX_HISTORY
    assert tuple(bs._HASH_MUL) == constants.HASH_MUL
    import importlib
    anderson = importlib.import_module("eqkernels.solvers.anderson")
    assert anderson.MAX_HISTORY == constants.MAX_HISTORY


def test_triton_kernels_import_constants_not_their_dispatcher():
    for name in ("block_step", "anderson_mix"):
        tree = ast.parse((ROOT / f"eqkernels/ops/triton/{name}.py").read_text())
        mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert f"eqkernels.ops.{name}" not in mods, f"triton/{name}.py imports its dispatcher"


@pytest.mark.skipif(not _backends.backends()["cpp"][0], reason="compiled extension not built")
def test_compiled_copies_equal_the_python_constants():
    ext = _backends.extension()
    assert ext.constants() == constants.ALL
    if getattr(ext, "with_cuda", False):  # nvcc's view (csrc/cuda/block_step.cu)
        dev = ext.cuda_constants()
        assert dev == {k: v for k, v in constants.ALL.items() if k in dev}


@pytest.mark.skipif(not _backends.backends()["cpp"][0], reason="compiled extension not built")
def test_compiled_noise_key_equals_python():
    ext = _backends.extension()
    rng = random.Random(random.randrange(2**31))
    for _ in range(200):
        seed, step = rng.randrange(-2**40, 2**40), rng.randrange(0, 2**40)
        assert ext.noise_key(seed, step) == noise_key(seed, step), (seed, step)


def test_device_noise_key_equals_host_and_legacy_keys_invert():
    rng = random.Random(random.randrange(2**31))
    for _ in range(100):
        seed, step = rng.randrange(-2**31, 2**31), rng.randrange(0, 2**34)
        assert int(noise_key_t(seed, torch.tensor([step]))) == noise_key(seed, step)
        key = rng.randrange(2**32)
        assert noise_key(0, counter_for_key(key) + 1) == key
    assert lowbias32(0) == 0

"""The attention reasoner (EqR's Maze model) on a GPU (pytest -m gpu; run by
scripts/gpu_suite.sh): auto compiles it where Triton runs, the compiled step (inductor, SDPA's
kernel inside) equals the eager one in float32 and is no further from it in bfloat16 than the
eager bf16 path, and the evaluation loop's captured segments equal the eager segments."""
import random

import pytest
import torch

import eqkernels as eqk
from reasoner.reasoning import reasoning_steps
from reasoner_gpu_cases import forward_with, make_case, needs_cuda, rel_error  # noqa: F401

pytestmark = pytest.mark.gpu
MAZE = dict(seq_len=81, vocab=6, hidden=64, layers=1, heads=4, H_cycles=2, L_cycles=2,
            attention=True, pos_encoding="rope")
FIELDS = ("pred", "residual", "running", "steps_used", "change", "ran")


def _case(seed, n=8, **over):
    return make_case(MAZE, 5, seed, n, **over)


def test_auto_compiles_the_attention_model_on_cuda_with_triton():
    model, _, _ = _case(0)
    want = "compile" if eqk.backends()["triton"][0] else "eager"
    assert model.kernel_path("cuda")[0] == want, model.kernel_path("cuda")


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
@pytest.mark.parametrize("pos", ["rope", "rope2d"])
def test_compiled_attention_model_matches_eager(seed, pos):
    model, tokens, carry = _case(seed, pos_encoding=pos)
    ref = forward_with(model, "eager", tokens, carry, seed)
    got = forward_with(model, "compile", tokens, carry, seed)
    assert rel_error(got, ref) < 1e-4, f"seed {seed}: fp32 {rel_error(got, ref):.3g}"
    model.cfg.latent_dtype = "bfloat16"
    err = {k: rel_error(forward_with(model, k, tokens, carry, seed), ref) for k in ("eager", "compile")}
    assert 0 < err["compile"] <= 1.5 * err["eager"] + 1e-3, f"seed {seed}: {err}"


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
def test_captured_segments_of_the_compiled_attention_model_equal_eager_segments(seed):
    model, tokens, starts = _case(seed, n=12, latent_dtype="bfloat16")
    model.kernels = "compile"
    kw = dict(depth=6, seed=seed, full_depth=True, segment_steps=3)
    runs = {graphs: [{f: getattr(r, f).clone() for f in FIELDS}
                     for r in reasoning_steps(model, tokens, starts, graphs=graphs, **kw)]
            for graphs in (False, True)}
    for t, (a, b) in enumerate(zip(runs[False], runs[True]), 1):
        for f in FIELDS:
            assert torch.equal(a[f], b[f]), f"seed {seed}: step {t} {f}"

"""The Sudoku reasoner's GPU paths (pytest -m gpu; run by scripts/gpu_suite.sh): the fused
block (Triton) against the eager one, whole reasoning segments captured as CUDA graphs against
the same segments run eagerly, and the compile path under inductor."""
import random

import pytest
import torch

import eqkernels as eqk
import reasoner.reasoning as reasoning
from eqkernels.solvers import SegmentRunner
from sudoku.tokens import CELLS, VOCAB_SIZE
from reasoner.reasoning import reasoning_steps
from reasoner_gpu_cases import forward_with, make_case, needs_cuda, rel_error  # noqa: F401

pytestmark = pytest.mark.gpu
SMALL = dict(hidden=64, layers=2, expansion=2.0, H_cycles=2, L_cycles=2, seq_len=CELLS, vocab=VOCAB_SIZE)
FIELDS = ("pred", "residual", "running", "steps_used", "change", "ran")


def _case(seed, n=8, **over):
    return make_case(SMALL, 11, seed, n, **over)


def test_auto_picks_the_fused_path_on_cuda_with_triton():
    model, _, _ = _case(0)
    want = "fused" if eqk.backends()["triton"][0] else "eager"
    assert model.kernel_path("cuda")[0] == want, model.kernel_path("cuda")


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
def test_fused_model_on_gpu_matches_eager(seed):
    """fp32: to rounding (noise stream included); bf16: no further from the fp32 model than
    the eager bf16 path (10% margin: 8 updates of random weights amplify rounding)."""
    model, tokens, carry = _case(seed)
    ref = forward_with(model, "eager", tokens, carry, seed)
    got = forward_with(model, "fused", tokens, carry, seed)
    assert rel_error(got, ref) < 1e-5, f"seed {seed}: fp32 {rel_error(got, ref):.3g}"
    model.cfg.latent_dtype = "bfloat16"
    err = {k: rel_error(forward_with(model, k, tokens, carry, seed), ref) for k in ("eager", "fused")}
    assert 0 < err["fused"] <= 1.1 * err["eager"], f"seed {seed}: {err}"


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
@pytest.mark.parametrize("latent_dtype", ["float32", "bfloat16"])
def test_captured_reasoning_segments_equal_the_eager_segments(seed, latent_dtype, monkeypatch):
    """The eval loop's segments as CUDA-graph replays (captured per batch size and K) draw the
    same noise and give the same records, bit for bit, as the same segments run eagerly,
    through halting and compaction."""
    model, tokens, starts = _case(seed, n=16, latent_dtype=latent_dtype)
    model.kernels = "auto"
    probe = [r.residual.clone() for r in
             reasoning_steps(model, tokens, starts, depth=5, full_depth=True, seed=seed)][-1]
    kw = dict(depth=16, seed=seed, halt_tol=float(probe.median()), patience=0, segment_steps=2,
              compact_below=0.5)
    runs = {}
    runners = []

    class Tracked(SegmentRunner):
        def __init__(self, *args, **more):
            super().__init__(*args, **more)
            runners.append(self)
    monkeypatch.setattr(reasoning, "SegmentRunner", Tracked)
    for graphs in (False, True):
        runs[graphs] = [{f: getattr(r, f).clone() for f in FIELDS}
                        for r in reasoning_steps(model, tokens, starts, graphs=graphs, **kw)]
    for t, (a, b) in enumerate(zip(runs[False], runs[True]), 1):
        for f in FIELDS:
            assert torch.equal(a[f], b[f]), f"seed {seed}: step {t} {f}"
    captured = [r for r in runners if r.capture]
    assert captured and sum(r.replays for r in captured) >= 2, [r.describe() for r in runners]
    used = runs[True][-1]["steps_used"]
    assert len(set(used.tolist())) > 1, f"seed {seed}: no spread of halting steps {used}"


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
def test_step_runner_replays_equal_the_forward(seed):
    model, tokens, (h0, l0) = _case(seed, n=4)
    model.kernels = "fused"
    want = forward_with(model, "fused", tokens, (h0, l0), seed)
    with torch.no_grad():
        h, l, x = h0.clone(), l0.clone(), model.embed(tokens)
        upd = model.new_update(4, "cuda", seed)
        runner = model.step_runner(upd, h, l, x, model.L_level.weights(torch.float32))
        for _ in range(3):
            upd.step_counter.zero_()
            h.copy_(h0), l.copy_(l0)
            runner.run(2, 0)
            assert torch.equal(model.heads(h)[0], want)
    assert runner.capture and runner.replays == 2, runner.describe()


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
def test_compile_path_under_inductor_matches_eager(seed):
    model, tokens, carry = _case(seed, n=4, layers=1, H_cycles=1)
    ref = forward_with(model, "eager", tokens, carry, seed)
    got = forward_with(model, "compile", tokens, carry, seed)
    assert rel_error(got, ref) < 1e-4, f"seed {seed}: {rel_error(got, ref):.3g}"

"""The Sudoku reasoner on the fused block (kernels="fused": eqk.nn.LoopedTransformerStack's
fused chain; on CPU tensors its ops run their references) against the eager model and
against EqR's forward (test_eqr_reference's float64 reference, loaded through the public
loader): fp32 to rounding, bf16 no further from fp32 than the eager bf16 path."""
import random

import pytest
import torch

from reasoner.checkpoint import load_model
from reasoner.evaluate import reasoning_steps
from reasoner.model import ReasonerConfig, Reasoner as SudokuReasoner
from sudoku.tokens import CELLS, VOCAB_SIZE
from test_eqr_reference import _eqr_arch, _eqr_weights, _reference, _write_eqr_pth

SMALL = dict(hidden=32, layers=2, expansion=2.0, H_cycles=2, L_cycles=2, seq_len=CELLS, vocab=VOCAB_SIZE)


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def _run(model, kernels, tokens, carry, **kw):
    model.kernels = kernels
    with torch.no_grad():
        logits, q, (h, l) = model(tokens, carry=carry, grad="none", **kw)
    return logits, q, h, l


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
def test_fused_model_matches_eager_in_float32_noise_stream_included(seed):
    torch.manual_seed(seed)
    model = SudokuReasoner(ReasonerConfig(**SMALL))
    tokens, carry = torch.randint(1, 11, (3, 81)), model.initial_carry(3)
    eager = _run(model, "eager", tokens, carry, steps=2, seed=seed)
    fused = _run(model, "fused", tokens, carry, steps=2, seed=seed)
    for name, a, b in zip(("logits", "q", "z_H", "z_L"), fused, eager):
        assert _rel(a, b) < 1e-5, f"seed {seed} {name}: {_rel(a, b):.3g}"
    assert eager[0].std() > 0.1


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
def test_fused_bfloat16_is_no_further_from_float32_than_eager_bfloat16(seed):
    torch.manual_seed(seed)
    model = SudokuReasoner(ReasonerConfig(**dict(SMALL, noise_std=0.0)))
    tokens, carry = torch.randint(1, 11, (3, 81)), model.initial_carry(3)
    ref = _run(model, "eager", tokens, carry, steps=2)[0]
    model.cfg.latent_dtype = "bfloat16"
    err = {k: _rel(_run(model, k, tokens, carry, steps=2)[0], ref) for k in ("eager", "fused")}
    assert 0 < err["fused"] <= err["eager"], f"seed {seed}: {err}"


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
def test_fused_reasoner_from_an_eqr_pth_matches_eqr_forward(tmp_path, seed):
    """EqR's weights through the public loader, kernels="fused", against the float64 reference
    of EqR's forward: float64 to 1e-10; float32 to rounding (16 updates amplify float32's
    rounding to ~1e-5 here), no further than the eager float32 path."""
    gen = torch.Generator().manual_seed(seed)
    arch = _eqr_arch()
    w = _eqr_weights(arch, gen)
    _write_eqr_pth(tmp_path / "eqr.pth", arch, w)
    tokens = torch.randint(1, 11, (3, 81), generator=gen)
    z_H, z_L = (torch.randn(3, 81, 32, generator=gen, dtype=torch.float64) for _ in range(2))
    want = _reference(w, arch, tokens, z_H, z_L, 2)
    names = ("logits", "q", "z_H", "z_L")
    model, _ = load_model(str(tmp_path / "eqr.pth"), dtype=torch.float64, latent_dtype="float64")
    for name, a, b in zip(names, _run(model, "fused", tokens, (z_H, z_L), steps=2), want):
        assert _rel(a, b) < 1e-10, f"seed {seed} float64 {name}: {_rel(a, b):.3g}"
    model, _ = load_model(str(tmp_path / "eqr.pth"))
    carry = (z_H.float(), z_L.float())
    errs = {k: [_rel(a, b) for a, b in zip(_run(model, k, tokens, carry, steps=2), want)]
            for k in ("eager", "fused")}
    for name, fused, eager in zip(names, errs["fused"], errs["eager"]):
        assert fused < 5e-5 and fused <= 1.5 * eager + 1e-6, \
            f"seed {seed} float32 {name}: fused {fused:.3g}, eager {eager:.3g}"


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
def test_training_forward_runs_unrecorded_rounds_fused_with_the_same_gradient(seed):
    """grad="last": the earlier rounds take the fused path, the last one is recorded on the
    reference block; values and gradients equal the all-eager forward's (fp32 rounding)."""
    torch.manual_seed(seed)
    model = SudokuReasoner(ReasonerConfig(**SMALL))
    tokens, carry = torch.randint(1, 11, (2, 81)), model.initial_carry(2)
    grads = {}
    for kernels in ("eager", "fused"):
        model.kernels = kernels
        model.zero_grad()
        logits, q, _ = model(tokens, carry=carry, steps=2, grad="last", seed=seed)
        (logits.logsumexp(-1).mean() + q.sum()).backward()
        grads[kernels] = [p.grad.clone() for p in model.parameters()]
    for (name, _), a, b in zip(model.named_parameters(), grads["fused"], grads["eager"]):
        assert _rel(a, b) < 1e-4, f"seed {seed} {name}: {_rel(a, b):.3g}"


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
def test_eval_loop_on_the_fused_path_equals_the_eager_loop(seed):
    torch.manual_seed(seed)
    model = SudokuReasoner(ReasonerConfig(**dict(SMALL, layers=1, H_cycles=1)))
    tokens, starts = torch.randint(1, 11, (6, 81)), model.initial_carry(6)
    last = {}
    for kernels in ("eager", "fused"):
        model.kernels = kernels
        for rec in reasoning_steps(model, tokens, starts, depth=4, full_depth=True, seed=seed):
            pass
        last[kernels] = (rec.pred.clone(), rec.residual.clone())
    assert torch.equal(last["fused"][0], last["eager"][0]), f"seed {seed}"
    torch.testing.assert_close(last["fused"][1], last["eager"][1], rtol=1e-5, atol=1e-6)


def _triton_interpretable():
    from eqkernels import backends
    ok, why = backends()["triton"]
    if not ok:
        pytest.skip(f"triton: {why}")


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
def test_fused_model_on_the_triton_kernels_matches_eager(seed):
    """The model's fused path on the Triton kernels themselves (interpreted on CPU in CI; the
    compiled kernels on a GPU): fp32 to rounding, noise stream included; bf16 no further from
    the fp32 model than the eager bf16 path. Tiny: the interpreter pays per operation."""
    _triton_interpretable()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    model = SudokuReasoner(ReasonerConfig(**dict(SMALL, H_cycles=1, L_cycles=1))).to(device)
    model.backend = "triton"
    tokens = torch.randint(1, 11, (2, 81), device=device)
    carry = model.initial_carry(2, device)
    eager = _run(model, "eager", tokens, carry, seed=seed)
    fused = _run(model, "fused", tokens, carry, seed=seed)
    for name, a, b in zip(("logits", "q", "z_H", "z_L"), fused, eager):
        assert _rel(a, b) < 1e-5, f"seed {seed} {name}: {_rel(a, b):.3g}"
    model.cfg.latent_dtype = "bfloat16"
    err = {k: _rel(_run(model, k, tokens, carry, seed=seed)[0], eager[0]) for k in ("eager", "fused")}
    assert 0 < err["fused"] <= err["eager"], f"seed {seed}: {err}"

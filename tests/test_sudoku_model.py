"""The Sudoku reasoner: its fused inference loop against plain PyTorch, the 1-step gradient,
and loading checkpoints named like the public EqR code."""
import os
import random
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))

from sudoku.checkpoint import eqr_name_to_ours, load_eqr_state_dict  # noqa: E402
from sudoku.model import ReasonerConfig, SudokuReasoner, swiglu_inner_width  # noqa: E402

SMALL = dict(hidden=32, layers=2, expansion=2.0, H_cycles=2, L_cycles=3)


@pytest.fixture(autouse=True)
def _fresh_seed():
    torch.manual_seed(random.randrange(2**31))


def _tokens(B):
    return torch.randint(1, 11, (B, 81))


def test_swiglu_widths_follow_the_recipe():
    assert swiglu_inner_width(512, 4) == 1536
    assert swiglu_inner_width(81, 4) == 256


def test_fused_inference_equals_the_plain_pytorch_updates():
    model = SudokuReasoner(ReasonerConfig(noise_std=0.0, **SMALL))
    tokens = _tokens(3)
    carry = model.initial_carry(3)
    with torch.no_grad():
        logits, q, (z_H, z_L) = model(tokens, carry=carry, steps=2, grad="none")
        x = model.embed(tokens)
        h, l = carry[0].clone(), carry[1].clone()
        for _ in range(2 * model.cfg.H_cycles):
            for _ in range(model.cfg.L_cycles):
                l = model._update(l, h + x)
            h = model._update(h, l)
    torch.testing.assert_close(z_H, h, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z_L, l, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, model.heads(h)[0], rtol=1e-4, atol=1e-4)
    assert logits.shape == (3, 81, 11) and q.shape == (3, 2)


def test_one_step_gradient_reaches_every_parameter_and_carry_is_detached():
    model = SudokuReasoner(ReasonerConfig(**SMALL))
    logits, q, carry = model(_tokens(2), steps=3, grad="last")
    (logits.logsumexp(-1).mean() + q.sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert not carry[0].requires_grad and not carry[1].requires_grad


def test_noise_makes_trajectories_differ_and_seed_reproduces_them():
    model = SudokuReasoner(ReasonerConfig(**SMALL))
    tokens, carry = _tokens(2), model.initial_carry(2)
    with torch.no_grad():
        a = model(tokens, carry=carry, grad="none", seed=5)[2][0]
        b = model(tokens, carry=carry, grad="none", seed=5)[2][0]
        c = model(tokens, carry=carry, grad="none", seed=6)[2][0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def _as_eqr_checkpoint(model):
    """Our weights under the EqR code's names (with torch.compile's and a wrapper's prefixes)."""
    out = {}
    for name, t in model.state_dict().items():
        eqr = name.replace("embed_tokens.weight", "embed_tokens.embedding_weight")
        out[f"model._orig_mod.inner.{eqr}"] = t.clone()
    return out


def test_eqr_checkpoint_loads_and_reproduces_outputs():
    cfg = ReasonerConfig(noise_std=0.0, **SMALL)
    source, target = SudokuReasoner(cfg), SudokuReasoner(cfg)
    ckpt = _as_eqr_checkpoint(source)
    ckpt["model.inner.H_init"] = torch.randn(32)  # EqR buffers we do not use
    with pytest.raises(KeyError, match="H_init"):
        load_eqr_state_dict(target, ckpt)
    report = load_eqr_state_dict(target, ckpt, strict=False)
    assert report.unexpected == ["model.inner.H_init"] and not report.missing
    tokens = _tokens(2)
    carry = source.initial_carry(2)
    with torch.no_grad():
        expect = source(tokens, carry=carry, steps=1, grad="none")[0]
        got = target(tokens, carry=carry, steps=1, grad="none")[0]
    torch.testing.assert_close(got, expect, rtol=0, atol=0)


def test_eqr_loader_names_missing_and_misshaped_tensors():
    model = SudokuReasoner(ReasonerConfig(**SMALL))
    ckpt = _as_eqr_checkpoint(model)
    del ckpt["model._orig_mod.inner.lm_head.weight"]
    with pytest.raises(KeyError, match="lm_head.weight"):
        load_eqr_state_dict(model, ckpt)
    ckpt = _as_eqr_checkpoint(model)
    ckpt["model._orig_mod.inner.q_head.weight"] = torch.zeros(3, 32)
    with pytest.raises(ValueError, match="q_head.weight"):
        load_eqr_state_dict(model, ckpt)
    assert eqr_name_to_ours("model._orig_mod.inner.L_level.layers.1.mlp.down_proj.weight") == \
        "L_level.layers.1.mlp.down_proj.weight"


def test_bad_tokens_are_refused():
    model = SudokuReasoner(ReasonerConfig(**SMALL))
    with pytest.raises(ValueError, match="81"):
        model(torch.ones(2, 80, dtype=torch.long))
    with pytest.raises(ValueError, match="lie in"):
        model(torch.full((1, 81), 11))

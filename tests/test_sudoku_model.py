"""The Sudoku reasoner: its fused inference loop against plain PyTorch, gradients, starts,
checkpoint versioning, and loading checkpoints named like the public EqR code."""
import math
import random

import pytest
import torch

from reasoner.checkpoint import (FORMAT_VERSION, CheckpointError, eqr_name_to_ours,
                               load_eqr_state_dict, load_model)
from reasoner.model import ReasonerConfig, Reasoner as SudokuReasoner, swiglu_inner_width, truncated_normal_
from sudoku.tokens import CELLS, VOCAB_SIZE

SMALL = dict(hidden=32, layers=2, expansion=2.0, H_cycles=2, L_cycles=3, seq_len=CELLS, vocab=VOCAB_SIZE)


@pytest.fixture(autouse=True)
def _fresh_seed():
    torch.manual_seed(random.randrange(2**31))


def _tokens(B):
    return torch.randint(1, 11, (B, 81))


def test_swiglu_widths_follow_the_recipe():
    assert swiglu_inner_width(512, 4) == 1536
    assert swiglu_inner_width(81, 4) == 256


def test_fused_inference_equals_the_recorded_updates():
    """The fused in-place path and the autograd path are the same formula and noise stream."""
    model = SudokuReasoner(ReasonerConfig(**SMALL))
    tokens = _tokens(3)
    carry = model.initial_carry(3)
    seed = random.randrange(2**31)
    with torch.no_grad():
        logits, q, (z_H, z_L) = model(tokens, carry=carry, steps=2, grad="none", seed=seed)
    rec_logits, _, (h, l) = model(tokens, carry=carry, steps=2, grad=2 * model.cfg.H_cycles, seed=seed)
    torch.testing.assert_close(z_H, h, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z_L, l, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, rec_logits.detach(), rtol=1e-4, atol=1e-4)
    assert logits.shape == (3, 81, 11) and q.shape == (3, 2)


def test_last_round_gradient_matches_a_full_unroll_of_that_round():
    """grad="last" (EqR's) = the whole last round recorded: it equals the gradient of an
    unroll whose earlier rounds are detached, and differs from the 1-step gradient."""
    torch.manual_seed(random.randrange(2**31))
    model = SudokuReasoner(ReasonerConfig(**dict(SMALL, noise_std=0.0))).double()
    model.cfg.latent_dtype = "float64"
    tokens, carry = _tokens(2), model.initial_carry(2)
    grads = {}
    for mode in ("last", "one_step"):
        model.zero_grad()
        logits, q, _ = model(tokens, carry=carry, steps=2, grad=mode)
        (logits.logsumexp(-1).mean() + q.sum()).backward()
        grads[mode] = model.L_level.layers[0].mlp.down_proj.weight.grad.clone()
    # Reference: run all but the last round without grad, then the last round recorded.
    model.zero_grad()
    with torch.no_grad():
        _, _, mid = model(tokens, carry=carry, steps=1, grad="none")
        cfg = model.cfg
        upd = model.new_update(2)
        x = model.embed(tokens)
        h, l = (t.clone() for t in mid)
        w = model.L_level.weights(torch.float64)
        for _ in range(cfg.H_cycles - 1):
            model.round(upd, h, l, x, w)
    x = model.embed(tokens)
    for _ in range(cfg.L_cycles):
        l = model.L_level(l + h + x) * cfg.damping + (1 - cfg.damping) * l
    h = model.L_level(h + l) * cfg.damping + (1 - cfg.damping) * h
    logits, q = model.heads(h)
    (logits.logsumexp(-1).mean() + q.sum()).backward()
    ref = model.L_level.layers[0].mlp.down_proj.weight.grad
    torch.testing.assert_close(grads["last"], ref, rtol=1e-9, atol=1e-12)
    assert (grads["last"] - grads["one_step"]).abs().max() > 1e-6 * ref.abs().max()


def test_one_step_gradient_reaches_every_parameter_and_carry_is_detached():
    model = SudokuReasoner(ReasonerConfig(**SMALL))
    logits, q, carry = model(_tokens(2), steps=3, grad="last")
    (logits.logsumexp(-1).mean() + q.sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert not carry[0].requires_grad and not carry[1].requires_grad


@pytest.mark.parametrize("std", [1.0, 0.3])
def test_truncated_normal_start_has_the_requested_std_and_cut(std):
    seed = random.randrange(2**31)
    t = truncated_normal_(torch.empty(10**6), std, torch.Generator().manual_seed(seed))
    comp = std / math.sqrt(1 - 4 * math.exp(-2) / math.sqrt(2 * math.pi) / math.erf(2 / math.sqrt(2)))
    assert abs(float(t.std()) / std - 1) < 0.01, f"seed {seed}: std {float(t.std())}"
    assert float(t.abs().max()) <= 2 * comp * (1 + 1e-6), f"seed {seed}"
    assert float((t.abs() >= 2 * comp * (1 - 1e-6)).float().mean()) < 1e-4  # no mass piled on the cut
    model = SudokuReasoner(ReasonerConfig(**dict(SMALL, H_init_std=std, L_init_std=2 * std)))
    h, l = model.initial_carry(64)
    assert abs(float(h.std()) / std - 1) < 0.03 and abs(float(l.std()) / (2 * std) - 1) < 0.03


def test_checkpoint_format_1_runs_the_old_layer_flagged_and_newer_is_refused(tmp_path):
    model = SudokuReasoner(ReasonerConfig(**SMALL))
    conf = {k: v for k, v in model.cfg.to_dict().items()
            if k in ("hidden", "layers", "expansion", "H_cycles", "L_cycles", "damping", "noise_std",
                     "rms_eps", "attention", "heads", "vocab", "seq_len")}  # format 1's keys
    torch.save(dict(model_config=conf, model=model.state_dict(), ema=model.state_dict()), tmp_path / "v1.pt")
    with pytest.warns(UserWarning, match="format 1"):
        old, info = load_model(str(tmp_path / "v1.pt"))
    assert info["format_version"] == 1 and old.cfg.mlp_t_norm == "hidden"
    tokens, carry = _tokens(2), model.initial_carry(2)
    with torch.no_grad():
        a = old(tokens, carry=carry, grad="none", seed=1)[0]
        b = model(tokens, carry=carry, grad="none", seed=1)[0]
    assert (a - b).abs().max() > 1e-3  # the old layer is a different model
    torch.save(dict(format_version=FORMAT_VERSION + 1, model_config=conf, model=model.state_dict()),
               tmp_path / "v9.pt")
    with pytest.raises(CheckpointError, match="newer"):
        load_model(str(tmp_path / "v9.pt"))
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_model(str(tmp_path / "junk.pt"))


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
    ckpt["model.inner.H_init"] = torch.randn(32)  # a TRM buffer, not part of an EqR model
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

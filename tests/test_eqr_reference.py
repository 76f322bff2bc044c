"""Forward parity with EqR (locuslab/EqR models/eqr.py), judged by a float64 reference written
here from EqR's description alone (no import of our model code): token-axis RMSNorm inside the
transposed mlp_t, post-norm layers, SwiGLU widths, the damped noisy update, the H/L cycle order
and the heads. Our model is loaded from a synthetic EqR-format .pth (EMA wrapper, config dict,
`_orig_mod.model.` prefixes) through the public loader, then run in float64."""
import math
import random

import pytest
import torch
import torch.nn.functional as F

import eqkernels as eqk
from reasoner.checkpoint import CheckpointError, load_model

EPS = 1e-5


def _inner(width, expansion):
    return -(-round(expansion * width * 2 / 3) // 256) * 256


def _eqr_arch(**over):
    arch = dict(name="eqr@EqRModel", hidden_size=32, L_layers=2, H_layers=0, H_cycles=2, L_cycles=3,
                expansion=2.0, num_heads=4, pos_encodings="rope", mlp_t=True, lambda_=0.9,
                noise_scale=0.0, H_init_std=1.0, L_init_std=0.5, forward_dtype="float32",
                rms_norm_eps=EPS, halt_max_steps=16, halt_exploration_prob=0.1)
    arch.update(over)
    return arch


def _eqr_weights(arch, gen, dtype=torch.float64):
    """EqR's parameter names (InnerNetwork) -> fresh random tensors, scaled like its init."""
    D, S, V = arch["hidden_size"], 81, 11
    e = arch["expansion"]
    w = {"embed_tokens.embedding_weight": torch.randn(V, D, generator=gen, dtype=dtype) / math.sqrt(D),
         "lm_head.weight": torch.randn(V, D, generator=gen, dtype=dtype) / math.sqrt(D),
         "q_head.weight": torch.randn(2, D, generator=gen, dtype=dtype) / math.sqrt(D),
         "q_head.bias": torch.randn(2, generator=gen, dtype=dtype)}
    for i in range(arch["L_layers"]):
        for sub, width in (("mlp_t", S), ("mlp", D)):
            inner = _inner(width, e)
            w[f"L_level.layers.{i}.{sub}.gate_up_proj.weight"] = \
                torch.randn(2 * inner, width, generator=gen, dtype=dtype) / math.sqrt(width)
            w[f"L_level.layers.{i}.{sub}.down_proj.weight"] = \
                torch.randn(width, inner, generator=gen, dtype=dtype) / math.sqrt(inner)
    return w


def _write_eqr_pth(path, arch, ema_weights, raw_weights=None, buffers=None):
    """The dict EqR's utils/checkpoint.py saves: model (compiled: _orig_mod), ema shadow, config."""
    raw = raw_weights if raw_weights is not None else {k: v + 1.0 for k, v in ema_weights.items()}
    model = {f"_orig_mod.model.inner.{k}": v for k, v in raw.items()}
    for k, v in (buffers or {}).items():
        model[f"_orig_mod.model.inner.{k}"] = v
    torch.save({"model": model, "ema": {"mu": 0.999, "shadow": {f"model.inner.{k}": v
                                                                for k, v in ema_weights.items()}},
                "config": {"arch": arch, "global_batch_size": 768, "lr": 1e-4},
                "step": 5}, path)


def _rms(h, dim):
    return h * torch.rsqrt(h.pow(2).mean(dim, keepdim=True) + EPS)


def _swiglu(h, gu, down):
    gate, up = (h @ gu.T).chunk(2, dim=-1)
    return (F.silu(gate) * up) @ down.T


def _reference(w, arch, tokens, z_H, z_L, steps, noise=None):
    """EqR's InnerNetwork forward `steps` times, in float64, from its description."""
    lam = arch["lambda_"]
    D = arch["hidden_size"]

    def block(h):
        for i in range(arch["L_layers"]):
            p = f"L_level.layers.{i}."
            t = h.transpose(1, 2)                                   # (B, hidden, 81)
            t = _rms(t + _swiglu(t, w[p + "mlp_t.gate_up_proj.weight"],
                                 w[p + "mlp_t.down_proj.weight"]), -1)  # norm over the 81 tokens
            h = t.transpose(1, 2)
            h = _rms(h + _swiglu(h, w[p + "mlp.gate_up_proj.weight"], w[p + "mlp.down_proj.weight"]), -1)
        return h

    count = [0]

    def update(z, inj):
        count[0] += 1
        out = (1 - lam) * z + lam * block(z + inj)
        return out if noise is None else out + noise(count[0], z.shape)

    x = w["embed_tokens.embedding_weight"][tokens] * math.sqrt(D)
    for _ in range(steps * arch["H_cycles"]):
        for _ in range(arch["L_cycles"]):
            z_L = update(z_L, z_H + x)
        z_H = update(z_H, z_L)
    logits = z_H @ w["lm_head.weight"].T
    q = z_H[:, 0] @ w["q_head.weight"].T + w["q_head.bias"]
    return logits, q, z_H, z_L


def _f64(model):
    model = model.double()
    model.cfg.latent_dtype = "float64"
    return model


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
def test_eqr_pth_round_trip_matches_float64_reference_over_steps(tmp_path, seed):
    gen = torch.Generator().manual_seed(seed)
    arch = _eqr_arch()
    w = _eqr_weights(arch, gen)
    _write_eqr_pth(tmp_path / "eqr.pth", arch, w)
    model, info = load_model(str(tmp_path / "eqr.pth"), dtype=torch.float64)
    assert info["kind"] == "eqr" and not info["report"].missing and not info["report"].unexpected
    cfg = model.cfg
    assert (cfg.hidden, cfg.layers, cfg.H_cycles, cfg.L_cycles, cfg.damping, cfg.L_init_std) == \
        (32, 2, 2, 3, 0.9, 0.5)
    model = _f64(model)
    tokens = torch.randint(1, 11, (3, 81), generator=gen)
    z_H = torch.randn(3, 81, 32, generator=gen, dtype=torch.float64)
    z_L = torch.randn(3, 81, 32, generator=gen, dtype=torch.float64)
    carry = (z_H, z_L)
    for steps in (1, 2, 4):
        want = _reference(w, arch, tokens, z_H, z_L, steps)
        with torch.no_grad():
            logits, q, (h, l) = model(tokens, carry=carry, steps=steps, grad="none")
        for name, got, ref in (("logits", logits, want[0]), ("q", q, want[1]), ("z_H", h, want[2]),
                               ("z_L", l, want[3])):
            err = (got - ref).abs().max().item()
            assert err < 1e-10, f"seed {seed} steps {steps} {name}: max error {err:.3g}"
        assert want[0].std() > 0.1  # the logits are not trivially small
    # The recorded (training) path computes the same numbers.
    logits_rec = model(tokens, carry=carry, steps=2, grad=2)[0]
    assert (logits_rec.detach() - _reference(w, arch, tokens, z_H, z_L, 2)[0]).abs().max() < 1e-10


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
def test_noise_follows_the_looped_update_stream_in_eqr_order(seed):
    """With noise on, update number k (1-based, L then H order) adds noise_std * eps_k of the
    model's LoopedUpdate, in both the fused and the recorded path."""
    gen = torch.Generator().manual_seed(seed)
    arch = _eqr_arch(noise_scale=0.05)
    w = _eqr_weights(arch, gen)
    from reasoner.checkpoint import config_from_eqr, load_eqr_state_dict
    from reasoner.model import Reasoner as SudokuReasoner
    cfg, _ = config_from_eqr(arch, w)
    model = SudokuReasoner(cfg).double()
    load_eqr_state_dict(model, w)
    model = _f64(model)
    tokens = torch.randint(1, 11, (2, 81), generator=gen)
    carry = tuple(torch.randn(2, 81, 32, generator=gen, dtype=torch.float64) for _ in range(2))
    stream = eqk.LoopedUpdate(batch=2, damping=0.9, noise_std=0.05, seed=seed)
    want = _reference(w, arch, tokens, *carry, 2,
                      noise=lambda k, shape: 0.05 * stream.noise(k, shape, torch.float64))
    with torch.no_grad():
        fused = model(tokens, carry=carry, steps=2, grad="none", seed=seed)
    recorded = model(tokens, carry=carry, steps=2, grad=4, seed=seed)
    # The compiled CPU kernel draws float64 noise that differs from LoopedUpdate.noise by
    # ~5e-7 (of a unit normal); through 12 updates ~1e-6 in the logits, far under the O(0.05)
    # a wrong stream or order would give. Both paths run the fused update.
    assert (recorded[0].detach() - fused[0]).abs().max() < 1e-12, f"seed {seed}"
    assert (fused[0] - want[0]).abs().max() < 1e-5, f"seed {seed}"


def test_eqr_files_use_ema_by_default_and_weights_model_on_request(tmp_path):
    gen = torch.Generator().manual_seed(1)
    arch = _eqr_arch()
    w = _eqr_weights(arch, gen, torch.float32)
    _write_eqr_pth(tmp_path / "e.pth", arch, w)
    ema, _ = load_model(str(tmp_path / "e.pth"))
    raw, _ = load_model(str(tmp_path / "e.pth"), weights="model")
    assert torch.equal(ema.lm_head.weight, w["lm_head.weight"])
    assert torch.equal(raw.lm_head.weight, w["lm_head.weight"] + 1.0)


def test_eqr_loader_names_every_missing_and_unexpected_tensor(tmp_path):
    gen = torch.Generator().manual_seed(2)
    arch = _eqr_arch()
    w = _eqr_weights(arch, gen, torch.float32)
    del w["lm_head.weight"], w["L_level.layers.1.mlp.down_proj.weight"]
    w["L_level.layers.0.extra.weight"] = torch.zeros(3)
    _write_eqr_pth(tmp_path / "e.pth", arch, w)
    with pytest.raises(CheckpointError) as err:
        load_model(str(tmp_path / "e.pth"))
    msg = str(err.value)
    for name in ("lm_head.weight", "L_level.layers.1.mlp.down_proj.weight", "layers.0.extra.weight"):
        assert name in msg, msg


@pytest.mark.parametrize("over, option", [
    (dict(mlp_t=False), "arch.mlp_t"),
    (dict(name="hrm@HRM"), "arch.name"),
    (dict(puzzle_emb_ndim=512), "puzzle_emb_ndim"),
    (dict(name="trm@TRMModel", pos_encodings="learned"), "arch.pos_encodings"),
    (dict(forward_dtype="float16"), "arch.forward_dtype"),
])
def test_unsupported_eqr_architectures_are_refused_naming_the_option(tmp_path, over, option):
    arch = _eqr_arch(**over)
    _write_eqr_pth(tmp_path / "e.pth", arch, _eqr_weights(_eqr_arch(), torch.Generator().manual_seed(3),
                                                          torch.float32))
    with pytest.raises(CheckpointError, match=option.replace(".", r"\.")):
        load_model(str(tmp_path / "e.pth"))


def test_trm_checkpoint_starts_from_its_buffers_with_damping_one_and_no_noise(tmp_path):
    gen = torch.Generator().manual_seed(4)
    arch = _eqr_arch(name="trm@TRMModel", pos_encodings="none", noise_scale=0.3)
    w = _eqr_weights(arch, gen)
    bufs = {"H_init": torch.randn(32, generator=gen, dtype=torch.float64),
            "L_init": torch.randn(32, generator=gen, dtype=torch.float64)}
    _write_eqr_pth(tmp_path / "t.pth", arch, w, raw_weights=w, buffers=bufs)
    model, info = load_model(str(tmp_path / "t.pth"), dtype=torch.float64)  # strict: must not fail on the buffers
    assert info["kind"] == "trm" and model.cfg.damping == 1.0 and model.cfg.noise_std == 0.0
    model = _f64(model)
    h0, l0 = model.initial_carry(2)
    assert torch.equal(h0, bufs["H_init"].expand(2, 81, 32)) and torch.equal(l0[1, 5], bufs["L_init"])
    tokens = torch.randint(1, 11, (2, 81), generator=gen)
    want = _reference(w, dict(arch, lambda_=1.0), tokens, h0, l0, 2)
    with torch.no_grad():
        got = model(tokens, steps=2, grad="none")
    assert (got[0] - want[0]).abs().max() < 1e-10


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
def test_bfloat16_latents_stay_bf16_and_track_float32(seed):
    """forward_dtype bfloat16: z_H, z_L stay bf16; the logits stay near the float32 model's."""
    gen = torch.Generator().manual_seed(seed)
    arch = _eqr_arch(forward_dtype="bfloat16")
    from reasoner.checkpoint import config_from_eqr, load_eqr_state_dict
    from reasoner.model import Reasoner as SudokuReasoner
    w = _eqr_weights(arch, gen, torch.float32)
    cfg, _ = config_from_eqr(arch, w)
    assert cfg.latent_dtype == "bfloat16"
    model = SudokuReasoner(cfg)
    load_eqr_state_dict(model, w)
    tokens = torch.randint(1, 11, (2, 81), generator=gen)
    carry = model.initial_carry(2, generator=gen)
    assert carry[0].dtype == torch.bfloat16
    with torch.no_grad():
        lo, _, (h, l) = model(tokens, carry=carry, grad="none")
        model.cfg.latent_dtype = "float32"
        hi = model(tokens, carry=carry, grad="none")[0]
    assert h.dtype == l.dtype == torch.bfloat16
    rel = (lo - hi).norm() / hi.norm()
    assert 0 < rel < 0.05, f"seed {seed}: bf16 vs fp32 relative error {rel:.3g}"

"""EqR's Maze model (mlp_t: false: self-attention with RoPE, norm over hidden) through our
loader, judged by a float64 reference written here from EqR's description alone (models/eqr.py,
models/layers.py: rows [q | k | v] of qkv_proj, rotate-half RoPE on q and k from float32
angle tables, 1-D over the tokens or 2-D (first half of each head by row, second by column),
softmax attention, o_proj; post-norm layers; the damped update; H/L cycles; the heads). Also:
EqR files holding a training carry of its own classes and numpy's RNG state load without
EqR installed (seq_len read from the carry), and files with any other object are refused."""
import math
import random
import sys
import types
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maze.task import MAZE
from reasoner.checkpoint import CheckpointError, load_model
from reasoner.task import TaskData
from test_eqr_reference import EPS, _f64, _inner, _rms, _swiglu

V = 6  # maze tokens


def _maze_arch(**over):
    arch = dict(name="eqr@EqRModel", hidden_size=32, L_layers=2, H_layers=0, H_cycles=2,
                L_cycles=3, expansion=2.0, num_heads=4, pos_encodings="rope", mlp_t=False,
                board_height=None, board_width=None, lambda_=0.9, noise_scale=0.0,
                H_init_std=1.0, L_init_std=0.5, forward_dtype="float32", rms_norm_eps=EPS,
                halt_max_steps=16, halt_exploration_prob=0.1)
    arch.update(over)
    return arch


def _maze_weights(arch, gen, dtype=torch.float64):
    """EqR's parameter names of an attention InnerNetwork -> random tensors, init-scaled."""
    D, e = arch["hidden_size"], arch["expansion"]
    r = lambda *shape, fan: torch.randn(*shape, generator=gen, dtype=dtype) / math.sqrt(fan)  # noqa: E731
    w = {"embed_tokens.embedding_weight": r(V, D, fan=D), "lm_head.weight": r(V, D, fan=D),
         "q_head.weight": r(2, D, fan=D), "q_head.bias": torch.randn(2, generator=gen, dtype=dtype)}
    for i in range(arch["L_layers"]):
        p = f"L_level.layers.{i}."
        w[p + "self_attn.qkv_proj.weight"] = r(3 * D, D, fan=D)
        w[p + "self_attn.o_proj.weight"] = r(D, D, fan=D)
        inner = _inner(D, e)
        w[p + "mlp.gate_up_proj.weight"] = r(2 * inner, D, fan=D)
        w[p + "mlp.down_proj.weight"] = r(D, inner, fan=inner)
    return w


def _write(path, arch, ema, raw=None, **extra):
    raw = raw if raw is not None else {k: v + 1.0 for k, v in ema.items()}
    torch.save({"model": {f"_orig_mod.model.inner.{k}": v for k, v in raw.items()},
                "ema": {"mu": 0.999, "shadow": {f"model.inner.{k}": v for k, v in ema.items()}},
                "config": {"arch": arch, "global_batch_size": 768}, "step": 3, **extra}, path)


def _tables(dim, positions, dtype):
    """EqR's RoPE cos / sin for `dim` dims at `positions`: angles p * base^(-2i/dim), built in
    float32 (as EqR builds them), each angle used for the pair (i, i + dim/2)."""
    inv = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    ang = positions.to(torch.float32)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def _rotate(x, cos, sin):
    """x (B, L, heads, d) rotated half by half: x * cos + (-x2, x1) * sin."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos[None, :, None] + torch.cat([-x2, x1], dim=-1) * sin[None, :, None]


def _reference(w, arch, board, tokens, z_H, z_L, steps):
    """EqR's InnerNetwork (mlp_t false) forward `steps` times from its description, in the
    weights' dtype (float64: the exact model); as EqR, RoPE, the attention softmax and the
    RMSNorms are computed wide (float32, float64 for float64) and rounded back."""
    D, heads, lam = arch["hidden_size"], arch["num_heads"], arch["lambda_"]
    d = D // heads
    Hh, Ww = board
    L = Hh * Ww
    dt = w["lm_head.weight"].dtype
    wide = torch.float64 if dt == torch.float64 else torch.float32
    if arch["pos_encodings"] == "rope":
        cos, sin = _tables(d, torch.arange(L), wide)
    elif arch["pos_encodings"] == "rope2d":
        rc, rs = _tables(d // 2, torch.arange(L) // Ww, wide)
        cc, cs = _tables(d // 2, torch.arange(L) % Ww, wide)

    def pos(x):
        x = x.to(wide)
        if arch["pos_encodings"] == "rope":
            x = _rotate(x, cos, sin)
        elif arch["pos_encodings"] == "rope2d":
            a, b = x.chunk(2, dim=-1)
            x = torch.cat([_rotate(a, rc, rs), _rotate(b, cc, cs)], dim=-1)
        return x.to(dt)

    def attention(h, p):
        B = h.shape[0]
        q, k, v = (h @ w[p + "self_attn.qkv_proj.weight"].T).view(B, L, 3, heads, d).unbind(2)
        q, k, v = pos(q).to(wide), pos(k).to(wide), v.to(wide)
        att = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d), dim=-1)
        out = torch.einsum("bhqk,bkhd->bqhd", att, v).reshape(B, L, D).to(dt)
        return out @ w[p + "self_attn.o_proj.weight"].T

    def rms(h):  # over hidden
        return _rms(h.to(wide), -1).to(dt)

    def block(h):
        for i in range(arch["L_layers"]):
            p = f"L_level.layers.{i}."
            h = rms(h + attention(h, p))
            h = rms(h + _swiglu(h, w[p + "mlp.gate_up_proj.weight"], w[p + "mlp.down_proj.weight"]))
        return h

    x = w["embed_tokens.embedding_weight"][tokens] * math.sqrt(D)
    for _ in range(steps * arch["H_cycles"]):
        for _ in range(arch["L_cycles"]):
            z_L = (1 - lam) * z_L + lam * block(z_L + z_H + x)
        z_H = (1 - lam) * z_H + lam * block(z_H + z_L)
    return z_H @ w["lm_head.weight"].T, z_H[:, 0] @ w["q_head.weight"].T + w["q_head.bias"]


def _data(board, n, gen):
    """Random maze-token grids (the model does not care whether they are mazes)."""
    L = board[0] * board[1]
    q = torch.randint(1, 5, (n, L), generator=gen)
    return TaskData(q, q.clone(), board=board, source="synthetic")


CASES = [("rope", (5, 5), 1), ("rope2d", (4, 6), 2), ("none", (3, 4), 1)]


@pytest.mark.parametrize("pos,board,layers", CASES, ids=[f"{c[0]}-{c[1][0]}x{c[1][1]}" for c in CASES])
def test_eqr_maze_pth_matches_float64_reference_over_steps(tmp_path, pos, board, layers):
    seed = random.randrange(2**31)
    gen = torch.Generator().manual_seed(seed)
    arch = _maze_arch(pos_encodings=pos, L_layers=layers)
    w = _maze_weights(arch, gen)
    _write(tmp_path / "maze.pth", arch, w)
    data = _data(board, 3, gen)
    model, info = load_model(str(tmp_path / "maze.pth"), dtype=torch.float64, task=MAZE, data=data)
    cfg = model.cfg
    assert info["kind"] == "eqr" and not info["report"].missing and not info["report"].unexpected
    assert (cfg.attention, cfg.pos_encoding, cfg.seq_len, cfg.vocab, cfg.heads) == \
        (True, pos, board[0] * board[1], V, 4)
    assert cfg.board == (board if pos == "rope2d" else None)
    model = _f64(model)
    L = data.seq_len
    z_H = torch.randn(3, L, 32, generator=gen, dtype=torch.float64)
    z_L = torch.randn(3, L, 32, generator=gen, dtype=torch.float64)
    for steps in (1, 3):
        want = _reference(w, arch, board, data.questions, z_H, z_L, steps)
        with torch.no_grad():
            logits, q, _ = model(data.questions, carry=(z_H, z_L), steps=steps, grad="none")
        for name, got, ref in (("logits", logits, want[0]), ("q", q, want[1])):
            err = (got - ref).abs().max().item()
            assert err < 1e-10, f"seed {seed} steps {steps} {name}: max error {err:.3g}"
        assert want[0].std() > 0.1
    # The recorded (training) path computes the same numbers.
    rec = model(data.questions, carry=(z_H, z_L), steps=1, grad=2)[0]
    ref = _reference(w, arch, board, data.questions, z_H, z_L, 1)[0]
    assert (rec.detach() - ref).abs().max() < 1e-10, f"seed {seed}"


@pytest.mark.parametrize("seed", [random.randrange(2**31)])
def test_bf16_maze_model_is_no_further_from_float64_than_plain_bf16(tmp_path, seed):
    """forward_dtype bfloat16: latents stay bf16 and the logits are no further from the
    float64 reference than EqR's computation carried out in bf16 (the reference in bf16)."""
    gen = torch.Generator().manual_seed(seed)
    arch = _maze_arch(forward_dtype="bfloat16", L_layers=1, H_cycles=1, L_cycles=2)
    w = _maze_weights(arch, gen, torch.float32)
    _write(tmp_path / "maze.pth", arch, w)
    data = _data((5, 5), 4, gen)
    model, _ = load_model(str(tmp_path / "maze.pth"), data=data)
    assert model.cfg.latent_dtype == "bfloat16"
    z = [torch.randn(4, 25, 32, generator=gen) for _ in range(2)]
    with torch.no_grad():
        lo, _, (h, _) = model(data.questions, carry=tuple(t.bfloat16() for t in z), grad="none")
    w64 = {k: v.double() for k, v in w.items()}
    exact = _reference(w64, arch, (5, 5), data.questions, *(t.double() for t in z), 1)[0]
    w16 = {k: v.bfloat16() for k, v in w.items()}
    plain = _reference(w16, arch, (5, 5), data.questions, *(t.bfloat16() for t in z), 1)[0]
    assert h.dtype == torch.bfloat16
    ours = (lo.double() - exact).norm() / exact.norm()
    theirs = (plain.double() - exact).norm() / exact.norm()
    assert 0 < ours <= 1.5 * theirs + 1e-3, f"seed {seed}: ours {ours:.3g}, plain bf16 {theirs:.3g}"


def test_ema_by_default_and_raw_weights_on_request(tmp_path):
    gen = torch.Generator().manual_seed(1)
    arch = _maze_arch()
    w = _maze_weights(arch, gen, torch.float32)
    _write(tmp_path / "m.pth", arch, w)
    data = _data((5, 5), 1, gen)
    ema, _ = load_model(str(tmp_path / "m.pth"), data=data)
    raw, _ = load_model(str(tmp_path / "m.pth"), weights="model", data=data)
    name = "L_level.layers.0.attn.qkv_proj.weight"
    assert torch.equal(ema.state_dict()[name], w["L_level.layers.0.self_attn.qkv_proj.weight"])
    assert torch.equal(raw.state_dict()[name], w["L_level.layers.0.self_attn.qkv_proj.weight"] + 1)


# ---- EqR's training carry, numpy's RNG state, and what is refused -------------------------------
def _fake_eqr_module(monkeypatch):
    """A `models.eqr` module with EqR's carry dataclasses, importable only while patched."""
    models, eqr = types.ModuleType("models"), types.ModuleType("models.eqr")

    @dataclass
    class LatentCarry:
        z_H: torch.Tensor
        z_L: torch.Tensor

    @dataclass
    class ModelCarry:
        inner_carry: LatentCarry
        steps: torch.Tensor
        halted: torch.Tensor
        current_data: Dict[str, torch.Tensor]
        global_step: Optional[int] = None

    for cls in (LatentCarry, ModelCarry):
        cls.__module__, cls.__qualname__ = "models.eqr", cls.__name__
        setattr(eqr, cls.__name__, cls)
    models.eqr = eqr
    monkeypatch.setitem(sys.modules, "models", models)
    monkeypatch.setitem(sys.modules, "models.eqr", eqr)
    return LatentCarry, ModelCarry


def test_eqr_file_with_carry_loads_without_eqr_and_reads_seq_len_from_it(tmp_path, monkeypatch):
    gen = torch.Generator().manual_seed(2)
    arch = _maze_arch()
    w = _maze_weights(arch, gen, torch.float32)
    with monkeypatch.context() as m:
        LatentCarry, ModelCarry = _fake_eqr_module(m)
        z = torch.zeros(2, 20, 32)
        carry = ModelCarry(LatentCarry(z, z.clone()), torch.zeros(2), torch.ones(2, dtype=torch.bool),
                           {"inputs": torch.zeros(2, 20, dtype=torch.int32)})
        _write(tmp_path / "m.pth", arch, w, carry=carry, numpy=np.random.get_state(),
               python=random.getstate())
    assert "models.eqr" not in sys.modules  # loading must not need EqR's code
    model, info = load_model(str(tmp_path / "m.pth"))
    assert model.cfg.seq_len == 20 and info["checkpoint"]["carry"].inner_carry.z_H.shape == (2, 20, 32)
    assert isinstance(info["checkpoint"]["numpy"][1], np.ndarray)
    # Without a carry and without the data, seq_len is unknown: said, naming it.
    _write(tmp_path / "bare.pth", arch, w)
    with pytest.raises(CheckpointError, match="seq_len"):
        load_model(str(tmp_path / "bare.pth"))


class _Exploit:
    def __reduce__(self):
        return (print, ("code from the checkpoint ran",))


def test_objects_outside_eqr_and_numpy_are_refused_without_running(tmp_path, monkeypatch, capsys):
    gen = torch.Generator().manual_seed(3)
    arch = _maze_arch()
    w = _maze_weights(arch, gen, torch.float32)
    _write(tmp_path / "bad.pth", arch, w, extra=_Exploit())
    with pytest.raises(CheckpointError, match="builtins.print"):
        load_model(str(tmp_path / "bad.pth"), data=_data((5, 5), 1, gen))
    assert "code from the checkpoint ran" not in capsys.readouterr().out
    with monkeypatch.context() as m:  # EqR's classes anywhere but the carry: refused too
        LatentCarry, _ = _fake_eqr_module(m)
        _write(tmp_path / "odd.pth", arch, w, config_extra=LatentCarry(torch.zeros(1), torch.zeros(1)))
    with pytest.raises(CheckpointError, match="'config_extra' holds objects of EqR's code"):
        load_model(str(tmp_path / "odd.pth"), data=_data((5, 5), 1, gen))

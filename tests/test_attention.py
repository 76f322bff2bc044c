"""eqk.nn.SelfAttention against attention written out by hand, in float64."""
import math
import random

import pytest
import torch

from eqkernels.nn import SelfAttention


@pytest.mark.parametrize("bias", [True, False])
def test_self_attention_matches_the_written_out_formula(bias):
    torch.manual_seed(random.randrange(2**31))
    heads = random.choice([1, 2, 4])
    width, B, L = heads * random.choice([3, 8]), random.randint(1, 3), random.randint(2, 9)
    attn = SelfAttention(width, heads, bias=bias).double()
    assert (attn.qkv_proj.bias is not None) == bias
    h = torch.randn(B, L, width, dtype=torch.float64)
    q, k, v = attn.qkv_proj(h).split(width, dim=-1)
    d = width // heads
    per_head = []
    for i in range(heads):
        cols = slice(i * d, (i + 1) * d)
        weights = torch.softmax(q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(d), -1)
        per_head.append(weights @ v[..., cols])
    expected = attn.o_proj(torch.cat(per_head, dim=-1))
    torch.testing.assert_close(attn(h), expected, rtol=1e-12, atol=1e-12)


def test_width_must_split_into_heads():
    with pytest.raises(ValueError, match="divisible by heads"):
        SelfAttention(10, 4)


# ---- rotary position embeddings (EqR's models/layers.py) ----------------------------------
import torch.nn.functional as F  # noqa: E402

from eqkernels.nn.attention import (apply_rotary, board_rotary_tables,  # noqa: E402
                                    rotary_tables)


def _eqr_angles(dim, positions, base=10000.0):
    """EqR's angle table for `dim` dims, positions (L,): angle[p, i] = p * base^(-2i/dim),
    i < dim/2, built in float32 as EqR builds it (its precision is part of its model)."""
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    return positions.to(torch.float32)[:, None] * inv[None, :]


def _rotate_pairs(x, first, angles):
    """Rotate the pairs (first + i, first + i + n) of x's last axis by angles (L, n);
    x: (B, heads, L, d)."""
    n = angles.shape[1]
    out = x.clone()
    for i in range(n):
        c, s = angles[:, i].cos(), angles[:, i].sin()
        a, b = x[..., first + i], x[..., first + i + n]
        out[..., first + i] = a * c - b * s
        out[..., first + i + n] = b * c + a * s
    return out


def _reference(h, w_qkv, w_o, heads, pos, board, dtype):
    """EqR's attention written out: q, k, v from the rows [q | k | v] of w_qkv, RoPE on q and
    k pair by pair, softmax(q k^T / sqrt(d)) v per head, o_proj. Computed in `dtype`."""
    H, W = board
    h, w_qkv, w_o = h.to(dtype), w_qkv.to(dtype), w_o.to(dtype)
    B, L, C = h.shape
    d = C // heads
    q, k, v = (h @ w_qkv.T).split(C, dim=-1)
    q, k, v = (t.view(B, L, heads, d).transpose(1, 2) for t in (q, k, v))  # (B, heads, L, d)
    if pos == "rope":
        angles = _eqr_angles(d, torch.arange(L)).to(h.device, dtype)
        q, k = (_rotate_pairs(t, 0, angles) for t in (q, k))
    elif pos == "rope2d":
        rows = _eqr_angles(d // 2, torch.arange(L) // W).to(h.device, dtype)
        cols = _eqr_angles(d // 2, torch.arange(L) % W).to(h.device, dtype)
        q, k = (_rotate_pairs(_rotate_pairs(t, 0, rows), d // 2, cols) for t in (q, k))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    return ((weights @ v).transpose(1, 2).reshape(B, L, C)) @ w_o.T


def _eqr_like(pos, heads, d, board, seed):
    """An attention module with EqR's layout (no bias) and q, k of unit scale."""
    gen = torch.Generator().manual_seed(seed)
    width = heads * d
    attn = SelfAttention(width, heads, bias=False, pos_encoding=pos, seq_len=board[0] * board[1],
                         board=board)
    with torch.no_grad():
        for w in (attn.qkv_proj.weight, attn.o_proj.weight):
            w.copy_(torch.randn(w.shape, generator=gen) / math.sqrt(width))
    return attn


CASES = [  # pos, heads, head dim, board (height, width): EqR's maze is rope, 8 x 16, 30 x 30
    ("none", 2, 8, (3, 5)), ("rope", 2, 8, (4, 5)), ("rope", 8, 16, (30, 30)),
    ("rope2d", 2, 8, (4, 3)), ("rope2d", 4, 12, (9, 9)), ("rope2d", 8, 16, (30, 30))]


@pytest.mark.parametrize("pos,heads,d,board", CASES,
                         ids=[f"{c[0]}-H{c[1]}-D{c[2]}-{c[3][0]}x{c[3][1]}" for c in CASES])
def test_rope_attention_matches_eqr_written_out_in_float64(pos, heads, d, board):
    seed = random.randrange(2**31)
    attn = _eqr_like(pos, heads, d, board, seed)
    L = board[0] * board[1]
    h = torch.randn(1 if L > 100 else 3, L, heads * d, generator=torch.Generator().manual_seed(seed))
    ref = _reference(h.double(), attn.qkv_proj.weight, attn.o_proj.weight, heads, pos, board,
                     torch.float64)
    with torch.no_grad():
        out32, out64 = attn(h), attn.double()(h.double())
    # Our float64 run takes cos / sin from EqR's float32 tables (the reference: float64 cos of
    # the same float32 angles), an ulp of float32 apart; the float32 run adds its rounding.
    torch.testing.assert_close(out64, ref, rtol=1e-6, atol=1e-6, msg=f"seed {seed}")
    torch.testing.assert_close(out32.double(), ref, rtol=1e-5, atol=1e-5, msg=f"seed {seed}")


@pytest.mark.parametrize("pos", ["rope", "rope2d"])
def test_bf16_is_no_further_from_fp32_than_plain_pytorch_bf16(pos):
    seed = random.randrange(2**31)
    heads, d, board = 4, 16, (9, 9)
    attn = _eqr_like(pos, heads, d, board, seed)
    h = torch.randn(4, 81, heads * d, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        exact = _reference(h.double(), attn.qkv_proj.weight, attn.o_proj.weight, heads, pos,
                           board, torch.float64)
        ours = attn(h.bfloat16())
        plain = _reference(h, attn.qkv_proj.weight, attn.o_proj.weight, heads, pos, board,
                           torch.bfloat16)
    assert ours.dtype == torch.bfloat16
    ours_err = (ours.double() - exact).abs().max().item()
    plain_err = (plain.double() - exact).abs().max().item()
    assert ours_err <= 2 * plain_err, f"seed {seed}: bf16 error {ours_err} vs plain {plain_err}"


def test_angle_tables_are_the_exact_angles_to_float32_rounding():
    d, L = 16, 900
    cos, sin = rotary_tables(d, L)
    assert cos.dtype == torch.float32 and cos.shape == (L, d)
    p = torch.arange(L, dtype=torch.float64)[:, None]
    i = torch.arange(d // 2, dtype=torch.float64)[None, :]
    exact = torch.cat([p * 10000.0 ** (-2 * i / d)] * 2, dim=1)
    # Angles up to 899 rad carry float32 rounding of about p * 2^-23; cos/sin one more ulp.
    bound = (p + 1) * 2.0 ** -22 + 2.0 ** -23
    assert ((cos.double() - exact.cos()).abs() <= bound).all()
    assert ((sin.double() - exact.sin()).abs() <= bound).all()
    cos64, sin64 = rotary_tables(d, L, dtype=torch.float64)
    torch.testing.assert_close(cos64, exact.cos(), rtol=0, atol=1e-12)
    torch.testing.assert_close(sin64, exact.sin(), rtol=0, atol=1e-12)
    # 2-D: the row's table of dimension d/2 in the first half, the column's in the second.
    bc, bs = board_rotary_tables(d, 3, 5)
    rc, rs = rotary_tables(d // 2, 3)
    cc, cs = rotary_tables(d // 2, 5)
    for tok in range(15):
        assert torch.equal(bc[tok], torch.cat((rc[tok // 5], cc[tok % 5])))
        assert torch.equal(bs[tok], torch.cat((rs[tok // 5], cs[tok % 5])))


def _scores(q, k):
    return torch.einsum("blhd,bmhd->bhlm", q, k)


@pytest.mark.parametrize("pos", ["rope", "rope2d"])
def test_shifting_q_and_k_positions_together_leaves_the_scores_unchanged(pos):
    seed = random.randrange(2**31)
    gen = torch.Generator().manual_seed(seed)
    d, H, W, dr, dc = 8, 4, 5, random.randint(1, 40), random.randint(1, 40)
    q, k = torch.randn(2, 1, H * W, 3, d, generator=gen, dtype=torch.float64)
    if pos == "rope":
        base = rotary_tables(d, H * W, dtype=torch.float64)
        shifted = tuple(t[dr:] for t in rotary_tables(d, H * W + dr, dtype=torch.float64))
        groups = 1
    else:
        base = board_rotary_tables(d, H, W, dtype=torch.float64)
        rows, cols = torch.arange(H)[:, None] + dr, torch.arange(W)[None, :] + dc
        tokens = (rows * (W + dc) + cols).flatten()   # the board moved by (dr, dc)
        bigger = board_rotary_tables(d, H + dr, W + dc, dtype=torch.float64)
        shifted = tuple(t[tokens] for t in bigger)
        groups = 2
    s0 = _scores(apply_rotary(q, *base, groups), apply_rotary(k, *base, groups))
    s1 = _scores(apply_rotary(q, *shifted, groups), apply_rotary(k, *shifted, groups))
    torch.testing.assert_close(s1, s0, rtol=1e-10, atol=1e-10, msg=f"seed {seed}")
    # Shifting q alone moves the relative positions: the scores change.
    s2 = _scores(apply_rotary(q, *shifted, groups), apply_rotary(k, *base, groups))
    assert (s2 - s0).abs().max() > 1e-3
    # A rotation keeps every vector's norm.
    torch.testing.assert_close(apply_rotary(q, *shifted, groups).norm(dim=-1), q.norm(dim=-1))


def test_eqr_parameter_names_and_shapes():
    attn = SelfAttention(128, 8, bias=False, pos_encoding="rope", seq_len=900)
    shapes = {k: tuple(v.shape) for k, v in attn.state_dict().items()}
    assert shapes == {"qkv_proj.weight": (384, 128), "o_proj.weight": (128, 128)}
    assert attn.rotary.tables("cpu")[0].shape == (900, 16)


def test_attention_runs_through_scaled_dot_product_attention(monkeypatch):
    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        calls.append((q.shape, kwargs))
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    attn = SelfAttention(32, 4, bias=False, pos_encoding="rope2d", board=(3, 3))
    attn(torch.randn(2, 9, 32))
    assert calls == [((2, 4, 9, 8), {})]   # (B, heads, L, d), not causal, default scale


def test_bf16_module_keeps_float32_tables_and_casts_weights_once():
    attn = SelfAttention(32, 4, bias=False, pos_encoding="rope", seq_len=12)
    h = torch.randn(3, 12, 32).bfloat16()
    with torch.no_grad():
        expected = attn(h)
        assert torch.equal(attn(h, attn.cast_weights(torch.bfloat16)), expected)
        attn.to(torch.bfloat16)  # must not round the angle tables to bf16
        assert torch.equal(attn(h), expected)
    assert attn.rotary.tables("cpu")[0].dtype == torch.float32


def test_rope_gradients_match_finite_differences():
    torch.manual_seed(random.randrange(2**31))
    attn = SelfAttention(8, 2, bias=True, pos_encoding="rope2d", board=(2, 3)).double()
    h = torch.randn(1, 6, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(attn, (h,))


@pytest.mark.parametrize("kwargs,match", [
    (dict(width=12, heads=4, pos_encoding="rope", seq_len=5), "head_dim must be even"),
    (dict(width=24, heads=4, pos_encoding="rope2d", board=(2, 2)), "multiple of 4"),
    (dict(width=16, heads=2, pos_encoding="rope"), "needs seq_len"),
    (dict(width=16, heads=2, pos_encoding="rope2d", board=(3,)), "needs board"),
    (dict(width=16, heads=2, pos_encoding="alibi"), "pos_encoding must be one of"),
    (dict(width=16, heads=2, pos_encoding="rope", seq_len=4, rope_base=1.0), "base must be"),
])
def test_bad_rope_configs_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SelfAttention(**kwargs)


def test_wrong_token_count_is_refused_naming_the_board():
    attn = SelfAttention(16, 2, pos_encoding="rope2d", board=(3, 4))
    with pytest.raises(ValueError, match="3x4 board.*got 9 tokens"):
        attn(torch.randn(1, 9, 16))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("pos", ["rope", "rope2d"])
def test_eqr_maze_shaped_attention_on_gpu_runs_fused_sdpa_kernels(pos):
    """EqR's maze shape (8 heads of 16, 30 x 30 board) on a GPU: bf16 through flash attention
    alone (our q, k, v strides are accepted), fp32 through a fused kernel, both judged
    against the float64 written-out reference."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    seed = random.randrange(2**31)
    heads, d, board = 8, 16, (30, 30)
    attn = _eqr_like(pos, heads, d, board, seed).cuda()
    h = torch.randn(8, 900, heads * d, generator=torch.Generator().manual_seed(seed)).cuda()
    with torch.no_grad():
        exact = _reference(h.double(), attn.qkv_proj.weight, attn.o_proj.weight, heads, pos,
                           board, torch.float64)
        plain = _reference(h, attn.qkv_proj.weight, attn.o_proj.weight, heads, pos, board,
                           torch.bfloat16)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            ours16 = attn(h.bfloat16())
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                          SDPBackend.EFFICIENT_ATTENTION]):
            ours32 = attn(h)
    ours_err = (ours16.double() - exact).abs().max().item()
    plain_err = (plain.double() - exact).abs().max().item()
    assert ours_err <= 2 * plain_err, f"seed {seed}: bf16 error {ours_err} vs plain {plain_err}"
    torch.testing.assert_close(ours32.double(), exact, rtol=1e-4, atol=1e-4, msg=f"seed {seed}")

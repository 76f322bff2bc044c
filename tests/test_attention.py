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

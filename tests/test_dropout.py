"""Variational dropout: one mask per forward, shared by every solver step, reset per DEQ
forward; mask shapes of the 1D/2D/3D channel and token variants."""
import pytest
import torch
from torch import nn

import eqkernels as eqk
from eqkernels.nn import (VariationalDropout, VariationalDropout1d, VariationalDropout2d,
                          VariationalDropout3d, VariationalDropToken1d, VariationalDropToken2d,
                          VariationalDropToken3d, reset_dropout)

SEED = 77


@pytest.mark.parametrize("cls, shape, token_first, mask_shape", [
    (VariationalDropout, (3, 4, 5), True, (3, 4, 5)),
    (VariationalDropout1d, (3, 7, 5), True, (3, 1, 5)),
    (VariationalDropout1d, (3, 5, 7), False, (3, 5, 1)),
    (VariationalDropout2d, (3, 6, 7, 5), True, (3, 1, 1, 5)),
    (VariationalDropout2d, (3, 5, 6, 7), False, (3, 5, 1, 1)),
    (VariationalDropout3d, (2, 3, 4, 6, 5), False, (2, 3, 1, 1, 1)),
    (VariationalDropout3d, (2, 3, 4, 6, 5), True, (2, 1, 1, 1, 5)),
    (VariationalDropToken1d, (3, 7, 5), True, (3, 7, 1)),
    (VariationalDropToken1d, (3, 5, 7), False, (3, 1, 7)),
    (VariationalDropToken2d, (3, 6, 7, 5), True, (3, 6, 7, 1)),
    (VariationalDropToken3d, (2, 5, 3, 4, 6), False, (2, 1, 3, 4, 6)),
])
def test_mask_shape_scale_and_reuse(cls, shape, token_first, mask_shape):
    torch.manual_seed(SEED)
    layer = cls(0.4) if cls is VariationalDropout else cls(0.4, token_first=token_first)
    x = torch.randn(shape, dtype=torch.float64) + 3  # nonzero everywhere
    y = layer(x)
    assert layer.mask.shape == mask_shape and layer.mask.dtype == x.dtype
    assert set(torch.unique(layer.mask).tolist()) <= {0.0, 1 / 0.6}
    torch.testing.assert_close(y, x * layer.mask)
    x2 = torch.randn(shape, dtype=torch.float64) + 3
    torch.testing.assert_close(layer(x2), x2 * layer.mask)  # the same mask on the next call
    first = layer.mask
    reset_dropout(layer)
    layer(x)
    assert not torch.equal(first, layer.mask)  # a fresh draw after the reset
    layer.eval()
    assert layer(x) is x


def test_keep_rate_and_unbiased_scale():
    torch.manual_seed(SEED)
    layer = VariationalDropout2d(0.25, token_first=False)
    x = torch.ones(400, 50, 2, 2)
    y = layer(x)
    kept = (layer.mask > 0).double().mean()
    assert abs(float(kept) - 0.75) < 0.01  # 20,000 Bernoulli(0.75): sd 0.003
    assert abs(float(y.mean()) - 1.0) < 0.02


class DropBlock(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.lin = nn.Linear(n, n)
        self.drop = VariationalDropout1d(0.3, token_first=True)
        self.masks = []

    def forward(self, z, x):
        out = torch.tanh(self.lin(self.drop(z)) + x)
        self.masks.append(self.drop.mask)
        return out


def test_one_mask_per_deq_forward_and_the_solve_converges():
    torch.manual_seed(SEED)
    block = DropBlock(16)
    with torch.no_grad():
        block.lin.weight.mul_(0.5)
    deq = eqk.DEQ(block, max_iter=100, tol=1e-6).train()
    x = torch.randn(4, 5, 16)
    z, info = deq(x)
    assert bool(info.converged.all()), info.summary()
    first = block.masks
    assert len(first) > 3 and all(m is first[0] for m in first)  # every step, one mask
    z.square().mean().backward()  # the implicit backward's VJPs see the same mask
    assert all(m is first[0] for m in block.masks)
    block.masks = []
    z2, _ = deq(x)
    mask = block.masks[0]
    assert mask is not first[0] and not torch.equal(mask, first[0])  # a new draw
    # z2 is the fixed point of the map with this forward's mask.
    with torch.no_grad():
        resid = torch.tanh(block.lin(z2 * mask) + x) - z2
    assert float(resid.norm(dim=(1, 2)).max()) < 1e-5


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="p "):
        VariationalDropout(1.0)
    with pytest.raises(ValueError, match="4-D"):
        VariationalDropout2d(0.1)(torch.randn(2, 3, 4))
    layer = VariationalDropout1d(0.1)
    layer(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="reset_dropout"):
        layer(torch.randn(5, 3, 4))

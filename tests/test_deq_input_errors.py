"""eqk.DEQ names the argument when the block cannot run on it: x in another dtype than the
block's parameters, z0 of a shape the block does not take; blocks that work are untouched."""
import random

import pytest
import torch
from torch import nn

import eqkernels as eqk
from maps import TanhBlock


@pytest.fixture(autouse=True)
def _fresh_seed():
    torch.manual_seed(random.randrange(2**31))


class LinearBlock(nn.Module):
    def __init__(self, n, dtype=torch.float32):
        super().__init__()
        self.lin = nn.Linear(n, n, dtype=dtype)

    def forward(self, z, x):
        return torch.tanh(0.5 * self.lin(z) + x)


def test_x_in_another_dtype_than_the_block_names_x_and_both_dtypes():
    deq = eqk.DEQ(LinearBlock(8), max_iter=5)
    x = torch.randn(4, 8, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"x is torch\.float64 but the block's parameters are "
                                        r"torch\.float32") as err:
        deq(x)
    assert "x.to(torch.float32)" in str(err.value) and "mat1 and mat2" in str(err.value)
    assert isinstance(err.value.__cause__, RuntimeError)  # torch's own message stays attached
    z, _ = deq(x.float())
    assert z.dtype == torch.float32


def test_z0_of_a_shape_the_block_does_not_take_names_z0_and_the_shapes():
    deq = eqk.DEQ(LinearBlock(8), max_iter=5)
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match=r"z0 has shape \(4, 7\), x has \(4, 8\).*the block "
                                         r"could not run on z0") as err:
        deq(x, z0=torch.zeros(4, 7))
    assert isinstance(err.value.__cause__, RuntimeError)


def test_other_block_errors_and_working_mixed_shapes_pass_through():
    class Broken(nn.Module):
        def forward(self, z, x):
            raise RuntimeError("the block's own failure")

    with pytest.raises(RuntimeError, match="^the block's own failure$"):
        eqk.DEQ(Broken())(torch.randn(2, 3))
    # z0 of another shape than x, taken by the block: no complaint.
    block = TanhBlock(6, in_features=10)
    z, info = eqk.DEQ(block, tol=1e-10, max_iter=200)(torch.randn(3, 10, dtype=torch.float64),
                                                      z0=torch.randn(3, 6, dtype=torch.float64))
    assert z.shape == (3, 6) and info.converged.all()

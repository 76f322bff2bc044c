"""Random contractive test maps shared by the tests: f(z) = tanh(z W^T + x) with ||W||_2 < 1."""
import torch
from torch import nn


def contractive_weight(n, norm=0.9, dtype=torch.float64, generator=None):
    W = torch.randn(n, n, dtype=dtype, generator=generator)
    return W * (norm / torch.linalg.matrix_norm(W, ord=2))


class TanhBlock(nn.Module):
    """block(z, x) = tanh(z W^T + x U^T); a contraction in z for ||W||_2 < 1."""

    def __init__(self, n, norm=0.9, dtype=torch.float64, in_features=None):
        super().__init__()
        self.W = nn.Parameter(contractive_weight(n, norm, dtype))
        self.U = nn.Parameter(torch.randn(n, in_features or n, dtype=dtype) / n ** 0.5)

    def forward(self, z, x):
        return torch.tanh(z @ self.W.T + x @ self.U.T)


def tanh_map(B, n, norm=0.9, dtype=torch.float64):
    W = contractive_weight(n, norm, dtype)
    x = torch.randn(B, n, dtype=dtype)
    return (lambda z: torch.tanh(z @ W.T + x)), W, x

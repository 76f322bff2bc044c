"""Shared set-up of the reasoner GPU tests (test_sudoku_gpu.py, test_maze_gpu.py): a seeded
model and token batch on CUDA, one forward through a chosen kernel path, relative error."""
import pytest
import torch

from reasoner.model import Reasoner, ReasonerConfig


@pytest.fixture(autouse=True)
def needs_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


def make_case(config: dict, token_high: int, seed: int, n: int = 8, **over):
    """A fresh model (seeded), n random boards of tokens 1..token_high-1, and its starts."""
    torch.manual_seed(seed)
    model = Reasoner(ReasonerConfig(**dict(config, **over))).cuda()
    tokens = torch.randint(1, token_high, (n, model.cfg.seq_len), device="cuda")
    return model, tokens, model.initial_carry(n, "cuda")


def rel_error(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def forward_with(model, kernels, tokens, carry, seed):
    """Logits of two reasoning steps through `kernels` (noise from `seed`)."""
    model.kernels = kernels
    with torch.no_grad():
        return model(tokens, carry=carry, steps=2, grad="none", seed=seed)[0]

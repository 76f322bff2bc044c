"""Gradient checks shared by the domain model tests."""
import torch


def assert_finite_nonzero_grads(model: torch.nn.Module) -> None:
    """Every parameter got a gradient, finite and not all zero (after loss.backward())."""
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name

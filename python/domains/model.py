"""ImplicitModel: the shape every domain model shares, u -> y through z = block(z, inject(u)).

A domain subclasses it and defines `inject` (input -> what the block sees each step),
`init_state` (where z starts) and `readout` (z -> prediction). The iteration itself is
eqkernels' DEQ with the damped solver, so training is memory-constant in depth and the
depth is a per-call argument (test-time scaling).
"""
from __future__ import annotations

from typing import Iterable, Iterator, Optional, Tuple

import torch
from torch import nn

import eqkernels as eqk

# Stop a sample only at an exact fixed point: depth is what the caller asks for.
EXACT_DEPTH_TOL = 1e-30


class ImplicitModel(nn.Module):
    """block(z, x) -> z' is the weight-tied step; x = inject(u) is computed once per input.

    train_iters: forward depth in training (and the default depth).
    damping: z <- (1 - damping) z + damping block(z, x).
    backward: an eqkernels backward mode ("phantom", "implicit", "one_step", "unroll");
      deq_kwargs go to eqk.DEQ (phantom_steps, unroll_steps, ...).
    """

    def __init__(self, block: nn.Module, *, train_iters: int, damping: float = 1.0,
                 backward: str = "phantom", **deq_kwargs):
        super().__init__()
        self.train_iters = train_iters
        self.deq = eqk.DEQ(block, solver="damped", max_iter=train_iters, tol=EXACT_DEPTH_TOL,
                           backward=backward, solver_kwargs=dict(damping=damping), **deq_kwargs)

    @property
    def train_forward_depth(self) -> int:
        """Block applications behind a training prediction: train_iters without autograd, then
        the steps the backward mode records (phantom and unroll run K more, one_step 1,
        implicit none). Evaluation at k iterations runs exactly k."""
        deq = self.deq
        recorded = {"phantom": deq.phantom_steps, "unroll": deq.unroll_steps, "one_step": 1}
        return self.train_iters + recorded.get(deq.backward_mode, 0)

    # --- what a domain defines -------------------------------------------------------------
    def inject(self, u: torch.Tensor) -> torch.Tensor:
        """u: the continuous input (B, ...) -> the injection the block sees every step."""
        return u

    def init_state(self, x: torch.Tensor) -> torch.Tensor:
        """The start z0 for injection x (zeros shaped like x by default)."""
        return torch.zeros_like(x)

    def readout(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The prediction from the state z (and the input u, e.g. for a residual output)."""
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------------
    def forward(self, u: torch.Tensor, iters: Optional[int] = None) -> torch.Tensor:
        """The prediction after `iters` block applications (train_iters by default)."""
        x = self.inject(u)
        z, _ = self.deq(x, z0=self.init_state(x), max_iter=iters or self.train_iters)
        return self.readout(z, u)

    @torch.no_grad()
    def predictions_at(self, u: torch.Tensor, depths: Iterable[int]
                       ) -> Iterator[Tuple[int, torch.Tensor, torch.Tensor]]:
        """Yields (k, prediction after k steps, per-sample step norm ||z_k - z_{k-1}||) for
        each k of the increasing `depths`, running max(depths) steps once in all."""
        x = self.inject(u)
        z = self.init_state(x)
        done = 0
        for k in depths:
            if k <= done:
                raise ValueError(f"depths must be strictly increasing ints >= 1, got {list(depths)}")
            z, info = self.deq(x, z0=z, max_iter=k - done)
            done = k
            yield k, self.readout(z, u), info.abs_residual

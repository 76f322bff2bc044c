"""Small demo: `python -m eqkernels.demo [--batch B] [--width n] [--solver NAME]`.

Solves z* = tanh(W z* + U x) for a batch whose samples differ in difficulty, prints
each sample's step count and residual, then takes one implicit-gradient step.
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

import eqkernels as eqk


class TanhBlock(nn.Module):
    """block(z, x) = tanh(W z + U x) with ||W||_2 = 0.9 (a contraction in z)."""

    def __init__(self, width: int):
        super().__init__()
        W = torch.randn(width, width)
        self.W = nn.Parameter(W * 0.9 / torch.linalg.matrix_norm(W, ord=2))
        self.U = nn.Linear(width, width)

    def forward(self, z, x):
        return torch.tanh(z @ self.W.T + self.U(x))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--solver", default="anderson", choices=sorted(eqk.solvers.SOLVERS))
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    print("backends:")
    for name, (ok, why) in eqk.backends().items():
        print(f"  {name:9s} {'yes' if ok else 'no ':3s}  {why}")
    block = TanhBlock(args.width)
    # Larger inputs saturate tanh and make the map contract faster: easy samples first.
    scale = torch.logspace(1, -1, args.batch)[:, None]
    x = scale * torch.randn(args.batch, args.width)
    deq = eqk.DEQ(block, solver=args.solver, max_iter=200, tol=args.tol, backward="implicit")

    z, info = deq(x)
    print(f"\n{info.summary()}")
    print(f"{'sample':>6s} {'|x|':>8s} {'nstep':>6s} {'residual':>10s} {'converged':>9s}")
    for b in range(args.batch):
        print(f"{b:6d} {float(x[b].norm()):8.2f} {int(info.nstep[b]):6d} "
              f"{float(info.abs_residual[b]):10.2e} {str(bool(info.converged[b])):>9s}")
    zd = z.detach()
    print(f"z: shape {tuple(zd.shape)}, mean {float(zd.mean()):+.4f}, |z| {float(zd.norm()):.4f}")

    loss = z.square().mean()
    loss.backward()
    adjoint = deq.last_backward_info
    print(f"\nimplicit backward: loss {float(loss.detach()):.5f}, |dL/dW| {float(block.W.grad.norm()):.3e}, "
          f"adjoint solve {adjoint.summary()}")


if __name__ == "__main__":
    main()

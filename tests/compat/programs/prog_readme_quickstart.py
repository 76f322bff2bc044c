"""torchdeq's README quick start in miniature: add_deq_args(parser), deq = get_deq(args), and
a multi-equilibrium system fn(a, b, c) -> (a, b, c) solved as deq(fn, (a0, b0, c0)).
Our re-implementation; the three states have different shapes."""
import argparse

import torch
from torch import nn

from torchdeq import get_deq
from torchdeq.utils import add_deq_args


class System(nn.Module):
    """Three coupled states: a (B, 8), b (B, 2, 4), c (B, 3)."""

    def __init__(self):
        super().__init__()
        self.ab = nn.Linear(8, 8)
        self.ba = nn.Linear(8, 8)
        self.c = nn.Linear(8 + 3, 3)

    def forward(self, a, b, c, x):
        a_new = torch.tanh(0.5 * self.ba(b.flatten(1)) + x)
        b_new = torch.tanh(0.5 * self.ab(a)).reshape(b.shape)
        c_new = torch.tanh(0.5 * self.c(torch.cat([a, c], dim=1)))
        return a_new, b_new, c_new


def build_parser():
    parser = argparse.ArgumentParser()
    add_deq_args(parser)
    return parser


ARGV = ["--f_max_iter", "40", "--f_tol", "1e-5", "--grad", "2"]


def run(argv=ARGV, steps=4, seed=0, overrides=None):
    args = build_parser().parse_args(argv)
    for key, value in (overrides or {}).items():
        setattr(args, key, value)
    torch.manual_seed(seed)
    system = System()
    deq = get_deq(args)
    opt = torch.optim.SGD(system.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(seed + 1)
    losses = []
    for _ in range(steps):
        x = torch.randn(6, 8, generator=gen)
        a0, b0, c0 = torch.zeros(6, 8), torch.zeros(6, 2, 4), torch.zeros(6, 3)

        def fn(a, b, c):
            return system(a, b, c, x)

        z_out, info = deq(fn, (a0, b0, c0))
        a, b, c = z_out[-1]
        loss = (a.sum(1) - 1).square().mean() + b.square().mean() + c.abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return dict(losses=losses, abs_lowest=info["abs_lowest"].tolist())

"""torchdeq's docs sample ("Get Started" > Sample Code) in miniature: DEQDemo with apply_norm /
reset_norm / get_deq(args), an injection and a decoder, a training loop logging
info['rel_lowest'] / info['abs_lowest']. Our re-implementation of its shapes and calls."""
import argparse

import torch
from torch import nn

from torchdeq import get_deq, apply_norm, reset_norm
from torchdeq.utils import add_deq_args


class Injection(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.lin = nn.Linear(args.in_dim, args.hidden)

    def forward(self, x):
        return self.lin(x)


class DEQFunc(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.lin = nn.Linear(args.hidden, args.hidden)
        self.norm = nn.LayerNorm(args.hidden)

    def forward(self, z, x):
        return torch.tanh(0.5 * self.lin(self.norm(z)) + x)


class Decoder(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.lin = nn.Linear(args.hidden, args.classes)

    def forward(self, z):
        return self.lin(z)


class DEQDemo(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.deq_func = DEQFunc(args)
        apply_norm(self.deq_func, args=args)
        self.deq = get_deq(args)

    def forward(self, x, z0):
        reset_norm(self.deq_func)
        f = lambda z: self.deq_func(z, x)  # noqa: E731
        return self.deq(f, z0)


def build_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--in_dim", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-2)
    add_deq_args(parser)
    return parser


ARGV = ["--f_solver", "anderson", "--f_max_iter", "30", "--f_tol", "1e-4", "--ift",
        "--b_solver", "anderson", "--b_max_iter", "30"]


def run(argv=ARGV, steps=4, seed=0, overrides=None):
    args = build_parser().parse_args(argv)
    for key, value in (overrides or {}).items():
        setattr(args, key, value)
    torch.manual_seed(seed)
    inj, deq, decoder = Injection(args), DEQDemo(args), Decoder(args)
    params = [*inj.parameters(), *deq.parameters(), *decoder.parameters()]
    opt = torch.optim.Adam(params, lr=args.lr)
    loss = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed + 1)
    losses, rel, nstep = [], [], []
    for _ in range(steps):
        x = torch.randn(args.batch_size, args.in_dim, generator=gen)
        y = torch.randint(args.classes, (args.batch_size,), generator=gen)
        z0 = torch.zeros(args.batch_size, args.hidden)
        z_out, info = deq(inj(x), z0)
        l = loss(decoder(z_out[-1]), y)
        opt.zero_grad()
        l.backward()
        opt.step()
        losses.append(l.item())
        rel.append(info["rel_lowest"].mean().item())
        nstep.append(info["nstep"].mean().item())
    return dict(losses=losses, rel_lowest=rel, nstep=nstep)

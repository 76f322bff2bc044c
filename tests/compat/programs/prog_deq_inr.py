"""DEQ-INR (deq-zoo/deq-inr, implicit neural representations) in miniature: our own
re-implementation of its model shape and torchdeq calls. A multiplicative filter network
(Fourier filters of the input coordinates as injections, z <- (W z + b) * sin(Omega x + phi))
is the DEQ function on a (N, C) state; apply_norm(self.f, args=args) (the default
weight_norm), reset_norm per forward; from the second training step on the solver is
skipped with solver_kwargs={'f_max_iter': 0} and the state warm-started from the cached
one, as train_2d_image.py does; deq(..., verbose=...) passes its own keyword through.
Flags of the camera config (fixed_point_iter, 100 steps, phantom gradient of 3)."""
import argparse

import torch
from torch import nn

from torchdeq import get_deq
from torchdeq.norm import apply_norm, reset_norm
from torchdeq.utils import add_deq_args


class FourierInjection(nn.Module):
    def __init__(self, in_channels, channels, n_filters, scale):
        super().__init__()
        self.filters = nn.ModuleList([nn.Linear(in_channels, channels)
                                      for _ in range(n_filters)])
        for f in self.filters:
            nn.init.uniform_(f.weight, -scale / n_filters, scale / n_filters)

    def forward(self, x):
        return [torch.sin(f(x)) for f in self.filters]


class MFN(nn.Module):
    def __init__(self, channels, n_layers):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(channels, channels) for _ in range(n_layers)])
        for layer in self.layers:
            nn.init.uniform_(layer.weight, -(1 / channels) ** 0.5, (1 / channels) ** 0.5)
        self.register_buffer("z_init", torch.ones(1, channels))

    def forward(self, z, u):
        z = z + self.z_init * u[0]
        for i, layer in enumerate(self.layers):
            z = 0.5 * layer(z) * u[i + 1]
        return z


class DEQINR(nn.Module):
    def __init__(self, args, in_channels, interm_channels, output_channels, n_layers=1):
        super().__init__()
        self.injection = FourierInjection(in_channels, interm_channels, n_layers + 1,
                                          args.input_scale)
        self.f = MFN(interm_channels, n_layers)
        self.output_map = nn.Linear(interm_channels, output_channels)
        apply_norm(self.f, args=args)
        self.deq = get_deq(args)
        self.args = args
        self.interm_channels = interm_channels

    def forward(self, x, z=None, skip_solver=False, verbose=False, **kwargs):
        if z is None:
            z = torch.zeros(*x.shape[:-1], self.interm_channels)
        u = self.injection(x)
        reset_norm(self.f)
        func = lambda z: self.f(z, u)  # noqa: E731
        solver_kwargs = {"f_max_iter": 0} if skip_solver else {}
        z_out, info = self.deq(func, z, solver_kwargs=solver_kwargs, verbose=verbose, **kwargs)
        return {"output": self.output_map(z_out[-1]), "imp_layer_output": z_out[-1],
                "forward_steps": info["nstep"].mean().item()}


def build_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefix", default="vanilla")
    parser.add_argument("--experiment_id", default="vanilla")
    parser.add_argument("--dataset", default="nature",
                        choices=["camera", "celeba", "nature", "text"])
    parser.add_argument("--batch_size", default=-1, type=int)
    parser.add_argument("--lr", default=1e-3, type=float)
    parser.add_argument("--input_scale", default=256.0, type=float)
    parser.add_argument("--no_skip_solver", default=False, action="store_true")
    parser.add_argument("--max_train_iters", default=2000, type=int)
    parser.add_argument("--verbose", default=False, action="store_true")
    add_deq_args(parser)
    return parser


# configs/image_representation/config_image_representation_camera.yaml (tiny input scale)
ARGV = ["--dataset", "camera", "--lr", "0.001", "--input_scale", "8", "--f_solver",
        "fixed_point_iter", "--f_max_iter", "100", "--grad", "3", "--max_train_iters", "5000"]


def run(argv=ARGV, steps=4, seed=0, overrides=None):
    args = build_parser().parse_args(argv)
    for key, value in (overrides or {}).items():
        setattr(args, key, value)
    gen = torch.Generator().manual_seed(seed + 1)
    side = 6
    coords = torch.stack(torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side),
                                        indexing="ij"), dim=-1).reshape(-1, 2)
    target = torch.sin(3 * coords[:, :1]) * torch.cos(2 * coords[:, 1:]) \
        + 0.1 * torch.randn(side * side, 1, generator=gen)
    torch.manual_seed(seed)
    model = DEQINR(args, 2, 16, 1)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    z_init = torch.zeros(side * side, 16)
    losses, steps_used = [], []
    for i in range(steps):
        out = model(coords, z_init, skip_solver=not args.no_skip_solver and i > 0,
                    verbose=args.verbose)
        z_init = out["imp_layer_output"].detach()
        loss = (out["output"] - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        steps_used.append(out["forward_steps"])
    model.eval()
    with torch.no_grad():
        out = model(coords)
    return dict(losses=losses, forward_steps=steps_used,
                eval_loss=(out["output"] - target).square().mean().item())

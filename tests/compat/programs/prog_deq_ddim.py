"""DEQ-DDIM latent-space optimisation (deq-zoo/deq-ddim) in miniature: our own
re-implementation of its solver use. The whole DDIM sampling chain is one fixed point over
the T timesteps (the batch dimension of the state): x_{t-1} = a_t x_T + c_t sum_{s>=t}
eps(x_s, s); DEQLatentSpaceOpt calls get_deq(args) and deq(func, x, solver_kwargs=
{"m": 5, "lam": 1e-3, "beta": 1.0}) (torchdeq's anderson ignores beta), and the latent x_T
is optimised through the phantom gradient so the chain's output matches a target image.
Flags of scripts/invert_models_deq.sh (anderson, 15 steps, tau 0.1)."""
import argparse

import torch
from torch import nn

from torchdeq import get_deq
from torchdeq.utils import add_deq_args


class EpsModel(nn.Module):
    """A tiny noise predictor eps(x_t, t)."""

    def __init__(self, channels=2):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.temb = nn.Linear(1, channels)

    def forward(self, x, t):
        return torch.tanh(self.conv(x) + self.temb(t[:, None].float() / 10)[:, :, None, None])


class DEQLatentSpaceOpt(nn.Module):
    def __init__(self, args, model):
        super().__init__()
        self.deq = get_deq(args)
        self.args = args
        self.model = model

    def joint_diffusion(self, xt, t, all_xT, alpha_ratio, et_coeff, et_prevsum_coeff):
        et = self.model(xt[:-1], t)
        xt_next = all_xT + et_prevsum_coeff * (et_coeff * et).cumsum(dim=0)
        return torch.cat([xt[:1], xt_next], dim=0)

    def forward(self, x, injection, anderson_params=None):
        injection = dict(injection, all_xT=injection["alpha_ratio"] * x[:1])
        if anderson_params is None:
            anderson_params = {"m": 5, "lam": 1e-3, "beta": 1.0}

        def func(x):
            return self.joint_diffusion(x, **injection)

        x_pred, info = self.deq(func, x, solver_kwargs=anderson_params)
        return x_pred[-1], info


def build_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=str, required=True)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--exp", type=str, default="exp")
    parser.add_argument("--doc", type=str, required=True)
    parser.add_argument("--timesteps", type=int, default=1000)
    parser.add_argument("--ni", action="store_true")
    parser.add_argument("--method", type=str, default="default")
    parser.add_argument("--ls_opt", action="store_true")
    parser.add_argument("--lambda1", type=float, default=1)
    parser.add_argument("--use_pretrained", action="store_true")
    parser.add_argument("--no_augmentation", action="store_true")
    parser.add_argument("--skip_type", type=str, default="uniform")
    add_deq_args(parser)
    return parser


# scripts/invert_models_deq.sh (4 timesteps here)
ARGV = ["--config", "cifar10_ls_opt.yml", "--exp", "cifar10-orig-exp", "--doc",
        "cifar10-torchdeq-f-15", "--ls_opt", "--timesteps", "4", "--ni", "--method", "default",
        "--lambda1", "1", "--f_solver", "anderson", "--f_max_iter", "15", "--tau", "0.1",
        "--no_augmentation", "--use_pretrained", "--skip_type", "quad", "--seed", "1"]


def run(argv=ARGV, steps=4, seed=0, overrides=None):
    args = build_parser().parse_args(argv)
    for key, value in (overrides or {}).items():
        setattr(args, key, value)
    T = args.timesteps
    torch.manual_seed(seed)
    eps = EpsModel()
    deq_ddim = DEQLatentSpaceOpt(args, eps)
    at = torch.linspace(0.2, 0.9, T)
    injection = dict(t=torch.arange(T, 0, -1), alpha_ratio=at.sqrt()[:, None, None, None],
                     et_coeff=-0.3 * torch.ones(T, 1, 1, 1),
                     et_prevsum_coeff=at.sqrt()[:, None, None, None])
    gen = torch.Generator().manual_seed(seed + 1)
    target = torch.randn(2, 4, 4, generator=gen)
    all_xt = torch.randn(T + 1, 2, 4, 4, generator=gen).requires_grad_()
    opt = torch.optim.Adam([all_xt], lr=0.05)
    losses = []
    for _ in range(steps):
        xt_pred, info = deq_ddim(all_xt, injection)
        loss = args.lambda1 * (xt_pred[-1] - target).square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return dict(losses=losses, abs_lowest=info["abs_lowest"].tolist())

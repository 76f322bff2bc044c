"""MDEQ (deq-zoo/mdeq, multiscale DEQ for image classification) in miniature: our own
re-implementation of its model shape and torchdeq calls at tiny sizes. Two resolution
branches (residual conv blocks with GroupNorm, injection into the highest resolution,
fusion by strided / 1x1 convs) form the DEQ function on a LIST of states; apply_norm on the
full stage, reset_norm per forward, deq(mdeq_func, z_list, writer=...) as mdeq calls it,
fixed-point correction over the decoded states; flags of run_small.sh (broyden, 22 steps,
phantom gradient of 5 steps with tau 0.5)."""
import argparse

import torch
import torch.nn.functional as F
from torch import nn

from torchdeq import get_deq
from torchdeq.norm import apply_norm, reset_norm
from torchdeq.loss import fp_correction
from torchdeq.utils import add_deq_args

NUM_GROUPS = 2


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1, self.gn1 = conv3x3(channels, channels), nn.GroupNorm(NUM_GROUPS, channels)
        self.conv2, self.gn2 = conv3x3(channels, channels), nn.GroupNorm(NUM_GROUPS, channels)
        self.gn3 = nn.GroupNorm(NUM_GROUPS, channels)

    def forward(self, x, injection=0):
        out = F.relu(self.gn1(self.conv1(x)))
        out = self.gn2(self.conv2(out)) + injection
        return self.gn3(F.relu(out + x))


class MDEQModule(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.branches = nn.ModuleList([BasicBlock(c) for c in channels])
        self.down = nn.Sequential(conv3x3(channels[0], channels[1], stride=2),
                                  nn.GroupNorm(NUM_GROUPS, channels[1]))
        self.up = nn.Sequential(nn.Conv2d(channels[1], channels[0], 1, bias=False),
                                nn.GroupNorm(NUM_GROUPS, channels[0]))
        self.post = nn.ModuleList([nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 1, bias=False),
                                                 nn.GroupNorm(NUM_GROUPS // 2, c))
                                   for c in channels])

    def forward(self, z_list, injection):
        x0 = self.branches[0](z_list[0], injection[0])
        x1 = self.branches[1](z_list[1], injection[1])
        y0 = x0 + F.interpolate(self.up(x1), size=x0.shape[-2:], mode="nearest")
        y1 = x1 + self.down(x0)
        return [self.post[0](y0), self.post[1](y1)]


class MDEQ(nn.Module):
    def __init__(self, args, channels=(8, 16), num_classes=4):
        super().__init__()
        self.channels = channels
        self.downsample = nn.Sequential(conv3x3(3, channels[0]), nn.BatchNorm2d(channels[0]),
                                        nn.ReLU())
        self.full_stage = MDEQModule(channels)
        apply_norm(self.full_stage, args=args)
        self.deq = get_deq(args)
        self.classifier = nn.Linear(channels[0] + channels[1], num_classes)

    def decode(self, y_list):
        return self.classifier(torch.cat([y.mean(dim=(2, 3)) for y in y_list], dim=1))

    def forward(self, x, train_step=-1, **kwargs):
        x = self.downsample(x)
        B, _, H, W = x.shape
        u_inj = [x, torch.zeros(B, self.channels[1], H // 2, W // 2)]
        reset_norm(self.full_stage)
        z_now = [torch.zeros_like(u) for u in u_inj]

        def mdeq_func(*z_now):
            return self.full_stage(z_now, u_inj)

        z_out, info = self.deq(mdeq_func, z_now, writer=kwargs.get("writer", None))
        if self.training:
            return [self.decode(z) for z in z_out], info
        return self.decode(z_out[-1]), info


def build_parser():
    parser = argparse.ArgumentParser(description="Train classification network (miniature)")
    parser.add_argument("--cfg", help="experiment configure file name", required=True, type=str)
    parser.add_argument("--eval", action="store_true")
    parser.add_argument("--repeat", "-r", default=1, type=int)
    parser.add_argument("--exp_id", type=str, default="cifar_mdeq")
    parser.add_argument("--log_dir", type=str, default="")
    parser.add_argument("--data_dir", type=str, default="")
    parser.add_argument("--test_model", type=str, default="")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER)
    add_deq_args(parser)
    return parser


# run_small.sh
ARGV = ["--cfg", "./configs/small.yaml", "--norm_type", "weight_norm", "--f_solver", "broyden",
        "--f_max_iter", "22", "--grad", "5", "--tau", "0.5", "--exp_id", "small"]


def run(argv=ARGV, steps=3, seed=0, overrides=None):
    args = build_parser().parse_args(argv)
    for key, value in (overrides or {}).items():
        setattr(args, key, value)
    torch.manual_seed(seed)
    model = MDEQ(args)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed + 1)
    losses, nstep = [], []
    for step in range(steps):
        x = torch.randn(4, 3, 8, 8, generator=gen)
        target = torch.randint(4, (4,), generator=gen)
        output, info = model(x, train_step=step, writer=None)
        loss = fp_correction(criterion, (output, target), gamma=args.gamma)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        nstep.append(info["nstep"].mean().item())
    model.eval()
    with torch.no_grad():
        logits, info = model(torch.randn(4, 3, 8, 8, generator=gen))
    return dict(losses=losses, nstep=nstep, eval_logits=logits, model=model)

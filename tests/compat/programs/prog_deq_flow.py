"""DEQ-Flow (deq-zoo/deq-flow, optical flow) in miniature: our own re-implementation of its
update block's shape, its argparse set-up and its torchdeq calls. The DEQ state is the
TUPLE (hidden state h, coordinates c); the function is a motion encoder on (correlation
lookup at c, flow c - c0), a separable ConvGRU and a flow head (c <- c + delta);
apply_norm(update_block, args=args), reset_norm per forward, deq(func, (net, coords1),
sradius_mode=..., backward_writer=writer), fixed-point correction over the flow predictions,
info['rel_lowest'] / info['abs_lowest'] in the metrics. Flags of train_B.sh's first stage
(simple_fixed_point_iter, 36 steps in 6 slices, phantom gradient of 1)."""
import argparse

import torch
import torch.nn.functional as F
from torch import nn

from torchdeq import get_deq
from torchdeq.norm import apply_norm, reset_norm
from torchdeq.loss import fp_correction
from torchdeq.utils import add_deq_args


class MotionEncoder(nn.Module):
    def __init__(self, corr_dim, out_dim):
        super().__init__()
        self.convc = nn.Conv2d(corr_dim, 8, 1)
        self.convf = nn.Conv2d(2, 8, 3, padding=1)
        self.conv = nn.Conv2d(16, out_dim - 2, 3, padding=1)

    def forward(self, flow, corr):
        feat = torch.cat([F.relu(self.convc(corr)), F.relu(self.convf(flow))], dim=1)
        return torch.cat([F.relu(self.conv(feat)), flow], dim=1)


class SepConvGRU(nn.Module):
    def __init__(self, hidden_dim, input_dim):
        super().__init__()
        cat = hidden_dim + input_dim
        self.convz1 = nn.Conv2d(cat, hidden_dim, (1, 3), padding=(0, 1))
        self.convr1 = nn.Conv2d(cat, hidden_dim, (1, 3), padding=(0, 1))
        self.convq1 = nn.Conv2d(cat, hidden_dim, (1, 3), padding=(0, 1))
        self.convz2 = nn.Conv2d(cat, hidden_dim, (3, 1), padding=(1, 0))
        self.convr2 = nn.Conv2d(cat, hidden_dim, (3, 1), padding=(1, 0))
        self.convq2 = nn.Conv2d(cat, hidden_dim, (3, 1), padding=(1, 0))

    def forward(self, h, x):
        for convz, convr, convq in ((self.convz1, self.convr1, self.convq1),
                                    (self.convz2, self.convr2, self.convq2)):
            hx = torch.cat([h, x], dim=1)
            z, r = torch.sigmoid(convz(hx)), torch.sigmoid(convr(hx))
            q = torch.tanh(convq(torch.cat([r * h, x], dim=1)))
            h = (1 - z) * h + z * q
        return h


class UpdateBlock(nn.Module):
    def __init__(self, args, hidden_dim, input_dim, corr_dim):
        super().__init__()
        self.encoder = MotionEncoder(corr_dim, 16)
        self.gru = SepConvGRU(hidden_dim, input_dim + 16)
        self.flow_head = nn.Sequential(nn.Conv2d(hidden_dim, 16, 3, padding=1), nn.ReLU(),
                                       nn.Conv2d(16, 2, 3, padding=1))

    def forward(self, net, inp, corr, flow):
        net = self.gru(net, torch.cat([inp, self.encoder(flow, corr)], dim=1))
        return net, 0.1 * self.flow_head(net)


def corr_lookup(fmap1, fmap2, coords):
    """Correlation of fmap1 with fmap2 sampled at coords (and at its 4 neighbours)."""
    B, C, H, W = fmap1.shape
    out = []
    for dy, dx in ((0, 0), (0, 1), (1, 0), (0, -1), (-1, 0)):
        c = coords + torch.tensor([dx, dy], dtype=coords.dtype)[None, :, None, None]
        grid = torch.stack([2 * c[:, 0] / (W - 1) - 1, 2 * c[:, 1] / (H - 1) - 1], dim=-1)
        warped = F.grid_sample(fmap2, grid, align_corners=True)
        out.append((fmap1 * warped).sum(1, keepdim=True) / C ** 0.5)
    return torch.cat(out, dim=1)


class DEQFlow(nn.Module):
    def __init__(self, args, hdim=8, cdim=8):
        super().__init__()
        self.args = args
        self.hidden_dim = hdim
        self.fnet = nn.Conv2d(3, 8, 3, padding=1)
        self.cnet = nn.Conv2d(3, cdim, 3, padding=1)
        self.update_block = UpdateBlock(args, hdim, cdim, corr_dim=5)
        apply_norm(self.update_block, args=args)
        self.deq = get_deq(args)

    def forward(self, image1, image2, flow_gt=None, valid=None, fc_loss=None, writer=None,
                sradius_mode=False, **kwargs):
        fmap1, fmap2 = self.fnet(image1), self.fnet(image2)
        inp = torch.relu(self.cnet(image1))
        B, _, H, W = inp.shape
        ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        coords0 = torch.stack([xs, ys]).float()[None].repeat(B, 1, 1, 1)
        net, coords1 = torch.zeros(B, self.hidden_dim, H, W), coords0.clone()
        reset_norm(self.update_block)

        def func(h, c):
            if not self.args.all_grad:
                c = c.detach()
            new_h, delta_flow = self.update_block(h, inp, corr_lookup(fmap1, fmap2, c),
                                                  c - coords0)
            return new_h, c + delta_flow

        z_out, info = self.deq(func, (net, coords1), sradius_mode=sradius_mode,
                               backward_writer=writer, **kwargs)
        flow_pred = [c - coords0 for _, c in z_out]
        if self.training:
            loss = fc_loss(flow_pred, flow_gt, valid, gamma=self.args.gamma)
            metrics = {"epe": (flow_pred[-1] - flow_gt).norm(dim=1).mean(dim=(1, 2)),
                       "rel": info["rel_lowest"], "abs": info["abs_lowest"]}
            return loss, metrics
        return flow_pred[-1], {"sradius": info["sradius"]}


def flow_loss(flow_preds, flow_gt, valid, gamma=0.8):
    loss_fn = lambda pred, gt, valid: ((pred - gt).abs() * valid).mean()  # noqa: E731
    return fp_correction(loss_fn, (flow_preds, flow_gt, valid[:, None]), gamma=gamma)


def build_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--eval", action="store_true")
    parser.add_argument("--name", default="deq-flow")
    parser.add_argument("--stage")
    parser.add_argument("--total_run", type=int, default=1)
    parser.add_argument("--start_run", type=int, default=1)
    parser.add_argument("--restore_name")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--validation", type=str, nargs="+")
    parser.add_argument("--eval_interval", type=int, default=5000)
    parser.add_argument("--lr", type=float, default=0.00002)
    parser.add_argument("--num_steps", type=int, default=100000)
    parser.add_argument("--batch_size", type=int, default=6)
    parser.add_argument("--image_size", type=int, nargs="+", default=[384, 512])
    parser.add_argument("--gpus", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--wdecay", type=float, default=.00005)
    parser.add_argument("--all_grad", action="store_true")
    add_deq_args(parser)
    return parser


# train_B.sh, first stage (tiny images)
ARGV = ["--total_run", "1", "--start_run", "1", "--name", "deq-flow-B-C-36-6-1", "--stage",
        "chairs", "--validation", "chairs", "kitti", "--gpus", "0", "1", "--num_steps",
        "120000", "--eval_interval", "20000", "--batch_size", "2", "--lr", "0.0004",
        "--image_size", "6", "8", "--wdecay", "0.0001", "--f_max_iter", "36", "--f_solver",
        "simple_fixed_point_iter", "--n_states", "6", "--grad", "1"]


def run(argv=ARGV, steps=3, seed=0, overrides=None):
    args = build_parser().parse_args(argv)
    for key, value in (overrides or {}).items():
        setattr(args, key, value)
    H, W = args.image_size
    torch.manual_seed(seed)
    model = DEQFlow(args)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wdecay)
    gen = torch.Generator().manual_seed(seed + 1)
    losses, epe = [], []
    for _ in range(steps):
        image1 = torch.randn(args.batch_size, 3, H, W, generator=gen)
        image2 = torch.roll(image1, shifts=1, dims=-1)
        flow_gt = torch.zeros(args.batch_size, 2, H, W)
        flow_gt[:, 0] = 1.0
        valid = torch.ones(args.batch_size, H, W)
        loss, metrics = model(image1, image2, flow_gt, valid, flow_loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        epe.append(metrics["epe"].mean().item())
    model.eval()
    with torch.no_grad():
        flow, extra = model(image1, image2)
    return dict(losses=losses, epe=epe, rel=metrics["rel"].tolist())

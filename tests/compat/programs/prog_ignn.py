"""IGNN (deq-zoo/ignn, implicit graph neural network) in miniature: our own re-implementation
of its layer and torchdeq calls. ImplicitGraph holds its own weight matrices W, Omega_1,
Omega_2 (no Linear inside), registers them with register_norm_module for weight_norm and
spectral_norm, calls apply_norm(self, args=args) and get_deq(args) in its constructor and
reset_norm at each forward, then ASSIGNS to self.W (an infinity-norm projection) -- the
fixed point X = phi(W X A + Omega U A) is solved with the node features as the batch
dimension. Flags of run_ignn.sh (fixed_point_iter, spectral_norm with --norm_clip, phantom
gradient of 5 steps with tau 0.5)."""
import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn

from torchdeq import get_deq
from torchdeq.norm import register_norm_module, apply_norm, reset_norm
from torchdeq.utils import add_deq_args


def projection_norm_inf(A, kappa=0.99):
    """A with every row's l1 norm scaled down to at most kappa (||A||_inf <= kappa)."""
    scale = (kappa / A.abs().sum(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
    return A * scale


class ImplicitGraph(nn.Module):
    def __init__(self, args, in_features, out_features, num_node, kappa=0.99):
        super().__init__()
        self.p, self.m, self.n, self.k = in_features, out_features, num_node, kappa
        self.W = nn.Parameter(torch.empty(self.m, self.m))
        self.Omega_1 = nn.Parameter(torch.empty(self.m, self.p))
        self.Omega_2 = nn.Parameter(torch.empty(self.m, self.p))
        self.bias = nn.Parameter(torch.empty(self.m, 1))
        stdv = 1.0 / math.sqrt(self.m)
        for p in (self.W, self.Omega_1, self.Omega_2, self.bias):
            p.data.uniform_(-stdv, stdv)
        apply_norm(self, args=args)
        self.deq = get_deq(args)

    def forward(self, X_0, A, U, phi, A_rho=1.0):
        reset_norm(self)
        if self.k is not None:
            self.W = projection_norm_inf(self.W, kappa=self.k / A_rho)
        At = A.t()
        support_1 = torch.spmm(At, (self.Omega_1 @ U).t()).t()
        B = support_1 + self.Omega_2 @ U
        W = self.W

        def func(X):
            return phi(torch.spmm(At, (W @ X).t()).t() + B)

        X_out, info = self.deq(func, B if X_0 is None else X_0)
        return X_out[-1], info


register_norm_module(ImplicitGraph, "weight_norm", names=["W", "Omega_1", "Omega_2"],
                     dims=[0, 0, 0])
register_norm_module(ImplicitGraph, "spectral_norm", names=["W", "Omega_1", "Omega_2"],
                     dims=[0, 0, 0])


class IGNN(nn.Module):
    def __init__(self, args, nfeat, nhid, nclass, num_node, kappa):
        super().__init__()
        self.ig1 = ImplicitGraph(args, nfeat, nhid, num_node, kappa)
        self.X_0 = nn.Parameter(torch.zeros(nhid, num_node), requires_grad=False)
        self.V = nn.Linear(nhid, nclass, bias=False)

    def forward(self, features, adj, adj_rho):
        x, info = self.ig1(self.X_0, adj, features, F.relu, adj_rho)
        return self.V(F.normalize(x.t(), dim=-1)), info


def build_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fastmode", action="store_true", default=False)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--weight_decay", type=float, default=5e-4)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--kappa", type=float, default=0.9)
    parser.add_argument("--dataset", type=str, default="chains-10")
    add_deq_args(parser)
    return parser


# run_ignn.sh
ARGV = ["--f_solver", "fixed_point_iter", "--norm_type", "spectral_norm", "--norm_clip",
        "--grad", "5", "--tau", "0.5"]


def graph(num_node, gen):
    """A sparse symmetric normalised adjacency of a ring with random chords, and its spectral
    radius."""
    i = torch.arange(num_node)
    edges = torch.cat([torch.stack([i, (i + 1) % num_node]),
                       torch.randint(num_node, (2, num_node // 2), generator=gen)], dim=1)
    dense = torch.zeros(num_node, num_node)
    dense[edges[0], edges[1]] = 1.0
    dense = ((dense + dense.t() + torch.eye(num_node)) > 0).float()
    d = dense.sum(1).rsqrt()
    dense = d[:, None] * dense * d[None, :]
    return dense.to_sparse(), float(torch.linalg.eigvalsh(dense).abs().max())


def run(argv=ARGV, steps=4, seed=0, overrides=None):
    args = build_parser().parse_args(argv)
    for key, value in (overrides or {}).items():
        setattr(args, key, value)
    gen = torch.Generator().manual_seed(seed + 1)
    num_node, nfeat, nclass = 12, 5, 3
    adj, rho = graph(num_node, gen)
    features = torch.randn(nfeat, num_node, generator=gen)
    labels = torch.randint(nclass, (num_node,), generator=gen)
    torch.manual_seed(seed)
    model = IGNN(args, nfeat, args.hidden, nclass, num_node, args.kappa)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    losses = []
    for _ in range(steps):
        model.train()
        logits, info = model(features, adj, rho)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return dict(losses=losses, nstep=info["nstep"].mean().item(),
                params=sorted(n for n, _ in model.named_parameters()))

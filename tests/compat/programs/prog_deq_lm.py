"""deq-lm (deq-zoo/deq-lm, implicit transformer LM) in miniature: our own re-implementation
of its model shape and torchdeq calls at tiny sizes. A stack of n_layer (attention + FFN)
blocks on a (B, L, D) state is the DEQ function, each block run under mem_gc (--mem);
run.sh trains with --f_max_iter 0 (no solver: the state comes only from --grad 12 phantom
steps) and evaluates with --eval_f_max_iter 12; info is replaced by
solver_stat_from_final_step(z, f(z), args.grad[-1]) as deq-lm does."""
import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn

from torchdeq import get_deq, reset_deq
from torchdeq.dropout import VariationalDropout1d, VariationalDropout
from torchdeq.loss import fp_correction
from torchdeq.utils.mem import mem_gc
from torchdeq.solver import solver_stat_from_final_step
from torchdeq.utils import add_deq_args
from torchdeq.norm import apply_norm


class Attention(nn.Module):
    def __init__(self, d_model, n_head, d_head, dropout, dropatt):
        super().__init__()
        self.n_head, self.d_head = n_head, d_head
        self.qkv_net = nn.Linear(d_model, 3 * n_head * d_head, bias=False)
        self.o_net = nn.Linear(n_head * d_head, d_model)
        self.dropatt = VariationalDropout(dropout=dropatt)
        self.drop = VariationalDropout1d(dropout=dropout)
        self.ln = nn.LayerNorm(d_model)

    def forward(self, z, z_hist, u, attn_mask):
        B, qlen, _ = z.shape
        heads = self.qkv_net(torch.cat([z_hist, z], dim=1)) + u
        q, k, v = torch.chunk(heads, 3, dim=-1)
        klen = k.shape[1]
        q = q[:, -qlen:].view(B, qlen, self.n_head, self.d_head)
        k = k.view(B, klen, self.n_head, self.d_head)
        v = v.view(B, klen, self.n_head, self.d_head)
        score = torch.einsum("bind,bjnd->bnij", q, k) / math.sqrt(self.d_head)
        prob = self.dropatt(F.softmax(score.masked_fill(attn_mask, float("-inf")), dim=-1))
        vec = torch.einsum("bnij,bjnd->bind", prob, v).reshape(B, qlen, -1)
        return self.ln(self.drop(self.o_net(vec)) + z)


class FFN(nn.Module):
    def __init__(self, d_model, d_inner, dropout):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_inner), nn.ReLU(),
                                 nn.Linear(d_inner, d_model))
        self.drop = VariationalDropout1d(dropout=dropout)
        self.ln = nn.LayerNorm(d_model)

    def forward(self, z):
        return self.ln(self.drop(self.net(z)) + z)


class TransformerDecoder(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.mem = args.mem
        self.dec_attn = nn.ModuleList([
            Attention(args.d_model, args.n_head, args.d_head, args.dropout, args.dropatt)
            for _ in range(args.n_layer)])
        self.pos_ff = nn.ModuleList([FFN(args.d_model, args.d_inner, args.dropout)
                                     for _ in range(args.n_layer)])

    def forward(self, z, z_hist, u, attn_mask):
        for attn, ff in zip(self.dec_attn, self.pos_ff):
            if self.mem:
                z = mem_gc(attn, (z, z_hist, u, attn_mask))
                z = mem_gc(ff, (z,))
            else:
                z = ff(attn(z, z_hist, u, attn_mask))
        return z


class DEQTransformerLM(nn.Module):
    def __init__(self, args, n_token):
        super().__init__()
        self.args = args
        self.word_emb = nn.Embedding(n_token, args.d_model)
        self.injection = nn.Linear(args.d_model, 3 * args.n_head * args.d_head)
        self.func = TransformerDecoder(args)
        apply_norm(self.func, args=args)
        self.deq = get_deq(args)
        self.out = nn.Linear(args.d_model, n_token)

    def crit(self, z_pred, target):
        return F.cross_entropy(self.out(z_pred).flatten(0, 1), target.flatten())

    def forward(self, data, target, mems):
        reset_deq(self)
        B, qlen = data.shape
        u_now = self.injection(self.word_emb(data))
        z_hist, u_hist = mems if mems else (torch.zeros(B, 0, self.args.d_model),
                                            torch.zeros(B, 0, u_now.shape[-1]))
        u_cat = torch.cat([u_hist, u_now], dim=1)
        klen = z_hist.shape[1] + qlen
        attn_mask = torch.triu(torch.ones(qlen, klen, dtype=torch.bool),
                               diagonal=1 + z_hist.shape[1])
        z_now = torch.zeros(B, qlen, self.args.d_model)

        def deq_func(z):
            return self.func(z, z_hist, u_cat, attn_mask)

        z_out, info = self.deq(deq_func, z_now)
        z_now = z_out[-1]
        with torch.no_grad():
            info = solver_stat_from_final_step(z_now, deq_func(z_now), self.args.grad[-1])
        loss = fp_correction(self.crit, (z_out, target), gamma=self.args.gamma)
        mlen = self.args.mem_len
        new_mems = [torch.cat([z_hist, z_now.detach()], 1)[:, -mlen:],
                    torch.cat([u_hist, u_now.detach()], 1)[:, -mlen:]]
        return loss, new_mems, info


def build_parser():
    parser = argparse.ArgumentParser(description="PyTorch DEQ LM (miniature)")
    parser.add_argument("--n_layer", type=int, default=3)
    parser.add_argument("--n_head", type=int, default=10)
    parser.add_argument("--d_head", type=int, default=50)
    parser.add_argument("--d_model", type=int, default=500)
    parser.add_argument("--d_inner", type=int, default=8000)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--dropatt", type=float, default=0.0)
    parser.add_argument("--lr", type=float, default=0.00025)
    parser.add_argument("--global_batch_size", type=int, default=60)
    parser.add_argument("--tgt_len", type=int, default=150)
    parser.add_argument("--eval_tgt_len", type=int, default=150)
    parser.add_argument("--mem_len", type=int, default=150)
    parser.add_argument("--mem", action="store_true")
    parser.add_argument("--eval_interval", type=int, default=4000)
    add_deq_args(parser)
    return parser


# run.sh with tiny sizes
ARGV = ["--n_layer", "2", "--d_model", "16", "--n_head", "2", "--d_head", "8", "--d_inner",
        "32", "--dropout", "0.05", "--lr", "0.00025", "--eval_interval", "5000", "--tgt_len",
        "6", "--mem_len", "6", "--eval_tgt_len", "6", "--norm_type", "weight_norm",
        "--f_solver", "fixed_point_iter", "--f_stop_mode", "rel", "--f_tol", "1e-3",
        "--f_max_iter", "0", "--grad", "12", "--mem", "--eval_f_max_iter", "12",
        "--global_batch_size", "4"]


def run(argv=ARGV, steps=3, seed=0, overrides=None):
    args = build_parser().parse_args(argv)
    for key, value in (overrides or {}).items():
        setattr(args, key, value)
    n_token = 20
    torch.manual_seed(seed)
    model = DEQTransformerLM(args, n_token)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(seed + 1)
    B = args.global_batch_size
    stream = torch.randint(n_token, (B, (steps + 1) * args.tgt_len + 1), generator=gen)
    losses, rel, mems = [], [], None
    for i in range(steps):
        s = slice(i * args.tgt_len, (i + 1) * args.tgt_len)
        loss, mems, info = model(stream[:, s], stream[:, s.start + 1:s.stop + 1], mems)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        rel.append(info["rel_lowest"].mean().item())
    model.eval()
    with torch.no_grad():
        s = slice(steps * args.tgt_len, (steps + 1) * args.tgt_len)
        eval_loss, _, info = model(stream[:, s], stream[:, s.start + 1:s.stop + 1], mems)
    return dict(losses=losses, rel_lowest=rel, eval_loss=eval_loss.item(),
                eval_nstep=info["nstep"].mean().item())

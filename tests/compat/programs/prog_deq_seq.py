"""deq-seq (DEQ-Transformer language model, deq-zoo/deq-seq) in miniature: our own
re-implementation of its model shape and torchdeq calls at tiny sizes. The DEQ layer is an
attention sublayer (Conv1d qkv over [memory, z], input injection added to qkv, causal mask,
Conv1d output, residual + LayerNorm) and a position-wise FFN (residual + LayerNorm) on a
(B, D, L) state, with variational dropout, weight norm, reset_deq per forward, IFT with
Broyden on the rel residual (deq_seq_ift.sh), jac_reg when asked, fixed-point correction,
and its own options eval_n_layer / eval_tgt_len / eval-interval passed to get_deq(args)."""
import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn

from torchdeq import get_deq, reset_deq
from torchdeq.dropout import VariationalDropout1d, VariationalDropout
from torchdeq.norm import apply_norm
from torchdeq.loss import fp_correction, jac_reg
from torchdeq.solver import solver_stat_from_final_step
from torchdeq.utils import add_deq_args


class Attention(nn.Module):
    def __init__(self, d_model, n_head, d_head, dropout, dropatt):
        super().__init__()
        self.n_head, self.d_head = n_head, d_head
        self.qkv_net = nn.Conv1d(d_model, 3 * n_head * d_head, 1, bias=False)
        self.o_net = nn.Conv1d(n_head * d_head, d_model, 1)
        self.dropatt = VariationalDropout(dropout=dropatt)
        self.drop = VariationalDropout1d(dropout=dropout, token_first=False)

    def forward(self, z, u, mems):
        B, D, qlen = z.shape
        cat = torch.cat([mems, z], dim=-1)
        heads = self.qkv_net(cat) + u  # input injection
        q, k, v = torch.chunk(heads, 3, dim=1)
        klen, mlen = k.shape[2], mems.shape[2]
        q = q[:, :, -qlen:].view(B, self.n_head, self.d_head, qlen)
        k = k.view(B, self.n_head, self.d_head, klen)
        v = v.view(B, self.n_head, self.d_head, klen)
        score = torch.einsum("bndi,bndj->bnij", q, k) / math.sqrt(self.d_head)
        mask = torch.triu(torch.ones(qlen, klen, dtype=torch.bool), diagonal=1 + mlen)
        prob = self.dropatt(F.softmax(score.masked_fill(mask, float("-inf")), dim=-1))
        vec = torch.einsum("bnij,bndj->bndi", prob, v).reshape(B, -1, qlen)
        out = self.drop(self.o_net(vec)) + z
        return F.layer_norm(out.transpose(1, 2), (D,)).transpose(1, 2)


class FFN(nn.Module):
    def __init__(self, d_model, d_inner, dropout):
        super().__init__()
        self.ff1_net = nn.Linear(d_model, d_inner)
        self.ff2_net = nn.Linear(d_inner, d_model)
        self.drop1 = VariationalDropout1d(dropout=dropout)
        self.drop2 = VariationalDropout1d(dropout=dropout)

    def forward(self, z):
        inp = z.transpose(1, 2)  # (B, L, D)
        out = self.drop2(self.ff2_net(self.drop1(F.relu(self.ff1_net(inp))))) + inp
        return F.layer_norm(out, (out.shape[-1],)).transpose(1, 2)


class TransformerDecoder(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.dec_attn = Attention(args.d_model, args.n_head, args.d_head, args.dropout,
                                  args.dropatt)
        self.pos_ff = FFN(args.d_model, args.d_inner, args.dropout)

    def forward(self, z, z_hist, u):
        return self.pos_ff(self.dec_attn(z, u, z_hist))


class DEQTransformerLM(nn.Module):
    def __init__(self, args, n_token):
        super().__init__()
        self.args = args
        self.word_emb = nn.Embedding(n_token, args.d_model)
        self.inject_conv = nn.Conv1d(args.d_model, 3 * args.n_head * args.d_head, 1)
        self.func = TransformerDecoder(args)
        apply_norm(self.func, args=args)
        self.deq = get_deq(args)
        self.out = nn.Linear(args.d_model, n_token)

    def crit(self, z_pred, target):  # (B, D, L), (B, L) -> mean token loss
        return F.cross_entropy(self.out(z_pred.transpose(1, 2)).flatten(0, 1), target.flatten())

    def forward(self, data, target, mems, writer=None):
        reset_deq(self)
        B, qlen = data.shape
        u_now = self.inject_conv(self.word_emb(data).transpose(1, 2))
        z_hist, u_hist = mems if mems else (torch.zeros(B, self.args.d_model, 0),
                                            torch.zeros(B, u_now.shape[1], 0))
        u_cat = torch.cat([u_hist, u_now], dim=2)
        z_now = torch.zeros(B, self.args.d_model, qlen)

        def deq_func(z):
            return self.func(z, z_hist, u_cat)

        z_out, info = self.deq(deq_func, z_now, sradius_mode=False, backward_writer=writer)
        z_now = z_out[-1]
        jac_loss = torch.zeros(())
        if self.training and self.args.jac_loss_weight > 0:
            jac_loss = jac_reg(deq_func(z_now), z_now)
        loss = fp_correction(self.crit, (z_out, target), gamma=self.args.gamma)
        with torch.no_grad():
            final = solver_stat_from_final_step(z_now, deq_func(z_now))
        mlen = self.args.mem_len
        new_mems = [torch.cat([z_hist, z_now.detach()], 2)[:, :, -mlen:],
                    torch.cat([u_hist, u_now.detach()], 2)[:, :, -mlen:]]
        return loss, jac_loss, new_mems, info, final


def build_parser():
    parser = argparse.ArgumentParser(description="PyTorch DEQ Sequence Model (miniature)")
    parser.add_argument("--n_layer", type=int, default=12)
    parser.add_argument("--eval_n_layer", type=int, default=12)
    parser.add_argument("--n_head", type=int, default=10)
    parser.add_argument("--d_head", type=int, default=50)
    parser.add_argument("--d_model", type=int, default=500)
    parser.add_argument("--d_inner", type=int, default=8000)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--dropatt", type=float, default=0.0)
    parser.add_argument("--lr", type=float, default=0.00025)
    parser.add_argument("--batch_size", type=int, default=60)
    parser.add_argument("--tgt_len", type=int, default=150)
    parser.add_argument("--eval_tgt_len", type=int, default=150)
    parser.add_argument("--mem_len", type=int, default=150)
    add_deq_args(parser)
    parser.add_argument("--log-interval", type=int, default=200)
    parser.add_argument("--eval-interval", type=int, default=4000)
    return parser


# deq_seq_ift.sh with tiny sizes
ARGV = ["--n_layer", "2", "--eval_n_layer", "24", "--d_model", "16", "--n_head", "2",
        "--d_head", "8", "--d_inner", "32", "--dropout", "0.05", "--lr", "0.00025",
        "--eval-interval", "5000", "--tgt_len", "6", "--mem_len", "6", "--eval_tgt_len", "6",
        "--norm_type", "weight_norm", "--ift", "--f_solver", "broyden", "--b_solver",
        "broyden", "--f_stop_mode", "rel", "--b_stop_mode", "rel", "--f_tol", "1e-3",
        "--b_tol", "1e-3", "--f_max_iter", "35", "--b_max_iter", "35", "--jac_loss_weight",
        "0.0", "--batch_size", "4"]


def run(argv=ARGV, steps=3, seed=0, overrides=None):
    args = build_parser().parse_args(argv)
    for key, value in (overrides or {}).items():
        setattr(args, key, value)
    n_token = 20
    torch.manual_seed(seed)
    model = DEQTransformerLM(args, n_token)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(seed + 1)
    stream = torch.randint(n_token, (args.batch_size, (steps + 1) * args.tgt_len + 1),
                           generator=gen)
    backward = []
    losses, nstep, converged, mems = [], [], [], None
    model.train()
    for i in range(steps):
        s = slice(i * args.tgt_len, (i + 1) * args.tgt_len)
        data, target = stream[:, s], stream[:, s.start + 1:s.stop + 1]
        loss, jac_loss, mems, info, _ = model(data, target, mems, writer=backward.append)
        opt.zero_grad()
        (loss + args.jac_loss_weight * jac_loss).backward()
        opt.step()
        losses.append(loss.item())
        nstep.append(info["nstep"].mean().item())
        converged.append(int((info["rel_lowest"] < args.f_tol).sum()))
    model.eval()
    with torch.no_grad():
        s = slice(steps * args.tgt_len, (steps + 1) * args.tgt_len)
        eval_loss, _, _, info, final = model(stream[:, s], stream[:, s.start + 1:s.stop + 1],
                                             mems)
    return dict(losses=losses, nstep=nstep, converged=converged, eval_loss=eval_loss.item(),
                backward_infos=len(backward), final_rel=final["rel_lowest"].tolist())

"""Looped language model on graph reachability: one weight-tied transformer block, iterated.

The sequence has one token per node: its embedding is the node's id embedding, plus a projection
of the sum of its neighbours' id embeddings (its adjacency list as a bag of tokens), plus a
source marker. The block (attention + MLP, output layer-normed so the state stays bounded) is
applied to z + u every step, so attention can move "reachable" one hop per step: a node whose
farthest reachable node is D hops from the source needs about D steps. Training uses short
distances at a small depth; the hard split has longer ones, which only more steps can solve.
Metric: exact match, every node's reachable/unreachable answer right.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from eqkernels.nn import SelfAttention

from domains.algorithmic_tasks import reachability_instances
from domains.domain import Batch, Domain, RunConfig
from domains.model import ImplicitModel

NUM_CLASSES = 2  # unreachable, reachable


class NodeTokenEmbedding(nn.Module):
    """input (B, N, N + 1) uint8 [adjacency row, source flag] -> u (B, N, width) in the
    parameters' dtype: id_i + neighbours(sum_{j ~ i} id_j) + flag_i * source."""

    def __init__(self, num_nodes: int, width: int):
        super().__init__()
        self.num_nodes = num_nodes
        self.node_id = nn.Parameter(torch.randn(num_nodes, width) / math.sqrt(width) * 4)
        self.neighbours = nn.Linear(width, width, bias=False)
        self.source = nn.Parameter(torch.randn(width) / math.sqrt(width) * 4)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        N = self.num_nodes
        if tokens.dim() != 3 or tokens.shape[1:] != (N, N + 1):
            raise ValueError(f"input must have shape (B, {N}, {N + 1}), got {tuple(tokens.shape)}")
        dtype = self.node_id.dtype
        adjacency, is_source = tokens[..., :N].to(dtype), tokens[..., N].to(dtype)
        return (self.node_id + self.neighbours(adjacency @ self.node_id)
                + is_source.unsqueeze(-1) * self.source)


class LoopedTransformerBlock(nn.Module):
    """block(z, x) = LN(h + MLP(LN(h))), h = y + Attn(LN(y)), y = z + x.
    z, x: (B, L, width). The final LayerNorm keeps z bounded however many steps run."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.attn_norm = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(),
                                 nn.Linear(mlp_ratio * width, width))
        self.out_norm = nn.LayerNorm(width)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = z + x
        h = h + self.attn(self.attn_norm(h))
        return self.out_norm(h + self.mlp(self.mlp_norm(h)))


class LoopedReachabilityModel(ImplicitModel):
    """u (B, N, width) node-token embeddings -> logits (B, N, 2) after `iters` block steps."""

    def __init__(self, num_nodes: int, *, width: int, heads: int, mlp_ratio: int,
                 train_iters: int, damping: float = 1.0, backward: str = "phantom",
                 **deq_kwargs):
        super().__init__(LoopedTransformerBlock(width, heads, mlp_ratio), train_iters=train_iters,
                         damping=damping, backward=backward, **deq_kwargs)
        self.embed = NodeTokenEmbedding(num_nodes, width)
        self.head = nn.Linear(width, NUM_CLASSES)

    def readout(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.head(z)


class LoopedLMDomain(Domain):
    """Graph reachability by a looped transformer; cfg.data: num_nodes, train_depth
    (min, max) and hard_depth (min, max) source eccentricities; cfg.model: width, heads,
    mlp_ratio, damping, backward, deq (extra eqk.DEQ kwargs)."""
    name = "lm"
    metric = "exact-match accuracy"
    higher_is_better = True
    has_hard_split = True
    # Training runs train_iters steps without a graph, then backpropagates through
    # unroll_steps more (eqk "unroll" backward): the forward depth in training is their sum,
    # and the recorded steps must span the longest training distance, or no gradient ever
    # sees a whole propagation. Hard instances are farther than any training one.
    configs = {
        "small": RunConfig(
            train_iters=6, train_steps=800, batch_size=64, lr=3e-3, weight_decay=0.01,
            warmup_steps=50, n_train=8192, n_test=512, eval_max_iters=300,
            model=dict(width=64, heads=4, mlp_ratio=2, damping=1.0, backward="unroll",
                       deq=dict(unroll_steps=8)),
            data=dict(num_nodes=16, train_depth=(1, 5), hard_depth=(6, 10))),
        "gpu": RunConfig(
            train_iters=10, train_steps=20000, batch_size=256, lr=1e-3, weight_decay=0.01,
            warmup_steps=500, n_train=200_000, n_test=4096, eval_max_iters=1000,
            model=dict(width=128, heads=4, mlp_ratio=4, damping=1.0, backward="unroll",
                       deq=dict(unroll_steps=12)),
            data=dict(num_nodes=32, train_depth=(1, 8), hard_depth=(10, 20))),
    }

    def make_data(self, n: int, seed: int, cfg: RunConfig, *, hard: bool = False) -> Batch:
        low, high = cfg.data["hard_depth" if hard else "train_depth"]
        return reachability_instances(n, cfg.data["num_nodes"], low, high, seed)

    def build_model(self, cfg: RunConfig) -> LoopedReachabilityModel:
        m = cfg.model
        return LoopedReachabilityModel(cfg.data["num_nodes"], width=m["width"], heads=m["heads"],
                                       mlp_ratio=m["mlp_ratio"], train_iters=cfg.train_iters,
                                       damping=m["damping"], backward=m["backward"],
                                       **m.get("deq", {}))

    def model_input(self, model: LoopedReachabilityModel, batch: Batch) -> torch.Tensor:
        return model.embed(batch["input"])

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(pred.flatten(0, 1), batch["target"].flatten())

    def quality(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return (pred.argmax(-1) == batch["target"]).all(dim=1).float()

    def extra_metrics(self, pred: torch.Tensor, batch: Batch) -> dict:
        return dict(node_accuracy=(pred.argmax(-1) == batch["target"]).float().mean(dim=1))


DOMAIN = LoopedLMDomain()

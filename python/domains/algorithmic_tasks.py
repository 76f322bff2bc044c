"""Graph reachability instances with a difficulty knob: how far the farthest reachable node is.

Every instance is an undirected graph on `num_nodes` nodes with one source node; the answer is,
per node, whether it is reachable from the source. The source's component is built around a
shortest path of exactly `depth` edges and every other node of it lies at most `depth` hops away,
so `depth` is the source's eccentricity: the number of hops a one-hop-per-step propagation needs.
The rest of the nodes form distractor components that are never reachable. Node labels are
randomly permuted, so where a node sits in the sequence says nothing about its answer.

Labels come from the construction (component membership), not from a search, so a BFS is an
independent check of them (tests/test_domains_looped_lm.py does that).
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch

# Each extra edge joins two nodes of one component whose depths differ by at most one, so it
# makes cycles without shortening any distance from the source.
EXTRA_EDGES_PER_NODE = 0.25
# A node outside the source's shortest path joins the source's component with this probability.
JOIN_SOURCE_PROB = 0.4


def reachability_instances(n: int, num_nodes: int, min_depth: int, max_depth: int,
                           seed: int) -> Dict[str, torch.Tensor]:
    """n graphs whose source eccentricity is drawn uniformly from [min_depth, max_depth].

    Returns
      input: (n, N, N + 1) uint8, row i = [adjacency row of node i, 1 if i is the source]
      target: (n, N) int64, 1 where the node is reachable from the source
      depth: (n,) int64, the source's eccentricity (hops to its farthest reachable node)
    with N = num_nodes.
    """
    if not 1 <= min_depth <= max_depth:
        raise ValueError(f"need 1 <= min_depth <= max_depth, got min_depth={min_depth}, "
                         f"max_depth={max_depth}")
    if max_depth > num_nodes - 1:
        raise ValueError(f"max_depth must be <= num_nodes - 1 = {num_nodes - 1} (a path of "
                         f"max_depth edges needs max_depth + 1 nodes), got {max_depth}")
    rng = np.random.default_rng(seed)
    inputs = np.zeros((n, num_nodes, num_nodes + 1), dtype=np.uint8)
    targets = np.zeros((n, num_nodes), dtype=np.int64)
    depths = rng.integers(min_depth, max_depth + 1, size=n)
    for b in range(n):
        adjacency, source, reachable = _one_graph(rng, num_nodes, int(depths[b]))
        inputs[b, :, :num_nodes] = adjacency
        inputs[b, source, num_nodes] = 1
        targets[b] = reachable
    return dict(input=torch.from_numpy(inputs), target=torch.from_numpy(targets),
                depth=torch.from_numpy(depths.astype(np.int64)))


def _one_graph(rng: np.random.Generator, num_nodes: int, depth: int):
    """(adjacency (N, N) uint8, source index, reachable (N,) int64) with eccentricity `depth`."""
    order = rng.permutation(num_nodes)  # node labels in order of construction
    adjacency = np.zeros((num_nodes, num_nodes), dtype=np.uint8)
    component = np.full(num_nodes, -1)  # component id per node (0 = the source's)
    level = np.zeros(num_nodes, dtype=np.int64)  # hops from its component's root

    def connect(a, b):
        adjacency[a, b] = adjacency[b, a] = 1

    path = order[:depth + 1]
    for hop, node in enumerate(path):
        component[node], level[node] = 0, hop
        if hop:
            connect(path[hop - 1], node)
    members: List[List[int]] = [list(path)]
    for node in order[depth + 1:]:
        source_parents = [m for m in members[0] if level[m] < depth]
        if rng.random() < JOIN_SOURCE_PROB:
            comp, parent = 0, source_parents[rng.integers(len(source_parents))]
        elif len(members) > 1 and rng.random() < 0.7:  # grow a distractor, else start one
            comp = int(rng.integers(1, len(members)))
            parent = members[comp][rng.integers(len(members[comp]))]
        else:
            comp, parent = len(members), None
            members.append([])
        component[node] = comp
        if parent is not None:
            connect(parent, node)
            level[node] = level[parent] + 1
        members[comp].append(node)
    for _ in range(rng.binomial(num_nodes, EXTRA_EDGES_PER_NODE)):
        a, b = rng.integers(num_nodes, size=2)
        if a != b and component[a] == component[b] and abs(level[a] - level[b]) <= 1:
            connect(a, b)
    return adjacency, int(path[0]), (component == 0).astype(np.int64)

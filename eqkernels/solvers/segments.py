"""Segments of K solver steps, captured as CUDA graphs (the driver's segment mode).

A solver whose step is capturable (no host sync, no host-side allocation; today the fused
damped step) can run in segments of K steps of f + step on static buffers: on a CUDA device
each segment shape is run once eagerly (the warm-up a capture needs), then captured once into
a CUDA graph and replayed; the driver reads the all-done flag once per segment (one host sync
per K steps). If capture fails (a block that syncs, allocates from the host, ...), the run
goes on eagerly and says why. On a CPU the same segments run uncaptured (tested there; the
capture itself is checked by scripts/gpu_suite.sh).
"""
from __future__ import annotations

from collections import OrderedDict

import torch

GRAPH_CACHE_SIZE = 4   # captured segments kept per run (shape x length x phase)


def _capture_graph(fn):
    """Records fn() into a CUDA graph (nothing runs); returns an object with .replay()."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


class SegmentRunner:
    """Runs body(k, base) -- k steps, the first being step base + 1 -- eagerly, or (capture)
    as a replay of a CUDA graph recorded per key (k, base % period): the first
    segment of a key runs eagerly (the warm-up of lazy initialisations a capture needs), the
    second captures it, every later one replays. A failed capture switches the runner to
    eager for good, keeping the reason. At most `cache_size` graphs are kept. `period`: a
    segment's host-side work may depend on base % period (damped's snapshot cadence), so a
    graph is recorded per phase."""

    def __init__(self, body, capture: bool, reason: str, cache_size: int = GRAPH_CACHE_SIZE,
                 period: int = 1):
        self.body, self.capture, self.reason = body, capture, reason
        self.period = period
        self.cache: OrderedDict = OrderedDict()
        self.cache_size = cache_size
        self.warm: set = set()
        self.captures = self.replays = self.eager_segments = self.evictions = 0

    def run(self, k: int, base: int) -> None:
        key = (k, base % self.period)
        if self.capture and key in self.cache:
            self.cache.move_to_end(key)
            self.cache[key].replay()
            self.replays += 1
            return
        if self.capture and key in self.warm:
            try:
                graph = _capture_graph(lambda: self.body(k, base))
            except Exception as err:  # noqa: BLE001 -- any failure: go on eagerly, say why
                self.capture = False
                self.reason = f"eager: capture failed ({type(err).__name__}: {err})"
            else:
                self.captures += 1
                self.cache[key] = graph
                if len(self.cache) > self.cache_size:
                    self.cache.popitem(last=False)
                    self.evictions += 1
                graph.replay()
                self.replays += 1
                return
        self.warm.add(key)
        self.body(k, base)
        self.eager_segments += 1

    def describe(self) -> str:
        counts = (f"{self.captures} captures, {self.replays} replays, {self.eager_segments} "
                  f"eager segments, {self.evictions} evictions")
        return f"captured ({counts})" if self.capture else f"{self.reason} ({counts})"

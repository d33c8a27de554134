"""Decode steps captured as CUDA graphs, one per attended-length bucket, replayed once per token.

Eager PyTorch spends ~60 ms of CPU time per token launching ~1000 small kernels (measured on an H100); a replay launches
them all at once. A step only attends to cache slots [0, L), so short conversations use a small-L graph.
Graphs hold the KV cache's addresses: when the cache grows (runtime.kvcache) the decoder makes a new GraphedStep.
"""

from __future__ import annotations

import torch


def buckets(max_seq: int, smallest: int = 256) -> list[int]:
    out, n = [], smallest
    while n < max_seq:
        out.append(n)
        n *= 2
    return out + [max_seq]


class GraphedStep:
    def __init__(self, step, lengths: list[int], state: list[torch.Tensor] | tuple = (), eager: int = 0):
        """step(L) reads and writes only static tensors and returns the logits. Buckets up to `eager` slots are
        captured now, largest first (its buffers then fit every smaller graph): a chat's first few thousand tokens
        never pay a capture (~20-50 ms) in the middle of a reply. A longer bucket's graph is captured when a step
        first needs it (at 200K, capturing every bucket up front would take seconds and memory for lengths a chat
        may never reach). Before a capture the step runs once to warm up (cuBLAS handles, Triton compiles) and
        `state` (the tensors a step advances: token, position, sampler) is put back as it was."""
        self.step, self.state = step, state
        self.lengths = sorted(lengths)
        self.pool = torch.cuda.graph_pool_handle()  # graphs never run concurrently, so they share one pool
        self.graphs, self.logits = {}, {}
        for n in reversed(self.lengths):
            if n <= eager:
                self._capture(n)

    def bucket(self, length: int) -> int:
        return next(n for n in self.lengths if n >= length)

    def _capture(self, n: int) -> None:
        saved = [t.clone() for t in self.state]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.step(n)
        torch.cuda.current_stream().wait_stream(side)
        for t, s in zip(self.state, saved, strict=True):
            t.copy_(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self.pool):
            self.logits[n] = self.step(n)
        self.graphs[n] = g

    def replay(self, length: int) -> torch.Tensor:
        """Run one step attending to at least `length` cache slots; returns its logits [1, V] (valid until the
        next replay)."""
        n = self.bucket(length)
        if n not in self.graphs:
            self._capture(n)
        self.graphs[n].replay()
        return self.logits[n]

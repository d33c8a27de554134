"""Decode steps captured as CUDA graphs, one per attended-length bucket, replayed once per token.

Eager PyTorch spends ~60 ms of CPU time per token launching ~1000 small kernels (measured on an H100); a replay launches
them all at once. A step only attends to cache slots [0, L), so short conversations use a small-L graph.
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
    def __init__(self, step, lengths: list[int]):
        """step(L) reads and writes only static tensors and returns the logits; it runs once per bucket to warm
        up (cuBLAS handles, allocator), so the caller resets its state afterwards."""
        self.lengths = sorted(lengths)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for n in self.lengths:
                step(n)
        torch.cuda.current_stream().wait_stream(side)
        pool = torch.cuda.graph_pool_handle()  # graphs never run concurrently, so they share one pool
        self.graphs, self.logits = {}, {}
        for n in reversed(self.lengths):  # largest first: its buffers fit every smaller graph
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=pool):
                self.logits[n] = step(n)
            self.graphs[n] = g

    def bucket(self, length: int) -> int:
        return next(n for n in self.lengths if n >= length)

    def replay(self, length: int) -> torch.Tensor:
        """Run one step attending to at least `length` cache slots; returns its logits [1, V] (valid until the
        next replay)."""
        n = self.bucket(length)
        self.graphs[n].replay()
        return self.logits[n]

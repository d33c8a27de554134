"""FastDecoder: prefill in chunks, then one token per decode step (a CUDA graph replay on GPU, eager on CPU).

The KV cache lives for the whole session: a new prompt that starts with the previous prompt + reply only
prefills the new tail, so the time to first token stays flat as a conversation grows.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator

import torch

from ..errors import YiError
from ..kernels import tinygemm
from . import kvcache, llama
from .graph import GraphedStep, buckets
from .hf import trim_heap
from .sampling import Sampler

PREFILL_CHUNK = {"cuda": 1024, "cpu": 256}  # tokens per prefill forward (bounds the transient memory)
PIPELINE = 2  # decode steps queued on the GPU ahead of the token the host is reading


def supports(ckpt) -> bool:
    """Llama-architecture checkpoints in safetensors; others stay on transformers' generate."""
    return ckpt.safetensors and llama.supports(ckpt.config)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class FastDecoder:
    def __init__(self, ckpt, max_seq_len: int | None = None):
        self.device = torch.device(ckpt.device)
        self.cuda = self.device.type == "cuda"
        self.max_seq = min(max_seq_len or ckpt.context_length, ckpt.context_length)
        self.cached: list[int] = []  # ids whose K/V sit in cache slots [0, len)
        self.last_prefill: tuple[int, list[int]] = (0, [])  # (first slot computed, prompt) of the last prefill
        self.on_chunk = None  # called (tokens done, tokens to do) after each prefill chunk: progress of long prompts
        dtype = tinygemm.compute_dtype(self.device, ckpt.dtype, ckpt.quant is not None)
        with torch.inference_mode():
            self.model = llama.FastLlama(ckpt, self.max_seq, dtype, padded=self.cuda)
            trim_heap()
            self.max_seq = self.model.max_seq = kvcache.fit(self.model, self.max_seq)
            self.sampler = Sampler(self.model.lm_head.shape[0], self.device)
            self.tok = torch.zeros(1, dtype=torch.long, device=self.device)  # the token the next step feeds
            self.pos = torch.zeros(1, dtype=torch.long, device=self.device)  # its position
            self.graphs = self._graphed()
        if self.cuda:
            self.host = torch.zeros(PIPELINE + 1, dtype=torch.long, pin_memory=True)
            self.events = [torch.cuda.Event() for _ in range(PIPELINE + 1)]

    def _graphed(self) -> GraphedStep | None:
        """Decode-step graphs over the cache as it is now (its capacity is the largest bucket)."""
        if not self.cuda:
            return None
        state = [self.tok, self.pos, self.sampler.rng, self.sampler.seen]
        return GraphedStep(self._graph_step, buckets(self.model.k_cache[0].shape[2]), state)

    def _graph_step(self, length: int) -> torch.Tensor:
        """The captured step: feed self.tok at self.pos, attend to `length` slots, sample into self.tok."""
        logits = self.model.decode_step(self.tok, self.pos, length)
        self.sampler.step(logits, self.tok)
        self.pos.add_(1)
        return logits

    @torch.inference_mode()
    def _prefill(self, ids: list[int], settings, cancel: threading.Event) -> int | None:
        """Run the prompt's uncached tail in chunks (checking `cancel` between them); the first reply token, or
        None when cancelled."""
        n = len(ids)
        start = min(common_prefix(self.cached, ids), n - 1)  # at least one token runs, for its logits
        if ids == self.last_prefill[1]:
            # The same prompt again (/retry): redo the same prefill, so the same kernels see the same shapes and a
            # greedy reply repeats exactly (a one-token prefill rounds differently and flips near-ties).
            start = self.last_prefill[0]
        self.last_prefill = (start, list(ids))
        self.cached = ids[:start]
        self.sampler.reset(settings, ids)
        chunk = PREFILL_CHUNK["cuda" if self.cuda else "cpu"]
        for s in range(start, n, chunk):
            if cancel.is_set():
                # sent again (after Ctrl-C), the prompt resumes here: same chunk bounds, same result as one run
                self.last_prefill = (s, list(ids))
                return None
            e = min(s + chunk, n)
            logits = self.model.prefill(torch.tensor(ids[s:e], device=self.device), s)
            self.cached = ids[:e]
            if self.on_chunk is not None:
                self.on_chunk(e - start, n - start)
        tok = self.sampler.eager(logits, greedy=settings.temperature == 0)
        self.tok.copy_(tok)
        self.pos.fill_(n)
        return int(tok.item())

    @torch.inference_mode()
    def _eager(self, length: int, greedy: bool) -> int:
        logits = self.model.decode_step(self.tok, self.pos, length)
        self.tok.copy_(self.sampler.eager(logits, greedy))
        self.pos.add_(1)
        return int(self.tok.item())

    @torch.inference_mode()
    def _launch(self, length: int, slot: int) -> None:
        self.graphs.replay(length)
        self.host[slot].copy_(self.tok[0], non_blocking=True)
        self.events[slot].record()

    def _steps(self, n: int, limit: int, greedy_only: bool) -> Iterator[int]:
        """Tokens 2..limit after a prompt of n tokens; step j feeds token j at position n + j - 1."""
        if not self.cuda:
            # A one-token step is ~40 small ops a layer: a second intra-op thread costs more than it gives
            # (demo on 2 cores: 55 vs 46 tok/s). Prefill keeps every thread.
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for j in range(1, limit):
                    yield self._eager(n + j, greedy_only)
            finally:
                torch.set_num_threads(threads)
            return
        pending: deque[int] = deque()
        j = 1
        while True:
            while len(pending) < PIPELINE and j < limit:
                self._launch(n + j, j % len(self.events))
                pending.append(j % len(self.events))
                j += 1
            if not pending:
                return
            slot = pending.popleft()
            self.events[slot].synchronize()
            yield int(self.host[slot])

    def generate(self, prompt_ids: list[int], settings, cancel: threading.Event, stop_ids: set[int]) -> Iterator[int]:
        """Yield generated ids one by one; the last may be a stop id. Ends at a stop id, when `cancel` is set,
        after settings.max_new_tokens, or when the cache (max_seq_len) is full."""
        ids = list(prompt_ids)
        n = len(ids)
        if not 0 < n < self.max_seq:
            raise YiError(f"the prompt is {n} tokens; the fast decoder holds 1 to {self.max_seq - 1}")
        if cancel.is_set():
            return
        if kvcache.grow(self.model, min(n + settings.max_new_tokens, self.max_seq)):
            self.graphs = self._graphed()
        first = self._prefill(ids, settings, cancel)
        if first is None:
            return
        out = [first]
        try:
            yield out[0]
            if out[0] in stop_ids:
                return
            for tok in self._steps(n, min(settings.max_new_tokens, self.max_seq - n), settings.temperature == 0):
                if cancel.is_set():
                    return
                out.append(tok)
                yield tok
                if tok in stop_ids:
                    return
        finally:
            self.cached = ids + out[:-1]  # every yielded token but the last has been fed through a step

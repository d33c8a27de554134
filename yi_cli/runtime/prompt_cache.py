"""The generate engine's KV cache across replies: a prompt read in chunks (Ctrl-C between them, a progress line),
and the part of it that the previous prompt and reply already hold kept.

transformers' `generate` reads a prompt in one forward: a book-sized prompt on the CPU took tens of seconds deaf to
Ctrl-C, showed no progress, and every turn (a /continue, a /retry) read the whole conversation again. Here the
prompt's tokens before its last are run through the model in chunks into a DynamicCache that `generate` then
starts from (it runs only the tokens the cache lacks: the last one, whose logits give the first reply token).
"""

from __future__ import annotations

import inspect
from contextlib import nullcontext

from .decoder import PREFILL_CHUNK, common_prefix
from .qlinear import keep_dense

SMALL_PARAMS, SMALL_CPU_CHUNK = 1_000_000_000, 1024  # the CPU chunk of a model of at most that many parameters


class PromptCache:
    def __init__(self, model, device: str):
        self.model = model
        self.chunk = PREFILL_CHUNK["cuda" if device.startswith("cuda") else "cpu"]
        if not device.startswith("cuda") and sum(p.numel() for p in model.parameters()) <= SMALL_PARAMS:
            # a small model on the CPU reads 256 tokens in a fraction of a second: the chunks' own cost showed (the
            # demo's first token after 1631 tokens: 5.0-5.2 s, one forward's 3.9-4.0; 1024 a chunk: about as one)
            self.chunk = SMALL_CPU_CHUNK
        self.cache = None  # the DynamicCache the model made at its first chunk, None before it or after a failure
        self.ids: list[int] = []  # the tokens whose keys and values it holds, in order
        params = inspect.signature(model.forward).parameters
        # only the chunk's last position's logits (a [chunk, vocab] float block otherwise, ~65 MB for Yi's vocab)
        self.keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        # the cache's argument: `cache` from transformers 5.25 (`past_key_values` warns there), before it the old name
        self.arg = "cache" if "cache" in params else "past_key_values"

    def prefill(self, ids: list[int], cancel, on_chunk=None):
        """Hold ids[:-1] in the cache, run in chunks from what it holds already. The cache for `generate`; None
        where cancelled (what was read stays held: the same prompt again resumes there)."""
        import torch

        end = len(ids) - 1
        self._keep(min(common_prefix(self.ids, ids), end))
        start = len(self.ids)
        with torch.inference_mode(), keep_dense(self.model) if end - start > self.chunk else nullcontext():
            for s in range(start, end, self.chunk):
                if cancel.is_set():
                    return None
                e = min(s + self.chunk, end)
                x = torch.tensor([ids[s:e]], device=self.model.device)
                try:
                    out = self.model(input_ids=x, use_cache=True, **{self.arg: self.cache}, **self.keep)
                except BaseException:
                    self.forget()  # part of a chunk may be in it
                    raise
                self.cache, self.ids = cache_of(out), ids[:e]
                if on_chunk is not None:
                    on_chunk(e - start, end - start + 1)
        return self.cache

    def _keep(self, n: int) -> None:
        """Drop all but the first n cached tokens (all of them where the cache cannot be cut)."""
        if n == len(self.ids):
            return
        try:
            if n == 0 or self.cache is None:
                raise ValueError("nothing kept")
            self.cache.crop(n - len(self.ids))  # a negative count: that many removed (every transformers 5 release)
            if self.cache.get_seq_length() != n:
                raise ValueError("the cache did not keep what was asked")
            self.ids = self.ids[:n]
        except Exception:  # a cache type that cannot be cut (recurrent layers): start again
            self.forget()

    def held(self, tokens: list[int], cache) -> None:
        """After `generate` (its cache, the one given or its own): the prompt and the reply but its last token."""
        self.cache = cache
        length = cache.get_seq_length() if cache is not None else 0
        self.ids = tokens[:length] if length <= len(tokens) else []
        if not self.ids:
            self.forget()

    def forget(self) -> None:
        self.cache, self.ids = None, []


def cache_of(out):
    """The cache a forward or a `generate` returned (`cache` from transformers 5.25, `past_key_values` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)

"""Token choice on the device, with no host sync: repetition penalty, temperature, top-k, top-p, seeded sampling.

Same semantics and order as transformers' generate (RepetitionPenalty, then Temperature, TopK, TopP warpers).
All settings live in device tensors, so one captured CUDA graph serves every setting. The random numbers come from
a counter-based hash of (seed, step, vocab id): graph-safe, reproducible for a seed, identical on CPU and CUDA.
"""
from __future__ import annotations

import random

import torch

_M32 = 0xFFFFFFFF


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit avalanche hash on int64 holding [0, 2**32); multipliers < 2**31 keep products inside int64."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & _M32
    return x ^ (x >> 16)


class Sampler:
    def __init__(self, vocab: int, device):
        self.vocab = vocab
        self.params = torch.zeros(4, device=device)  # temperature, top_p, top_k, repetition_penalty
        self.rng = torch.zeros(2, dtype=torch.long, device=device)  # seed, step
        self.seen = torch.zeros(vocab, dtype=torch.bool, device=device)  # ids in prompt + output
        self.ids = torch.arange(vocab, device=device)

    def reset(self, settings, prompt_ids: list[int]) -> None:
        """Load one request's settings and the prompt's ids (host -> device copies, before the first step)."""
        dev = self.params.device
        self.params.copy_(torch.tensor([settings.temperature, settings.top_p, settings.top_k,
                                        settings.repetition_penalty]))
        seed = settings.seed if settings.seed is not None else random.getrandbits(32)
        self.rng.copy_(torch.tensor([seed & _M32, 0]))
        self.seen.zero_()
        self.seen[torch.tensor(prompt_ids, device=dev)] = True

    def _gumbel(self) -> torch.Tensor:
        key = _mix((_mix(self.rng[0]) + self.rng[1]) & _M32)
        u = (_mix((_mix(self.ids ^ key) + key) & _M32) >> 8).float().add_(0.5).mul_(2.0 ** -24)  # (0, 1)
        return -torch.log(-torch.log(u))

    def __call__(self, logits: torch.Tensor, greedy_only: bool = False) -> torch.Tensor:
        """logits fp32 [1, V] -> next token [1]; marks it seen and advances the step."""
        temp, top_p, top_k, penalty = self.params.unbind()
        lg = logits[0]
        lg = torch.where(self.seen, torch.where(lg < 0, lg * penalty, lg / penalty), lg)
        tok = lg.argmax()
        if not greedy_only:  # graphs always take this branch; greedy wins below when temperature is 0
            scores, order = torch.sort(lg / torch.where(temp > 0, temp, 1.0), descending=True)
            k = top_k.long()
            k = torch.where((k > 0) & (k < self.vocab), k, self.vocab)
            scores = scores.masked_fill(scores < scores.gather(0, (k - 1).view(1)), float("-inf"))
            p = scores.softmax(-1)
            # transformers drops the tail whose ascending cumulative mass is <= 1 - top_p, i.e. every token
            # whose higher-ranked mass (exclusive cumsum) is >= top_p; rank 0 always stays.
            scores = scores.masked_fill(p.cumsum(-1) - p >= top_p, float("-inf"))
            pick = order.gather(0, (scores + self._gumbel()).argmax().view(1))  # gather: no host sync in graphs
            tok = torch.where(temp > 0, pick, tok.view(1))
        tok = tok.view(1)
        self.seen.index_fill_(0, tok, True)
        self.rng[1] += 1
        return tok

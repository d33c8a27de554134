"""Token choice on the device, with no host sync: repetition penalty, temperature, top-k, top-p, seeded sampling.

Same semantics and order as transformers' generate (RepetitionPenalty, then Temperature, TopK, TopP warpers).
All settings live in device tensors, so one captured CUDA graph serves every setting. The random numbers come from
a counter-based hash of (seed, step, vocab id): graph-safe, reproducible for a seed, identical on CPU and CUDA.
"""

from __future__ import annotations

import random

import torch

from ..kernels import nucleus

_M32 = 0xFFFFFFFF
CAP = 1024  # candidates scored by the eager shortcut
HOSTS = 4  # host slots the graphed step writes its token to, in turn (more than a decode loop queues)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit avalanche hash on int64 holding [0, 2**32); multipliers < 2**31 keep products inside int64."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & _M32
    return x ^ (x >> 16)


def seed32(seed: int) -> int:
    """The 32 bits a sampling stream is seeded with, from a seed of up to 63: a seed under 2**32 as it is, a larger
    one's high bits mixed into its low ones (they were dropped: seeds 0, 2**32 and 2**33 gave the same reply)."""
    low, high = seed & _M32, seed >> 32
    return low ^ int(_mix(_mix(torch.tensor(high)))) if high else low


class Sampler:
    def __init__(self, vocab: int, device):
        self.vocab = vocab
        self.params = torch.zeros(4, device=device)  # temperature, top_p, top_k, repetition_penalty
        self.rng = torch.zeros(2, dtype=torch.long, device=device)  # seed, step
        self.seen = torch.zeros(vocab, dtype=torch.bool, device=device)  # ids in prompt + output
        self.ids = torch.arange(vocab, device=device)
        self.fused = nucleus.available(self.seen)  # the graphed path as nucleus.sample's kernel (CUDA)
        self._work = None  # nucleus.Work, made on first use (before a graph's capture: its warm-up step)
        # CUDA: step's token also lands in pinned host memory, slot rng[1] % HOSTS (nucleus.sample): a decode loop
        # reads it there once the step's event has passed (Sampler.posted), with no copy launched after each step
        self.host = torch.zeros(HOSTS, dtype=torch.long, pin_memory=True) if self.fused else None

    def reset(self, settings, prompt_ids: list[int]) -> None:
        """Load one request's settings and the prompt's ids (host -> device copies, before the first step)."""
        dev = self.params.device
        # top_k from the vocabulary up is off either way; capped, it stays exact in float32 and in the kernel's int32
        top_k = min(settings.top_k, self.vocab)
        self.params.copy_(torch.tensor([settings.temperature, settings.top_p, top_k, settings.repetition_penalty]))
        seed = settings.seed if settings.seed is not None else random.getrandbits(32)
        self.rng.copy_(torch.tensor([seed32(seed), 0]))
        self.seen.zero_()
        self.seen[torch.tensor(prompt_ids, device=dev)] = True

    def _gumbel(self, ids: torch.Tensor) -> torch.Tensor:
        """Gumbel noise for vocab `ids` at this (seed, step): the same value for an id whichever candidates
        are scored, so the graph (all ids) and the CPU shortcut (top candidates) pick the same token."""
        key = _mix((_mix(self.rng[0]) + self.rng[1]) & _M32)
        # (0, 1) on 23 bits: on 24, the top one's (2**24 - 1 + 0.5) * 2**-24 rounds to 1.0 in float32, the noise
        # to +inf, and that token won whatever its score, past top-p and top-k too (-inf + inf: NaN, argmax's
        # pick): one token in ~2**24 / V, a junk word in most long replies
        u = (_mix((_mix(ids ^ key) + key) & _M32) >> 9).float().add_(0.5).mul_(2.0**-23)
        return -torch.log(-torch.log(u))

    def step(self, logits: torch.Tensor, out: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """The graphed choice: logits [1, V] -> the next token written into `out` [1], no host sync; `pos` (the
        step's position [1]), if given, advanced by one. On CUDA with Triton it runs as nucleus.sample's one launch
        (logits fp32 or in the model's dtype, the position advanced in it); else the torch ops of `_choose` over a
        full sort (fp32 logits)."""
        if self.fused:
            nucleus.sample(logits, self.seen, self.params, self.rng, out, self.work(), self.host, pos)
            return out
        out.copy_(self._choose(logits, greedy=False, eager=False))
        if pos is not None:
            pos.add_(1)
        return out

    def step_rows(self, logits: torch.Tensor, tokens: torch.Tensor, out: torch.Tensor, greedy: bool) -> None:
        """The graphed choice for a speculative verify (nucleus kernels, CUDA): logits [T, V] of the rows fed
        `tokens` [T] -> out [T], row i chosen as `step` would choose it after rows < i chose tokens[1..i] (only
        then does row i count), all rows in one pass; the state is left as it is, so the step can be replayed (and
        warmed up): `commit` then records what was kept. greedy: temperature 0 (a graph of its own: no sort)."""
        nucleus.sample_rows(logits, tokens, self.seen, self.params, self.rng, out, greedy, self.work())

    def posted(self, step: int) -> int:
        """The token `step` chose (step: the reply's tokens before it, rng[1] as it ran) from the host slot it
        wrote; valid once that step's event has passed and until HOSTS more steps ran."""
        return int(self.host[step % HOSTS])

    def work(self) -> nucleus.Work:
        if self._work is None:
            self._work = nucleus.Work(self.vocab, self.seen.device)
        return self._work

    def commit(self, tokens: list[int]) -> None:
        """The tokens a verify step kept: mark them seen and advance the step counter past them."""
        self.seen[torch.tensor(tokens, device=self.seen.device)] = True
        self.rng[1] += len(tokens)

    def eager(self, logits: torch.Tensor, greedy: bool) -> torch.Tensor:
        """The same choice outside a graph: may read settings on the host to score only the top CAP candidates
        when that is exact (a full sort of the vocabulary costs ~4 ms on a small CPU). greedy: temperature is 0."""
        return self._choose(logits, greedy, eager=True)

    def _choose(self, logits: torch.Tensor, greedy: bool, eager: bool) -> torch.Tensor:
        """Marks the token seen and advances the step."""
        temp, top_p, top_k, penalty = self.params.unbind()
        lg = logits[0]
        lg = torch.where(self.seen, torch.where(lg < 0, lg * penalty, lg / penalty), lg)
        tok = lg.argmax().view(1)
        if not greedy:  # graphs always take this branch; greedy wins below when temperature is 0
            scaled = lg / torch.where(temp > 0, temp, 1.0)
            picked = self._top_candidates(scaled) if eager else None
            if picked is None:
                picked = self._pick(*torch.sort(scaled, descending=True, stable=True), None)  # ties: lower ids first
            tok = torch.where(temp > 0, picked, tok)
        self.seen.index_fill_(0, tok, True)
        self.rng[1] += 1
        return tok

    def _pick(self, scores: torch.Tensor, order: torch.Tensor, lse: torch.Tensor | None) -> torch.Tensor:
        """scores sorted descending with their ids `order`; lse normalizes them when they are a truncated list."""
        _, top_p, top_k, _ = self.params.unbind()
        k = top_k.long()
        k = torch.where((k > 0) & (k < scores.shape[0]), k, scores.shape[0])
        scores = scores.masked_fill(scores < scores.gather(0, (k - 1).view(1)), float("-inf"))
        p = scores.softmax(-1) if lse is None else (scores - lse).exp()
        # transformers drops the tail whose ascending cumulative mass is <= 1 - top_p, i.e. every token whose
        # higher-ranked mass (exclusive cumsum) is >= top_p; rank 0 always stays.
        scores = scores.masked_fill(p.cumsum(-1) - p >= top_p, float("-inf"))
        return order.gather(0, (scores + self._gumbel(order)).argmax().view(1))  # gather: no host sync in graphs

    def _top_candidates(self, scaled: torch.Tensor) -> torch.Tensor | None:
        """The same choice from the top CAP scores, or None when tokens past them could still be kept."""
        cap = min(CAP, self.vocab)
        top_p, top_k = float(self.params[1]), int(self.params[2])
        if top_k > cap or cap == self.vocab:
            return None
        scores, order = scaled.topk(cap)
        if top_k > 0:
            return self._pick(scores, order, None)  # top-k keeps only candidates: softmax over them is exact
        # logsumexp's exp is ~10x slower on scores far below the maximum (x86, the demo's 49152 ids at temperature
        # 0.2: 0.9 ms instead of 60 µs a token); clamped at -87 (exp: the smallest normal float) they still add
        # nothing to a sum >= 1, and the ops are logsumexp's own (max, subtract, exp, sum, log, add)
        top = scores[0]
        lse = top + (scaled - top).clamp_(min=-87.0).exp_().sum().log_()
        if float((scores - lse).exp().sum()) < top_p:
            return None
        return self._pick(scores, order, lse)

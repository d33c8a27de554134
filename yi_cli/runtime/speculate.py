"""Prompt-lookup speculative decoding: drafts from the context itself, verified in one forward, lossless.

Drafting. A chat reply often copies spans of its context (a document it edits, summarises or quotes; code; names;
its own earlier turns). `Lookup` indexes every n-gram (n = 1..N_MAX) of prompt + reply by the position that
followed its latest occurrence; a step looks up the context's last n tokens, longest n first, and proposes the k
tokens that followed. No match: no draft, and the step is a plain decode step (no extra cost). `Adapt` tunes k and
the shortest n it trusts: k from the recent acceptance rate and what a verify of k + 1 rows costs on this machine
(`Costs`, timed as the reply goes), and a run of wasted drafts demands longer matches.

Verifying. The verify step feeds [t, d1..dk] at positions p..p+k in one forward (k + 1 rows read the weights
once) and gets the target's logits for every row. Row i is then chosen exactly as a plain decode step would choose
it after d1..di: repetition penalty over prompt + reply + d1..di, temperature, top-k, top-p, and the seeded
Gumbel-max noise of step s + i (sampling.py). `accept` keeps the drafts up to the first row whose choice differs
from the draft, plus that row's choice (all k matched: plus row k's choice, a bonus token).

Why this is the standard speculative-sampling rule. A lookup draft is a point mass q = δ_d. The rule (Leviathan et
al. 2023; Chen et al. 2023) accepts d with probability min(1, p(d)/q(d)) = p(d), with p the target's processed
distribution, and on rejection samples from norm(max(0, p - q)) = p with d removed and renormalised. Gumbel-max
picks argmax_v (s_v + g_v) with g i.i.d. Gumbel, which is d with probability p(d); given that it is not d, it is the
argmax over the other ids, distributed as p restricted to them and renormalised. So comparing the sampler's own
choice with the draft accepts with p(d) and, on rejection, draws from the residual: the rule, with the target's
noise shared between draft check and residual draw. Since the noise of a step depends only on (seed, step, id),
the tokens are also the very tokens decoding without speculation picks for the same seed (and, greedy, the same
argmax) whenever the verify forward computes the same logits — bit for bit on CPU (llama.FastLlama.verify).
"""

from __future__ import annotations

from collections.abc import Callable

K_MAX = 7  # drafts per verify: k + 1 <= 8 rows, where the int4 kernels still cost about one row
K_START = 4
N_MAX = 4  # longest n-gram matched
N_MIN = 1
MISS_LIMIT = 3  # drafts rejected outright in a row before the shortest trusted match grows by one
PRIOR_HITS, PRIOR_TRIALS = 3.0, 4.0  # before any draft: a = 0.75
DECAY = 0.7  # weight of the earlier outcomes at each verify
PROBE = 8  # plain steps between tries when no draft pays (a wasted 2-row verify every 8 steps: ~3% on the H200)


class Lookup:
    """An n-gram index over the context ids: n-gram -> the position after its latest occurrence."""

    def __init__(self, ids: list[int]):
        self.ids: list[int] = []
        self.index: list[dict] = [{} for _ in range(N_MAX + 1)]  # by n; index[0] unused
        for t in ids:
            self.append(t)

    def append(self, tok: int) -> None:
        ids = self.ids
        ids.append(tok)
        end = len(ids) - 1  # the n-grams that end just before `tok` are now followed by it
        for n in range(1, min(N_MAX, end) + 1):
            self.index[n][tuple(ids[end - n : end])] = end

    def draft(self, k: int, n_min: int = N_MIN) -> list[int]:
        """Up to k tokens that followed the latest earlier occurrence of the longest matching suffix (>= n_min)."""
        ids = self.ids
        for n in range(min(N_MAX, len(ids)), n_min - 1, -1):
            at = self.index[n].get(tuple(ids[len(ids) - n :]))
            if at is not None:
                return ids[at : at + k]
        return []


class Adapt:
    """Draft length k and the shortest trusted match n_min from the outcome of recent drafts and the cost of a
    verify. Each kept draft token is a success and a rejected one a failure of a coin with probability a (recent
    outcomes weigh most); k drafts then yield 1 + a + ... + a^k tokens for one verify of k + 1 rows, whose cost
    in decode steps (`cost(rows)`, e.g. `Costs.ratio`) grows with the rows on a CPU and in steps on CUDA: k is
    the one with the most tokens per unit of cost, 0 (no draft) when none beats a plain step. A run of wasted
    drafts demands longer matches."""

    def __init__(self, cost: Callable[[int], float] = lambda rows: 1.0):
        self.k, self.n_min, self.misses, self.idle = K_START, N_MIN, 0, 0
        self.cost = cost
        self.hits, self.trials = PRIOR_HITS, PRIOR_TRIALS

    def update(self, drafted: int, accepted: int) -> None:
        self.hits = DECAY * self.hits + accepted
        self.trials = DECAY * self.trials + accepted + (accepted < drafted)
        a = min(self.hits / self.trials, 0.999)
        # k = 0 (a plain step: 1 token for 1 step) when no draft is worth its verify; then plain() probes again
        self.k = max(range(K_MAX + 1), key=lambda k: (1 - a ** (k + 1)) / (1 - a) / (self.cost(k + 1) if k else 1.0))
        self.idle = 0
        if accepted == 0:
            self.misses += 1
            if self.misses >= MISS_LIMIT:
                self.n_min, self.misses = min(N_MAX, self.n_min + 1), 0
        else:
            self.misses = 0
            if accepted == drafted:
                self.n_min = max(N_MIN, self.n_min - 1)

    def plain(self) -> None:
        """A step without drafts. After PROBE of them with k = 0, one draft is tried again: the text may have
        turned to copying (a quote, a list it restates)."""
        self.idle += 1
        if self.k == 0 and self.idle >= PROBE:
            self.k = 1


class Costs:
    """Seconds per forward by its rows (1: a plain decode step), averaged as a reply goes, starting from `prior`
    (rows -> cost in decode steps, as scripts/bench_speculate.py measures it): the speculation pays for what this
    machine, under its present load, and this model charge. Timing only chooses how many drafts to make, so it
    is on (`timed`) only where the tokens are the same whatever it measures; otherwise the prior stands."""

    def __init__(self, prior: dict[int, float], bucket: Callable[[int], int] = lambda rows: rows, timed: bool = True):
        self.prior, self.bucket, self.timed = sorted({1: 1.0, **prior}.items()), bucket, timed
        self.seconds: dict[int, float] = {}

    def _bucket(self, rows: int) -> int:
        return 1 if rows == 1 else self.bucket(rows)  # the rows a verify of `rows` tokens runs; 1: a decode step

    def observe(self, rows: int, seconds: float) -> None:
        if not self.timed:
            return
        b = self._bucket(rows)
        old = self.seconds.get(b)
        self.seconds[b] = seconds if old is None else old + (seconds - old) * 0.2

    def ratio(self, rows: int) -> float:
        """A forward of `rows` rows in decode steps: timed where both were, else the prior (interpolated)."""
        b = self._bucket(rows)
        if b in self.seconds and 1 in self.seconds:
            return self.seconds[b] / self.seconds[1]
        for (r0, c0), (r1, c1) in zip(self.prior, self.prior[1:], strict=False):
            if b <= r1:
                return c0 + (c1 - c0) * (b - r0) / (r1 - r0)
        (r0, c0), (r1, c1) = self.prior[-2:]
        return c1 + (c1 - c0) * (b - r1) / (r1 - r0)


def accept(drafts: list[int], choose: Callable[[int], int]) -> list[int]:
    """The tokens a verify step emits: choose(i) is the sampler's choice for row i (rows are asked in order, and
    only while every earlier draft was chosen); the drafts up to the first disagreement, then that row's choice."""
    out = []
    for i, d in enumerate(drafts):
        c = choose(i)
        out.append(c)
        if c != d:
            return out
    out.append(choose(len(drafts)))
    return out

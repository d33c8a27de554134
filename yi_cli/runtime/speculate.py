"""Prompt-lookup speculative decoding: drafts from the context itself, verified in one forward, lossless.

Drafting. A chat reply often copies spans of its context (a document it edits, summarises or quotes; code; names;
its own earlier turns). `Lookup` indexes every n-gram (n = 1..N_MAX) of prompt + reply by the position that
followed its latest occurrence; a step looks up the context's last n tokens, longest n first, and proposes the k
tokens that followed. No match: no draft, and the step is a plain decode step (no extra cost). `Adapt` picks k
from how long the match is (a reply that has copied 8 tokens in a row keeps copying far more often than one whose
last token merely occurs earlier), the acceptance this reply's drafts met at each match length, and what a verify
of k + 1 rows costs on this machine (`Costs`, timed as the reply goes).

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
N_MAX = 4  # longest n-gram indexed
RUN_MAX = 8  # matched runs longer than this share one acceptance rate
# P(the next draft is kept | the context's last n tokens match those before its source), n = 1..RUN_MAX: the
# demo model's replies to chat and document prompts (temperature 0 and 0.2; BENCHMARKS.md, issue 17): one matching
# token predicts little (~0.25), a run of 5+ copied tokens a lot (~0.85-0.95). Each kept draft lengthens the run.
PRIOR_RATE = (0.25, 0.5, 0.6, 0.7, 0.8, 0.85, 0.85, 0.9)
PRIOR_TRIALS = 4.0  # weight of the prior, in drafted tokens
DECAY = 0.9  # weight of a run length's earlier outcomes at each of its new ones
PROBE = 8  # matches passed over (no draft paid) before one draft is tried anyway: the rates can recover


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

    def draft(self, k: int) -> tuple[list[int], int]:
        """(up to k tokens that followed the latest earlier occurrence of the longest matching suffix, the run:
        how many tokens before that occurrence match the context's last ones, up to RUN_MAX); ([], 0): none."""
        ids = self.ids
        end = len(ids)
        for n in range(min(N_MAX, end), 0, -1):
            at = self.index[n].get(tuple(ids[end - n :]))
            if at is not None:
                while n < min(RUN_MAX, at) and ids[at - 1 - n] == ids[end - 1 - n]:
                    n += 1
                return ids[at : at + k], n
        return [], 0


class Adapt:
    """How many of a lookup's drafts to verify. Each run length n (1..RUN_MAX) has its acceptance rate r(n),
    from PRIOR_RATE and the outcomes of this reply's drafts (recent ones weigh most); draft i after a run of n is
    kept with probability r(n)·r(n+1)·…·r(n+i-1), as each kept draft lengthens the run. A verify of k + 1 rows
    costs `cost(k + 1)` decode steps (e.g. `Costs.ratio`), plus `head` steps for each kept draft (the CPU
    computes a row's logits only once the draft before it is kept); k is the one with the most tokens per unit of
    cost, 0 (a plain step) when none beats one token per step."""

    def __init__(self, cost: Callable[[int], float] = lambda rows: 1.0, head: float = 0.0):
        self.cost, self.head = cost, head
        self.hits = [PRIOR_TRIALS * r for r in PRIOR_RATE]
        self.trials = [PRIOR_TRIALS] * RUN_MAX
        self.passed = 0  # matches passed over in a row

    def rate(self, run: int) -> float:
        i = min(run, RUN_MAX) - 1
        return self.hits[i] / self.trials[i]

    def k(self, run: int, most: int = K_MAX) -> int:
        """Drafts to verify after a match of `run` tokens, at most `most`."""
        best, k, p, tokens = 1.0, 0, 1.0, 1.0
        for i in range(1, most + 1):
            p *= self.rate(run + i - 1)
            tokens += p
            value = tokens / (self.cost(i + 1) + self.head * (tokens - 1))
            if value > best:
                best, k = value, i
        if k == 0 and most > 0:
            self.passed += 1
            if self.passed >= PROBE:  # the rates only learn from drafts: try one now and then
                self.passed, k = 0, 1
        return k

    def update(self, run: int, drafted: int, kept: int) -> None:
        """A verify of `drafted` drafts after a match of `run` tokens kept `kept`: drafts 1..kept were kept at runs
        run..run + kept - 1, and the next one (if any) rejected at run + kept."""
        self.passed = 0
        for i in range(min(kept + 1, drafted)):
            j = min(run + i, RUN_MAX) - 1
            self.hits[j] = DECAY * self.hits[j] + (i < kept)
            self.trials[j] = DECAY * self.trials[j] + 1


class Costs:
    """Seconds per forward by its rows (1: a plain decode step), averaged as a reply goes, starting from `prior`
    (rows -> cost in decode steps, as scripts/bench_speculate.py measures it): the speculation pays for what this
    machine, under its present load, and this model charge. `head`: what one more row's logits cost, in decode
    steps, where a verify computes them only for rows it reaches (the CPU); ratio(rows) is a verify with one row's.
    Timing only chooses how many drafts to make, so it is on (`timed`) only where the tokens are the same whatever
    it measures; otherwise the prior stands."""

    def __init__(
        self,
        prior: dict[int, float],
        bucket: Callable[[int], int] = lambda rows: rows,
        timed: bool = True,
        head: float = 0.0,
    ):
        self.prior, self.bucket, self.timed, self.head = sorted({1: 1.0, **prior}.items()), bucket, timed, head
        self.seconds: dict[int, float] = {}

    def _bucket(self, rows: int) -> int:
        return 1 if rows == 1 else self.bucket(rows)  # the rows a verify of `rows` tokens runs; 1: a decode step

    def observe(self, rows: int, seconds: float, logits: int = 1) -> None:
        """A forward of `rows` rows took `seconds`, `logits` rows' logits included (the ones past the first are
        taken off at `head` steps each)."""
        if not self.timed:
            return
        if logits > 1:
            if 1 not in self.seconds:
                return  # no step timed yet to price those logits in
            seconds -= (logits - 1) * self.head * self.seconds[1]
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

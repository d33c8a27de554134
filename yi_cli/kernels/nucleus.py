"""The sampler's graphed step on CUDA in one launch, with no sort (for the T rows of a speculative verify, the same
programs for every row at once, or one argmax launch when greedy).

sampling.Sampler spells a step as ~25 torch ops over the vocabulary around a full sort (penalty, temperature, sort,
top-k, softmax, cumsum, the Gumbel hash, argmax); a sort of Yi's 64000 scores alone is 11 launches. The choice
needs no order, only which ids the sorted walk keeps: Gumbel-max over the kept ids, and the kept ids are a prefix
of the order (score descending, ties by id, as a stable sort). So `_sample` finds the winner by rejection:
  - w = the id of highest v = s + gumbel(id) among the candidates (all ids; top-k: those scoring >= the k-th);
  - w is kept when the mass ranked before it (higher s, or the same s and a lower id) is < top_p of the
    candidates' mass: then no kept id has a higher v, and w is the choice;
  - else no id from w on in the order is kept: the candidates shrink to the ids ranked before w, and again.
The first candidate is kept unless the nucleus misses it (flat scores at top_p 0.8: ~1 time in 5), each rejection
drops at least the ids from w on, so a step takes 1 or 2 rounds, ~log2(V / nucleus) at worst in expectation (the
noise is independent of the order). top-k's k-th score is bisected 17 ways a round (in score, then in int key).
Each row's ids are split among NCTA programs (a program an SM, all resident); a round is one pass over the
program's ids in registers, its partial results (sums, maxima, the best candidate) in a slot of its own in F / I,
then a barrier (an atomic counter), after which every program reduces all programs' slots in the same fixed order:
the same bits on every program, every run. The Yi-6B AWQ step: 1565 -> 1478 µs (BENCHMARKS.md).
Same choice as Sampler's full-sort path: the same scores, noise and tests, tl.log as torch's CUDA log; the masses
are summed in another order, so where the mass before an id lies within rounding of top_p the two may differ (not
seen in 3000 steps against the sort-based kernel it replaced, BENCHMARKS.md).
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

BLOCK = 4096  # vocabulary ids a program of _sample takes (at least), and a chunk of _argmax's walk
CTAS = 32  # programs a row of _sample at most
WARPS = 16
ROWS = 8  # rows a launch chooses at most: a speculative verify's (gemv_mma.MAX_X)
SLOTS = 80  # rounds a row may take (in practice 2 or 3; the rejection rounds stop at the last slot)


def available(x: torch.Tensor) -> bool:
    return triton is not None and x.is_cuda


if triton is not None:

    @triton.jit
    def _mix(x):
        """sampling._mix on uint32."""
        x = x ^ (x >> 16)
        x = x * 0x7FEB352D
        x = x ^ (x >> 15)
        x = x * 0x2C1B3C6D
        return x ^ (x >> 16)

    @triton.jit
    def _penalized(L, SEEN, TOK, PRM, offs, m, t):
        """Row t's logits at offs with the repetition penalty over `seen` plus TOK[1..t]: a verify row's sampler
        has seen the drafts before it (it only counts if the rows before it chose them)."""
        lg = tl.load(L + offs, mask=m, other=0.0).to(tl.float32)  # fp32, bf16 or fp16 logits: the same scores
        seen = tl.load(SEEN + offs, mask=m, other=0).to(tl.int1)
        for i in range(1, t + 1):
            seen = seen | (offs == tl.load(TOK + i))
        pen = tl.load(PRM + 3)
        return tl.where(seen, tl.where(lg < 0, lg * pen, tl.math.div_rn(lg, pen)), lg)

    @triton.jit
    def _argmax(L, SEEN, TOK, PRM, OUT, V, BLOCK: tl.constexpr):
        """Greedy rows: OUT[t] = the first maximum of row t's penalized logits, the token the sort-based pick
        takes at temperature 0 (its stable descending sort puts the first maximum first)."""
        t = tl.program_id(0)
        best = -float("inf")
        best_i = 0
        for c in range(0, V, BLOCK):
            offs = c + tl.arange(0, BLOCK)
            m = offs < V
            lg = tl.where(m, _penalized(L + t * V, SEEN, TOK, PRM, offs, m, t), -float("inf"))
            bv = tl.max(lg, 0)
            if bv > best:  # strictly: the first maximum wins
                best = bv
                best_i = c + tl.argmax(lg, 0)
        tl.store(OUT + t, best_i)

    @triton.jit
    def _mono(x):
        """fp32 -> int32 in the same order (x without -0.0: see _sample)."""
        return _flip(x.to(tl.int32, bitcast=True))

    @triton.jit
    def _flip(b):
        """A float's bits <-> its int32 key (_mono): negative floats' magnitude bits flipped; its own inverse."""
        return b ^ ((b >> 31) & 0x7FFFFFFF)

    @triton.jit
    def _best(v, s, offs, cand):
        """The candidate that the sorted walk meets first among those of highest v: max v, then max s, then the
        lowest id, as (its composite key v·2^32 + s, its id); (-2^63 + 1, 2^31 - 1) where no id is a candidate."""
        c = (_mono(v).to(tl.int64) << 32) + (_mono(s).to(tl.int64) + 2147483648)
        c = tl.where(cand, c, -9223372036854775807)
        cm = tl.max(c, 0)
        return cm, tl.min(tl.where(cand & (c == cm), offs, 2147483647), 0)

    @triton.jit
    def _sync(CNT, target):
        """A barrier of the row's programs (all resident: sample's grid is small): the target-th arrival."""
        tl.debug_barrier()  # every thread's stores before the release
        n = tl.atomic_add(CNT, 1, sem="acq_rel", scope="gpu") + 1
        while n < target:
            n = tl.atomic_add(CNT, 0, sem="acquire", scope="gpu")

    @triton.jit
    def _publish(IS, cm, ci, NP: tl.constexpr):
        """This program's best candidate (_best) into its slot IS of the round."""
        cta = tl.program_id(0)
        tl.store(IS + cta, cm)
        tl.store(IS + NP + cta, ci.to(tl.int64))

    @triton.jit
    def _gather(IS, NCTA: tl.constexpr, NP: tl.constexpr):
        """The row's best candidate from the programs' slots: (id, its s)."""
        ctas = tl.arange(0, NP)
        cs = tl.load(IS + ctas, mask=ctas < NCTA, other=-9223372036854775807, cache_modifier=".cg")
        ids = tl.load(IS + NP + ctas, mask=ctas < NCTA, other=2147483647, cache_modifier=".cg")
        cm = tl.max(cs, 0)
        w = tl.min(tl.where(cs == cm, ids, 2147483647), 0).to(tl.int32)
        m = ((cm & 0xFFFFFFFF) - 2147483648).to(tl.int32)
        return w, _flip(m).to(tl.float32, bitcast=True)

    @triton.jit
    def _round(FS, IS, CNT, target, mask, e, v, s, offs, NCTA: tl.constexpr, NP: tl.constexpr):
        """A round over the ids in `mask`: this program's mass of them (FS) and best candidate (IS) published, then
        after the barrier the row's: (mass, best id, its s)."""
        tl.store(FS + tl.program_id(0), tl.sum(tl.where(mask, e, 0.0), 0))
        cm, ci = _best(v, s, offs, mask)
        _publish(IS, cm, ci, NP)
        _sync(CNT, target)
        w, sw = _gather(IS, NCTA, NP)
        return _total(FS, NCTA, NP), w, sw

    @triton.jit
    def _total(FS, NCTA: tl.constexpr, NP: tl.constexpr):
        """The row's sum of the programs' partial sums in slot FS, added in the same order on every program."""
        ctas = tl.arange(0, NP)
        return tl.sum(tl.load(FS + ctas, mask=ctas < NCTA, other=0.0, cache_modifier=".cg"), 0)

    @triton.jit
    def _sample(
        L,
        SEEN,
        TOK,
        PRM,
        RNG,
        OUT,
        FW,
        IW,
        SYNC,
        HOST,
        POS,
        V,
        ROW0,
        NCTA: tl.constexpr,
        NP: tl.constexpr,
        BLOCK: tl.constexpr,
        SLOTS: tl.constexpr,
        UPDATE: tl.constexpr,
        HOSTS: tl.constexpr,
        BUMP: tl.constexpr,
    ):
        """Row program_id(1)'s choice over its ids [program_id(0)·BLOCK, +BLOCK), NCTA programs a row meeting at
        barriers, each round's partial results in its own slot of F / I: see the module's docstring."""
        cta, row = tl.program_id(0), ROW0 + tl.program_id(1)
        offs = cta * BLOCK + tl.arange(0, BLOCK)
        valid = offs < V
        temp, top_p, top_k = tl.load(PRM), tl.load(PRM + 1), tl.load(PRM + 2)
        # the scores of Sampler._choose (+ 0.0: -0.0 becomes 0.0, so the int order of _mono is the float order)
        s = tl.math.div_rn(_penalized(L + row * V, SEEN, TOK, PRM, offs, valid, row), tl.where(temp > 0, temp, 1.0))
        s = s + 0.0
        seed, step = tl.load(RNG).to(tl.uint32), (tl.load(RNG + 1) + row).to(tl.uint32)
        key = _mix(_mix(seed) + step)
        u = ((_mix(_mix(offs.to(tl.uint32) ^ key) + key) >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07  # 2**-23
        v = tl.where(temp > 0, s - tl.log(-tl.log(u)), s)  # Gumbel-max (greedy: the first maximum of s)
        FR = FW + row * (SLOTS * 4 * NP)  # slot r: fields [4, NP] of F, [18, NP] of I
        IR = IW + row * (SLOTS * 18 * NP)
        CNT = SYNC + 2 * row
        # round 0: each program's max, min, sum of exp(s - max) and first candidate over all ids
        m_c = tl.max(tl.where(valid, s, -float("inf")), 0)
        tl.store(FR + cta, m_c)
        tl.store(FR + NP + cta, tl.sum(tl.where(valid, tl.exp(s - m_c), 0.0), 0))
        tl.store(FR + 2 * NP + cta, tl.min(tl.where(valid, s, float("inf")), 0))
        cm, ci = _best(v, s, offs, valid)
        _publish(IR, cm, ci, NP)
        _sync(CNT, NCTA)
        ctas = tl.arange(0, NP)
        ms = tl.load(FR + ctas, mask=ctas < NCTA, other=-float("inf"), cache_modifier=".cg")
        s0 = tl.max(ms, 0)
        zs = tl.load(FR + NP + ctas, mask=ctas < NCTA, other=0.0, cache_modifier=".cg")
        z_all = tl.sum(zs * tl.exp(ms - s0), 0)
        smin = tl.min(tl.load(FR + 2 * NP + ctas, mask=ctas < NCTA, other=float("inf"), cache_modifier=".cg"), 0)
        w, sw = _gather(IR, NCTA, NP)
        e = tl.exp(s - s0)
        cand = valid
        r = 1
        k = top_k.to(tl.int32)
        if (temp > 0) & (k > 0) & (k < V):
            # top-k: the k-th highest score's int key, bisected 17 ways a round (counts of keys >= 16 bounds): the
            # first round's bounds evenly spaced in score (the k highest sit in the tail), the next ones in key (each
            # round a 17th of the keys left); done when the keys >= lo are exactly k (they are then the k highest,
            # ties and all) or one key is left
            mk = _mono(s)
            lo = _mono(smin).to(tl.int64)  # count(keys >= lo) = c_lo >= k > count(keys >= hi)
            hi = _mono(s0).to(tl.int64) + 1
            c_lo = V
            j16 = tl.arange(0, 16)
            while (hi - lo > 1) & (c_lo != k):
                if r == 1:
                    b = _mono(smin + (j16 + 1).to(tl.float32) * ((s0 - smin) / 17.0) + 0.0)
                else:
                    b = (lo + ((j16 + 1).to(tl.int64) * (hi - lo)) // 17).to(tl.int32)
                n = tl.sum(((mk[None, :] >= b[:, None]) & valid[None, :]).to(tl.int32), 1)
                IS = IR + r * (18 * NP)
                tl.store(IS + (2 + j16) * NP + cta, n.to(tl.int64))
                _sync(CNT, NCTA * (r + 1))
                tot = tl.sum(
                    tl.load(
                        IS + (2 + j16)[:, None] * NP + ctas[None, :],
                        mask=(ctas < NCTA)[None, :],
                        other=0,
                        cache_modifier=".cg",
                    ),
                    1,
                )
                ok = tot >= k  # any bounds are safe: one at or below lo counts >= k, one at or past hi < k
                lo = tl.maximum(lo, tl.max(tl.where(ok, b.to(tl.int64), lo), 0))
                hi = tl.minimum(hi, tl.min(tl.where(ok, hi, b.to(tl.int64)), 0))
                c_lo = tl.minimum(c_lo, tl.min(tl.where(ok, tot, V), 0).to(tl.int32))
                r += 1
            cand = valid & (mk.to(tl.int64) >= lo)  # scores >= the k-th: its ties stay, as masked_fill keeps them
            z_all, w, sw = _round(
                FR + r * (4 * NP), IR + r * (18 * NP), CNT, NCTA * (r + 1), cand, e, v, s, offs, NCTA, NP
            )
            r += 1
        # top-p by rejection: w (the highest v among the candidates) is kept when the mass ranked before it (higher
        # s, or the same s and a lower id: the stable sort's order) is < top_p; else every id from w on is dropped,
        # and the candidates shrink to those ranked before w
        done = temp <= 0
        while not done:
            before = cand & ((s > sw) | ((s == sw) & (offs < w)))
            ahead, w2, sw2 = _round(
                FR + r * (4 * NP), IR + r * (18 * NP), CNT, NCTA * (r + 1), before, e, v, s, offs, NCTA, NP
            )
            # none ahead: w ranks first (always kept). This also keeps w an id where NaN scores fail the test: a
            # next candidate exists only if some id ranks before w. The last slot ends it whatever the scores.
            if (ahead / z_all < top_p) | (ahead == 0) | (r >= SLOTS - 1):
                done = True
            else:
                w, sw, cand = w2, sw2, before
            r += 1
        if cta == 0:
            tl.store(OUT + row, w.to(tl.int64))
            if UPDATE:
                tl.store(SEEN + w, 1)
                tl.store(RNG + 1, step.to(tl.int64) + 1)
                if HOSTS > 0:  # also into pinned host memory, slot step % HOSTS: the host reads it with no copy
                    tl.store(HOST + step % HOSTS, w.to(tl.int64))
                if BUMP:  # the decode step's position, advanced here rather than by a launch of its own
                    tl.store(POS, tl.load(POS) + 1)
        if tl.atomic_add(CNT + 1, 1, sem="acq_rel", scope="gpu") == NCTA - 1:  # every program is past every barrier
            tl.atomic_xchg(CNT, 0, sem="relaxed", scope="gpu")
            tl.atomic_xchg(CNT + 1, 0, sem="relaxed", scope="gpu")


class Work:
    """sample's scratch for a vocabulary on a device: each round's partial results (F, I) and the rows' barrier
    counters (SYNC, back at 0 after every launch), allocated once: a captured graph holds their addresses."""

    def __init__(self, vocab: int, device):
        self.vocab = vocab
        self.sms = usable_sms(device)
        self.block, self.ctas = layout(vocab, self.sms)
        self.np = _pow2(self.ctas)
        self.f = torch.zeros(ROWS * SLOTS * 4 * self.np, dtype=torch.float32, device=device)
        self.i = torch.zeros(ROWS * SLOTS * 18 * self.np, dtype=torch.int64, device=device)
        self.sync = torch.zeros(2 * ROWS, dtype=torch.int32, device=device)

    def launch(self, logits, seen, tokens, params, rng, out, rows: int, update: bool, host=None, pos=None) -> None:
        """Rows [0, rows) of logits, in as few launches as hold every program of a launch on the SMs at once (a
        barrier needs every program of its row resident): the same programs for a row either way."""
        for row0, per in row_groups(rows, self.ctas, self.sms):
            _sample[(self.ctas, per)](
                logits,
                seen.view(torch.uint8),
                tokens,
                params,
                rng,
                out,
                self.f,
                self.i,
                self.sync,
                out if host is None else host,
                out if pos is None else pos,
                self.vocab,
                row0,
                NCTA=self.ctas,
                NP=self.np,
                BLOCK=self.block,
                SLOTS=SLOTS,
                UPDATE=update,
                HOSTS=0 if host is None else host.numel(),
                BUMP=pos is not None,
                num_warps=WARPS,
            )


def row_groups(rows: int, ctas: int, sms: int) -> list[tuple[int, int]]:
    """(first row, rows) of each launch for `rows` rows of `ctas` programs on `sms` SMs: as many rows a launch as
    fit at once. It was all rows in one launch or else one launch a row: on 108 SMs (an A100) a verify's 8 rows of
    16 programs took 8 launches where 2 hold them."""
    per = max(1, min(rows, sms // ctas))
    return [(r, min(per, rows - r)) for r in range(0, rows, per)]


def layout(vocab: int, sms: int) -> tuple[int, int]:
    """(ids a program takes, programs a row) for a GPU of `sms` SMs usable at once: BLOCK ids a program (more
    where that would make more than CTAS programs), never more programs than SMs, as every program of a row must
    be resident to pass its barriers and one program always fits an SM (512 threads of at most 128 registers)."""
    ctas = max(1, min(CTAS, sms, -(-vocab // BLOCK)))
    block = max(BLOCK, _pow2(-(-vocab // ctas)))
    return block, -(-vocab // block)


def usable_sms(device, env=os.environ) -> int:
    """The SMs this process's kernels may hold at once: the device's, or under MPS the share that
    CUDA_MPS_ACTIVE_THREAD_PERCENTAGE grants (rounded down); 1 in Triton's interpreter, which runs programs one
    after another."""
    if env.get("TRITON_INTERPRET") == "1" or torch.device(device).type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return mps_share(sms, env.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", ""))


def mps_share(sms: int, percentage: str) -> int:
    try:
        share = float(percentage)
    except ValueError:
        return sms
    return max(1, int(sms * share / 100)) if 0 < share < 100 else sms


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def sample(
    logits: torch.Tensor,
    seen: torch.Tensor,
    params: torch.Tensor,
    rng: torch.Tensor,
    out: torch.Tensor,
    work: Work,
    host: torch.Tensor | None = None,
    pos: torch.Tensor | None = None,
) -> None:
    """Sampler's step for logits [1, V] (fp32, or bf16 / fp16 read as fp32): the token into out [1], `seen` and
    `rng` updated; one launch. With `host` (pinned int64 [H]) the token also goes to host[step % H], step = rng[1]
    before the call: a decode loop reads it once the step's event has passed, without a device-to-host copy after
    every step (~10 µs a token on the H200, BENCHMARKS.md). With `pos` (int64 [1], the step's position) it is
    advanced by one in the same launch."""
    work.launch(logits, seen, out, params, rng, out, 1, True, host, pos)


def sample_rows(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    seen: torch.Tensor,
    params: torch.Tensor,
    rng: torch.Tensor,
    out: torch.Tensor,
    greedy: bool,
    work: Work,
) -> None:
    """A speculative verify's choices for logits fp32 [T, V] fed `tokens` [T] (the last token, then the drafts):
    out[t] = what `sample` picks after rows < t chose tokens[1..t], i.e. with those ids seen and the step
    advanced by t; `seen` and `rng` are left as they are. sample's programs for each row, or with `greedy`
    (temperature 0) one launch: the penalized argmax."""
    t, v = logits.shape
    if greedy:
        _argmax[(t,)](logits, seen.view(torch.uint8), tokens, params, out, v, BLOCK=BLOCK, num_warps=16)
        return
    work.launch(logits, seen, tokens, params, rng, out, t, False)

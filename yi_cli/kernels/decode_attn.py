"""Decode attention on CUDA for T query tokens at consecutive positions (a step, or a speculative verify's rows):
split-K over the KV cache, each program a partial softmax of its slots, then one merge program a query row: two
launches for all T tokens (where cuDNN's attention is one long serial kernel), each token's row the bits a
one-token step at its position gives.
"""

from __future__ import annotations

import torch

from .glue import _launch_pdl

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

# Up to SHORT slots attended (a chat's first few thousand tokens): one tile of SHORT_SPLIT slots a program, its cached
# slots loaded before the PDL wait, so they stream in while the qkv GEMV ends (scripts/bench_attention.py, H200, Yi-6B
# AWQ: 1610 us a step at 768 slots, against 1697 with 128-slot programs looping over 64 at a time, 1438 without any
# attention). At 4096 slots the tiles' programs (8 warps) lost to the looping kernel (1750 against 1726 us), and
# smaller ones (32 slots, 4 warps: 1672) made an 8-row verify cost 1.55 steps.
SHORT, SHORT_SPLIT, SHORT_WARPS = 2048, 64, 8
SPLIT = 128  # cache slots per decode-attention program, up to LONG slots attended
# Past LONG slots: fewer, longer programs, each streaming 1024 slots (512 KiB of K+V for Yi-6B) 128 at a time through
# a 2-stage software pipeline. The best of 48 configurations at 100K on the H200 (scripts/bench_long.py --sweep):
# 59 us a layer = 3.45 TB/s for Yi-6B (was 88 us with 256-slot programs, 64 slots a loop, 3 stages), 3.8 TB/s Yi-34B.
LONG_SPLIT, LONG = 1024, 32768
LONG_BLOCK, LONG_WARPS, LONG_STAGES = 128, 4, 2
MERGE_BLOCK = 64  # partial results combined per merge-loop iteration
TILE_MERGE = 64  # up to this many partials (8K slots) the merge loads them as one tile: no loop in a tiny kernel
# Warps of that one-tile merge: 2 (a step at 768 slots, H200: Yi-6B AWQ 1550.7 us against 1560.6 with 4 and 1583.3
# with 8; Yi-34B 6386.0 against 6400.2 and 6403.1; BENCHMARKS.md, thirteenth session)
MERGE_WARPS = 2
# A verify's tokens per short-attention program, by its rows (bench_attention.py's ttN: 2 rows cost 1805 us one token
# a program and 1854 two; 4 rows 1940 / 1898; 8 rows 2099 / 2050, and 2254 all 8 in one program; the looping kernel
# 1890 / 1934 / 2041 with a step 93 us slower; Yi-6B at 768 slots, H200)
VERIFY_TT = {2: 1, 4: 2, 8: 2}


if triton is not None:
    from .glue import _pdl_enter

    @triton.jit(do_not_specialize=["NS", "T"])
    def _attn_split(
        Q,
        KC,
        VC,
        POS,
        ACC,
        ML,
        S,
        R,
        NS,
        T,
        scale,
        RP: tl.constexpr,
        HD: tl.constexpr,
        SPLIT: tl.constexpr,
        BLOCK: tl.constexpr,
        PDL: tl.constexpr,
    ):
        """Partial softmax attention of the R query rows of token t for one KV head over cache slots
        [j·SPLIT, (j+1)·SPLIT), up to the token's own position. The T tokens' programs of one (head, split) are
        adjacent (t varies fastest), so their K/V tiles come from L2 after the first read."""
        if PDL:
            _pdl_enter()
        kv, t, j = tl.program_id(0) // T, tl.program_id(0) % T, tl.program_id(1)
        p = tl.load(POS + t)
        rows, d = tl.arange(0, RP), tl.arange(0, HD)
        q = tl.load(Q + ((kv * R + rows[:, None]) * T + t) * HD + d[None, :], mask=rows[:, None] < R, other=0.0)
        m_i = tl.full([RP], -float("inf"), tl.float32)
        l_i = tl.zeros([RP], tl.float32)
        acc = tl.zeros([RP, HD], tl.float32)
        for i in range(0, tl.minimum(SPLIT, p + 1 - j * SPLIT), BLOCK):  # no work past pos (a bucket's tail)
            n = j * SPLIT + i + tl.arange(0, BLOCK)
            ok = n <= p
            k = tl.load(KC + (kv * S + n[:, None]) * HD + d[None, :], mask=ok[:, None], other=0.0)
            v = tl.load(VC + (kv * S + n[:, None]) * HD + d[None, :], mask=ok[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k)) * scale
            s = tl.where(ok[None, :], s, -float("inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)
            w = tl.exp(s - m_safe[:, None])
            alpha = tl.exp(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(w, 1)
            acc = acc * alpha[:, None] + tl.dot(w.to(v.dtype), v)
            m_i = m_new
        base = ((t * (tl.num_programs(0) // T) + kv) * NS + j) * RP
        tl.store(ACC + (base + rows[:, None]) * HD + d[None, :], acc, mask=rows[:, None] < R)
        tl.store(ML + (base + rows) * 2, m_i)
        tl.store(ML + (base + rows) * 2 + 1, l_i)

    @triton.jit(do_not_specialize=["NS", "T"])
    def _attn_split_tile(
        Q,
        KC,
        VC,
        POS,
        ACC,
        ML,
        S,
        R,
        NS,
        T,
        scale,
        RP: tl.constexpr,
        HD: tl.constexpr,
        SPLIT: tl.constexpr,
        TT: tl.constexpr,
        PDL: tl.constexpr,
    ):
        """_attn_split's partials for cache slots [j·SPLIT, (j+1)·SPLIT) as one tile, for tokens
        [g·TT, (g+1)·TT) of the T at consecutive positions POS (a decode step: TT = 1; a verify's rows: TT of them
        a program, reading K and V once). Slots before the first token's position were written by earlier steps:
        they are loaded before the PDL wait; the tokens' own slots (written by the qkv GEMV just before) after it.
        A token's rows are computed by the same operations whatever T and TT are: slots past its position weigh
        exactly 0."""
        kv, j, grp = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        p0 = tl.load(POS)
        p_last = tl.load(POS + T - 1)
        rows, d = tl.arange(0, RP), tl.arange(0, HD)
        n = j * SPLIT + tl.arange(0, SPLIT)
        kvp = (kv * S + n[:, None]) * HD + d[None, :]
        old = (n < p0)[:, None]
        k = tl.load(KC + kvp, mask=old, other=0.0)
        v = tl.load(VC + kvp, mask=old, other=0.0)
        if PDL:
            _pdl_enter()
        new = ((n >= p0) & (n <= p_last))[:, None]
        k = tl.where(new, tl.load(KC + kvp, mask=new, other=0.0), k)
        v = tl.where(new, tl.load(VC + kvp, mask=new, other=0.0), v)
        for i in tl.static_range(TT):  # no branch on t < T: the tokens' loads and math interleave
            t = grp * TT + i
            live = t < T
            p = tl.load(POS + t, mask=live, other=-1)
            q = tl.load(
                Q + ((kv * R + rows[:, None]) * T + t) * HD + d[None, :], mask=(rows[:, None] < R) & live, other=0.0
            )
            s = tl.dot(q, tl.trans(k)) * scale
            s = tl.where((n <= p)[None, :], s, -float("inf"))
            m = tl.max(s, 1)
            w = tl.exp(s - tl.where(m == -float("inf"), 0.0, m)[:, None])
            acc = tl.dot(w.to(v.dtype), v)
            base = ((t * tl.num_programs(0) + kv) * NS + j) * RP
            tl.store(ACC + (base + rows[:, None]) * HD + d[None, :], acc, mask=(rows[:, None] < R) & live)
            tl.store(ML + (base + rows) * 2, m, mask=live)
            tl.store(ML + (base + rows) * 2 + 1, tl.sum(w, 1), mask=live)

    @triton.jit
    def _partials(kv, row, NKV, NS, T, RP: tl.constexpr):
        """Index of split 0's partial for query row `row` = g·T + t of KV head kv (ACC [T, NKV, NS, RP, HD])."""
        return ((row % T * NKV + kv) * NS) * RP + row // T

    @triton.jit(do_not_specialize=["NS", "T"])
    def _attn_merge_tile(
        ACC, ML, O, NKV, R, NS, T, RP: tl.constexpr, HD: tl.constexpr, NSP: tl.constexpr, PDL: tl.constexpr
    ):
        """Up to NSP partials of one query row in one tile (the short-context case: one load, no loop)."""
        if PDL:
            _pdl_enter()
        kv, r = tl.program_id(0), tl.program_id(1)
        j, d = tl.arange(0, NSP), tl.arange(0, HD)
        base = _partials(kv, r, NKV, NS, T, RP) + j * RP
        m = tl.load(ML + base * 2, mask=j < NS, other=-float("inf"))
        ln = tl.load(ML + base * 2 + 1, mask=j < NS, other=0.0)
        mx = tl.max(m, 0)
        w = tl.where(m == -float("inf"), 0.0, tl.exp(m - mx))
        acc = tl.load(ACC + base[:, None] * HD + d[None, :], mask=(j < NS)[:, None], other=0.0)
        o = tl.sum(acc * w[:, None], 0) / tl.sum(ln * w, 0)
        tl.store(O + (kv * R * T + r) * HD + d, o.to(O.dtype.element_ty))

    @triton.jit(do_not_specialize=["NS", "T"])
    def _attn_merge(ACC, ML, O, NKV, R, NS, T, RP: tl.constexpr, HD: tl.constexpr, BS: tl.constexpr, PDL: tl.constexpr):
        """Combine the NS partial softmaxes of one query row, BS at a time: a pass over the maxima, then one over
        the partial outputs (at 100K slots NS is ~400: one [NS, HD] tile would not fit in registers)."""
        if PDL:
            _pdl_enter()
        kv, r = tl.program_id(0), tl.program_id(1)
        first = _partials(kv, r, NKV, NS, T, RP)
        d = tl.arange(0, HD)
        mv = tl.full([BS], -float("inf"), tl.float32)
        for j0 in range(0, NS, BS):
            j = j0 + tl.arange(0, BS)
            mv = tl.maximum(mv, tl.load(ML + (first + j * RP) * 2, mask=j < NS, other=-float("inf")))
        mx = tl.max(mv, 0)  # finite: split 0 always holds slot 0
        o = tl.zeros([HD], tl.float32)
        lv = tl.zeros([BS], tl.float32)
        for j0 in range(0, NS, BS):
            j = j0 + tl.arange(0, BS)
            base = first + j * RP
            m = tl.load(ML + base * 2, mask=j < NS, other=-float("inf"))
            w = tl.where(m == -float("inf"), 0.0, tl.exp(m - mx))
            lv += tl.load(ML + base * 2 + 1, mask=j < NS, other=0.0) * w
            acc = tl.load(ACC + base[:, None] * HD + d[None, :], mask=(j < NS)[:, None], other=0.0)
            o += tl.sum(acc * w[:, None], 0)
        tl.store(O + (kv * R * T + r) * HD + d, (o / tl.sum(lv, 0)).to(O.dtype.element_ty))


def split_slots(length: int) -> int:
    """Cache slots per decode-attention program for a step attending to `length` slots."""
    return SHORT_SPLIT if length <= SHORT else SPLIT if length <= LONG else LONG_SPLIT


def decode_attention(
    qg: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, pos: torch.Tensor, length: int
) -> torch.Tensor:
    """T tokens at positions pos [T]: qg [1, KV, G·T, hd] (row g·T + t, as rope_cache folds them); token t
    attends to cache slots [0, pos[t]] (length >= max(pos) + 1, a graph bucket or the cache size). Split-K:
    programs each write a partial softmax of their slots for a token (up to SHORT slots: one tile, up to
    VERIFY_TT tokens a program, positions consecutive; past it KV·T x cdiv(length, split) looping programs), then
    one merge program per query row combines them: two launches for all T tokens (a speculative verify), and each
    token's partials are a one-token step's (same tile shapes, same split boundaries, same operations), so each row
    gets the bits decode attention at its own pos alone gives. Returns qg's shape."""
    _, n_kv, rows, hd = qg.shape
    t = pos.shape[0]
    r = rows // t  # query heads per KV head
    split = split_slots(length)
    ns = triton.cdiv(length, split)
    rp = max(16, triton.next_power_of_2(r))  # tl.dot needs 16 rows
    acc = torch.empty(t, n_kv, ns, rp, hd, dtype=torch.float32, device=qg.device)
    ml = torch.empty(t, n_kv, ns, rp, 2, dtype=torch.float32, device=qg.device)
    args = (qg, kc, vc, pos, acc, ml, kc.shape[2], r, ns, t, hd**-0.5)
    if length <= SHORT:  # positions consecutive (a step, a verify)
        tt = 1 if t == 1 else VERIFY_TT[triton.next_power_of_2(t)]
        _attn_split_tile[(n_kv, ns, triton.cdiv(t, tt))](
            *args, RP=rp, HD=hd, SPLIT=split, TT=tt, num_warps=SHORT_WARPS, **_launch_pdl(qg)
        )
    else:
        tune = (
            dict(BLOCK=64) if length <= LONG else dict(BLOCK=LONG_BLOCK, num_warps=LONG_WARPS, num_stages=LONG_STAGES)
        )
        _attn_split[(n_kv * t, ns)](*args, RP=rp, HD=hd, SPLIT=split, **tune, **_launch_pdl(qg))
    out = torch.empty_like(qg)
    if ns <= TILE_MERGE:  # one constant tile width: a single compiled kernel for every short bucket
        _attn_merge_tile[(n_kv, rows)](
            acc, ml, out, n_kv, r, ns, t, RP=rp, HD=hd, NSP=TILE_MERGE, num_warps=MERGE_WARPS, **_launch_pdl(qg)
        )
    else:
        _attn_merge[(n_kv, rows)](acc, ml, out, n_kv, r, ns, t, RP=rp, HD=hd, BS=MERGE_BLOCK, **_launch_pdl(qg))
    return out

"""Fused Triton kernels for the glue of a CUDA decode step, each with the torch ops it replaces as the fallback.

A graphed step spends more time in ~40 tiny elementwise kernels per layer (norms, rope, residuals, activation) and
in a general attention kernel than in its int4 matmuls (scripts/bench_parts.py). Here:
  add_rmsnorm   x += delta; h = RMSNorm(x)·w                    (1 kernel instead of ~9)
  embed_rmsnorm x = embed[ids]; h = RMSNorm(x)·w                (the embedding in the first norm's launch)
  rope_cache    rope(q), rope(k) -> cache, v -> cache, q folded  (1 instead of ~12)
  silu_mul      silu(gate)·up                                    (1 instead of 2)
  decode_attn   T query tokens, split-K over the cache           (2 instead of cuDNN's one long serial kernel)
  dequant_int4  tinygemm-packed codes -> W for prefill GEMMs       (1 instead of ~7 passes over W)
Roundings follow transformers' bf16 op order (each torch op rounds to the activation dtype).
"""

from __future__ import annotations

import os
from functools import cache

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch paths below run instead
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
NORM_WARPS = 16  # one program normalizes a row of D values: more warps, shorter latency
# A verify's tokens per short-attention program, by its rows (bench_attention.py's ttN: 2 rows cost 1805 us one token
# a program and 1854 two; 4 rows 1940 / 1898; 8 rows 2099 / 2050, and 2254 all 8 in one program; the looping kernel
# 1890 / 1934 / 2041 with a step 93 us slower; Yi-6B at 768 slots, H200)
VERIFY_TT = {2: 1, 4: 2, 8: 2}
DEQUANT_TILES = 8  # int4 tiles along K a dequant_int4 program converts (bench_prefill.py: dequant_all_ms_gather)


def available(x: torch.Tensor, head_dim: int) -> bool:
    return triton is not None and x.is_cuda and head_dim & (head_dim - 1) == 0


@cache
def _pdl(device_index: int) -> bool:
    return (
        os.environ.get("YI_CHAT_PDL", "1") != "0"
        and triton is not None
        and torch.cuda.get_device_capability(device_index)[0] >= 9
    )


def pdl(x: torch.Tensor) -> bool:
    """Launch the step's kernels as programmatic dependent launches (Hopper and later): each may start while the
    one before it drains, and waits (griddepcontrol.wait) before it touches that kernel's data. YI_CHAT_PDL=0
    turns it off."""
    return x.is_cuda and _pdl(x.device.index if x.device.index is not None else torch.cuda.current_device())


def _launch_pdl(x: torch.Tensor) -> dict:
    """The launch arguments of a step kernel with a PDL flag: the constexpr and the launch attribute together."""
    on = pdl(x)
    return {"PDL": on, "launch_pdl": on}


if triton is not None:

    @triton.jit
    def _pdl_enter():
        """Wait for the previous kernel's data, then let the next kernel launch (see pdl)."""
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()

    @triton.jit
    def _add_rmsnorm(
        X, D, W, XO, H, IDS, n, eps, HAS_D: tl.constexpr, GATHER: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr
    ):
        """GATHER: row t's x is row IDS[t] of X (an embedding), stored into XO."""
        if PDL:
            _pdl_enter()
        row = tl.program_id(0)
        offs = tl.arange(0, BLOCK)
        m = offs < n
        src = tl.load(IDS + row).to(tl.int64) if GATHER else row
        x = tl.load(X + src * n + offs, mask=m, other=0.0)
        if HAS_D:
            x = (x.to(tl.float32) + tl.load(D + row * n + offs, mask=m, other=0.0).to(tl.float32)).to(x.dtype)
        if HAS_D or GATHER:
            tl.store(XO + row * n + offs, x, mask=m)
        xf = x.to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(xf * xf, 0) / n + eps)
        h = (xf * rstd).to(x.dtype).to(tl.float32) * tl.load(W + offs, mask=m, other=0.0).to(tl.float32)
        tl.store(H + row * n + offs, h.to(x.dtype), mask=m)

    # Token and split counts are not specialized on (Triton would compile a copy for 1 and for multiples of 16): one
    # binary serves a decode step, a verify and a prompt, every graph bucket (a cold start: 12 compiles, not 17)
    @triton.jit(do_not_specialize=["T"])
    def _rope_cache(
        QKV, COS, SIN, POS, QO, KC, VC, T, S, NH: tl.constexpr, NKV: tl.constexpr, HD: tl.constexpr, PDL: tl.constexpr
    ):
        if PDL:
            _pdl_enter()
        t, h = tl.program_id(0), tl.program_id(1)
        p = tl.load(POS + t)
        offs = tl.arange(0, HD)
        src = QKV + t * (NH + 2 * NKV) * HD + h * HD
        x = tl.load(src + offs)
        if h < NH + NKV:  # q or k: rotate_half convention, roundings as q*cos + rotate_half(q)*sin in bf16
            x2 = tl.load(src + (offs + HD // 2) % HD).to(tl.float32)
            rot = tl.where(offs < HD // 2, -x2, x2)
            c = tl.load(COS + p * HD + offs).to(tl.float32)
            s = tl.load(SIN + p * HD + offs).to(tl.float32)
            x = ((x.to(tl.float32) * c).to(x.dtype).to(tl.float32) + (rot * s).to(x.dtype).to(tl.float32)).to(x.dtype)
        if h < NH:  # q folded to [NKV, G·T, HD]: row (h % G)·T + t of KV head h // G, i.e. flat row h·T + t
            tl.store(QO + (h * T + t) * HD + offs, x)
        elif h < NH + NKV:
            tl.store(KC + ((h - NH) * S + p) * HD + offs, x)
        else:
            tl.store(VC + ((h - NH - NKV) * S + p) * HD + offs, x)

    @triton.jit
    def _silu_mul(GU, O, inter, BLOCK: tl.constexpr, PDL: tl.constexpr):
        if PDL:
            _pdl_enter()
        t, b = tl.program_id(0), tl.program_id(1)
        offs = b * BLOCK + tl.arange(0, BLOCK)
        m = offs < inter
        g = tl.load(GU + t * 2 * inter + offs, mask=m, other=0.0)
        u = tl.load(GU + t * 2 * inter + inter + offs, mask=m, other=0.0).to(tl.float32)
        gf = g.to(tl.float32)
        s = (gf / (1.0 + tl.exp(-gf))).to(g.dtype).to(tl.float32)
        tl.store(O + t * inter + offs, (s * u).to(g.dtype), mask=m)

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


if triton is not None:

    @triton.jit
    def _dequant_int4(
        P, INV, SZ, W, n, k, kt, group, ACC: tl.constexpr, TR: tl.constexpr, TK: tl.constexpr, NT: tl.constexpr
    ):
        """NT packed tiles along K (each TR rows x TK columns in TR·TK/8 int32 words, contiguous): nibble INV[e] of
        a tile holds its element e (row-major)."""
        bn = tl.program_id(0)
        e = tl.arange(0, TR * TK)
        m = tl.load(INV + e)
        wi, sh = m // 8, 4 * (m % 8)
        row, cl = bn * TR + e // TK, e % TK
        for j in tl.static_range(NT):
            bk = tl.program_id(1) * NT + j
            word = tl.load(P + (bn * kt + bk) * (TR * TK // 8) + wi)
            q = ((word >> sh) & 15).to(tl.float32)
            col = bk * TK + cl
            sz = SZ + ((col // group) * n + row) * 2
            w = (q - 8.0) * tl.load(sz).to(tl.float32) + tl.load(sz + 1).to(tl.float32)
            if ACC:
                w += tl.load(W + row * k + col).to(tl.float32)
            tl.store(W + row * k + col, w.to(W.dtype.element_ty))


def per_program(count: int, most: int) -> int:
    """How many of `count` tiles one program converts: the largest power of two up to `most` (a power of two)
    that divides it, so that every program gets the same number."""
    n = most
    while count % n:
        n //= 2
    return n


def dequant_int4(packed, inv, sz, w, group: int, tile: tuple[int, int], accumulate: bool) -> None:
    """w [N, K] (+)= (q - 8)·s + zf for codes packed in tiles of tile = (rows, columns), tile (i, j) at words
    [(i·K/columns + j)·rows·columns/8, ...) (tinygemm's CUDA layout: (8, 16·ikt); gemv_mma's: (16, 64)); inv
    [rows·columns] maps tile element -> nibble. A program converts up to DEQUANT_TILES tiles along K (the words
    it reads contiguous; one tile a program ran at ~1.4 TB/s of reads + writes on the H200)."""
    n, k = w.shape
    tr, tk = tile
    kt = k // tk
    nt = per_program(kt, DEQUANT_TILES)
    _dequant_int4[(n // tr, kt // nt)](packed, inv, sz, w, n, k, kt, group, ACC=accumulate, TR=tr, TK=tk, NT=nt)


def add_rmsnorm(x: torch.Tensor, delta: torch.Tensor | None, w: torch.Tensor, eps: float, fused: bool):
    """(x + delta, RMSNorm(x + delta)·w) for x [T, D]."""
    if not fused:
        if delta is not None:
            x = x + delta
        xf = x.float()
        return x, w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    t, n = x.shape
    h = torch.empty_like(x)
    xo = torch.empty_like(x) if delta is not None else x
    _norm_launch(x, delta, w, xo, h, None, t, eps)
    return xo, h


def embed_rmsnorm(ids: torch.Tensor, embed: torch.Tensor, w: torch.Tensor, eps: float):
    """(x, RMSNorm(x)·w) for x = embed[ids] [T, D]: the embedding and the first norm in one launch, each the bits
    of F.embedding and add_rmsnorm (Triton, CUDA)."""
    t, n = ids.shape[0], embed.shape[1]
    x = torch.empty(t, n, dtype=embed.dtype, device=embed.device)
    h = torch.empty_like(x)
    _norm_launch(embed, None, w, x, h, ids, t, eps)
    return x, h


def _norm_launch(x, delta, w, xo, h, ids, t: int, eps: float) -> None:
    n = xo.shape[1]
    _add_rmsnorm[(t,)](
        x,
        delta if delta is not None else x,
        w,
        xo,
        h,
        ids if ids is not None else x,
        n,
        eps,
        HAS_D=delta is not None,
        GATHER=ids is not None,
        BLOCK=triton.next_power_of_2(n),
        **_launch_pdl(x),
        num_warps=NORM_WARPS if n >= 2048 else 4,
    )


def rope_cache(qkv, cos, sin, pos, kc, vc, n_heads: int, n_kv: int, hd: int, fused: bool) -> torch.Tensor:
    """qkv [T, (H + 2·KV)·hd]; writes K (roped) and V into the caches [1, KV, S, hd] at `pos` and returns q roped
    and folded for grouped attention: [1, KV, G·T, hd], row j·T + t = head kv·G + j.
    cos / sin: the tables [S, hd] when fused, else already gathered at pos, [T, 1, hd]."""
    t = qkv.shape[0]
    if not fused:
        q, k, v = qkv.split([n_heads * hd, n_kv * hd, n_kv * hd], -1)
        c, s = cos, sin

        def rope(x):
            x1, x2 = x.chunk(2, -1)
            return x * c + torch.cat((-x2, x1), -1) * s

        kc.index_copy_(2, pos, rope(k.view(t, n_kv, hd)).transpose(0, 1).unsqueeze(0))
        vc.index_copy_(2, pos, v.view(t, n_kv, hd).transpose(0, 1).unsqueeze(0))
        return rope(q.view(t, n_heads, hd)).transpose(0, 1).reshape(1, n_kv, n_heads // n_kv * t, hd)
    qo = torch.empty(1, n_kv, n_heads // n_kv * t, hd, dtype=qkv.dtype, device=qkv.device)
    _rope_cache[(t, n_heads + 2 * n_kv)](
        qkv, cos, sin, pos, qo, kc, vc, t, kc.shape[2], NH=n_heads, NKV=n_kv, HD=hd, **_launch_pdl(qkv)
    )
    return qo


def silu_mul(gu: torch.Tensor, fused: bool) -> torch.Tensor:
    """gu [T, 2·I] (gate then up) -> silu(gate)·up [T, I]."""
    t, inter = gu.shape[0], gu.shape[1] // 2
    if not fused:
        gate, up = gu.split([inter, inter], -1)
        return F.silu(gate) * up
    out = torch.empty(t, inter, dtype=gu.dtype, device=gu.device)
    _silu_mul[(t, triton.cdiv(inter, 1024))](gu, out, inter, BLOCK=1024, **_launch_pdl(gu))
    return out


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

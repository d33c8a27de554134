"""Fused Triton kernels for the glue of a CUDA decode step, each with the torch ops it replaces as the fallback.

A graphed step spends more time in ~40 tiny elementwise kernels per layer (norms, rope, residuals, activation) and
in a general attention kernel than in its int4 matmuls (scripts/bench_parts.py). Here (the attention's own two
launches: decode_attn.py):
  add_rmsnorm   x += delta; h = RMSNorm(x)·w                    (1 kernel instead of ~9)
  embed_rmsnorm x = embed[ids]; h = RMSNorm(x)·w                (the embedding in the first norm's launch)
  rope_cache    rope(q), rope(k) -> cache, v -> cache, q folded  (1 instead of ~12)
  silu_mul      silu(gate)·up                                    (1 instead of 2)
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

NORM_WARPS = 16  # one program normalizes a row of D values: more warps, shorter latency
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

"""A few tokens through int4 codes on the tensor cores: a GEMV for 1 to 8 rows of x whose weights are repacked at load
so that one 32-bit word per lane is the A fragment of an mma.m16n8k16 (16 rows x 16 columns of W), written in Gluon.

Why: row i of x is column i of the mma's B (8 columns), and each column of D is computed from its own column of B
alone, so one compiled kernel gives every row of x the same bits whether it runs alone (a decode step) or beside
up to 7 others (a speculative verify's rows): verify rows are decode steps bit for bit, and they cost about one
step (the weights are read once; a word's 3 shifts + 4 LOP3 + one mma serve all 8 columns). The row count is a
runtime argument that Triton does not specialize on, so a decode step and a verify run the very same binary.

Layout: mma_layout.py (`pack`, and `dequant` back to W).

Dense weights (bf16 / fp16 checkpoints: `gemv_mma` with sz None, BITS = 16) are read as stored, [N, K] row-major:
lane (g, t) loads columns 16t .. 16t + 15 of a chunk from rows g and g + 8 (two 16-byte loads each), and k-step s
takes its columns 16t + 4s .. 16t + 4s + 3 — the columns of x's B fragments in int4 codes' layout, so x is read as
for int4 codes — through four mmas accumulating in fp32 across chunks. Nothing is repacked (prefill's cuBLAS GEMM
reads the same tensor), and [q; k; v]'s rows are read in halves_order by address. Its launches stream Yi-6B's and
Yi-34B's W at 3.6-4.2 TB/s on the H200, cuBLAS's batch-1 GEMV at 2.7-4.1 (BENCHMARKS.md), and bring the int4
kernels' epilogues to the fp16 models.

int8 codes (GPTQ 8-bit: `packed` uint8 [N, K] as stored, BITS = 8) are read the same way, 16 bytes of
rows g and g + 8 a chunk: k-step s's word of a row holds its columns 16t + 4s .. 16t + 4s + 3, and two `prmt` with
0x64 make fp16 pairs 1024 + q of it (exact: fp16 integers reach 2048) for an fp16 mma against x in fp16: as it
comes in a model computing in fp16 (GPTQ 8-bit's default on CUDA: its scales are fp16, and the conversion below
cost ~30% of a chunk's instructions), else converted chunk by chunk (exact in fp16's range, which Yi's activations
keep to as its fp16 models show; a value past ±65504 saturates there instead of turning the row into NaN). Per
group of G columns and row:
y += s·D + (c - 1024·s)·X with W = q·s + c. Against the two int4 planes of the same bytes that GPTQ 8-bit took
before (one mma per 8 codes, three shifts and four LOP3 a word, each plane), a chunk's codes cost 2 prmt a word.

Epilogues (runtime/llama.py's chained step, for each row of x alone): the residual add with the next RMSNorm's
first half and its partial sums of squares (o, down), the norm's 1 / rms (qkv, gate_up), silu(gate)·up (gate_up),
and rope with the cache write (qkv), for which qkv's rows are packed in halves_order: each rotary pair (d, d + hd/2)
of a head in rows g and g + 8 of one tile, the two rows of a lane's D fragment. With int4 codes a program's warps'
partial sums meet in one exchange through shared memory (a lane gathers its element of every warp, then adds them:
one barrier, where gl.sum across the warps took three a sum), and the residual stream's and the norm weight's reads
are issued before it (early_reads), so that their latency hides behind it: Yi-6B AWQ's step 1446 -> 1399 us.
"""

from __future__ import annotations

import os

import torch

from . import gemv, glue
from .mma_epilogue import AT_END, NORM, POS, RESIDUAL

try:
    from triton.experimental import gluon
except ImportError:
    gluon = None
if gluon is not None:
    from .mma_tile import _gemv_mma

MAX_X = 8  # rows of x a launch takes: the mma's 8 columns
# Decode and verifies go through this kernel where it serves every projection of a CUDA model (int4 codes, GPTQ's
# int8 codes, bf16 / fp16 weights; YI_CHAT_MMA=0: the CUDA-core GEMV and tinygemm for int4 / int8, cuBLAS for the
# rest).
ENABLED = os.environ.get("YI_CHAT_MMA", "1") != "0"


def supported(n: int, k: int, group: int) -> bool:
    return n % 16 == 0 and k % 64 == 0 and group_fits(group)


def group_fits(group: int) -> bool:
    """The GEMV scales groups of whole 64-column chunks (group <= 0, as a quantization config writes one group a
    row: K, itself whole chunks where `supported`)."""
    return group <= 0 or group % 64 == 0


def available(t: torch.Tensor) -> bool:
    return t.is_cuda and available_on(t.device)


def available_on(device) -> bool:
    """Gluon is importable and `device` a CUDA device with mma.m16n8k16 (sm_80 on)."""
    return gluon is not None and torch.cuda.get_device_capability(device) >= (8, 0)


def config(n: int, k: int, bits: int = 4) -> tuple[int, int, int, int, int, int]:
    """(row tiles of 16 per program, warps splitting K, units of weights each warp loads ahead, units of x it loads
    ahead, chunks of 64 columns a unit, units a pass of the unrolled loop takes) for an [n, k] weight of int4 codes,
    int8 codes (bits 8) or bf16 / fp16 values (16): the fastest measured on the H200 (scripts/bench_gemv.py --mma
    --sweep, --int8 --sweep, --dense --sweep; BENCHMARKS.md) for Yi-6B's and Yi-34B's matmuls, RT cut to divide N / 16.
    A program's registers bound how many share an SM, so x (read from L2, its latency short) is mostly loaded fewer
    units ahead than the weights (a divisor of their count: the loop is unrolled that many times), or as it is used. A
    unit of 2 chunks (codes only, where `pairs` allows it) scales its mma sums once. The loop is unrolled a multiple of
    the weights' units ahead (at least once).
    """
    pair, unroll = 1, 0
    if bits == 8:  # int8 codes (1 KB a tile's chunk), Yi-6B GPTQ in fp16 (scripts/bench_gemv.py --int8 --sweep)
        pair = 2
        if k >= 2 * n:  # down: 13.2 us (a chunk at a time 17.1)
            rt, warps, ahead, xahead = 2, 8, 2, 2
        elif n >= 4 * k:  # gate_up + silu: 24.8 (27.8)
            rt, warps, ahead, xahead = 2, 4, 2, 1
        elif n == k:  # o: 5.8 (5.8)
            rt, warps, ahead, xahead = 1, 8, 2, 2
        else:  # qkv: 7.1 (7.2)
            rt, warps, ahead, xahead = 1, 8, 1, 1
    elif bits == 16:  # a dense W (2 KB a tile's chunk): Yi-6B's / Yi-34B's (scripts/bench_gemv.py --dense --sweep)
        if n >= 49152:  # a vocabulary's lm_head (FastLlama.head_gemv), in the graphed step
            rt, warps, ahead, xahead = 1, 4, 2, 1
        elif k >= 16384:  # Yi-34B's down: 69.6 us (cuBLAS 75.3)
            rt, warps, ahead, xahead = 1, 4, 2, 1
        elif k >= 2 * n:  # Yi-6B's down: 21.8 us (26.7)
            rt, warps, ahead, xahead = 1, 4, 4, 1
        elif n >= 32768:  # Yi-34B's gate_up + silu: 139.7 us (142.0 without silu)
            rt, warps, ahead, xahead = 2, 8, 1, 0
        elif n >= 4 * k:  # Yi-6B's gate_up + silu: 44.1 us (47.8 without silu)
            rt, warps, ahead, xahead = 2, 4, 2, 1
        elif n == k and n > 4096:  # Yi-34B's o: 25.6 us (28.8)
            rt, warps, ahead, xahead = 1, 4, 3, 1
        elif n == k:  # Yi-6B's o: 9.1 us (12.5)
            rt, warps, ahead, xahead = 2, 8, 2, 1
        else:  # qkv: Yi-6B's 11.5 us (13.0), Yi-34B's 34.2 (35.9)
            rt, warps, ahead, xahead = 1, 8, 2, 1
    # int4 codes: where pairs of chunks serve, their configurations were picked in the decode step (scripts/
    # bench_gemv.py --mma --sweep --pair 2 for the candidates; a GEMV alone can favour more registers than the chained
    # step, whose next launch's programs need room on the SMs for programmatic dependent launch)
    elif n >= 32768:  # Yi-34B's gate_up + silu: 41.6 us (a chunk at a time 43.0)
        rt, warps, ahead, xahead, pair = 2, 4, 1, 1, 2
    elif n >= 16384:  # Yi-6B's gate_up + silu: 15.2 us (16.1)
        rt, warps, ahead, xahead, pair = 2, 4, 1, 1, 2
    elif k >= 8192:  # Yi-6B's and Yi-34B's down: pairs 2 ahead, x as far (scripts/bench_step_variants.py: Yi-6B's
        # step 1455 us against 1484 at (1, 8, 4, 2, 1), Yi-34B's 6270 against 6286-6309 at (1, 8, 3, 1, 2))
        rt, warps, ahead, xahead, pair = 1, 8, 2, 2, 2
    elif n == k and n > 4096:  # Yi-34B's o: 224 programs of 2 tiles (9.5 us; 10.2)
        rt, warps, ahead, xahead, pair = 2, 8, 2, 1, 2
    elif n == k:  # Yi-6B's o (4.3 us)
        rt, warps, ahead, xahead = 1, 8, 3, 3
    elif k >= 7168:  # Yi-34B's qkv (12.4 us; 13.8)
        rt, warps, ahead, xahead, pair = 2, 4, 3, 1, 2
    else:  # Yi-6B's qkv (5.4 us)
        rt, warps, ahead, xahead = 1, 8, 3, 1
    while (n // 16) % rt:
        rt //= 2
    return rt, warps, ahead, xahead, pair, unroll or ahead


def pairs(k: int, group: int, bits: int) -> bool:
    """Whether a warp may take chunks two at a time (codes whose groups and K span whole pairs of chunks, so that a
    pair's mma sums accumulate on the tensor cores and are scaled once; not with YI_CHAT_MMA_PAIR=0)."""
    return PAIRS and bits < 16 and group % 128 == 0 and k % 128 == 0


PAIRS = os.environ.get("YI_CHAT_MMA_PAIR", "1") != "0"


def early_reads(n: int, k: int, bits: int = 4) -> int:
    """The epilogue reads an [n, k] weight's launch issues early (bits of NORM, RESIDUAL, POS, AT_END): the residual
    stream's before the warps' sums (o, down; Yi-6B's step 1418-1420 us against 1439-1443 with none early, while the
    norm's and the positions' gained nothing and every read before the loop lost; BENCHMARKS.md)."""
    return RESIDUAL | AT_END


def max_registers(n: int, k: int, bits: int = 4) -> int:
    """ptxas's cap on the registers a thread of an [n, k] weight's 8-warp programs takes (0: none). Yi-6B's int4
    down takes 131 with the gathered sums, one program an SM: capped at 128, two share one (its step 1399 us against
    1520). Nowhere else: given a cap ptxas spends up to it (Yi-6B's qkv 112 registers instead of 76, two programs an SM
    instead of three; Yi-34B's down 128 with spills instead of 95; `scripts/sass.py --mma`, BENCHMARKS.md)."""
    return 128 if (n, k, bits) in CAPPED else 0


CAPPED = {(4096, 11008, 4)}  # (n, k, bits): Yi-6B's int4 down


def register_cap(n: int, k: int, bits: int, warps: int, maxnreg: int | None = None) -> int | None:
    """The launch's maxnreg: `maxnreg` (default max_registers') for programs of 8 warps, else None (no cap)."""
    return ((max_registers(n, k, bits) if maxnreg is None else maxnreg) if warps == 8 else 0) or None


def gather_sums(n: int, k: int, bits: int = 4) -> bool:
    """Whether an [n, k] weight's launch adds its warps' partial sums in each lane after one exchange through shared
    memory (the kernel's GATHER: one barrier) rather than through gl.sum across the warps (three a sum): int4 codes'
    (measured there; int8 codes and dense weights as before)."""
    return bits == 4


def early_bits(n: int, k: int, bits: int, norm: bool, residual: bool, rope: bool, early: int | None = None) -> int:
    """The kernel's EARLY: `early` (default early_reads') without the bits of folds this launch does not make."""
    folds = (NORM if norm else 0) | (RESIDUAL if residual else 0) | (POS if rope else 0)
    on = (early_reads(n, k, bits) if early is None else early) & (folds | AT_END)
    return on if on & folds else 0


def silu_fits(n: int) -> bool:
    """gemv_mma can finish a [gate; up] weight of n rows with silu(gate)·up: programs take tile pairs."""
    return n % 32 == 0


def gemv_mma(
    x: torch.Tensor,
    packed: torch.Tensor,
    sz: torch.Tensor,
    n: int,
    k: int,
    group: int,
    rt: int | None = None,
    warps: int | None = None,
    pdl: bool | None = None,
    silu: bool = False,
    ahead: int | None = None,
    xahead: int | None = None,
    halves: int = 0,
    norm: tuple[torch.Tensor, float] | None = None,
    residual: tuple[torch.Tensor, torch.Tensor] | None = None,
    rope: tuple | None = None,
    pair: int | None = None,
    unroll: int | None = None,
    early: int | None = None,
    gather: bool | None = None,
    maxnreg: int | None = None,
):
    """x [T, K] bf16 (1 <= T <= 8, contiguous; fp16 for an fp16 W, bf16 or fp16 for int8 codes) @ W.T over int4
    codes in `pack`'s layout, int8 codes or W itself (below) -> [T, N] (silu: W = [gate; up], silu(gate)·up
    [T, N/2]); each row of the result the same bits for any T. halves: W packed in halves_order of this head dim.
    The decode step's glue, as gemv.gemv_int4 folds it, row by row:
    norm: (partial sums of squares [8, P], eps): x is an RMSNorm's input times the norm's weight, and each row of
    the result is scaled by 1 / rms of its input (the partials: a residual launch's second result).
    residual: (xr [T, N] the residual stream, w [N] the next RMSNorm's weight): xr += y in place, and the result
    is (xr·w [T, N], partial sums of squares of xr [8, N / (16·rt)]) for the next launch's `norm`.
    rope: (cos, sin, pos [T], k cache, v cache, heads, kv heads, head dim) with W = [q; k; v] packed in halves
    order: as glue.rope_cache for T tokens, the result being q roped and folded, [1, kv heads, G·T, head dim].
    packed uint8: int8 codes [N, K] as stored (W = q·s + zf, sz's rows in halves order with halves; sz in x's
    dtype: an fp16 x meets the codes as it is, a bf16 one is converted to fp16 chunk by chunk). sz None:
    `packed` is a dense W [N, K] in x's dtype (bf16 or fp16; `group` unused). Both read their rows in halves_order by
    address with halves, so the epilogues see them as a packed [q; k; v]."""
    t = x.shape[0]
    assert 1 <= t <= MAX_X and x.is_contiguous()
    bits = 16 if sz is None else 8 if packed.dtype == torch.uint8 else 4
    if bits == 4:  # int4 codes meet x through bf16 bit tricks
        assert x.dtype == torch.bfloat16
    elif bits == 8:  # int8 codes: x in fp16 (an fp16 model, scales fp16 too) or bf16 (converted to fp16 per chunk)
        assert x.dtype in (torch.bfloat16, torch.float16) and sz.dtype == x.dtype
    else:
        assert x.dtype in (torch.bfloat16, torch.float16) and packed.dtype == x.dtype
    if bits > 4:
        assert packed.shape == (n, k) and packed.is_contiguous()
    if bits == 16:
        sz, group = packed, 64
    crt, cwarps, cahead, cxahead, cpair, cunroll = config(n, k, bits)
    if cpair == 2 and not pairs(k, group, bits):  # a chunk at a time, about as many chunks ahead (untuned)
        cpair, cahead = 1, min(2 * cahead, 4)
        cunroll = cahead
        cxahead = 2 * cxahead if cxahead and cahead % (2 * cxahead) == 0 else min(cxahead, 1)
    if pair is None:
        pair = cpair
    assert pair == 1 or (bits < 16 and group % 128 == 0 and k % 128 == 0)
    rt, warps = rt or crt, warps or cwarps
    if xahead is None:  # x as far ahead as the weights where only `ahead` is given
        xahead = cxahead if ahead is None else ahead
    if unroll is None:  # the loop unrolled as the weights' ring where only `ahead` is given
        unroll = cunroll if ahead is None else ahead
    ahead = cahead if ahead is None else ahead
    assert 1 <= ahead <= 5 and 0 <= xahead <= ahead and (xahead == 0 or ahead % xahead == 0), (
        "gemv_mma's rings: 1 to 5 units of weights ahead, of x none or a divisor of that"
    )
    assert unroll >= ahead and unroll % ahead == 0, "gemv_mma's loop: unrolled a multiple of the units ahead"
    if silu:  # RT tiles: RT / 2 of gate and as many of up
        rt = max(rt, 2)
        while (n // 32) % (rt // 2):
            rt //= 2
    assert silu + (residual is not None) + (rope is not None) <= 1, "one epilogue at a time"
    if rope is not None:
        nh, nkv, hd = rope[5:]
        assert hd == halves and rope[2].shape[0] == t
        y = torch.empty(1, nkv, nh // nkv * t, hd, dtype=x.dtype, device=x.device)
    else:
        y = torch.empty(t, n // 2 if silu else n, dtype=x.dtype, device=x.device)
        nh = nkv = 0
    out = torch.empty(MAX_X, n // (16 * rt), dtype=torch.float32, device=x.device) if residual is not None else y
    pdl = glue.pdl(x) if pdl is None else pdl
    early = early_bits(n, k, bits, norm is not None, residual is not None, rope is not None, early)
    _gemv_mma[(n // (16 * rt),)](
        x,
        packed,
        sz,
        y,
        n,
        t,
        *gemv.fold_args(y, norm, residual, rope, out),
        KC=k // 64,
        G=group,
        RT=rt,
        WARPS=warps,
        PDL=pdl,
        SILU=silu,
        BITS=bits,
        AHEAD=ahead,
        XAHEAD=xahead,
        NP=0 if norm is None else norm[0].shape[1],
        RESIDUAL=residual is not None,
        HALVES=halves,
        NH=nh,
        NKV=nkv,
        PAIR=pair,
        UNROLL=unroll,
        EARLY=early,
        GATHER=gather_sums(n, k, bits) if gather is None else gather,
        num_warps=warps,
        maxnreg=register_cap(n, k, bits, warps, maxnreg),
        launch_pdl=pdl,
    )
    return (y, out) if residual is not None else y

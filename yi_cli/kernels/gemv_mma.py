"""A few tokens through int4 codes on the tensor cores: a GEMV for 1 to 8 rows of x whose weights are repacked at load
so that one 32-bit word per lane is the A fragment of an mma.m16n8k16 (16 rows x 16 columns of W), written in Gluon.

Why: row i of x is column i of the mma's B (8 columns), and each column of D is computed from its own column of B
alone, so one compiled kernel gives every row of x the same bits whether it runs alone (a decode step) or beside
up to 7 others (a speculative verify's rows): verify rows are decode steps bit for bit, and they cost about one
step (the weights are read once; a word's 3 shifts + 4 LOP3 + one mma serve all 8 columns). The row count is a
runtime argument that Triton does not specialize on, so a decode step and a verify run the very same binary.

Layout (pack): W [N, K] codes -> int32 [N/16, K/64, 32, 4]: tile i (rows 16i..16i+15), chunk c (columns
64c..64c+63), lane l = 4g + t, k-step s. Nibble j + 4e of the word is A[g + 8·(j % 2)][2t + 8·(j // 2) + e], mma's
a0..a3 (the pairs (j, j + 4)), with A[r][kk] = q[16i + r, 64c + 16t' + 4s + 2·(kk // 8) + kk % 2] for kk = 2t' +
8·(kk // 8) + kk % 2: an mma sums its 16 products in any column order as long as A and B agree, and this one gives
lane t the B fragments of all four k-steps (x's words 8t .. 8t + 7 of the chunk) in two 16-byte loads.
Per group of G columns (G a multiple of 64) and row: y += s·D + (zf - 136·s)·X, D = sum (128 + q)·x over a
chunk (fp32 on the tensor core) and X = sum x over the chunk: sum ((q - 8)·s + zf)·x as gemv.py's.

Dense weights (bf16 / fp16 checkpoints: `gemv_mma` with sz None, BITS = 16) are read as stored, [N, K] row-major:
lane (g, t) loads columns 16t .. 16t + 15 of a chunk from rows g and g + 8 (two 16-byte loads each), and k-step s
takes its columns 16t + 4s .. 16t + 4s + 3 — the columns of x's B fragments above, so x is read as for int4 codes —
through four mmas accumulating in fp32 across chunks. Nothing is repacked (prefill's cuBLAS GEMM reads the same
tensor), and [q; k; v]'s rows are read in halves_order by address. Its launches stream Yi-6B's and Yi-34B's W at
3.6-4.2 TB/s on the H200, cuBLAS's batch-1 GEMV at 2.7-4.1 (BENCHMARKS.md), and bring the int4 kernels' epilogues to
the fp16 models.

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

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None
try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
except ImportError:
    gluon = None

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

# Which of an epilogue's reads a launch issues before its loop (early: bits of these), so that their latency hides
# behind the loop instead of following it: the norm's partial sums (qkv, gate_up), the residual stream and the next
# norm's weight (o, down), the positions (qkv). AT_END: those reads issued after the loop instead, before the warps'
# partial sums are added (their latency then hides behind that exchange through shared memory).
NORM, RESIDUAL, POS, AT_END = 1, 2, 4, 16


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


def halves_order(n: int, head_dim: int, device=None) -> torch.Tensor:
    """The rows of a [q; k; v] weight (heads of head_dim rows) in `pack`'s halves order: entry R is the original row
    packed at row R. Row g of tile i of a head holds dimension d = 8·i + g, row g + 8 its rotate_half partner
    d + head_dim/2, so one lane's D fragment holds both halves of a rotary pair (gemv_mma's rope epilogue)."""
    r = torch.arange(n, device=device)
    w = r % head_dim
    return r - w + (w // 16) * 8 + r % 8 + (head_dim // 2) * ((r % 16) // 8)


def halves_fit(n: int, head_dim: int) -> bool:
    return head_dim > 0 and head_dim % 16 == 0 and n % head_dim == 0


def pack(q: torch.Tensor) -> torch.Tensor:
    """Codes uint8 [N, K] (0..15, input columns in group order) -> int32 [N/16, K/64, 32, 4] (module docstring)."""
    n, k = q.shape
    a = q.view(n // 16, 2, 8, k // 64, 4, 4, 2, 2)  # [tile, h, g, chunk, t, s, kh, e]: row 16·tile + 8h + g,
    # column 64·chunk + 16t + 4s + 2kh + e; one nibble (j + 4e, j = h + 2kh) of every word at a time (load time
    # memory: one int64 plane of N·K/8 words besides the codes)
    words = torch.zeros(n // 16, k // 64, 8, 4, 4, dtype=torch.int64, device=q.device)  # [tile, chunk, g, t, s]
    for h in range(2):
        for kh in range(2):
            for e in range(2):
                part = a[:, h, :, :, :, :, kh, e].permute(0, 2, 1, 3, 4)  # [tile, chunk, g, t, s]
                words |= part.to(torch.int64) << (4 * (h + 2 * kh + 4 * e))
    words = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
    return words.reshape(n // 16, k // 64, 32, 4).contiguous()


def dequant(
    packed: torch.Tensor, sz: torch.Tensor, w: torch.Tensor, group: int, accumulate: bool, halves: int = 0
) -> None:
    """w [N, K] (+)= (q - 8)·s + zf of `pack`'s layout (a prefill's dense GEMM), rows in their original order
    (halves: packed in halves_order): a program reads DEQUANT_CHUNKS chunks of one row tile as whole words and
    writes rows of 64 columns (glue.dequant_int4's gather of each element's word by an index map ran at ~1.7 TB/s
    of reads + writes on the H200)."""
    n, k = w.shape
    kc = k // 64
    nt = glue.per_program(kc, DEQUANT_CHUNKS)
    if packed.dtype == torch.uint8:  # int8 codes as stored: W = q·s + zf
        assert not accumulate
        _dequant8[(n // 16, kc // nt)](packed, sz, w, n, k, group, NT=nt, HALVES=halves)
        return
    _dequant[(n // 16, kc // nt)](packed, sz, w, n, k, kc, group, ACC=accumulate, NT=nt, HALVES=halves)


DEQUANT_CHUNKS = 4

if triton is not None:

    @triton.jit
    def _orig(row, HALVES: tl.constexpr):
        """The stored row of packed row `row`: halves_order's entry, computed (HALVES = 0: the same row). Also
        called from gemv_mma's Gluon epilogue (a callee is generated in its caller's dialect)."""
        out = row
        if HALVES:
            wr = row % HALVES
            out = row - wr + (wr // 16) * 8 + row % 8 + (HALVES // 2) * ((row % 16) // 8)
        return out

    @triton.jit(do_not_specialize=["kc"])  # one binary for K = 4096 (64 chunks) and 11008 (172)
    def _dequant(P, SZ, W, n, k, kc, group, ACC: tl.constexpr, NT: tl.constexpr, HALVES: tl.constexpr):
        """NT chunks of row tile program_id(0): each chunk's 128 words as [g, t, s] (lane 4g + t, k-step s), their
        nibbles j + 4e, j = jr + 2·jc, placed at row 8·jr + g and column 16t + 4s + 2·jc + e (the module docstring's
        A fragment) by a permute of the six indices, then one row-major [16, 64] store."""
        g = tl.arange(0, 8)[:, None, None]
        t = tl.arange(0, 4)[None, :, None]
        s = tl.arange(0, 4)[None, None, :]
        word_at = (g * 4 + t) * 4 + s  # [8, 4, 4]
        jc = tl.arange(0, 2)[:, None, None]
        jr = tl.arange(0, 2)[None, :, None]
        e = tl.arange(0, 2)[None, None, :]
        shift = tl.reshape(4 * (jr + 2 * jc + 4 * e), [1, 1, 1, 2, 2, 2])  # [g, t, s, jc, jr, e]
        row = tl.program_id(0) * 16 + tl.arange(0, 16)
        for cc in tl.static_range(NT):
            c = tl.program_id(1) * NT + cc
            words = tl.load(P + (tl.program_id(0) * kc + c) * 128 + word_at)
            q = (tl.reshape(words, [8, 4, 4, 1, 1, 1]) >> shift) & 15  # [g, t, s, jc, jr, e]
            q = tl.reshape(tl.permute(q, (4, 0, 1, 2, 3, 5)), [16, 64]).to(tl.float32)  # [jr·8 + g, t, s, jc, e]
            sz = SZ + (((c * 64) // group) * n + row) * 2  # a chunk lies in one group
            w = (q - 8.0) * tl.load(sz).to(tl.float32)[:, None] + tl.load(sz + 1).to(tl.float32)[:, None]
            at = W + _orig(row, HALVES)[:, None] * k + c * 64 + tl.arange(0, 64)[None, :]
            if ACC:
                w += tl.load(at).to(tl.float32)
            tl.store(at, w.to(W.dtype.element_ty))

    @triton.jit(do_not_specialize=["k"])
    def _dequant8(Q, SZ, W, n, k, group, NT: tl.constexpr, HALVES: tl.constexpr):
        """W [N, K] = q·s + zf of int8 codes Q [N, K] (rows as stored), NT chunks of 64 columns of 16 rows; the
        scales SZ [K / group, N, 2] in halves order (as the GEMV reads them) when HALVES."""
        row = tl.program_id(0) * 16 + tl.arange(0, 16)  # packed row: its codes at stored row _orig(row)
        at = _orig(row, HALVES)[:, None] * k + tl.arange(0, 64)[None, :]
        for cc in tl.static_range(NT):
            c = (tl.program_id(1) * NT + cc) * 64
            q = tl.load(Q + at + c).to(tl.float32)
            sz = SZ + ((c // group) * n + row) * 2
            w = q * tl.load(sz).to(tl.float32)[:, None] + tl.load(sz + 1).to(tl.float32)[:, None]
            tl.store(W + at + c, w.to(W.dtype.element_ty))


if gluon is not None:
    from .gemv import _silu_gate_up

    # A chunk of one row tile: its 4 words (k-steps) -> nibble pairs (j, j + 4) as bf16x2 (128 + q_j, 128 + q_j+4)
    # by (w >> 4j) & 0x000F000F | 0x43004300, one mma per word accumulating in fp32 from C = 0.
    # $0..$3: D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1]; $4..$7 the words; $8..$15 the B fragments (b0, b1)
    # of each k-step.
    def _mma_line(ty, s, b, c0="z, z, z, z", a="a0, a1, a2, a3"):
        """k-step s's mma: D ($0..$3) += A (a) · B ($b + 2s, $b + 1 + 2s), from C = c0 at the first k-step."""
        c = c0 if s == 0 else "$0, $1, $2, $3"
        return (
            f"mma.sync.aligned.m16n8k16.row.col.f32.{ty}.{ty}.f32 {{$0, $1, $2, $3}}, {{{a}}}, "
            f"{{${b + 2 * s}, ${b + 1 + 2 * s}}}, {{{c}}};\n"
        )

    def _unpack_asm(w: str) -> str:
        """Word w's nibble pairs (j, j + 4) into a0..a3 as bf16x2 (128 + q_j, 128 + q_j+4); t: scratch."""
        out = f"lop3.b32 a0, {w}, 0x000F000F, 0x43004300, 0xEA;\n"
        for j in (1, 2, 3):
            out += f"shr.b32 t, {w}, {4 * j};\nlop3.b32 a{j}, t, 0x000F000F, 0x43004300, 0xEA;\n"
        return out

    def _mma_asm(c0="z, z, z, z"):
        """c0: the first k-step's C (MMA_ACC: the previous chunk's D, $16..$19)."""
        out = "{\n.reg .b32 a0, a1, a2, a3, t;\n.reg .f32 z;\nmov.f32 z, 0f00000000;\n"
        for s in range(4):
            out += _unpack_asm(f"${4 + s}") + _mma_line("bf16", s, 8, c0)
        return out + "}"

    MMA = gl.constexpr(_mma_asm())
    MMA_ACC = gl.constexpr(_mma_asm("$16, $17, $18, $19"))

    # The chunk's sum of each row of x: A = ones, so D[m][n] = sum_k x_n[k] (exact products, fp32 sums): 4 mmas.
    # $0, $1: the sums of columns 2t, 2t + 1; $2..$9 as MMA's $8..$15.
    def _xsum_asm(ty, one):
        return (
            f"{{\n.reg .b32 one;\n.reg .f32 e2, e3, z;\nmov.b32 one, {one};\nmov.f32 z, 0f00000000;\n"
            + "".join(
                f"mma.sync.aligned.m16n8k16.row.col.f32.{ty}.{ty}.f32 {{$0, $1, e2, e3}}, {{one, one, one, one}}, "
                f"{{${2 + 2 * s}, ${3 + 2 * s}}}, {{{'z, z, z, z' if s == 0 else '$0, $1, e2, e3'}}};\n"
                for s in range(4)
            )
            + "}"
        )

    XSUM = gl.constexpr(_xsum_asm("bf16", "0x3F803F80"))

    # A dense weight's chunk (16 rows x 64 columns of bf16 or fp16 W, no codes): the accumulators ($0..$3, from C =
    # $4..$7) through the four k-steps, k-step s's A fragment $8 + 4s .. $11 + 4s, its B fragment $24 + 2s, $25 + 2s.
    def _dense_asm(ty):
        a = [", ".join(f"${8 + 4 * s + i}" for i in range(4)) for s in range(4)]
        return "{\n" + "".join(_mma_line(ty, s, 24, "$4, $5, $6, $7", a[s]) for s in range(4)) + "}"

    DENSE_BF16 = gl.constexpr(_dense_asm("bf16"))
    DENSE_F16 = gl.constexpr(_dense_asm("f16"))

    # int8 codes (GPTQ 8-bit, stored [N, K] bytes): k-step s's word of row g ($4 + s) and of row g + 8 ($8 + s) hold
    # columns 16t + 4s .. 16t + 4s + 3, two prmt each give the fp16 pairs 1024 + q (a0 / a2 and a1 / a3), and one mma
    # with x's B fragments in fp16 ($12 + 2s, $13 + 2s) from C = 0: $0..$3 as MMA's.
    def _int8_asm(c0="z, z, z, z"):
        """c0: the first k-step's C (INT8_ACC: the previous chunk's D, $20..$23)."""
        out = "{\n.reg .b32 a0, a1, a2, a3, m;\n.reg .f32 z;\nmov.f32 z, 0f00000000;\nmov.b32 m, 0x64646464;\n"
        for s in range(4):
            out += f"prmt.b32 a0, ${4 + s}, m, 0x4140;\nprmt.b32 a2, ${4 + s}, m, 0x4342;\n"
            out += f"prmt.b32 a1, ${8 + s}, m, 0x4140;\nprmt.b32 a3, ${8 + s}, m, 0x4342;\n"
            out += _mma_line("f16", s, 12, c0)
        return out + "}"

    INT8 = gl.constexpr(_int8_asm())
    INT8_ACC = gl.constexpr(_int8_asm("$20, $21, $22, $23"))
    # x's bf16 pair -> an fp16 pair (round to nearest; past fp16's range, its largest finite value rather than inf,
    # which would make the row's s·D + (c - 1024·s)·X NaN): the B fragments of int8 codes
    TO_F16 = gl.constexpr(
        "{\n.reg .f32 lo, hi;\nshl.b32 lo, $1, 16;\nand.b32 hi, $1, 0xFFFF0000;\n"
        "cvt.rn.satfinite.f16x2.f32 $0, hi, lo;\n}"
    )
    XSUM_F16 = gl.constexpr(_xsum_asm("f16", "0x3C003C00"))  # XSUM of x in fp16
    EARLY_NORM, EARLY_RESIDUAL, EARLY_POS, EARLY_AT_END = (gl.constexpr(v) for v in (NORM, RESIDUAL, POS, AT_END))
    # an fp16 pair (int8 codes' scales in an fp16 model) -> two fp32
    UNPACK_F16 = gl.constexpr("{\n.reg .b16 l, h;\nmov.b32 {l, h}, $2;\ncvt.f32.f16 $0, l;\ncvt.f32.f16 $1, h;\n}")

    @gluon.constexpr_function
    def _dim(layout, rank, d):
        """The 1-D layout of dimension d of a rank-dimensional layout."""
        for k in range(rank - 1, -1, -1):
            if k != d:
                layout = gl.SliceLayout(k, layout)
        return layout

    @gluon.jit
    def _unpack(b, F16: gl.constexpr):
        """bf16x2 words (F16: fp16x2) -> (low, high) as fp32."""
        if F16:
            return gl.inline_asm_elementwise(
                UNPACK_F16, "=f,=f,r", [b], dtype=(gl.float32, gl.float32), is_pure=True, pack=1
            )
        return (b << 16).to(gl.float32, bitcast=True), (b & -65536).to(gl.float32, bitcast=True)

    @gluon.jit
    def _at(c0, w, PAIR: gl.constexpr, H: gl.constexpr):
        """Chunk H of the units c0 + warp (w: the warp index tensor): units of PAIR chunks."""
        if PAIR == 1:
            return c0 + w
        return (c0 + w) * PAIR + H

    @gluon.jit
    def _words(P, wbase, w5, c0, KC: gl.constexpr, WARPS: gl.constexpr, PAIR: gl.constexpr, H: gl.constexpr):
        """The words of chunk H of units c0 + warp for the program's tiles: [RT, WARPS, 8, 4, 4], one 16-byte load a
        tile."""
        c = _at(c0, w5, PAIR, H)
        if (KC // PAIR) % WARPS == 0:
            return gl.load(P + wbase + c * 128, mask=c < KC)
        return gl.load(P + wbase + c * 128, mask=c < KC, other=0)

    @gluon.jit
    def _chunk(words, bs, LA: gl.constexpr, d):
        """MMA over a chunk's 4 words of each tile: D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1], each
        [RT, WARPS, 8, 4]; added to d (the previous chunk's D of the same group) unless d is ()."""
        w02, w13 = gl.split(gl.reshape(words, [words.shape[0], words.shape[1], 8, 4, 2, 2]))  # s = 2a + b
        w0, w2 = gl.split(w02)
        w1, w3 = gl.split(w13)
        a = (gl.convert_layout(w0, LA), gl.convert_layout(w1, LA), gl.convert_layout(w2, LA), gl.convert_layout(w3, LA))
        if len(d) == 0:
            return _mma4(MMA, "=f,=f,=f,=f" + ",r" * 12, a + bs)
        return _mma4(MMA_ACC, "=f,=f,=f,=f" + ",r" * 12 + ",f" * 4, a + bs + d)

    @gluon.jit
    def _mma4(ASM: gl.constexpr, CONSTRAINTS: gl.constexpr, args):
        """An mma block's four fp32 outputs (D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1]) from its operands."""
        return gl.inline_asm_elementwise(
            ASM, CONSTRAINTS, args, dtype=(gl.float32, gl.float32, gl.float32, gl.float32), is_pure=True, pack=1
        )

    @gluon.jit
    def _eight(v):
        """[RT, WARPS, 8, 4, 8] -> its 8 words along the last dimension, in order, each [RT, WARPS, 8, 4]."""
        e, o = gl.split(gl.reshape(v, [v.shape[0], v.shape[1], 8, 4, 2, 2, 2]))  # word 4·i2 + 2·i1 + i0: i0 = 0/1
        e0, e1 = gl.split(e)  # i1
        o0, o1 = gl.split(o)
        w0, w4 = gl.split(e0)  # i2
        w2, w6 = gl.split(e1)
        w1, w5 = gl.split(o0)
        w3, w7 = gl.split(o1)
        return w0, w1, w2, w3, w4, w5, w6, w7

    @gluon.jit
    def _dense_words(W32, dlo, dhi, w5, c0, KC: gl.constexpr, CW: gl.constexpr, PAIR: gl.constexpr, H: gl.constexpr):
        """Chunk H of units c0 + warp of a dense W (or int8 codes) for the program's tiles: lane (g, t)'s words of
        columns 16t .. 16t + 15 of the chunk (CW words a row's chunk: 32 of bf16, 8 words each; 16 of bytes, 4 each)
        of rows g and g + 8, two [RT, WARPS, 8, 4, CW / 4] (two or one 16-byte loads each)."""
        c = _at(c0, w5, PAIR, H)
        ok = c < KC
        return gl.load(W32 + dlo + c * CW, mask=ok, other=0), gl.load(W32 + dhi + c * CW, mask=ok, other=0)

    @gluon.jit
    def _dense_chunk(acc, words, bs, LA: gl.constexpr, F16: gl.constexpr):
        """The accumulators after one chunk of a dense W: k-step s takes columns 16t + 4s .. 16t + 4s + 3 of rows
        g / g + 8 (words 2s, 2s + 1 of each row), the columns of x's B fragments (x's words 8t + 2s, 8t + 2s + 1)."""
        lo = _eight(words[0])
        hi = _eight(words[1])
        a = ()
        for s in gl.static_range(4):
            a = a + (gl.convert_layout(lo[2 * s], LA), gl.convert_layout(hi[2 * s], LA))
            a = a + (gl.convert_layout(lo[2 * s + 1], LA), gl.convert_layout(hi[2 * s + 1], LA))
        return _mma4(DENSE_F16 if F16 else DENSE_BF16, "=f,=f,=f,=f,f,f,f,f" + ",r" * 24, acc + a + bs)

    @gluon.jit
    def _int8_chunk(words, bs, LA: gl.constexpr, d):
        """MMA over a chunk of int8 codes (words: rows g and g + 8, [RT, WARPS, 8, 4, 4] each; bs: x's B fragments in
        fp16): D of (1024 + q)·x as _chunk's, each [RT, WARPS, 8, 4], added to d unless d is ()."""
        lo = _four(words[0])
        hi = _four(words[1])
        a = ()
        for i in gl.static_range(8):
            a = a + (gl.convert_layout((lo + hi)[i], LA),)
        if len(d) == 0:
            return _mma4(INT8, "=f,=f,=f,=f" + ",r" * 16, a + bs)
        return _mma4(INT8_ACC, "=f,=f,=f,=f" + ",r" * 16 + ",f" * 4, a + bs + d)

    @gluon.jit
    def _four(v):
        """[RT, WARPS, 8, 4, 4] -> its 4 words along the last dimension, in order."""
        e, o = gl.split(gl.reshape(v, [v.shape[0], v.shape[1], 8, 4, 2, 2]))  # word 2·i1 + i0: i0 = 0 / 1
        w0, w2 = gl.split(e)
        w1, w3 = gl.split(o)
        return w0, w1, w2, w3

    @gluon.jit
    def _f16(bs):
        """x's 8 B-fragment words as fp16 pairs."""
        out = ()
        for i in gl.static_range(8):
            out = out + (gl.inline_asm_elementwise(TO_F16, "=r,r", [bs[i]], dtype=gl.int32, is_pure=True, pack=1),)
        return out

    @gluon.jit
    def _xfrag(X32, xw, xoff, c0, KC: gl.constexpr, LW: gl.constexpr, PAIR: gl.constexpr, H: gl.constexpr):
        """b0, b1 of k-steps 0..3 of chunk H of units c0 + warp: 8 tensors [1, WARPS, 8, 4] of bf16 pairs. Lane
        (g, t) reads words 8t .. 8t + 7 of its chunk of row min(g, MX - 1) of x (xoff [1, 8, 4, 8]; two 16-byte
        loads): b0 of k-step s is word 8t + 2s, b1 the next (the columns past MX are computed and never stored)."""
        c = _at(c0, xw, PAIR, H)
        v = gl.load(X32 + c * 32 + xoff, mask=c < KC, other=0)  # [WARPS, 8, 4, 8]
        return _frag_words(v, LW)

    @gluon.jit
    def _frag_words(v, LW: gl.constexpr):
        """A lane's 8 words of x [WARPS, 8, 4, 8] -> the B fragments of a chunk's four k-steps (b0 of k-step s is
        word 2s, b1 the next): 8 tensors [1, WARPS, 8, 4] in LW expanded."""
        lo, hi = gl.split(gl.reshape(v, [v.shape[0], 8, 4, 2, 2, 2]))  # word 4·i2 + 2·i1 + i0: i0 = 0 / 1
        lo0, lo1 = gl.split(lo)  # i1 = 0 / 1
        hi0, hi1 = gl.split(hi)
        w0, w4 = gl.split(lo0)  # i2 = 0 / 1
        w1, w5 = gl.split(hi0)
        w2, w6 = gl.split(lo1)
        w3, w7 = gl.split(hi1)
        return (
            gl.expand_dims(gl.convert_layout(w0, LW), 0),
            gl.expand_dims(gl.convert_layout(w1, LW), 0),
            gl.expand_dims(gl.convert_layout(w2, LW), 0),
            gl.expand_dims(gl.convert_layout(w3, LW), 0),
            gl.expand_dims(gl.convert_layout(w4, LW), 0),
            gl.expand_dims(gl.convert_layout(w5, LW), 0),
            gl.expand_dims(gl.convert_layout(w6, LW), 0),
            gl.expand_dims(gl.convert_layout(w7, LW), 0),
        )

    @gluon.jit
    def _sc(SZ32, w4, c0, row0, N, G: gl.constexpr, KC: gl.constexpr, PAIR: gl.constexpr):
        """The (s, zf) words of rows g and g + 8 for units c0 + warp (a unit lies in one group): 2 x [RT, WARPS, 8,
        1]."""
        c4 = _at(c0, w4, PAIR, 0)
        at = SZ32 + ((c4 * 64) // G) * N + row0
        return gl.load(at, mask=c4 < KC, other=0), gl.load(at + 8, mask=c4 < KC, other=0)

    @gluon.jit
    def _scale(acc, d, xs0, xs1, sc, OFF: gl.constexpr, F16: gl.constexpr):
        """The accumulators (rows g / g + 8 x columns 2t / 2t + 1) after one chunk of codes: its mma sums d
        scaled per row by the chunk's group (sc: its (s, zf) words, bf16 pairs or F16 fp16 ones): s·D + (zf -
        OFF·s)·X (OFF: 136 for int4 codes, whose D sums (128 + q)·x with W = (q - 8)·s + zf; 1024 for int8,
        (1024 + q)·x with W = q·s + zf)."""
        s0, z0 = _unpack(sc[0], F16)
        s2, z2 = _unpack(sc[1], F16)
        c0 = z0 - OFF * s0
        c2 = z2 - OFF * s2
        return (
            (acc[0] + d[0] * s0) + c0 * xs0,  # two FFMA each
            (acc[1] + d[1] * s0) + c0 * xs1,
            (acc[2] + d[2] * s2) + c2 * xs0,
            (acc[3] + d[3] * s2) + c2 * xs1,
        )

    @gluon.constexpr_function
    def _norm_layout(np2, warps):
        """[4 rows of x, np2 partial sums]: lane t takes row 2t (+ 1), the other lanes and the warps the partials."""
        return gl.BlockedLayout([1, max(1, np2 // (8 * warps))], [4, 8], [1, warps], [1, 0])

    @gluon.constexpr_function
    def _pow2(n):
        return 1 << (n - 1).bit_length()

    @gluon.jit
    def _rstd(NORM_IN, c4, MX, eps, NP: gl.constexpr, K: gl.constexpr, WARPS: gl.constexpr):
        """RMSNorm's 1 / sqrt(mean(x^2) + eps) for the rows c4 [4] of x, from the NP partial sums of squares a
        row the producing GEMV wrote (NORM_IN [MAX_X, NP]), summed in the same order for any row count:
        [1, 1, 4], c4's layout."""
        NPP: gl.constexpr = _pow2(NP)
        LN: gl.constexpr = _norm_layout(NPP, WARPS)
        c = gl.expand_dims(gl.convert_layout(c4, gl.SliceLayout(1, LN)), 1)
        j = gl.expand_dims(gl.arange(0, NPP, layout=gl.SliceLayout(0, LN)), 0)
        v = gl.load(NORM_IN + c * NP + j, mask=(c < MX) & (j < NP), other=0.0)
        r = 1.0 / gl.sqrt(gl.sum(v, axis=1) / K + eps)
        return gl.expand_dims(gl.expand_dims(gl.convert_layout(r, c4.type.layout), 0), 1)

    @gluon.jit
    def _store(Y, y, row, col, MX, NY):
        """y [RT, 8, 4] of rows `row` and x rows `col` (< MX) into Y [MX, NY]."""
        gl.store(Y + col * NY + row, y, mask=col < MX)

    @gluon.jit
    def _silu_store(Y, y, row, col, MX, NY, RT: gl.constexpr):
        """y of [gate; up] tiles (even / odd): silu(gate)·up at the gate rows, rounded as gemv._gemv_int4."""
        g, u = gl.split(gl.permute(gl.reshape(y.to(gl.float32), [RT // 2, 2, 8, 4]), (0, 2, 3, 1)))
        out, _ = gl.split(gl.permute(gl.reshape(row, [RT // 2, 2, 8, 4]), (0, 2, 3, 1)))
        cc, _ = gl.split(gl.permute(gl.reshape(col, [RT // 2, 2, 8, 4]), (0, 2, 3, 1)))
        gl.store(Y + cc * NY + out, _silu_gate_up(g, u, Y.dtype.element_ty), mask=cc < MX)

    @gluon.jit
    def _residual_in(XR, WN, row, col, MX, NY):
        """What _residual reads, in fp32: the residual stream XR at (col, row) (0 past MX) and the norm's weight at
        row."""
        xr = gl.load(XR + col * NY + row, mask=col < MX, other=0.0).to(gl.float32)
        return xr, gl.load(WN + row).to(gl.float32)

    @gluon.jit
    def _residual(Y, XR, WN, y, row, col, MX, NY, xin, EARLY: gl.constexpr):
        """The residual stream XR [MX, NY] += y (rounded as a bf16 add) and Y = XR·WN (the next RMSNorm's input
        times its weight); returns XR's new values in fp32 (0 past MX). EARLY: xin is _residual_in's (loaded before
        the loop), else it is read here."""
        ok = col < MX
        at = col * NY + row
        if EARLY:
            xr0, wn = xin
        else:
            xr0, wn = _residual_in(XR, WN, row, col, MX, NY)
        xr = (xr0 + y.to(gl.float32)).to(Y.dtype.element_ty)
        gl.store(XR + at, xr, mask=ok)
        xf = xr.to(gl.float32)
        gl.store(Y + at, (xf * wn).to(Y.dtype.element_ty), mask=ok)
        return gl.where(ok, xf, 0.0)

    @gluon.jit
    def _rope_store(
        Y, a, b, row, col, MX, rope, HD: gl.constexpr, NH: gl.constexpr, NKV: gl.constexpr, pin, EARLY: gl.constexpr
    ):
        """Rows d (a) and d + HD/2 (b) of the heads of [q; k; v] packed in halves order, rounded as the GEMV's
        output: q and k rotated as glue._rope_cache rounds it (x·cos + rotate_half(x)·sin, each product rounded);
        q into Y folded as rope_cache folds it (row head·MX + x row of [heads·MX, HD]), k and v into the caches
        [NKV, S, HD] at slot POS[x row]. EARLY: p holds the positions, read early (int32).
        The rotary tables are read here: read early, LLVM fused other products into fma.rn.bf16 than glue.rope_cache's
        (the products are rounded as bf16 ops, and NVPTX fuses a bf16 mul with the add), giving other bits."""
        POS, COS, SIN, KC, VC, S = rope
        dt = Y.dtype.element_ty
        head = row // HD
        d = ((row % HD) // 16) * 8 + row % 8  # row 16·tile + g: dimension 8·(tile of the head) + g
        ok = col < MX
        if EARLY:
            p = pin.to(gl.int64)
        else:
            p = gl.load(POS + col, mask=ok, other=0)
        cs = p * HD + d
        c1 = gl.load(COS + cs, mask=ok, other=0.0).to(gl.float32)
        s1 = gl.load(SIN + cs, mask=ok, other=0.0).to(gl.float32)
        c2 = gl.load(COS + cs + HD // 2, mask=ok, other=0.0).to(gl.float32)
        s2 = gl.load(SIN + cs + HD // 2, mask=ok, other=0.0).to(gl.float32)
        af = a.to(gl.float32)
        bf = b.to(gl.float32)
        rot = head < NH + NKV
        a2 = gl.where(rot, ((af * c1).to(dt).to(gl.float32) + (-bf * s1).to(dt).to(gl.float32)).to(dt), a)
        b2 = gl.where(rot, ((bf * c2).to(dt).to(gl.float32) + (af * s2).to(dt).to(gl.float32)).to(dt), b)
        isq = ok & (head < NH)
        qat = (head * MX + col) * HD + d
        gl.store(Y + qat, a2, mask=isq)
        gl.store(Y + qat + HD // 2, b2, mask=isq)
        isk = ok & (head >= NH) & rot
        kat = ((head - NH) * S + p) * HD + d
        gl.store(KC + kat, a2, mask=isk)
        gl.store(KC + kat + HD // 2, b2, mask=isk)
        isv = ok & (head >= NH + NKV)
        vat = ((head - NH - NKV) * S + p) * HD + d
        gl.store(VC + vat, a2, mask=isv)
        gl.store(VC + vat + HD // 2, b2, mask=isv)

    @gluon.jit
    def _epilogue(
        Y,
        a0,
        a2,
        row,
        c4,
        MX,
        NY,
        fold,
        RT: gl.constexpr,
        WARPS: gl.constexpr,
        K: gl.constexpr,
        SILU: gl.constexpr,
        NP: gl.constexpr,
        RESIDUAL: gl.constexpr,
        HALVES: gl.constexpr,
        NH: gl.constexpr,
        NKV: gl.constexpr,
        pre,
        EARLY: gl.constexpr,
        GATHER: gl.constexpr,
    ):
        """One column of each lane's D pair (rows g and g + 8; x rows c4 [4]): the warps' sums (NP: times the
        norm's 1 / rms), rounded, stored (SILU: as silu(gate)·up; RESIDUAL: added to the residual stream, the next
        norm's input times its weight and this program's sums of squares; NH: roped into q and the caches).
        EARLY: which of the epilogue's reads `pre` holds (_early's, loaded before the loop). GATHER: the warps' sums
        added in each lane after one exchange of a0 and a2 into _gathered's layout (else gl.sum across the warps)."""
        NORM_IN, eps, XR, WN, NORM_OUT, POS, COS, SIN, KCACHE, VCACHE, S = fold
        dt = Y.dtype.element_ty
        col = gl.expand_dims(gl.expand_dims(c4, 0), 1) + row * 0  # [RT, 8, 4]
        if GATHER:  # each lane's sums of all warps in its own registers: one exchange through shared memory
            LG: gl.constexpr = _gathered(RT, WARPS)
            both = gl.convert_layout(gl.join(a0, a2), _gathered2(RT, WARPS))
            y0, y2 = gl.split(gl.sum(both, axis=1))
            y0 = gl.convert_layout(y0, gl.SliceLayout(1, LG))
            y2 = gl.convert_layout(y2, gl.SliceLayout(1, LG))
        else:
            y0 = gl.sum(a0, axis=1)
            y2 = gl.sum(a2, axis=1)
        if NP > 0:
            if EARLY & EARLY_NORM:
                rstd = pre[0]
            else:
                rstd = _rstd(NORM_IN, c4, MX, eps, NP, K, WARPS)
            y0 = y0 * rstd
            y2 = y2 * rstd
        y0 = y0.to(dt)
        y2 = y2.to(dt)
        if SILU:
            _silu_store(Y, y0, row, col, MX, NY, RT)
            _silu_store(Y, y2, row + 8, col, MX, NY, RT)
        elif RESIDUAL:
            x0 = _residual(Y, XR, WN, y0, row, col, MX, NY, pre[1], EARLY & EARLY_RESIDUAL)
            x2 = _residual(Y, XR, WN, y2, row + 8, col, MX, NY, pre[2], EARLY & EARLY_RESIDUAL)
            sq = gl.sum(gl.sum(x0 * x0 + x2 * x2, axis=1), axis=0)  # [4]: this program's share of each row's sum
            gl.store(NORM_OUT + c4 * gl.num_programs(0) + gl.program_id(0), sq, mask=c4 < MX)
        elif NH > 0:
            rope = (POS, COS, SIN, KCACHE, VCACHE, S)
            _rope_store(Y, y0, y2, row, col, MX, rope, HALVES, NH, NKV, pre[3], EARLY & EARLY_POS)
        else:
            _store(Y, y0, _orig(row, HALVES), col, MX, NY)
            _store(Y, y2, _orig(row + 8, HALVES), col, MX, NY)

    @gluon.jit
    def _early(
        fold,
        row,
        c4,
        MX,
        NY,
        WARPS: gl.constexpr,
        K: gl.constexpr,
        NP: gl.constexpr,
        RESIDUAL: gl.constexpr,
        HALVES: gl.constexpr,
        NH: gl.constexpr,
        EARLY: gl.constexpr,
    ):
        """The first epilogue's reads that do not depend on the loop, issued before it or before the warps' sums
        (EARLY's bits) so that their latency hides behind them: (the norm's 1 / rms, _residual_in of rows g and g + 8,
        the positions), 0 where not."""
        NORM_IN, eps, XR, WN, NORM_OUT, POS, COS, SIN, KCACHE, VCACHE, S = fold
        col = gl.expand_dims(gl.expand_dims(c4, 0), 1) + row * 0
        rstd = 0
        x0 = 0
        x2 = 0
        pin = 0
        if NP > 0 and (EARLY & EARLY_NORM):
            rstd = _rstd(NORM_IN, c4, MX, eps, NP, K, WARPS)
        if RESIDUAL and (EARLY & EARLY_RESIDUAL):
            x0 = _residual_in(XR, WN, row, col, MX, NY)
            x2 = _residual_in(XR, WN, row + 8, col, MX, NY)
        if NH > 0 and (EARLY & EARLY_POS):
            pin = gl.load(POS + col, mask=col < MX, other=0).to(gl.int32)
        return rstd, x0, x2, pin

    @gluon.constexpr_function
    def _gathered(rt, warps):
        """[RT, WARPS, 8, 4] with a lane's WARPS partial sums in its own registers (every warp holding them all)."""
        return gl.BlockedLayout([rt, warps, 1, 1], [1, 1, 8, 4], [warps, 1, 1, 1], [3, 2, 1, 0])

    @gluon.constexpr_function
    def _gathered2(rt, warps):
        """_gathered's with a last dimension of 2 (a0 and a2 joined) in each lane."""
        return gl.BlockedLayout([rt, warps, 1, 1, 2], [1, 1, 8, 4, 1], [warps, 1, 1, 1, 1], [4, 3, 2, 1, 0])

    @gluon.jit
    def _out_rows(N, RT: gl.constexpr, SILU: gl.constexpr, LY: gl.constexpr):
        """The output rows of each lane's D fragment (row g; g + 8 is row + 8) [RT, 8, 4], the x rows of its even
        column c4 [4], and the output's row count."""
        pid = gl.program_id(0)
        ry = gl.expand_dims(gl.expand_dims(gl.arange(0, RT, layout=_dim(LY, 3, 0)), 1), 2)
        gy = gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=_dim(LY, 3, 1)), 0), 2)
        c4 = 2 * gl.arange(0, 4, layout=_dim(LY, 3, 2))
        zero3 = gl.expand_dims(gl.expand_dims(c4, 0), 1) * 0 + ry * 0 + gy * 0
        if SILU:  # even tiles gate, odd ones up: out rows are the gate rows
            return (pid * (RT // 2) + ry // 2) * 16 + gy + zero3, c4, N // 2
        return (pid * RT + ry) * 16 + gy + zero3, c4, N

    @gluon.jit
    def _put(t, j: gl.constexpr, new):
        """t with element j replaced: a ring slot refilled (j static, so no registers move)."""
        out = ()
        for i in gl.static_range(len(t)):
            if i == j:
                out = out + (new,)
            else:
                out = out + (t[i],)
        return out

    @gluon.jit
    def _unit_words(P, wbase, w5, c0, KC: gl.constexpr, WARPS: gl.constexpr, BITS: gl.constexpr, PAIR: gl.constexpr):
        """The weights' words of units c0 + warp: a tuple of PAIR chunks' (_words or _dense_words)."""
        out = ()
        for h in gl.static_range(PAIR):
            if BITS == 4:
                out = out + (_words(P, wbase, w5, c0, KC, WARPS, PAIR, h),)
            else:
                out = out + (_dense_words(P, wbase[0], wbase[1], w5, c0, KC, BITS * 2, PAIR, h),)
        return out

    @gluon.jit
    def _unit_x(X32, xw, xoff, c0, KC: gl.constexpr, LW: gl.constexpr, PAIR: gl.constexpr):
        """x's B fragments of units c0 + warp: a tuple of PAIR chunks' (_xfrag)."""
        out = ()
        for h in gl.static_range(PAIR):
            out = out + (_xfrag(X32, xw, xoff, c0, KC, LW, PAIR, h),)
        return out

    @gluon.jit
    def _codes(words, bs, LA: gl.constexpr, BITS: gl.constexpr, F16: gl.constexpr, d):
        """One chunk of codes: (its mma sums added to d unless d is (), x's chunk sums per column of x)."""
        if BITS == 8 and not F16:  # int8 codes meet x in fp16
            bs = _f16(bs)
        xs0, xs1 = gl.inline_asm_elementwise(
            XSUM_F16 if BITS == 8 else XSUM,
            "=f,=f" + ",r" * 8,
            bs,
            dtype=(gl.float32, gl.float32),
            is_pure=True,
            pack=1,
        )
        if BITS == 8:
            out = _int8_chunk(words, bs, LA, d)
        else:
            out = _chunk(words, bs, LA, d)
        return out, xs0, xs1

    @gluon.jit
    def _step(
        rings,
        at,
        c,
        j: gl.constexpr,
        LA: gl.constexpr,
        G: gl.constexpr,
        KC: gl.constexpr,
        WARPS: gl.constexpr,
        BITS: gl.constexpr,
        AHEAD: gl.constexpr,
        XAHEAD: gl.constexpr,
        LOAD: gl.constexpr,
        LOADX: gl.constexpr,
        F16: gl.constexpr,
        PAIR: gl.constexpr,
    ):
        """One unit of PAIR chunks per warp (unit c + warp): its words, scales and x from ring slot j (x's slot j %
        XAHEAD), the slots refilled with unit c + AHEAD·WARPS when LOAD (x's with c + XAHEAD·WARPS when LOADX).
        BITS 8 / 16: int8 codes' / a dense W's words (wbase: the offsets of rows g and g + 8); a dense W has no
        scales. Codes: a unit's chunks lie in one group, so their mma sums accumulate on the tensor cores and are
        scaled once."""
        acc, ws, scs, bss = rings  # the accumulators and the rings of loads in flight
        P, SZ32, X32, wbase, w5, w4, row0, xw, xoff, N = at  # where they come from
        LW: gl.constexpr = gl.SliceLayout(0, LA)
        if LOAD:
            c2 = c + AHEAD * WARPS
            wnext = _unit_words(P, wbase, w5, c2, KC, WARPS, BITS, PAIR)
            if BITS < 16:
                snext = _sc(SZ32, w4, c2, row0, N, G, KC, PAIR)
        if XAHEAD == 0:
            bs = _unit_x(X32, xw, xoff, c, KC, LW, PAIR)
        else:
            bs = bss[j % XAHEAD]
            if LOADX:
                bss = _put(bss, j % XAHEAD, _unit_x(X32, xw, xoff, c + XAHEAD * WARPS, KC, LW, PAIR))
        if BITS == 16:
            for h in gl.static_range(PAIR):
                acc = _dense_chunk(acc, ws[j][h], bs[h], LA, F16)
        else:  # codes: the unit's mma sums scaled by its group, with x's sums over the unit
            d, xs0, xs1 = _codes(ws[j][0], bs[0], LA, BITS, F16, ())
            if PAIR == 2:
                d, ys0, ys1 = _codes(ws[j][1], bs[1], LA, BITS, F16, d)
                xs0 = xs0 + ys0
                xs1 = xs1 + ys1
            acc = _scale(acc, d, xs0, xs1, scs[j], 1024.0 if BITS == 8 else 136.0, F16)
        if LOAD:
            ws = _put(ws, j, wnext)
            if BITS < 16:
                scs = _put(scs, j, snext)
        return acc, ws, scs, bss

    @gluon.jit
    def _gemv_tile(
        pid,
        wait_at,
        CNT,
        X,
        P,
        SZ,
        Y,
        N,
        MX,
        NORM_IN,
        XR,
        WN,
        NORM_OUT,
        eps,
        POS,
        COS,
        SIN,
        KCACHE,
        VCACHE,
        S,
        KC: gl.constexpr,
        G: gl.constexpr,
        RT: gl.constexpr,
        WARPS: gl.constexpr,
        PDL: gl.constexpr,
        SILU: gl.constexpr,
        BITS: gl.constexpr,
        AHEAD: gl.constexpr,
        XAHEAD: gl.constexpr,
        NP: gl.constexpr,
        RESIDUAL: gl.constexpr,
        HALVES: gl.constexpr,
        NH: gl.constexpr,
        NKV: gl.constexpr,
        PAIR: gl.constexpr,
        UNROLL: gl.constexpr,
        EARLY: gl.constexpr,
        GATHER: gl.constexpr,
        BARRIER: gl.constexpr,
    ):
        """Y[m] = W·x[m] for the MX <= 8 rows of x [MX, K] and the 16·RT rows of this program's tiles (SILU: RT/2
        tiles of gate and the same of up, Y[m] = silu(gate)·up). BITS: P holds int4 codes in pack's layout (4), int8
        codes [N, K] as stored (8) or W itself (16, no SZ). PAIR: chunks of 64 columns a warp takes at a time (a
        unit; 2: codes whose groups span whole pairs, their mma sums scaled once a pair). AHEAD, XAHEAD: units of
        weights and of x each warp loads ahead (config). HALVES: W's rows are packed in halves_order of that head
        dim.
        The decode step's glue, as gemv._gemv_int4 folds it for one row (each row of x alone, so a verify's rows
        stay decode steps bit for bit): NP > 0: x is RMSNorm's input times its weight and NORM_IN [8, NP] the
        partial sums of squares of that input (a RESIDUAL launch's NORM_OUT), the sums scaled by the norm's 1 / rms
        before rounding. RESIDUAL: XR [MX, N] += Y, Y = XR·WN and this program's sums of squares of XR into
        NORM_OUT [8, programs]. NH > 0 (W = [q; k; v] of NH, NKV, NKV heads, HALVES their head dim): q and k roped,
        q into Y as glue.rope_cache folds it, k and v into KCACHE / VCACHE [NKV, S, HALVES] at slots POS[m]."""
        VEC: gl.constexpr = 8 if BITS == 16 else 4  # words a lane loads per tile (int8 / dense: of each of 2 rows)
        L5: gl.constexpr = gl.BlockedLayout([RT, 1, 1, 1, VEC], [1, 1, 8, 4, 1], [1, WARPS, 1, 1, 1], [4, 3, 2, 1, 0])
        LA: gl.constexpr = gl.SliceLayout(4, L5)  # [RT, WARPS, 8, 4]: tile, warp, g, t
        rt = gl.arange(0, RT, layout=_dim(LA, 4, 0))
        if SILU:  # even tiles from gate, odd ones the matching tiles of up
            tile = pid * (RT // 2) + rt // 2 + (rt % 2) * (N // 32)
        else:
            tile = pid * RT + rt
        tile4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(tile, 1), 2), 3)  # [RT, 1, 1, 1]
        w4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, WARPS, layout=_dim(LA, 4, 1)), 0), 2), 3)
        g4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=_dim(LA, 4, 2)), 0), 1), 3)
        t4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, 4, layout=_dim(LA, 4, 3)), 0), 1), 2)
        s5 = gl.arange(0, VEC, layout=_dim(L5, 5, 4))
        s5 = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.expand_dims(s5, 0), 1), 2), 3)  # [1, 1, 1, 1, VEC]
        F16: gl.constexpr = X.dtype.element_ty == gl.float16
        if BITS > 4:  # W [N, K] itself or its int8 codes (CW·KC words a row): lane (g, t) reads columns 16t .. 16t + 15
            CW: gl.constexpr = BITS * 2  # of a chunk
            wbase = (
                gl.expand_dims(_orig(tile4 * 16 + g4, HALVES) * (KC * CW) + (CW // 4) * t4, 4) + s5,
                gl.expand_dims(_orig(tile4 * 16 + g4 + 8, HALVES) * (KC * CW) + (CW // 4) * t4, 4) + s5,
            )  # [RT, 1, 8, 4, VEC] each: rows g and g + 8 of each tile (packed rows: where halves_order stored them)
        else:
            wbase = gl.expand_dims((tile4 * (KC * 32) + 4 * g4 + t4) * 4, 4) + s5  # [RT, 1, 8, 4, 4]
        w5 = gl.expand_dims(w4, 4)  # [1, WARPS, 1, 1, 1]
        row0 = tile4 * 16 + g4  # [RT, 1, 8, 1]: D row g; g + 8 is row0 + 8
        # x side: lane group g holds row g of x, lane t its words 8t .. 8t + 7 of a chunk (the B fragments of the four
        # k-steps, pack's column order); past the MX rows, the last row again (every load valid: one row of x is the
        # one-row GEMV's broadcast load, and a column's sums use its own column of B alone)
        LW: gl.constexpr = gl.SliceLayout(0, LA)  # [WARPS, 8, 4]: the B fragments' layout
        LX: gl.constexpr = gl.BlockedLayout([1, 1, 1, 8], [1, 8, 4, 1], [WARPS, 1, 1, 1], [3, 2, 1, 0])
        xw = gl.arange(0, WARPS, layout=_dim(LX, 4, 0))
        xw = gl.expand_dims(gl.expand_dims(gl.expand_dims(xw, 1), 2), 3)  # [WARPS, 1, 1, 1]
        xg = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=_dim(LX, 4, 1)), 0), 2), 3)
        xt = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, 4, layout=_dim(LX, 4, 2)), 0), 1), 3)
        xi = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=_dim(LX, 4, 3)), 0), 1), 2)
        xoff = 8 * xt + xi + gl.minimum(xg, MX - 1) * (KC * 32)  # [1, 8, 4, 8] words
        X32 = X.to(gl.pointer_type(gl.int32))
        SZ32 = SZ.to(gl.pointer_type(gl.int32))  # (s, zf) bf16 pairs as one word
        zero = gl.zeros([RT, WARPS, 8, 4], gl.float32, LA)
        acc = (zero, zero, zero, zero)
        # Words and scales are loaded AHEAD iterations ahead, x's B fragments XAHEAD (0: as they are used), each in a
        # ring of tuples whose slot j the unrolled loop's j-th step consumes and refills: ptxas schedules a load whose
        # value the iteration does not use after the iteration's mma chain, so each iteration would otherwise wait on
        # memory; and a program's registers decide how many programs share an SM, so x, read from L2 with a short
        # latency, need not take as many as the weights, whose bytes in flight set the GEMV's speed. The words and
        # scales do not depend on the previous kernel: with programmatic dependent launch they stream in before the
        # wait.
        ws, scs, bss = (), (), ()
        if BITS > 4:
            P = P.to(gl.pointer_type(gl.int32))
        for i in gl.static_range(AHEAD):
            ws = ws + (_unit_words(P, wbase, w5, i * WARPS, KC, WARPS, BITS, PAIR),)
        if BITS < 16:
            for i in gl.static_range(AHEAD):
                scs = scs + (_sc(SZ32, w4, i * WARPS, row0, N, G, KC, PAIR),)
        if PDL:
            gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1)
            gl.inline_asm_elementwise(
                "griddepcontrol.launch_dependents; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1
            )
        if BARRIER:  # a phase of a persistent launch: the arrivals of every program at CNT reach wait_at first
            if wait_at > 0:
                seen = gl.atomic_add(CNT, 0, sem="acquire", scope="gpu")
                while seen < wait_at:
                    seen = gl.atomic_add(CNT, 0, sem="acquire", scope="gpu")
        for i in gl.static_range(XAHEAD):
            bss = bss + (_unit_x(X32, xw, xoff, i * WARPS, KC, LW, PAIR),)
        # the epilogue's reads of what the kernels before wrote (early), in flight during the loop
        LY: gl.constexpr = gl.SliceLayout(1, _gathered(RT, WARPS) if GATHER else LA)
        fold = (NORM_IN, eps, XR, WN, NORM_OUT, POS, COS, SIN, KCACHE, VCACHE, S)
        K: gl.constexpr = KC * 64
        pre = (0, 0, 0, 0)
        if EARLY != 0 and (EARLY & EARLY_AT_END) == 0:
            erow, ec4, eny = _out_rows(N, RT, SILU, LY)
            pre = _early(fold, erow, ec4, MX, eny, WARPS, K, NP, RESIDUAL, HALVES, NH, EARLY)
        # The loop is unrolled UNROLL times (a multiple of AHEAD) so that every ring slot is a fixed register (a
        # rotating ring cost ~25 moves a chunk); the last ITERS % UNROLL units of each warp after it (UNROLL >= ITERS:
        # no loop at all).
        ITERS: gl.constexpr = (KC // PAIR + WARPS - 1) // WARPS
        MAIN: gl.constexpr = 0 if UNROLL >= ITERS else (ITERS // UNROLL) * UNROLL
        TAIL: gl.constexpr = ITERS - MAIN
        at = (P, SZ32, X32, wbase, w5, w4, row0, xw, xoff, N)
        rings = (acc, ws, scs, bss)
        for c0 in range(0, MAIN * WARPS, UNROLL * WARPS):
            for j in gl.static_range(UNROLL):
                rings = _step(
                    rings, at, c0 + j * WARPS, j % AHEAD, LA, G, KC, WARPS, BITS, AHEAD, XAHEAD, True, True, F16, PAIR
                )
        for j in gl.static_range(TAIL):
            rings = _step(
                rings,
                at,
                (MAIN + j) * WARPS,
                j % AHEAD,
                LA,
                G,
                KC,
                WARPS,
                BITS,
                AHEAD,
                XAHEAD,
                j + AHEAD < TAIL,
                j + XAHEAD < TAIL,
                F16,
                PAIR,
            )
        acc = rings[0]
        # the warps' partial sums added: [RT, 8, 4] for D rows g / g + 8, columns (rows of x) 2t / 2t + 1; the odd
        # columns only where x has a second row (a decode step skips half the cross-warp sums; each column's own
        # sum is the same code either way)
        row, c4, NY = _out_rows(N, RT, SILU, LY)
        if EARLY & EARLY_AT_END:  # the reads issued before the warps' sums instead
            pre = _early(fold, row, c4, MX, NY, WARPS, K, NP, RESIDUAL, HALVES, NH, EARLY)
        for h in gl.static_range(2):  # the even columns, then the odd ones where x has them (a verify's rows)
            if h == 0 or MX > 1:  # the odd ones' reads after the loop
                a0, a2, ch = acc[h], acc[h + 2], c4 + h
                _epilogue(
                    Y,
                    a0,
                    a2,
                    row,
                    ch,
                    MX,
                    NY,
                    fold,
                    RT,
                    WARPS,
                    K,
                    SILU,
                    NP,
                    RESIDUAL,
                    HALVES,
                    NH,
                    NKV,
                    pre,
                    EARLY * (1 - h),
                    GATHER,
                )

    @gluon.jit(do_not_specialize=["MX", "S"])
    def _gemv_mma(
        X,
        P,
        SZ,
        Y,
        N,
        MX,
        NORM_IN,
        XR,
        WN,
        NORM_OUT,
        eps,
        POS,
        COS,
        SIN,
        KCACHE,
        VCACHE,
        S,
        KC: gl.constexpr,
        G: gl.constexpr,
        RT: gl.constexpr,
        WARPS: gl.constexpr,
        PDL: gl.constexpr,
        SILU: gl.constexpr,
        BITS: gl.constexpr,
        AHEAD: gl.constexpr,
        XAHEAD: gl.constexpr,
        NP: gl.constexpr,
        RESIDUAL: gl.constexpr,
        HALVES: gl.constexpr,
        NH: gl.constexpr,
        NKV: gl.constexpr,
        PAIR: gl.constexpr,
        UNROLL: gl.constexpr,
        EARLY: gl.constexpr,
        GATHER: gl.constexpr,
    ):
        """One program of the GEMV: _gemv_tile at this program's tiles (its doc)."""
        _gemv_tile(
            gl.program_id(0),
            0,
            0,
            X,
            P,
            SZ,
            Y,
            N,
            MX,
            NORM_IN,
            XR,
            WN,
            NORM_OUT,
            eps,
            POS,
            COS,
            SIN,
            KCACHE,
            VCACHE,
            S,
            KC,
            G,
            RT,
            WARPS,
            PDL,
            SILU,
            BITS,
            AHEAD,
            XAHEAD,
            NP,
            RESIDUAL,
            HALVES,
            NH,
            NKV,
            PAIR,
            UNROLL,
            EARLY,
            GATHER,
            False,
        )


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

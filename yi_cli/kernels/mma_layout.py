"""The layout of int4 codes that the tensor-core GEMV (gemv_mma) reads, written once at load (`pack`), and the way
back to W for a prefill's dense GEMM (`dequant`, also of int8 codes as stored).

Layout (pack): W [N, K] codes -> int32 [N/16, K/64, 32, 4]: tile i (rows 16i..16i+15), chunk c (columns
64c..64c+63), lane l = 4g + t, k-step s. Nibble j + 4e of the word is A[g + 8·(j % 2)][2t + 8·(j // 2) + e], mma's
a0..a3 (the pairs (j, j + 4)), with A[r][kk] = q[16i + r, 64c + 16t' + 4s + 2·(kk // 8) + kk % 2] for kk = 2t' +
8·(kk // 8) + kk % 2: an mma sums its 16 products in any column order as long as A and B agree, and this one gives
lane t the B fragments of all four k-steps (x's words 8t .. 8t + 7 of the chunk) in two 16-byte loads.
Per group of G columns (G a multiple of 64) and row: y += s·D + (zf - 136·s)·X, D = sum (128 + q)·x over a
chunk (fp32 on the tensor core) and X = sum x over the chunk: sum ((q - 8)·s + zf)·x as gemv.py's.

[q; k; v] weights may be packed with their rows in `halves_order` (the rope epilogue's rotary pairs in one lane);
`_orig` gives a packed row's stored row, in the dequantizers and in gemv_mma's epilogues.
"""

from __future__ import annotations

import torch

from . import glue

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None


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

"""torch's int4 "tinygemm" ops: the only module that packs codes into, or reads codes out of, their layouts.

W[n, k] = (q[n, k] - 8)·s[g, n] + zf[g, n] for the group g of input column k; AWQ / GPTQ codes map exactly with
zf = (8 - z)·s. The packed layouts differ by device and are probed here, never assumed:
  CUDA  [N/8, K/(16·ikt), 32, ikt/2] int32 tiles (ikt = inner k tiles); the op takes bf16 activations only.
  CPU   row blocks of 64 (AVX512), 32 (AVX2) or row pairs (plain builds), depending on how ATen was built.
"""

from __future__ import annotations

from functools import cache

import torch

GROUP_SIZES = (32, 64, 128, 256)  # the only group sizes the ops accept
CUDA_DTYPE = torch.bfloat16  # the CUDA op takes bf16 activations only
# (rows per block, pairs) of _convert_weight_to_int4pack_for_cpu on the known CPU builds (ATen int4mm_kernel.cpp).
CPU_LAYOUTS = ((64, False), (32, False), (32, True))


def compute_dtype(device, dtype: torch.dtype, bits: int | None, group: int = 0) -> torch.dtype:
    """The activation dtype of a model on `device` whose weights are `bits`-bit codes in groups of `group` input
    columns (bits None: not quantized; group <= 0: one group a row): on CUDA a quantized model computes in bf16 (the
    int4 ops' only dtype; fp16 would need extra copies of the embeddings and lm_head), but 8-bit codes in fp16 where
    that is asked for (auto's CUDA default) and the tensor-core GEMV reads them (groups of 64 columns or more: GPTQ's
    scales are fp16, and the GEMV meets int8 codes with fp16 x; smaller groups take the int4 ops, in bf16);
    everything else in `dtype`."""
    if bits is None or not str(device).startswith("cuda"):
        return dtype
    from . import gemv_mma

    mma = gemv_mma.ENABLED and gemv_mma.available_on(device) and gemv_mma.group_fits(group)
    if bits == 8 and dtype == torch.float16 and mma:
        return dtype
    return CUDA_DTYPE


def inner_k_tiles(k: int) -> int:
    return next(t for t in (8, 4, 2) if k % (16 * t) == 0)


def supported(bits: int, group_size: int, k: int, n: int, device) -> bool:
    """Whether a [n, k] weight can be packed for the ops on `device` (N alignment: CUDA 8, CPU 16)."""
    n_align = 8 if str(device).startswith("cuda") else 16
    return bits == 4 and group_size in GROUP_SIZES and k % 32 == 0 and n % n_align == 0


def pack(q: torch.Tensor) -> torch.Tensor:
    """Codes uint8 [N, K] (0..15, input columns in group order) -> the tinygemm layout of q's device."""
    ikt = inner_k_tiles(q.shape[1])
    if q.is_cuda:  # [N, K/2] uint8 in, even column in the high nibble
        return torch.ops.aten._convert_weight_to_int4pack(
            (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8).contiguous(), ikt
        )
    layout = cpu_layout()
    return pack_cpu(q, *layout) if layout is not None else _pack_op_cpu(q)


def _pack_op_cpu(q: torch.Tensor) -> torch.Tensor:
    """The CPU op's own packing (it takes the codes as int32)."""
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).contiguous(), inner_k_tiles(q.shape[1]))


def pack_cpu(q: torch.Tensor, block: int, pairs: bool) -> torch.Tensor:
    """Codes uint8 [n, k] -> the CPU op's packed bytes [n, k/2] for its layout (block, pairs): unpack_cpu's
    inverse, the bytes the op writes (tests check them), without the op's int32 copy of the codes (a Yi-6B load
    spent ~17 of 80 s on 2 cores packing). q may be a transposed view ([k, n] in memory: AWQ's codes on the CPU,
    formats.from_awq), read as it lies: each block's bytes are [k, rows/2], a transpose of [n, k] codes."""
    n, k = q.shape
    q = q.to(torch.uint8)
    kn = q.t() if q.t().is_contiguous() else None  # [k, n] contiguous
    q = q.contiguous() if kn is None else q
    out = torch.empty(n * k // 2, dtype=torch.uint8)
    nf, tail = n // block, n % block

    def put(start: int, first_row: int, blocks: int, rows: int, pair: bool) -> None:
        span = slice(first_row, first_row + blocks * rows)
        c = q[span].view(blocks, rows, k).permute(2, 0, 1) if kn is None else kn[:, span].view(k, blocks, rows)
        lo, hi = (c[..., 0::2], c[..., 1::2]) if pair else (c[..., : rows // 2], c[..., rows // 2 :])
        dst = out[start : start + blocks * k * rows // 2].view(blocks, k, rows // 2).permute(1, 0, 2)
        torch.bitwise_or(lo, hi << 4, out=dst)  # [k, blocks, rows/2]

    if nf:
        put(0, 0, nf, block, pairs)
    if tail:
        put(nf * block * k // 2, nf * block, 1, tail, True)
    return out.view(n, k // 2)


def mm(x: torch.Tensor, packed: torch.Tensor, group: int, sz: torch.Tensor) -> torch.Tensor:
    """x [T, K] (bf16 on CUDA) @ W.T -> [T, N]; sz [K/group, N, 2] holds (s, zf)."""
    op = torch.ops.aten._weight_int4pack_mm if x.is_cuda else torch.ops.aten._weight_int4pack_mm_for_cpu
    return op(x, packed, group, sz)


def scales_and_zeros(scales: torch.Tensor, zeros: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp16 scales and integer zero points [G, N] -> the ops' [G, N, 2] (s, zf), zf = (8 - z)·s exact in fp32."""
    s = scales.float()
    return torch.stack([s, (8 - zeros.float()) * s], -1).to(dtype).contiguous()


def unpack_cpu(packed: torch.Tensor, n: int, k: int, block: int, pairs: bool) -> torch.Tensor:
    """CPU int4pack bytes -> uint8 codes [n, k]. Each block of rows is stored [k, rows/2] bytes; a full vectorized
    block keeps row d (low nibble) with row d + block/2 (high), tails and plain builds keep rows 2d, 2d+1."""
    flat, nf, tail = packed.reshape(-1), n // block, n % block

    def take(start: int, blocks: int, rows: int, pair: bool) -> torch.Tensor:
        b = flat[start : start + blocks * k * rows // 2].view(blocks, k, rows // 2)
        lo, hi = b & 15, b >> 4
        c = torch.stack([lo, hi], 3).reshape(blocks, k, rows) if pair else torch.cat([lo, hi], 2)
        return c.transpose(1, 2).reshape(blocks * rows, k)

    parts = [take(0, nf, block, pairs)] if nf else []
    if tail:
        parts.append(take(nf * block * k // 2, 1, tail, True))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


@cache
def cpu_layout() -> tuple[int, bool] | None:
    """This build's CPU row blocking (one of CPU_LAYOUTS), found by packing known codes; None when unknown."""
    q = (torch.arange(128 * 64) % 16).view(128, 64).to(torch.uint8)
    return next((lay for lay in CPU_LAYOUTS if torch.equal(unpack_cpu(_pack_op_cpu(q), 128, 64, *lay), q)), None)


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """int32 words [..., W] -> uint8 [..., 8W]: nibble j of each word, little-endian bytes (low nibble first)."""
    b = packed.contiguous().view(torch.uint8)
    return torch.stack([b & 15, b >> 4], -1).flatten(-2)


def element_pos(pack_fn, rows: int, cols: int, device) -> torch.Tensor:
    """Where a packing function puts each code of a rows x cols block that it stores as one tile of words: pack
    the block's own element index, 4 bits at a time. pos[m] is the row-major index of the code held in nibble m
    of the tile."""
    idx = torch.arange(rows * cols, device=device).view(rows, cols)
    pos = torch.zeros(rows * cols, dtype=torch.long, device=device)
    for d in range(-(-(rows * cols - 1).bit_length() // 4)):
        codes = ((idx >> (4 * d)) & 15).to(torch.uint8)
        pos += _nibbles(pack_fn(codes)).reshape(-1).long() << (4 * d)
    return pos


@cache
def tile_pos(ikt: int, device) -> torch.Tensor:
    """The CUDA pack stores each 8 x 16·ikt block of codes as one [32, ikt/2] int32 tile in a fixed order:
    element_pos of that block (index row·16·ikt + col)."""
    return element_pos(pack, 8, 16 * ikt, device)


@cache
def tile_inv(ikt: int, device) -> torch.Tensor:
    """Inverse of tile_pos: int32 [8·16·ikt], the nibble holding each row-major tile element."""
    return torch.argsort(tile_pos(ikt, device)).to(torch.int32)


@cache
def gemv_layout(ikt: int, device) -> bool:
    """Whether this build's tile layout is the one kernels.gemv reads: row r's codes in words [r·WPR, (r+1)·WPR)
    of its 8-row tile, nibbles m and m + 4 of word w at columns c and c + 1, c = 32·(w % (WPR/4)) + 2·(w //
    (WPR/4)) + 8·m (WPR = 2·ikt)."""
    tk, wpr = 16 * ikt, 2 * ikt
    pos = tile_pos(ikt, device).cpu()
    row, col = (pos // tk).view(8, wpr, 8), (pos % tk).view(8, wpr, 8)  # [row, word, nibble]
    w, m = torch.arange(wpr).view(-1, 1), torch.arange(4).view(1, -1)
    c = 32 * (w % (wpr // 4)) + 2 * (w // (wpr // 4)) + 8 * m
    return bool((row == torch.arange(8).view(8, 1, 1)).all()) and bool((col == torch.cat([c, c + 1], 1)).all())


def unpack_cuda(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """tinygemm CUDA layout [N/8, K/(16·ikt), 32, ikt/2] int32 -> codes uint8 [N, K]."""
    ikt = inner_k_tiles(k)
    nib = _nibbles(packed).view(n // 8, k // (16 * ikt), -1)  # [N/8, KT, 128·ikt]
    blk = torch.empty_like(nib).index_copy_(2, tile_pos(ikt, packed.device), nib)
    return blk.view(n // 8, -1, 8, 16 * ikt).transpose(1, 2).reshape(n, k)


def codes(packed: torch.Tensor, n: int, k: int) -> torch.Tensor | None:
    """The uint8 codes [N, K] of a packed weight, or None on a CPU build whose layout is unknown."""
    if packed.is_cuda:
        return unpack_cuda(packed, n, k)
    layout = cpu_layout()
    return None if layout is None else unpack_cpu(packed, n, k, *layout)

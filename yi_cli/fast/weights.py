"""Decoder projections as plain matmul objects for the fast path, built from the loaded model's modules.

`Dense`  W [N, K] in the compute dtype (nn.Linear, or anything with `dequantize()`).
`Int4`   tinygemm int4: W = sum over planes of (q - 8)·s + zf per group of `group` input columns. One plane for
         AWQ / GPTQ 4-bit (shares yi_cli.qlinear.Int4Linear's packed tensor), two for GPTQ 8-bit:
         q·s + c = (hi - 8)·16s + (128s + c) + (lo - 8)·s + 8s with q = 16·hi + lo, same bytes as int8.
Projections that read the same input (q/k/v, gate/up) are merged into one matmul along N where the kinds agree;
the source modules are then pointed at row slices of the merged tensor, so no weight is held twice.
"""
from __future__ import annotations

import os
from functools import cache

import torch
import torch.nn.functional as F

from ..qlinear import CPU_LAYOUTS, _unpack_cpu
from . import gemv, kernels

_OP_DTYPE = torch.bfloat16  # the tinygemm CUDA op only takes bf16 activations; the CPU op is ~10x faster in bf16


def _inner_k_tiles(k: int) -> int:
    return next(t for t in (8, 4, 2) if k % (16 * t) == 0)


def _pack(q: torch.Tensor) -> torch.Tensor:
    """Codes uint8 [N, K] (0..15) -> the tinygemm layout of q's device."""
    ikt = _inner_k_tiles(q.shape[1])
    if q.is_cuda:  # [N, K/2] uint8, even column in the high nibble
        return torch.ops.aten._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).contiguous(), ikt)
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), ikt)


_TILE_POS: dict = {}


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """int32 words [..., W] -> uint8 [..., 8W]: nibble j of each word, little-endian bytes (low nibble first)."""
    b = packed.contiguous().view(torch.uint8)
    return torch.stack([b & 15, b >> 4], -1).flatten(-2)


def _tile_pos(ikt: int, device) -> torch.Tensor:
    """The CUDA pack stores each 8 x 16·ikt block of codes as one [32, ikt/2] int32 tile in a fixed order.
    Recover that order by packing the block's own element index, 4 bits at a time: pos[m] is the row-major
    index (row·16·ikt + col) of the code held in nibble m of the tile."""
    key = (ikt, str(device))
    if key not in _TILE_POS:
        k = 16 * ikt
        idx = torch.arange(8 * k, device=device).view(8, k)
        pos = torch.zeros(8 * k, dtype=torch.long, device=device)
        for d in range(3):  # 8·k <= 1024 elements: 10 bits
            codes = ((idx >> (4 * d)) & 15).to(torch.uint8)
            pos += _nibbles(_pack(codes)).reshape(-1).long() << (4 * d)
        _TILE_POS[key] = pos
    return _TILE_POS[key]


@cache
def cpu_layout() -> tuple[int, bool] | None:
    """The CPU pack's row blocking on this build (see qlinear.CPU_LAYOUTS), found by packing known codes."""
    q = (torch.arange(128 * 64) % 16).view(128, 64).to(torch.uint8)
    return next((lay for lay in CPU_LAYOUTS if torch.equal(_unpack_cpu(_pack(q), 128, 64, *lay), q)), None)


@cache
def _tile_inv(ikt: int, device) -> torch.Tensor:
    """Inverse of _tile_pos: int32 [8·16·ikt], the nibble holding each row-major tile element."""
    return torch.argsort(_tile_pos(ikt, device)).to(torch.int32)


@cache
def _gemv_layout(ikt: int, device) -> bool:
    """Whether this build's tile layout is the one gemv.gemv_int4 reads: row r's codes in words [r·WPR, (r+1)·WPR)
    of its 8-row tile, nibbles m and m + 4 of word w at columns c and c + 1, c = 32·(w % (WPR/4)) + 2·(w //
    (WPR/4)) + 8·m (WPR = 2·ikt)."""
    tk, wpr = 16 * ikt, 2 * ikt
    pos = _tile_pos(ikt, device).cpu()
    row, col = (pos // tk).view(8, wpr, 8), (pos % tk).view(8, wpr, 8)  # [row, word, nibble]
    w, m = torch.arange(wpr).view(-1, 1), torch.arange(4).view(1, -1)
    c = 32 * (w % (wpr // 4)) + 2 * (w // (wpr // 4)) + 8 * m
    return bool((row == torch.arange(8).view(8, 1, 1)).all()) and bool((col == torch.cat([c, c + 1], 1)).all())


def unpack_cuda(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """tinygemm CUDA layout [N/8, K/(16·ikt), 32, ikt/2] int32 -> codes uint8 [N, K]."""
    ikt = _inner_k_tiles(k)
    nib = _nibbles(packed).view(n // 8, k // (16 * ikt), -1)  # [N/8, KT, 128·ikt]
    blk = torch.empty_like(nib).index_copy_(2, _tile_pos(ikt, packed.device), nib)
    return blk.view(n // 8, -1, 8, 16 * ikt).transpose(1, 2).reshape(n, k)


class _Proj:
    def silu_mm(self, x: torch.Tensor, fused: bool) -> torch.Tensor:
        """For a [gate; up] projection: silu(gate)·up [T, N/2] (fused: the Triton glue kernel)."""
        return kernels.silu_mul(self.mm(x), fused)


class Dense(_Proj):
    def __init__(self, w: torch.Tensor, bias: torch.Tensor | None = None):
        self.w, self.bias = w, bias  # [N, K], [N]

    def mm(self, x: torch.Tensor) -> torch.Tensor:  # [T, K] -> [T, N]
        return F.linear(x, self.w, self.bias)

    prefill_mm = mm


class Int4(_Proj):
    def __init__(self, planes, group: int, n: int, k: int, perm=None, bias=None):
        self.planes = planes  # [(packed, sz bf16 [K/group, N, 2])]
        self.group, self.n, self.k, self.perm, self.bias = group, n, k, perm, bias
        packed = planes[0][0]
        self.layout = None if packed.is_cuda else cpu_layout()
        ikt = _inner_k_tiles(k)
        self.wpr = 2 * ikt  # int32 words per row of a packed tile
        # one token: yi-chat's GEMV over the same packed codes where this build's tile layout is the expected one
        self.gemv = (packed.is_cuda and gemv.available(packed) and self.n % gemv.ROWS == 0
                     and os.environ.get("YI_CHAT_GEMV", "1") != "0"
                     and _gemv_layout(ikt, packed.device))
        # gate_up: the GEMV can finish with silu(gate)·up itself (one plane: the sum of two would come first)
        self.gemv_silu = self.gemv and len(planes) == 1 and bias is None and (n // 2) % (gemv.ROWS // 2) == 0

    def _gemv(self, x: torch.Tensor, packed: torch.Tensor, group: int, sz: torch.Tensor,
              silu: bool = False) -> torch.Tensor:
        return gemv.gemv_int4(x, packed, sz, self.n, self.k, group, self.wpr, silu=silu)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        xb = x.to(_OP_DTYPE)
        if self.perm is not None:  # codes are stored with input columns in group order
            xb = xb.index_select(1, self.perm)
        if self.gemv and xb.shape[0] == 1:
            xb = xb.contiguous() if xb.data_ptr() % 4 == 0 else xb.clone()  # the GEMV reads column pairs
        return xb

    def silu_mm(self, x: torch.Tensor, fused: bool) -> torch.Tensor:
        """One token through [gate; up] with the glue kernels on: silu(gate)·up in the GEMV's epilogue."""
        if not (fused and self.gemv_silu and x.shape[0] == 1):
            return super().silu_mm(x, fused)
        packed, sz = self.planes[0]
        return self._gemv(self._input(x), packed, self.group, sz, silu=True).to(x.dtype)

    def mm(self, x: torch.Tensor) -> torch.Tensor:  # [T, K] -> [T, N], via bf16
        op = torch.ops.aten._weight_int4pack_mm if x.is_cuda else torch.ops.aten._weight_int4pack_mm_for_cpu
        xb = self._input(x)
        if self.gemv and xb.shape[0] == 1:
            op = self._gemv
        y = op(xb, self.planes[0][0], self.group, self.planes[0][1])
        for packed, sz in self.planes[1:]:
            y = y + op(xb, packed, self.group, sz)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)

    def codes(self, packed: torch.Tensor) -> torch.Tensor:
        if packed.is_cuda:
            return unpack_cuda(packed, self.n, self.k)
        return _unpack_cpu(packed, self.n, self.k, *self.layout)

    def dense(self, dtype) -> torch.Tensor:
        """W [N, K] in `dtype`, input columns in stored (group) order."""
        packed = self.planes[0][0]
        if packed.is_cuda and kernels.triton is not None:
            ikt = _inner_k_tiles(self.k)
            inv = _tile_inv(ikt, packed.device)
            w = torch.empty(self.n, self.k, dtype=dtype, device=packed.device)
            for i, (p, sz) in enumerate(self.planes):
                kernels.dequant_int4(p, inv, sz, w, self.group, ikt, accumulate=i > 0)
            return w
        w = None
        for packed, sz in self.planes:
            q = self.codes(packed).reshape(self.n, -1, self.group).to(dtype)  # [N, G, g]
            s, zf = sz.to(dtype).permute(1, 0, 2).unsqueeze(-1).unbind(2)  # [N, G, 1] each
            p = torch.addcmul(zf, q - 8, s).reshape(self.n, self.k)
            w = p if w is None else w.add_(p)
        return w

    def prefill_mm(self, x: torch.Tensor) -> torch.Tensor:
        """Many tokens at once: dequantize, then one dense GEMM (compute-bound; on CPU also the reference's math)."""
        if not x.is_cuda and self.layout is None:
            return self.mm(x)
        if self.perm is not None:
            x = x.index_select(1, self.perm)
        return F.linear(x, self.dense(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


class Multi(_Proj):
    """Projections that could not be merged: one matmul each, outputs concatenated."""

    def __init__(self, parts):
        self.parts = parts

    def mm(self, x):
        return torch.cat([p.mm(x) for p in self.parts], -1)

    def prefill_mm(self, x):
        return torch.cat([p.prefill_mm(x) for p in self.parts], -1)


def _bias(m, dtype):
    b = getattr(m, "bias", None)
    return None if b is None or not bool(b.any()) else b.detach().to(dtype)  # GPTQ writes zero biases


def _kind(m) -> str:
    if hasattr(m, "scales_and_zeros"):  # yi_cli.qlinear.Int4Linear
        return "int4"
    if getattr(m, "bits", None) == 8 and hasattr(m, "offsets"):  # yi_cli.qlinear.DequantLinear, 8-bit
        return "int8"
    if isinstance(m, torch.nn.Linear):
        return "dense"
    return "dequant"


def _same_perm(mods) -> bool:
    ps = [getattr(m, "perm", None) for m in mods]
    return all(p is None for p in ps) or all(p is not None and torch.equal(p, ps[0]) for p in ps)


def _int8_planes(q, s, c):
    """q uint8 [N, K], s / c [N, G] fp32 (W = q·s + c) -> two int4 planes with the same bytes as q."""
    sz_hi = torch.stack([16 * s, 128 * s + c], -1).transpose(0, 1)  # [G, N, 2]
    sz_lo = torch.stack([s, 8 * s], -1).transpose(0, 1)
    return [(_pack(q >> 4), sz_hi.to(_OP_DTYPE).contiguous()), (_pack(q & 15), sz_lo.to(_OP_DTYPE).contiguous())]


def _rebind(mods, name: str, merged: torch.Tensor, sizes) -> None:
    """Point each source module's tensor at its row slice of `merged`, freeing the original storage."""
    for m, part in zip(mods, merged.split(sizes, 0)):
        old = getattr(m, name)
        setattr(m, name, torch.nn.Parameter(part, requires_grad=False) if isinstance(old, torch.nn.Parameter)
                else part)


def convert(mods, dtype):
    """One matmul object computing cat([m(x) for m in mods], -1) in `dtype`."""
    kinds = {_kind(m) for m in mods}
    bias = [_bias(m, dtype) for m in mods]
    n = [m.out_features for m in mods]
    cat_bias = None if all(b is None for b in bias) else torch.cat(
        [b if b is not None else torch.zeros(k, dtype=dtype, device=mods[0].weight.device) for b, k in zip(bias, n)])
    if len(mods) > 1 and (len(kinds) > 1 or kinds == {"dequant"} or not _same_perm(mods)
                          or len({getattr(m, "group_size", 0) for m in mods}) > 1):
        return Multi([convert([m], dtype) for m in mods])
    kind, m0 = kinds.pop(), mods[0]
    perm = getattr(m0, "perm", None)
    if kind == "dense":
        ws = [m.weight.detach() for m in mods]
        if all(w.dtype == dtype for w in ws) and len(ws) > 1:
            w = torch.cat(ws)
            _rebind(mods, "weight", w, n)
        else:
            w = torch.cat(ws).to(dtype) if len(ws) > 1 else ws[0].to(dtype)
        return Dense(w, cat_bias)
    if kind == "dequant":
        return Dense(m0.dequantize().to(dtype), cat_bias)
    k = m0.in_features
    if kind == "int8":
        q = torch.cat([m.qweight for m in mods])  # [N, K], columns in group order
        s = torch.cat([m.scales[..., 0] for m in mods]).float()  # [N, G]
        c = torch.cat([m.offsets[..., 0] for m in mods]).float()
        return Int4(_int8_planes(q, s, c), m0.group_size, sum(n), k, perm, cat_bias)
    cuda = m0.weight.is_cuda
    if len(mods) > 1 and not cuda and any(x % 64 for x in n):  # the CPU layout packs rows in blocks of 64
        return Multi([convert([m], dtype) for m in mods])
    if len(mods) > 1:
        packed = torch.cat([m.weight for m in mods])
        _rebind(mods, "weight", packed, [m.weight.shape[0] for m in mods])
    else:
        packed = m0.weight
    sz = torch.cat([m.scales_and_zeros for m in mods], 1) if len(mods) > 1 else m0.scales_and_zeros
    return Int4([(packed, sz.to(_OP_DTYPE).contiguous())], m0.group_size, sum(n), k, perm, cat_bias)

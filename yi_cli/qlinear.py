"""Quantized nn.Linear replacements on core PyTorch ops (CPU and CUDA); no autoawq / auto-gptq / GPTQModel.

Int4Linear   4-bit, tinygemm int4 ops: W = (q - 8)·s + zf per group, so AWQ/GPTQ map exactly with zf = (8 - z)·s.
DequantLinear 8-bit (and 4-bit shapes the int4 ops refuse): keeps the codes packed, builds W per forward.
Both: `in_features`, `out_features`, `forward(x [..., in]) -> [..., out]`, `dequantize() -> float32 [out, in]`.
`make_linear(QWeight, device, dtype)` picks one. Neither keeps a float [out, in] weight between calls.
"""
from __future__ import annotations

import torch
from torch import nn

from .quant import QWeight

INT4_GROUP_SIZES = (32, 64, 128, 256)  # the only group sizes the tinygemm ops accept


def group_perm(w: QWeight) -> torch.Tensor | None:
    """Column order that makes groups contiguous (desc_act), None when already sorted; needs equal-size groups."""
    g = w.in_features if w.group_size <= 0 else w.group_size
    perm = torch.argsort(w.g_idx.long(), stable=True)
    counts = torch.bincount(w.g_idx.long(), minlength=w.scales.shape[0])
    if w.in_features % g or counts.numel() != w.scales.shape[0] or bool((counts != g).any()):
        raise ValueError(f"g_idx does not form groups of {g} columns")
    return None if bool((perm == torch.arange(perm.numel(), device=perm.device)).all()) else perm


def _inner_k_tiles(k: int) -> int:
    return next(t for t in (8, 4, 2) if k % (16 * t) == 0)


def int4_supported(w: QWeight, device: str) -> bool:
    n_align = 8 if device.startswith("cuda") else 16  # N alignment the CUDA / CPU pack ops require
    return (w.bits == 4 and w.group_size in INT4_GROUP_SIZES and w.in_features % 32 == 0
            and w.out_features % n_align == 0)


# (rows per block, pairs) of _convert_weight_to_int4pack_for_cpu, which depends on the CPU build (ATen
# int4mm_kernel.cpp): AVX512 blocks of 64 rows, AVX2 32, plain builds pair adjacent rows. Checked at load.
CPU_LAYOUTS = ((64, False), (32, False), (32, True))


def _unpack_cpu(packed: torch.Tensor, n: int, k: int, block: int, pairs: bool) -> torch.Tensor:
    """CPU int4pack bytes -> uint8 codes [n, k]. Each block of rows is stored [k, rows/2] bytes; a full vectorized
    block keeps row d (low nibble) with row d + block/2 (high), tails and plain builds keep rows 2d, 2d+1."""
    flat, nf, tail = packed.reshape(-1), n // block, n % block

    def take(start: int, blocks: int, rows: int, pair: bool) -> torch.Tensor:
        b = flat[start:start + blocks * k * rows // 2].view(blocks, k, rows // 2)
        lo, hi = b & 15, b >> 4
        c = torch.stack([lo, hi], 3).reshape(blocks, k, rows) if pair else torch.cat([lo, hi], 2)
        return c.transpose(1, 2).reshape(blocks * rows, k)

    parts = [take(0, nf, block, pairs)] if nf else []
    if tail:
        parts.append(take(nf * block * k // 2, 1, tail, True))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


class QuantLinear(nn.Module):
    """Shared by the kernels: `_weight(dtype)` gives W [out, in] in kernel column order (g_idx-sorted)."""

    perm: torch.Tensor | None

    @torch.no_grad()
    def dequantize(self) -> torch.Tensor:
        """The float32 weight [out, in] in checkpoint column order (exact (q - z)·s on CPU in fp32)."""
        w = self._weight(torch.float32)
        if self.perm is not None:
            w = torch.empty_like(w).index_copy_(1, self.perm, w)
        return w


class Int4Linear(QuantLinear):
    """W[o, i] = (q - 8)·s + zf per group, packed for the tinygemm ops. On CPU, where the op's cost grows with
    the token count, prompts (> 1 token) unpack the codes and run one float GEMM instead."""

    def __init__(self, w: QWeight, device: str, dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features, self.group_size = w.in_features, w.out_features, w.group_size
        self.bits = 4
        self.cuda_op = str(device).startswith("cuda")
        perm = group_perm(w)
        q = w.q.to(device)
        if perm is not None:
            q = q[:, perm.to(device)]
        self.register_buffer("perm", None if perm is None else perm.to(device))
        q = q.to(torch.int32)  # [out, in], codes 0..15, columns in group order
        ikt = _inner_k_tiles(self.in_features)
        self.cpu_layout = None
        if self.cuda_op:  # CUDA wants [out, in/2] uint8, even column in the high nibble
            packed = torch.ops.aten._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), ikt)
        else:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, ikt)
            n, k = q.shape
            self.cpu_layout = next((lay for lay in CPU_LAYOUTS
                                    if torch.equal(_unpack_cpu(packed, n, k, *lay), q.to(torch.uint8))), None)
        del q
        self.register_buffer("weight", packed)  # kernel layout, 4 bits per weight
        # the CUDA op only takes bf16; CPU runs fp32/fp16/bf16 as given
        self.op_dtype = torch.bfloat16 if self.cuda_op else dtype
        s = w.scales.to(device, torch.float32)  # [G, out]
        zf = (8 - w.zeros.to(device, torch.float32)) * s  # (q - z)·s = (q - 8)·s + (8 - z)·s, exact in fp32
        self.register_buffer("scales_and_zeros", torch.stack([s, zf], -1).to(self.op_dtype).contiguous())  # [G,out,2]
        self.register_buffer("bias", None if w.bias is None else w.bias.to(device, dtype))

    def _mm(self, x2: torch.Tensor, sz: torch.Tensor) -> torch.Tensor:
        op = torch.ops.aten._weight_int4pack_mm if self.cuda_op else torch.ops.aten._weight_int4pack_mm_for_cpu
        return op(x2.to(self.op_dtype).contiguous(), self.weight, self.group_size, sz)

    def _codes(self) -> torch.Tensor:
        """Codes [out, in] (group order) as float q - 8; without a known layout, read back by multiplying by I."""
        n, k = self.out_features, self.in_features
        if self.cpu_layout is not None:
            return _unpack_cpu(self.weight, n, k, *self.cpu_layout).float().sub_(8)
        unit = torch.zeros_like(self.scales_and_zeros)
        unit[..., 0] = 1  # scale 1, zero 0: y = q - 8, exact in any dtype
        eye = lambda i: torch.eye(min(1024, k - i), k, device=self.weight.device).roll(i, 1)  # noqa: E731
        return torch.cat([self._mm(eye(i), unit).float() for i in range(0, k, 1024)]).t()

    def _weight(self, dtype) -> torch.Tensor:
        """Float weight [out, in] in group order, computed as the kernel does."""
        g = self.group_size
        sz = self.scales_and_zeros.float()
        w = self._codes().view(self.out_features, -1, g)  # [out, G, g]
        w = w.mul_(sz[..., 0].t().unsqueeze(2)).add_(sz[..., 1].t().unsqueeze(2))
        return w.view(self.out_features, -1).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)  # [tokens, in]
        if self.perm is not None:
            x2 = x2.index_select(1, self.perm)
        if self.cpu_layout is not None and x2.shape[0] > 1:
            y = nn.functional.linear(x2, self._weight(x2.dtype))
        else:
            y = self._mm(x2, self.scales_and_zeros).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bits=4, group={self.group_size}, int4pack"


class DequantLinear(QuantLinear):
    """Codes kept at `bits` per weight; forward builds W = q·s + c (c = -z·s) per group, then one GEMM."""

    def __init__(self, w: QWeight, device: str, dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features, self.bits = w.in_features, w.out_features, w.bits
        self.group_size = w.in_features if w.group_size <= 0 else w.group_size
        perm = group_perm(w)
        q = w.q.to(device)
        if perm is not None:
            q = q[:, perm.to(device)]
        self.register_buffer("perm", None if perm is None else perm.to(device))
        if self.bits == 4:  # two codes per byte: [out, in/2], column j low nibble, column j + in/2 high
            q = q[:, : self.in_features // 2] | (q[:, self.in_features // 2:] << 4)
        self.register_buffer("qweight", q.contiguous())
        s = w.scales.to(device, torch.float32).t().unsqueeze(2)  # [out, G, 1]
        self.register_buffer("scales", s.to(dtype))
        self.register_buffer("offsets", (-w.zeros.to(device, torch.float32).t().unsqueeze(2) * s).to(dtype))
        self.register_buffer("bias", None if w.bias is None else w.bias.to(device, dtype))

    def _weight(self, dtype) -> torch.Tensor:
        q = self.qweight
        if self.bits == 4:
            q = torch.cat([q & 15, q >> 4], 1)  # [out, in]; a cat is ~5x faster than interleaving on CPU
        q = q.reshape(self.out_features, -1, self.group_size).to(dtype)  # [out, G, g]
        # in place: ~2.5x faster on CPU than a broadcasting addcmul
        return q.mul_(self.scales.to(dtype)).add_(self.offsets.to(dtype)).reshape(self.out_features, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.perm is not None:
            x = x.index_select(-1, self.perm)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return nn.functional.linear(x, self._weight(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bits={self.bits}, group={self.group_size}, dequant"


def make_linear(w: QWeight, device: str, dtype: torch.dtype) -> nn.Module:
    if int4_supported(w, str(device)):
        return Int4Linear(w, device, dtype)
    return DequantLinear(w, device, dtype)

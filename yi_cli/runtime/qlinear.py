"""Quantized nn.Linear replacements for the transformers model of the `generate` engine (CPU and CUDA).

Int4Linear   4-bit, tinygemm int4 ops: W = (q - 8)·s + zf per group, so AWQ/GPTQ map exactly with zf = (8 - z)·s.
DequantLinear 8-bit (and 4-bit shapes the int4 ops refuse): keeps the codes packed, builds W per forward.
Both: `in_features`, `out_features`, `forward(x [..., in]) -> [..., out]`, `dequantize() -> float32 [out, in]`.
`make_linear(QWeight, device, dtype)` picks one. Neither keeps a float [out, in] weight between calls.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..checkpoint.formats import QWeight, group_perm
from ..kernels import tinygemm
from .heap import trim_heap

# CPU: a prompt of several prefill chunks dequantizes each int4 projection once for all of them when the dequantized
# weights fit in this many bytes (the demo: 0.43 GB, 0.28 GB more peak memory; its first token after 2048 tokens
# 5.4-5.8 s, was 6.8-8.2: each chunk spent about as long dequantizing as multiplying; scripts/bench_prefill_cpu.py).
# Held for that prompt only: the fast path's FastLlama.keep_dense, and the generate engine's (keep_dense, below).
KEEP_DENSE_BYTES = 1 << 30


class QuantLinear(nn.Module):
    """Shared by the kernels: `_weight(dtype)` gives W [out, in] in kernel column order (g_idx-sorted)."""

    perm: torch.Tensor | None
    kept: dict | None = None  # within keep_dense: the dense weight of each dtype, built once

    def _dense(self, dtype) -> torch.Tensor:
        if self.kept is None:
            return self._weight(dtype)
        if dtype not in self.kept:
            self.kept[dtype] = self._weight(dtype)
        return self.kept[dtype]

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
        perm = group_perm(w)
        q = w.q.to(device)
        if perm is not None:
            q = q[:, perm.to(device)]
        self.register_buffer("perm", None if perm is None else perm.to(device))
        self.register_buffer("weight", tinygemm.pack(q))  # [out, in] codes in group order, 4 bits per weight
        del q
        self.cpu_layout = None if self.weight.is_cuda else tinygemm.cpu_layout()
        self.op_dtype = tinygemm.compute_dtype(device, dtype, bits=4)
        self.register_buffer(
            "scales_and_zeros", tinygemm.scales_and_zeros(w.scales.to(device), w.zeros.to(device), self.op_dtype)
        )  # [G, out, 2]
        self.register_buffer("bias", None if w.bias is None else w.bias.to(device, dtype))

    def _mm(self, x2: torch.Tensor, sz: torch.Tensor) -> torch.Tensor:
        return tinygemm.mm(x2.to(self.op_dtype).contiguous(), self.weight, self.group_size, sz)

    def _codes(self) -> torch.Tensor:
        """Codes [out, in] (group order) as float q - 8; without a known layout, read back by multiplying by I."""
        n, k = self.out_features, self.in_features
        if self.cpu_layout is not None:
            return tinygemm.unpack_cpu(self.weight, n, k, *self.cpu_layout).float().sub_(8)
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
            y = nn.functional.linear(x2, self._dense(x2.dtype))
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
        self.group_size = w.groups_of
        perm = group_perm(w)
        q = w.q.to(device)
        if perm is not None:
            q = q[:, perm.to(device)]
        self.register_buffer("perm", None if perm is None else perm.to(device))
        if self.bits == 4:  # two codes per byte: [out, in/2], column j low nibble, column j + in/2 high
            q = q[:, : self.in_features // 2] | (q[:, self.in_features // 2 :] << 4)
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
        return nn.functional.linear(x, self._dense(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bits={self.bits}, group={self.group_size}, dequant"


@contextmanager
def keep_dense(model: nn.Module):
    """Within it (on the CPU, where they fit in KEEP_DENSE_BYTES) each quantized linear of the model dequantizes
    once and reuses its weight: a prompt read in chunks paid the dequantization every chunk (6437 tokens of the
    demo: 88 s against one forward's 48). The same weights, so the same bits as dequantizing per chunk."""
    lins = [m for m in model.modules() if isinstance(m, QuantLinear)]
    size = sum(m.in_features * m.out_features * 4 for m in lins)  # float32 on the CPU
    if not lins or any(next(m.buffers()).is_cuda for m in lins) or size > KEEP_DENSE_BYTES:
        yield
        return
    for m in lins:
        m.kept = {}
    try:
        yield
    finally:
        for m in lins:
            m.kept = None
        trim_heap()


def make_linear(w: QWeight, device: str, dtype: torch.dtype) -> nn.Module:
    if tinygemm.supported(w.bits, w.group_size, w.in_features, w.out_features, device):
        return Int4Linear(w, device, dtype)
    return DequantLinear(w, device, dtype)

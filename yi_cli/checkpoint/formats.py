"""AWQ GEMM and GPTQ v1 on-disk formats: pack, unpack, reference dequantize, round-to-nearest quantize.

Everything meets in one unpacked form, `QWeight` (nn.Linear orientation, [out, in]), so the runtime's kernels
and the packers share one definition of the math:  W[o, i] = s[g_idx[i], o] * (q[o, i] - z[g_idx[i], o]).
Layouts (verified by packing known values, tests/test_quant_format.py):
  AWQ GEMM  qweight int32 [in, out/8] packed along OUT, nibble k of a word holds column 8c + AWQ_ORDER[k];
            qzeros int32 [in/g, out/8] same interleave, zero stored as is; scales fp16 [in/g, out].
  GPTQ v1   qweight int32 [in*b/32, out] packed along IN, LSB first; qzeros int32 [in/g, out*b/32] packed along
            OUT, stored value = zero - 1; scales fp16 [in/g, out]; g_idx int32 [in].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble k of an AWQ word holds column 8c + AWQ_ORDER[k]


@dataclass
class QWeight:
    q: torch.Tensor  # uint8 [out, in], codes 0 .. 2**bits - 1
    zeros: torch.Tensor  # int32 [G, out], true zero point (GPTQ: stored + 1, so up to 2**bits)
    scales: torch.Tensor  # fp16 [G, out]
    g_idx: torch.Tensor  # int32 [in], group of each input column
    bits: int
    group_size: int
    bias: torch.Tensor | None = None  # [out]

    @property
    def out_features(self) -> int:
        return self.q.shape[0]

    @property
    def in_features(self) -> int:
        return self.q.shape[1]

    @property
    def groups_of(self) -> int:
        """Input columns per group (-1 in the config means one group over all columns)."""
        return self.in_features if self.group_size <= 0 else self.group_size


def group_perm(w: QWeight) -> torch.Tensor | None:
    """Column order that makes groups contiguous (desc_act), None when already sorted; needs equal-size groups."""
    g = w.groups_of
    perm = torch.argsort(w.g_idx.long(), stable=True)
    counts = torch.bincount(w.g_idx.long(), minlength=w.scales.shape[0])
    if w.in_features % g or counts.numel() != w.scales.shape[0] or bool((counts != g).any()):
        raise ValueError(f"g_idx does not form groups of {g} columns")
    return None if bool((perm == torch.arange(perm.numel(), device=perm.device)).all()) else perm


def concat(ws: list[QWeight]) -> QWeight:
    """Projections that read the same input (q/k/v, gate/up) as one QWeight along `out`; they must share bits,
    group size and g_idx (check with `concatenable`). A missing bias is zeros."""
    if len(ws) == 1:
        return ws[0]
    w0 = ws[0]
    bias = None
    if any(w.bias is not None for w in ws):
        bias = torch.cat([w.bias if w.bias is not None else w.scales.new_zeros(w.out_features) for w in ws])
    transposed = all(w.q.t().is_contiguous() and not w.q.is_contiguous() for w in ws)  # from_awq's CPU codes
    return QWeight(
        torch.cat([w.q.t() for w in ws], 1).t() if transposed else torch.cat([w.q for w in ws]),
        torch.cat([w.zeros for w in ws], 1),
        torch.cat([w.scales for w in ws], 1),
        w0.g_idx,
        w0.bits,
        w0.group_size,
        bias,
    )


def concatenable(ws: list[QWeight]) -> bool:
    w0 = ws[0]
    return all(
        w.bits == w0.bits
        and w.group_size == w0.group_size
        and w.in_features == w0.in_features
        and torch.equal(w.g_idx, w0.g_idx)
        for w in ws
    )


def _to_int32(words: torch.Tensor) -> torch.Tensor:
    """int64 words in [0, 2**32) -> int32 with the same bits (two's complement), as the formats store them."""
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def pack_rows(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """[R, C] codes -> int32 [R*bits/32, C]: GPTQ qweight, LSB first along rows."""
    per = 32 // bits
    c = codes.to(torch.int64).reshape(-1, per, codes.shape[1])  # [R/per, per, C]
    shifts = (torch.arange(per, device=codes.device) * bits).view(1, per, 1)
    return _to_int32((c << shifts).sum(1))


def unpack_rows(words: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 [R*bits/32, C] -> int32 [R, C] (inverse of pack_rows)."""
    if bits in (4, 8):
        return unpack_rows_t(words, bits).t().to(torch.int32)
    per = 32 // bits
    shifts = (torch.arange(per, device=words.device, dtype=torch.int32) * bits).view(1, per, 1)
    # arithmetic shift sign-extends, the mask keeps only the field
    return ((words.unsqueeze(1) >> shifts) & (2**bits - 1)).reshape(-1, words.shape[1])


def unpack_rows_t(words: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 [R*bits/32, C] -> uint8 [C, R]: unpack_rows(words, bits).t(), contiguous; 4- and 8-bit codes read out of
    the words' bytes (little-endian: row per·w + f of a word is its field f) in one pass per field."""
    if bits not in (4, 8):
        return unpack_rows(words, bits).t().to(torch.uint8).contiguous()
    w, c = words.shape
    b = words.contiguous().view(torch.uint8).view(w, c, 4)
    if bits == 8:  # field f is byte f
        return b.permute(1, 0, 2).reshape(c, 4 * w)
    out = torch.empty(c, w, 8, dtype=torch.uint8, device=words.device)
    bt = b.permute(1, 0, 2)  # [C, W, 4]
    torch.bitwise_and(bt, 15, out=out[:, :, 0::2])  # field 2i: byte i's low nibble
    torch.bitwise_right_shift(bt, 4, out=out[:, :, 1::2])
    return out.view(c, 8 * w)


def pack_cols(codes: torch.Tensor, bits: int, order=None) -> torch.Tensor:
    """[R, C] codes -> int32 [R, C*bits/32] packed along columns; field k holds column per*c + order[k]."""
    per = 32 // bits
    c = codes.to(torch.int64).reshape(codes.shape[0], -1, per)  # [R, C/per, per]
    if order is not None:
        c = c[:, :, list(order)]
    shifts = torch.arange(per, device=codes.device) * bits
    return _to_int32((c << shifts).sum(2))


def unpack_cols(words: torch.Tensor, bits: int, order=None) -> torch.Tensor:
    """int32 [R, C*bits/32] -> int32 [R, C] (inverse of pack_cols)."""
    if bits == 4:
        return unpack_nibbles(words, order).to(torch.int32)
    per = 32 // bits
    shifts = torch.arange(per, device=words.device, dtype=torch.int32) * bits
    fields = (words.unsqueeze(2) >> shifts) & (2**bits - 1)  # [R, C/per, per], field k
    if order is not None:
        fields = fields[:, :, [list(order).index(j) for j in range(per)]]  # column j sits in field order.index(j)
    return fields.reshape(words.shape[0], -1)


def unpack_nibbles(words: torch.Tensor, order=None) -> torch.Tensor:
    """int32 [R, C/8] -> uint8 [R, C]: unpack_cols(words, 4, order) one byte a code, each column read straight out
    of its byte of the words (little-endian: field f is byte f // 2, its high nibble for odd f). Shifting int32
    words then gathering the columns took ~40 s of a Yi-6B load on 2 CPU cores, this ~6."""
    r = words.shape[0]
    b = words.contiguous().view(torch.uint8).view(r, -1, 4)
    out = torch.empty(r, b.shape[1], 8, dtype=torch.uint8, device=words.device)
    for j in range(8):
        f = j if order is None else list(order).index(j)  # column j sits in field f
        if f % 2:
            torch.bitwise_right_shift(b[:, :, f // 2], 4, out=out[:, :, j])
        else:
            torch.bitwise_and(b[:, :, f // 2], 15, out=out[:, :, j])
    return out.view(r, -1)


def trivial_g_idx(in_features: int, group_size: int, device=None) -> torch.Tensor:
    g = in_features if group_size <= 0 else group_size  # -1: one group per output channel
    return (torch.arange(in_features, device=device) // g).to(torch.int32)


def from_awq(qweight, qzeros, scales, group_size: int, bias=None) -> QWeight:
    """On the CPU q is a transposed view, the codes left [in, out] in memory as AWQ stores them: the CPU packing
    reads them so (tinygemm.pack_cpu), where a transpose to [out, in] and the packing's own back took ~1/3 of a
    Yi-6B load on 2 cores."""
    q = unpack_nibbles(qweight, AWQ_ORDER)  # [in, out]
    zeros = unpack_cols(qzeros, 4, AWQ_ORDER)  # [G, out]
    return QWeight(
        q.t() if q.device.type == "cpu" else q.t().contiguous(),
        zeros,
        scales,
        trivial_g_idx(q.shape[0], group_size, q.device),
        4,
        group_size,
        bias,
    )


def from_gptq(qweight, qzeros, scales, g_idx, bits: int, group_size: int, bias=None) -> QWeight:
    q = unpack_rows_t(qweight, bits)  # [out, in]
    zeros = unpack_cols(qzeros, bits) + 1  # v1 stores zero - 1
    return QWeight(q, zeros, scales, g_idx.to(torch.int32), bits, group_size, bias)


def to_awq(w: QWeight) -> dict[str, torch.Tensor]:
    assert w.bits == 4 and torch.equal(w.g_idx, trivial_g_idx(w.in_features, w.group_size, w.g_idx.device))
    out = {
        "qweight": pack_cols(w.q.t(), 4, AWQ_ORDER),
        "qzeros": pack_cols(w.zeros, 4, AWQ_ORDER),
        "scales": w.scales.to(torch.float16),
    }
    if w.bias is not None:
        out["bias"] = w.bias.to(torch.float16)
    return out


def to_gptq(w: QWeight) -> dict[str, torch.Tensor]:
    """AutoGPTQ v1 tensors; a zero fp16 bias is written when there is none, as AutoGPTQ does."""
    assert int(w.zeros.min()) >= 1, "GPTQ v1 stores zero - 1, so a zero point of 0 cannot be stored"
    bias = w.bias if w.bias is not None else torch.zeros(w.out_features)
    return {
        "qweight": pack_rows(w.q.t(), w.bits),
        "qzeros": pack_cols(w.zeros - 1, w.bits),
        "scales": w.scales.to(torch.float16),
        "g_idx": w.g_idx.to(torch.int32),
        "bias": bias.to(torch.float16),
    }


def dequantize(w: QWeight, dtype=torch.float32) -> torch.Tensor:
    """Reference float weight [out, in] (computed in fp32: exact for fp16 scales, then cast)."""
    g = w.g_idx.long()
    s = w.scales.float()[g].t()  # [out, in]
    z = w.zeros.float()[g].t()
    return ((w.q.float() - z) * s).to(dtype).contiguous()  # q may be a transposed view (from_awq on the CPU)


def quantize_rtn(weight: torch.Tensor, bits: int, group_size: int, sym: bool, perm=None) -> QWeight:
    """Round-to-nearest, per group of input columns. weight [out, in] float.

    sym follows AutoGPTQ (zero fixed at 2**(bits-1)); asym follows AutoAWQ / AutoGPTQ (zero = round(-min/s)),
    clamped to 1.. so GPTQ v1 can store zero - 1. `perm` (columns in act order) builds a desc_act g_idx.
    """
    w = weight.float()
    out_f, in_f = w.shape
    g = in_f if group_size == -1 else group_size
    order = torch.arange(in_f) if perm is None else torch.as_tensor(perm)
    g_idx = torch.empty(in_f, dtype=torch.int32)
    g_idx[order] = (torch.arange(in_f) // g).to(torch.int32)
    wg = w[:, order].reshape(out_f, -1, g)  # [out, G, g], groups in act order
    maxq = 2**bits - 1
    lo = wg.amin(2).clamp(max=0)
    hi = wg.amax(2).clamp(min=0)
    if sym:
        hi = torch.maximum(hi, -lo)
        scale = (2 * hi / maxq).clamp(min=1e-8).half().float()
        zero = torch.full_like(scale, 2 ** (bits - 1))
    else:
        scale = ((hi - lo) / maxq).clamp(min=1e-8).half().float()
        zero = torch.round(-lo / scale).clamp(1, maxq)
    q = torch.clamp(torch.round(wg / scale.unsqueeze(2)) + zero.unsqueeze(2), 0, maxq)
    q_cols = torch.empty(out_f, in_f, dtype=torch.uint8)
    q_cols[:, order] = q.reshape(out_f, in_f).to(torch.uint8)
    zeros, scales = zero.t().to(torch.int32).contiguous(), scale.t().half().contiguous()  # [G, out]
    return QWeight(q_cols, zeros, scales, g_idx, bits, group_size)

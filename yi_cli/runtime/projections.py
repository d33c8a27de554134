"""Decoder projections as plain matmul objects for the fast runtime, built from the checkpoint's tensors.

`Dense`  W [N, K] in the compute dtype (plain checkpoints, and packed shapes the int4 ops refuse, dequantized); on
         CUDA 1 to 8 tokens of bf16 / fp16 through the tensor-core GEMV (kernels.gemv_mma reads W as it is stored,
         with the int4 projections' epilogues), more through cuBLAS.
`Int4`   int4: W = sum over planes of (q - 8)·s + zf per group of `group` input columns. One plane for
         AWQ / GPTQ 4-bit, two for GPTQ 8-bit: q·s + c = (hi - 8)·16s + (128s + c) + (lo - 8)·s + 8s with
         q = 16·hi + lo, the same bytes as int8. Codes in tinygemm's layout (CPU; CUDA with YI_CHAT_MMA=0: the
         CUDA-core GEMV for one token, tinygemm for a few) or, on CUDA where the shape allows, in the tensor-core
         GEMV's (kernels.gemv_mma: 1 to 8 tokens, each row the same bits for any count; more tokens dequantize),
         which takes GPTQ 8-bit as one plane of int8 codes [N, K] as stored (W = q·s + c), in fp16 (the model's
         dtype there by default: tinygemm.compute_dtype) or bf16.
Projections that read the same input (q/k/v, gate/up) become one matmul along N where their kinds agree.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ..checkpoint import formats as Q
from ..kernels import gemv, gemv_mma, glue, mma_layout, tinygemm

OP_DTYPE = torch.bfloat16  # int4 activations: the CUDA op takes bf16 only, and the CPU op is ~10x faster in bf16
# CPU decode holds the layers to one thread (their many small ops lose more to a second thread than they gain), but
# a projection of more bytes than this is one op whose rows a second thread halves: Yi-6B's ~40 ms a layer, not the
# demo's ~0.1 ms. Each output row is still one thread's dot product: the same bits on any thread count.
WIDE_BYTES = 4 << 20


def _nbytes(*ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts if t is not None)


@contextmanager
def on_threads(n: int):
    """torch's intra-op threads set to n within (n <= 0: left as they are)."""
    before = torch.get_num_threads()
    if n <= 0 or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _as_words(x: torch.Tensor) -> torch.Tensor:
    """x contiguous from a 4-byte boundary: the GEMVs read its column pairs as words."""
    return x.contiguous() if x.data_ptr() % 4 == 0 else x.clone()


class _Proj:
    op_dtype = None  # the dtype of x its GEMV takes (None: none)
    chains = False  # decode steps may fold RMSNorm and the residual add into this projection (a GEMV's epilogues)
    gemv_silu = False  # a [gate; up] projection's GEMV can finish with silu(gate)·up itself
    threads = 0  # CPU: intra-op threads for this projection's matmul (0: the caller's; FastLlama.wide sets it)

    def _rows_ok(self, x: torch.Tensor) -> bool:
        """Whether this projection's GEMV serves x's rows (with `_input`, `_gemv`)."""
        return False

    def silu_mm(self, x: torch.Tensor, fused: bool, norm=None) -> torch.Tensor:
        """For a [gate; up] projection: silu(gate)·up [T, N/2] (fused: the Triton glue kernel). A few tokens with
        the glue kernels on: in the GEMV's epilogue. norm: x is RMSNorm's input times its weight, and `norm` its
        (partial sums of squares, eps) (`chains`)."""
        if not (fused and self.gemv_silu and self._rows_ok(x)):
            assert norm is None
            return glue.silu_mul(self.mm(x), fused)
        return self._gemv(self._input(x), silu=True, norm=norm).to(x.dtype)

    def rope_mm(self, x: torch.Tensor, norm, rope: tuple) -> torch.Tensor:
        """A decode step's tokens through [q; k; v] (`chains`, `rope_fits`): the rotary embedding and the cache
        write run in the GEMV's epilogue (gemv.gemv_int4's rope, gemv_mma's); returns q roped and folded as
        glue.rope_cache folds it."""
        return self._gemv(self._input(x), norm=norm, rope=rope)

    def residual_mm(self, x: torch.Tensor, xr: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """A decode step's tokens (`chains`): the residual stream xr [T, N] += x·W^T in place. Returns the next
        RMSNorm's input times its weight w [T, N] and the partial sums of squares of xr, for the next projection's
        `norm`."""
        return self._gemv(self._input(x), residual=(xr, w))


class Dense(_Proj):
    def __init__(self, w: torch.Tensor, bias: torch.Tensor | None = None, halves: int = 0):
        self.w, self.bias = w, bias  # [N, K], [N]
        self.n, self.k = w.shape
        self.op_dtype = w.dtype
        self.mma = (
            bias is None
            and gemv_mma.ENABLED
            and gemv_mma.available(w)
            and w.dtype in (torch.bfloat16, torch.float16)
            and gemv_mma.supported(self.n, self.k, 64)
            and os.environ.get("YI_CHAT_MMA_DENSE", "1") != "0"
        )
        # [q; k; v]: the GEMV reads W's rows in halves order (mma_layout.halves_order), its rope epilogue's
        self.halves = halves if self.mma and mma_layout.halves_fit(self.n, halves) else 0
        self.gemv_silu = self.mma and gemv_mma.silu_fits(self.n)
        self.chains = self.mma and os.environ.get("YI_CHAT_CHAIN", "1") != "0"

    def _rows_ok(self, x: torch.Tensor) -> bool:
        return self.mma and x.shape[0] <= gemv_mma.MAX_X and x.dtype == self.w.dtype

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return _as_words(x)

    def _gemv(self, x: torch.Tensor, silu: bool = False, **fold):
        return gemv_mma.gemv_mma(x, self.w, None, self.n, self.k, 0, silu=silu, halves=self.halves, **fold)

    def mm(self, x: torch.Tensor, norm=None) -> torch.Tensor:  # [T, K] -> [T, N]
        if self._rows_ok(x):
            return self._gemv(self._input(x), norm=norm)
        assert norm is None
        with on_threads(self.threads):
            return F.linear(x, self.w, self.bias)

    def rope_fits(self, head_dim: int) -> bool:
        return self.mma and self.halves == head_dim

    def nbytes(self) -> int:
        return _nbytes(self.w, self.bias)

    def dense_numel(self) -> int:
        return 0  # already dense

    def prefill_mm(self, x: torch.Tensor, keep: dict | None = None) -> torch.Tensor:
        return self.mm(x)


class Int4(_Proj):
    def __init__(self, planes, group: int, n: int, k: int, perm=None, bias=None, mma: bool = False, halves: int = 0):
        self.planes = planes  # [(packed, sz [K/group, N, 2])]: packed in gemv_mma's layout when mma
        # x's dtype for the ops, the scales': bf16 (int4, tinygemm), or the model's fp16 for int8 codes on gemv_mma
        self.op_dtype = planes[0][1].dtype
        self.group, self.n, self.k, self.perm, self.bias, self.mma = group, n, k, perm, bias, mma
        self.halves = halves  # mma: rows packed in mma_layout.halves_order of this head dim (0: as stored)
        packed = planes[0][0]
        self.layout = None if packed.is_cuda else tinygemm.cpu_layout()
        ikt = tinygemm.inner_k_tiles(k)
        self.wpr = 2 * ikt  # int32 words per row of a packed tile
        # one token: yi-chat's GEMV over the same packed codes where this build's tile layout is the expected one
        self.gemv = (
            not mma
            and packed.is_cuda
            and gemv.available(packed)
            and self.n % gemv.ROWS == 0
            and os.environ.get("YI_CHAT_GEMV", "1") != "0"
            and tinygemm.gemv_layout(ikt, packed.device)
        )
        # gate_up: the GEMV can finish with silu(gate)·up itself (both planes of int8 summed before it)
        self.gemv_silu = bias is None and (
            (self.gemv and (n // 2) % (gemv.ROWS // 2) == 0) or (mma and gemv_mma.silu_fits(n))
        )
        # the RMSNorm before this projection and the residual add after it can run inside the GEMV (the CUDA-core
        # one: one token; gemv_mma: each of up to 8 rows)
        self.chains = (self.gemv or mma) and bias is None and os.environ.get("YI_CHAT_CHAIN", "1") != "0"

    def nbytes(self) -> int:
        return _nbytes(self.perm, self.bias, *(t for plane in self.planes for t in plane))

    def _gemv(self, x: torch.Tensor, silu: bool = False, **fold):
        """x through yi-chat's GEMV: one row over every plane in one launch (fold: gemv_int4's norm / residual),
        or a few rows of a one-plane projection through the multi-row kernel."""
        (packed, sz), *rest = self.planes
        if self.mma:  # one plane: int4 codes, or GPTQ 8-bit's int8 codes
            return gemv_mma.gemv_mma(x, packed, sz, self.n, self.k, self.group, silu=silu, halves=self.halves, **fold)
        if x.shape[0] > 1:
            return gemv.gemv_int4_rows(x, packed, sz, self.n, self.k, self.group, self.wpr, silu=silu)
        plane2 = rest[0] if rest else None
        return gemv.gemv_int4(x, packed, sz, self.n, self.k, self.group, self.wpr, silu=silu, plane2=plane2, **fold)

    def _rows_ok(self, x: torch.Tensor) -> bool:
        """The GEMV serves x's t rows: one, or up to gemv.MAX_X (a verify's tokens) of a one-plane projection
        with the multi-row kernel; the tensor-core GEMV up to its 8."""
        t = x.shape[0]
        if self.mma:
            return t <= gemv_mma.MAX_X
        return self.gemv and (t == 1 or (t <= gemv.MAX_X and len(self.planes) == 1))

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        xb = x.to(self.op_dtype)
        if self.perm is not None:  # codes are stored with input columns in group order
            xb = xb.index_select(1, self.perm)
        return _as_words(xb) if self._rows_ok(xb) else xb

    def mm(self, x: torch.Tensor, norm=None) -> torch.Tensor:  # [T, K] -> [T, N], via op_dtype
        if self.mma and not self._rows_ok(x):
            assert norm is None
            return self.prefill_mm(x)
        xb = self._input(x)
        if self._rows_ok(xb):
            y = self._gemv(xb, norm=norm)
        else:
            assert norm is None
            y = None
            with on_threads(self.threads):
                for packed, sz in self.planes:
                    p = tinygemm.mm(xb, packed, self.group, sz)
                    y = p if y is None else y + p
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)

    def rope_fits(self, head_dim: int) -> bool:
        if self.mma:
            return self.halves == head_dim
        return gemv.rope_fits(head_dim, len(self.planes))

    def dense(self, dtype) -> torch.Tensor:
        """W [N, K] in `dtype`, input columns in stored (group) order."""
        packed = self.planes[0][0]
        if self.mma:
            w = torch.empty(self.n, self.k, dtype=dtype, device=packed.device)
            for i, (p, sz) in enumerate(self.planes):
                mma_layout.dequant(p, sz, w, self.group, accumulate=i > 0, halves=self.halves)
            return w
        if packed.is_cuda and glue.triton is not None:
            ikt = tinygemm.inner_k_tiles(self.k)
            inv = tinygemm.tile_inv(ikt, packed.device)
            w = torch.empty(self.n, self.k, dtype=dtype, device=packed.device)
            for i, (p, sz) in enumerate(self.planes):
                glue.dequant_int4(p, inv, sz, w, self.group, (8, 16 * ikt), accumulate=i > 0)
            return w
        w = None
        for packed, sz in self.planes:
            q = tinygemm.codes(packed, self.n, self.k).reshape(self.n, -1, self.group).to(dtype)  # [N, G, g]
            s, zf = sz.to(dtype).permute(1, 0, 2).unsqueeze(-1).unbind(2)  # [N, G, 1] each
            # (q - 8)·s + zf in q's own memory: the same ops as out of place, one [N, K] buffer instead of three
            p = torch.addcmul(zf, q.sub_(8), s, out=q).reshape(self.n, self.k)
            w = p if w is None else w.add_(p)
        return w

    def dense_numel(self) -> int:
        """Elements of `dense`'s W."""
        return self.n * self.k

    def prefill_mm(self, x: torch.Tensor, keep: dict | None = None) -> torch.Tensor:
        """Many tokens at once: dequantize, then one dense GEMM (compute-bound; on CPU also the reference's math).
        keep: W dequantized once and reused from there (a long prompt's chunks: FastLlama.keep_dense)."""
        if not x.is_cuda and self.layout is None:
            return self.mm(x)
        if self.perm is not None:
            x = x.index_select(1, self.perm)
        w = None if keep is None else keep.get((id(self), x.dtype))
        if w is None:
            w = self.dense(x.dtype)
            if keep is not None:
                keep[id(self), x.dtype] = w
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))


class Multi(_Proj):
    """Projections that could not be merged: one matmul each, outputs concatenated."""

    def __init__(self, parts):
        self.parts = parts

    @property
    def threads(self) -> int:
        return self.parts[0].threads

    @threads.setter
    def threads(self, n: int) -> None:
        for p in self.parts:
            p.threads = n

    def mm(self, x):
        return torch.cat([p.mm(x) for p in self.parts], -1)

    def nbytes(self) -> int:
        return sum(p.nbytes() for p in self.parts)

    def dense_numel(self) -> int:
        return sum(p.dense_numel() for p in self.parts)

    def prefill_mm(self, x, keep: dict | None = None):
        return torch.cat([p.prefill_mm(x, keep) for p in self.parts], -1)


def build(
    ckpt, weights, names: list[str], k: int, sizes: list[int], dtype: torch.dtype, halves: int = 0, bias: bool = False
):
    """One matmul object computing cat([x @ W_name.T for name in names], -1) in `dtype`; W_name is [size, k]. bias:
    each has one (its config's attention_bias or mlp_bias: a missing one is the missing tensor's error, one the config
    has no place for is left out, as transformers builds the model; the fast engine applied it).
    halves: [q; k; v] of heads of this dim: on the tensor-core GEMV, rows packed so that its epilogue can rope them
    (mma_layout.halves_order)."""
    packed = [ckpt.is_quantized(n) for n in names]
    if any(packed) and not all(packed):
        return Multi([build(ckpt, weights, [n], k, [s], dtype, bias=bias) for n, s in zip(names, sizes, strict=False)])
    if not any(packed):
        ws = [weights.tensor(f"{n}.weight", [s, k], dtype) for n, s in zip(names, sizes, strict=False)]
        biases = [weights.tensor(f"{n}.bias", [s], dtype) if bias else None for n, s in zip(names, sizes, strict=False)]
        return Dense(torch.cat(ws) if len(ws) > 1 else ws[0], _cat_bias(biases, sizes, dtype, ws[0].device), halves)
    qs = [weights.qweight(n, k, s, bias) for n, s in zip(names, sizes, strict=False)]
    if len(qs) > 1 and not Q.concatenable(qs):
        return Multi([build(ckpt, weights, [n], k, [s], dtype, bias=bias) for n, s in zip(names, sizes, strict=False)])
    w = Q.concat(qs)
    del qs
    bias = _bias(w.bias, dtype)
    g, n, device = w.groups_of, w.out_features, w.q.device
    if not (
        w.bits in (4, 8)
        and tinygemm.supported(4, g, k, n, device)
        and all(tinygemm.supported(4, g, k, s, device) for s in sizes)
    ):
        return Dense(Q.dequantize(w, dtype), bias)  # shapes the int4 ops refuse
    perm = Q.group_perm(w)
    q = w.q if perm is None else w.q[:, perm]  # [N, K] codes, input columns in group order
    mma = gemv_mma.ENABLED and gemv_mma.available(q) and gemv_mma.supported(n, k, g)
    pack = mma_layout.pack if mma else tinygemm.pack
    halves = halves if mma and mma_layout.halves_fit(n, halves) else 0
    int8 = w.bits == 8 and mma  # gemv_mma reads int8 codes as stored, one byte each
    if w.bits == 4:
        planes = [(q, tinygemm.scales_and_zeros(w.scales, w.zeros, OP_DTYPE))]  # sz [G, N, 2]
    else:
        # s and c = -z·s rounded through the model dtype first, as the generate engine's DequantLinear holds them
        s = w.scales.float().to(dtype).float().t()  # [N, G]
        c = (-w.zeros.float() * w.scales.float()).to(dtype).float().t()
        if int8:  # scales in x's dtype: the model's fp16 (x meets the codes as it is), else bf16
            sz_dtype = dtype if dtype == torch.float16 else OP_DTYPE
            planes = [(q.contiguous(), torch.stack([s, c], -1).transpose(0, 1).to(sz_dtype).contiguous())]
        else:
            planes = _int8_planes(q, s, c)
    if halves:  # packed row R holds stored row rows[R] (int8 codes stay: the GEMV reads row rows[R] by address)
        rows = mma_layout.halves_order(n, halves, q.device)
        planes = [(p if int8 else p[rows], sz[:, rows].contiguous()) for p, sz in planes]
    if not int8:
        planes = [(pack(p), sz) for p, sz in planes]
    return Int4(planes, g, n, k, perm, bias, mma, halves)


def _bias(b, dtype):
    return None if b is None or not bool(b.any()) else b.to(dtype)  # GPTQ writes zero biases


def _cat_bias(biases, sizes, dtype, device):
    if all(b is None for b in biases):
        return None
    return torch.cat(
        [
            b if b is not None else torch.zeros(s, dtype=dtype, device=device)
            for b, s in zip(biases, sizes, strict=False)
        ]
    )


def _int8_planes(q, s, c):
    """q uint8 [N, K], s / c [N, G] fp32 (W = q·s + c) -> two int4 planes (codes, sz) with the same bytes as q."""
    sz_hi = torch.stack([16 * s, 128 * s + c], -1).transpose(0, 1)  # [G, N, 2]
    sz_lo = torch.stack([s, 8 * s], -1).transpose(0, 1)
    return [(q >> 4, sz_hi.to(OP_DTYPE).contiguous()), (q & 15, sz_lo.to(OP_DTYPE).contiguous())]

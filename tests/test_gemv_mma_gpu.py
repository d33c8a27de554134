"""The tensor-core GEMV (yi_cli/kernels/gemv_mma.py) on int4 codes (and GPTQ's int8 codes, at the end) on Yi-6B's
projection shapes, Yi-34B's down and a tiny model's: against x @ W.T with the exact dequantized weights, and each row
of x bit for bit the same whether it runs alone or beside up to 7 others (what makes a speculative verify's rows
decode steps)."""

from __future__ import annotations

import pytest
import torch
from test_fast import rel_err
from test_gemv_rows_gpu import SHAPES as ROWS_SHAPES
from test_gemv_rows_gpu import rope_tables, weights

from yi_cli.kernels import gemv_mma, mma_layout

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

# the multi-row GEMV's shapes that this kernel serves (groups of 64 columns and more), and Yi-34B's down
SHAPES = {name: s for name, s in ROWS_SHAPES.items() if gemv_mma.supported(*s)} | {"34b_down": (7168, 20480, 128)}


def _x(t, k, seed, scale=1.0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return (torch.randn(t, k, device="cuda", generator=g) * scale).to(torch.bfloat16)


def _mma_weights(n, k, group):
    """(packed for gemv_mma, sz) and the fp32 weights they hold."""
    from yi_cli.kernels import tinygemm

    packed, sz, w, _ = weights(n, k, group)
    return (mma_layout.pack(tinygemm.codes(packed, n, k)), sz), w


def _mma(planes, x, n, k, group, **kw):
    ((packed, sz),) = planes
    return gemv_mma.gemv_mma(x, packed, sz, n, k, group, **kw)


@pytest.mark.parametrize("pair", [1, 2])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_mma_gemv_matches_dequantized_weights_for_every_row_count(shape, pair):
    """A warp taking a chunk of 64 columns at a time, or two (groups of 128 columns and more: their mma sums
    accumulate on the tensor cores and are scaled once)."""
    n, k, group = SHAPES[shape]
    if pair == 2 and not gemv_mma.pairs(k, group, 4):
        pytest.skip("groups of 64 columns: a chunk at a time")
    plane, w = _mma_weights(n, k, group)
    x = _x(8, k, 1)
    ref = x.float() @ w.t()
    alone = [_mma([plane], x[i : i + 1], n, k, group, pair=pair) for i in range(8)]
    for i, y in enumerate(alone):
        assert y.shape == (1, n) and y.dtype == torch.bfloat16
        assert rel_err(y[0].float(), ref[i]) < 3e-3, f"row {i}"
    for t in range(2, 9):
        y = _mma([plane], x[:t].contiguous(), n, k, group, pair=pair)
        assert y.shape == (t, n)
        for i in range(t):
            assert torch.equal(y[i : i + 1], alone[i]), f"{t} rows: row {i} differs from the one-row launch"


@pytest.mark.parametrize("shape", ["qkv", "o", "down", "34b_down"])
def test_an_unrolled_loop_gives_the_same_bits(shape):
    """The main loop unrolled 1, 2 or 3 times the weights' units ahead, or not a loop at all (every unit static):
    the same units in the same order, so the same bits for 1 and 3 rows of x, a chunk or a pair of chunks a unit."""
    n, k, group = SHAPES[shape]
    plane, _ = _mma_weights(n, k, group)
    for rows in (1, 3):
        x = _x(rows, k, 2)
        for pair in (1, 2):
            rt, warps, ahead, xahead = gemv_mma.config(n, k)[:4]
            kw = dict(rt=rt, warps=warps, ahead=ahead, xahead=xahead, pair=pair)
            iters = (k // 64 // pair + warps - 1) // warps
            base = _mma([plane], x, n, k, group, **kw, unroll=ahead)
            for unroll in sorted({2 * ahead, 3 * ahead, -(-iters // ahead) * ahead}):
                y = _mma([plane], x, n, k, group, **kw, unroll=unroll)
                assert torch.equal(y, base), f"{rows} rows, pair {pair}: unrolled {unroll} differs"


@pytest.mark.parametrize("shape", ["gate_up", "tiny64"])
def test_mma_silu_epilogue(shape):
    from yi_cli.kernels import glue

    n, k, group = SHAPES[shape]
    plane, _ = _mma_weights(n, k, group)
    x = _x(5, k, 2)
    y = _mma([plane], x, n, k, group, rt=2)
    s = _mma([plane], x, n, k, group, rt=2, silu=True)
    assert s.shape == (5, n // 2)
    assert torch.equal(s, glue.silu_mul(y, True))
    assert torch.equal(_mma([plane], x[3:4].contiguous(), n, k, group, silu=True), s[3:4])


@pytest.mark.parametrize("shape", ["o", "tiny64"])
def test_mma_dequant_for_prefill(shape):
    n, k, group = SHAPES[shape]
    (packed, sz), w = _mma_weights(n, k, group)
    got = torch.empty(n, k, dtype=torch.bfloat16, device="cuda")
    mma_layout.dequant(packed, sz, got, group, accumulate=False)
    assert torch.allclose(got.float(), w, rtol=8e-3, atol=1e-5)
    mma_layout.dequant(packed, sz, got, group, accumulate=True)
    assert torch.allclose(got.float(), 2 * w, rtol=8e-3, atol=1e-5)


def test_projection_routes_rows_to_the_mma_gemv(monkeypatch):
    """Int4 on CUDA: 1..8 rows through gemv_mma (silu in its epilogue), more through the dequantized GEMM."""
    from test_fast import checkpoint
    from test_fast_gpu import cuda_pair

    _, dec = cuda_pair(checkpoint(0, "awq", group=64))
    m = dec.model
    layer = m.layers[0]
    assert layer.qkv.mma and layer.gate_up.gemv_silu and m.exact_rows and m.chained
    calls = []
    real = gemv_mma.gemv_mma
    monkeypatch.setattr(gemv_mma, "gemv_mma", lambda *a, **kw: calls.append(a[0].shape[0]) or real(*a, **kw))
    x = torch.randn(12, layer.qkv.k, device="cuda", dtype=torch.bfloat16)
    w = layer.qkv.dense(torch.float32)
    with torch.inference_mode():
        for t in (1, 8, 12):
            assert rel_err(layer.qkv.mm(x[:t]).float(), x[:t].float() @ w.t()) < 1e-2
        layer.gate_up.silu_mm(x[:3], True)
    assert calls == [1, 8, 3]


def _halves(n, k, group, hd):
    """A [q; k; v]-shaped plane packed in halves_order (as projections.build packs qkv), and the plain packing."""
    from yi_cli.kernels import tinygemm

    packed, sz, w, _ = weights(n, k, group)
    q = tinygemm.codes(packed, n, k)
    rows = mma_layout.halves_order(n, hd, q.device)
    return (mma_layout.pack(q[rows]), sz[:, rows].contiguous()), (mma_layout.pack(q), sz), w


def test_halves_order_keeps_every_output_where_it_was():
    """Rows packed in halves order: the plain epilogue stores each row where the stored order has it, bit for bit
    the plainly packed launch (a row's sums do not depend on its place in a tile), and dequant gives W back."""
    n, k, group, hd = 9 * 64, 576, 64, 64
    halves, plain, w = _halves(n, k, group, hd)
    x = _x(8, k, 11)
    for t in (1, 3, 8):
        got = gemv_mma.gemv_mma(x[:t].contiguous(), *halves, n, k, group, halves=hd)
        assert torch.equal(got, gemv_mma.gemv_mma(x[:t].contiguous(), *plain, n, k, group))
    out = torch.empty(n, k, device="cuda")
    mma_layout.dequant(*halves, out, group, accumulate=False, halves=hd)
    assert torch.allclose(out, w, rtol=8e-3, atol=1e-5)


@pytest.mark.parametrize("shape", ["o", "down", "tiny64"])
def test_mma_residual_epilogue(shape):
    """RESIDUAL for 1 to 8 rows: xr += y as a bf16 add of the rounded output, then xr·w, bit for bit the plain launch
    followed by torch ops, and each program's sums of squares of xr per row ([8, programs], up to fp32 order)."""
    n, k, group = SHAPES[shape]
    plane, _ = _mma_weights(n, k, group)
    x, xr, w = _x(8, k, 2), _x(8, n, 3, 4.0), (_x(1, n, 4) + 1).flatten()
    rt = gemv_mma.config(n, k)[0]
    for t in (1, 2, 5, 8):
        xt = x[:t].contiguous()
        want = xr[:t] + gemv_mma.gemv_mma(xt, *plane, n, k, group)
        got = xr[:t].clone()
        h, part = gemv_mma.gemv_mma(xt, *plane, n, k, group, residual=(got, w))
        assert torch.equal(got, want) and torch.equal(h, want * w)
        assert part.shape == (gemv_mma.MAX_X, n // (16 * rt)) and part.dtype == torch.float32
        sq = want.float().pow(2).view(t, -1, 16 * rt).sum(2)
        assert torch.allclose(part[:t], sq, rtol=1e-5, atol=0)


@pytest.mark.parametrize("shape", ["qkv", "gate_up", "tiny64"])
def test_mma_norm_scales_each_row_by_its_own_rms(shape):
    """NORM: x·w in, [8, P] partial sums of squares beside it: each row of the output is RMSNorm(x)·w @ W.T with
    its own 1 / rms applied to the fp32 sum (against the fp32 reference and close to the unfused bf16 path), and
    each row of an 8-row launch is its one-row launch bit for bit; silu(gate)·up of the scaled sums with SILU."""
    from yi_cli.kernels import glue

    n, k, group = SHAPES[shape]
    plane, w = _mma_weights(n, k, group)
    x, nw, eps = _x(8, k, 5, 3.0), (_x(1, k, 6) * 0.1 + 1).flatten(), 1e-6
    part = torch.zeros(gemv_mma.MAX_X, 64, device="cuda")
    part[:, :] = x.float().pow(2).view(8, 64, -1).sum(2)  # as a RESIDUAL launch of 64 programs writes them
    xw = (x * nw).contiguous()
    y = gemv_mma.gemv_mma(xw, *plane, n, k, group, norm=(part, eps))
    rstd = torch.rsqrt(x.float().pow(2).mean(1, keepdim=True) + eps)
    ref = (x.float() * rstd * nw.float()) @ w.t()
    assert rel_err(y.float(), ref) < 4e-3
    _, h = glue.add_rmsnorm(x, None, nw, eps, True)
    assert rel_err(y.float(), gemv_mma.gemv_mma(h, *plane, n, k, group).float()) < 8e-3
    for i in (0, 5, 7):
        alone = gemv_mma.gemv_mma(xw[i : i + 1].contiguous(), *plane, n, k, group, norm=(part[i:].contiguous(), eps))
        assert torch.equal(alone, y[i : i + 1]), f"row {i}"
    if shape != "qkv":
        y2 = gemv_mma.gemv_mma(xw, *plane, n, k, group, rt=2, norm=(part, eps))
        s = gemv_mma.gemv_mma(xw, *plane, n, k, group, rt=2, silu=True, norm=(part, eps))
        assert torch.equal(s, glue.silu_mul(y2, True))


@pytest.mark.parametrize("heads,kv,hd,k,group", [(32, 4, 128, 4096, 128), (9, 3, 64, 576, 64)])
def test_mma_rope_epilogue(heads, kv, hd, k, group):
    """ROPE ([q; k; v] in halves order) for 1 to 8 tokens at their own positions: q roped and folded, k and v in
    the caches at each token's slot, bit for bit the plain launch followed by glue.rope_cache, with and without
    the norm's 1 / rms."""
    from yi_cli.kernels import glue

    n = (heads + 2 * kv) * hd
    halves, plain, _ = _halves(n, k, group, hd)
    seq = 64
    g = torch.Generator(device="cuda").manual_seed(hd)
    cos, sin = rope_tables(seq, hd, hd)
    x = _x(8, k, 8, 3.0)
    part = torch.rand(gemv_mma.MAX_X, 32, device="cuda", generator=g) * k / 32
    for t in (1, 4, 8):
        xt, pos = x[:t].contiguous(), torch.arange(30, 30 + t, device="cuda")
        for norm in (None, (part, 1e-6)):
            caches = [torch.randn(1, kv, seq, hd, device="cuda", generator=g).bfloat16() for _ in range(2)]
            caches += [c.clone() for c in caches]
            y = gemv_mma.gemv_mma(xt, *halves, n, k, group, halves=hd, norm=norm)
            want = glue.rope_cache(y, cos, sin, pos, caches[0], caches[1], heads, kv, hd, True)
            rope = (cos, sin, pos, caches[2], caches[3], heads, kv, hd)
            got = gemv_mma.gemv_mma(xt, *halves, n, k, group, halves=hd, norm=norm, rope=rope)
            assert got.shape == want.shape and torch.equal(got, want), f"{t} tokens, norm {norm is not None}"
            assert torch.equal(caches[2], caches[0]) and torch.equal(caches[3], caches[1])


@pytest.mark.parametrize(
    "early",
    [gemv_mma.NORM, gemv_mma.RESIDUAL, gemv_mma.POS, 7, 7 | gemv_mma.AT_END],
)
def test_early_reads_give_the_same_bits(early):
    """An epilogue's reads issued before the loop or the warps' sums (early) give the bits of those issued after them,
    for 1 to 8 rows:
    the residual stream, the next norm's input and its partial sums (o, down); the norm's scaling (qkv, gate_up with
    silu); q roped and the caches written (qkv, with the norm)."""
    for shape in ("o", "down", "qkv", "gate_up", "tiny64"):
        n, k, group = SHAPES[shape]
        plane, _ = _mma_weights(n, k, group)
        x, xr, w = _x(8, k, 2), _x(8, n, 3, 4.0), (_x(1, n, 4) + 1).flatten()
        part = torch.rand(gemv_mma.MAX_X, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(1)) * k
        for t in (1, 2, 5, 8):
            xt = x[:t].contiguous()
            outs = []
            for e in (0, early):
                got = xr[:t].clone()
                h, sq = gemv_mma.gemv_mma(xt, *plane, n, k, group, residual=(got, w), early=e)
                y = gemv_mma.gemv_mma(xt, *plane, n, k, group, norm=(part, 1e-6), early=e)
                outs.append((got, h, sq[:t], y))
                if shape == "gate_up":
                    outs[-1] += (gemv_mma.gemv_mma(xt, *plane, n, k, group, silu=True, norm=(part, 1e-6), early=e),)
            for a, b in zip(*outs, strict=True):
                assert torch.equal(a, b), f"{shape}, {t} rows"
    heads, kv, hd, k, group = 32, 4, 128, 4096, 128
    n = (heads + 2 * kv) * hd
    halves, _, _ = _halves(n, k, group, hd)
    cos, sin = rope_tables(64, hd, hd)
    x = _x(8, k, 8, 3.0)
    part = torch.rand(gemv_mma.MAX_X, 32, device="cuda", generator=torch.Generator("cuda").manual_seed(2)) * k / 32
    for t in (1, 3, 8):
        xt, pos = x[:t].contiguous(), torch.arange(29, 29 + t, device="cuda")
        outs = []
        for e in (0, early):
            caches = [torch.zeros(1, kv, 64, hd, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
            rope = (cos, sin, pos, caches[0], caches[1], heads, kv, hd)
            q = gemv_mma.gemv_mma(xt, *halves, n, k, group, halves=hd, norm=(part, 1e-6), rope=rope, early=e)
            outs.append((q, *caches))
        for a, b in zip(*outs, strict=True):
            assert torch.equal(a, b), f"rope, {t} rows"


@pytest.mark.parametrize("shape", ["qkv", "o", "gate_up", "down", "34b_down", "tiny64"])
def test_gathered_sums_match_the_cross_warp_sum(shape):
    """The warps' partial sums added in each lane after one exchange (gather) or by gl.sum across the warps: the
    same fp32 sums up to their order, so at most one bf16 rounding step apart, for 1 to 8 rows (each row of an 8-row
    gathered launch its one-row launch's bits, as the first test checks for the default)."""
    n, k, group = SHAPES[shape]
    plane, _ = _mma_weights(n, k, group)
    x = _x(8, k, 7)
    for t in (1, 3, 8):
        xt = x[:t].contiguous()
        a = gemv_mma.gemv_mma(xt, *plane, n, k, group, gather=True).float()
        b = gemv_mma.gemv_mma(xt, *plane, n, k, group, gather=False).float()
        assert torch.allclose(a, b, rtol=2**-7, atol=1e-6), f"{t} rows"
        assert (a != b).float().mean() < 0.05


def _int8(n, k, group, seed=0, dtype=torch.bfloat16):
    """GPTQ 8-bit as gemv_mma takes it: codes uint8 [N, K] as stored, (s, c) [K / group, N, 2] in x's dtype, and
    W = q·s + c in fp32."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randint(0, 256, (n, k), device="cuda", dtype=torch.uint8, generator=g)
    s = (torch.rand(k // group, n, device="cuda", generator=g) * 0.002 + 0.0005).to(dtype)
    c = (-128 * s.float() + torch.randn(k // group, n, device="cuda", generator=g) * 0.01).to(dtype)
    sz = torch.stack([s, c], -1).contiguous()
    w = q.float().view(n, k // group, group) * s.float().t()[:, :, None] + c.float().t()[:, :, None]
    return q, sz, w.view(n, k)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", ["qkv", "gate_up", "down", "34b_down", "tiny64"])
def test_int8_codes_match_their_weights_for_every_row_count(shape, dtype):
    """int8 codes as stored (GPTQ 8-bit), x and the scales in bf16 (x converted to fp16 for the mma: exact in its
    range) or fp16 (an fp16 model's, as it is): against x @ W.T in fp32, each row of 8 its one-row launch's bits;
    silu(gate)·up of the plain launch; prefill's dequant gives W back."""
    from yi_cli.kernels import glue

    n, k, group = SHAPES[shape]
    q, sz, w = _int8(n, k, group, dtype=dtype)
    x = _x(8, k, 1).to(dtype)
    ref = x.float() @ w.t()
    alone = [gemv_mma.gemv_mma(x[i : i + 1], q, sz, n, k, group) for i in range(8)]
    for i, y in enumerate(alone):
        assert rel_err(y[0].float(), ref[i]) < 3e-3, f"row {i}"
    for t in (2, 5, 8):
        y = gemv_mma.gemv_mma(x[:t].contiguous(), q, sz, n, k, group)
        for i in range(t):
            assert torch.equal(y[i : i + 1], alone[i]), f"{t} rows: row {i} differs from the one-row launch"
    y = gemv_mma.gemv_mma(x[:3].contiguous(), q, sz, n, k, group, rt=2)
    s = gemv_mma.gemv_mma(x[:3].contiguous(), q, sz, n, k, group, rt=2, silu=True)
    assert torch.equal(s, glue.silu_mul(y, True))
    got = torch.empty(n, k, dtype=dtype, device="cuda")
    mma_layout.dequant(q, sz, got, group, accumulate=False)
    assert torch.allclose(got.float(), w, rtol=8e-3, atol=1e-5)


def test_int8_codes_meet_an_fp16_x_as_a_bf16_one_converted():
    """An fp16 x with fp16 scales (an fp16 model) skips the conversion; where both are exact in either dtype (bf16
    values inside fp16's range) the fp32 sums are the bf16 launch's, so the two results are one value rounded to
    each dtype (each within half its ulp of it), and fp16's is the closer to x @ W.T in fp32."""
    n, k, group = SHAPES["gate_up"]
    q, sz, w = _int8(n, k, group, seed=7)
    sz16 = sz.to(torch.float16)
    assert torch.equal(sz16.to(torch.bfloat16), sz)
    x = _x(3, k, 8)
    bf = gemv_mma.gemv_mma(x, q, sz, n, k, group).float()
    half = gemv_mma.gemv_mma(x.half(), q, sz16, n, k, group)
    assert half.dtype == torch.float16
    half = half.float()
    assert ((half - bf).abs() <= torch.maximum(half.abs(), bf.abs()) * 1.01 * (2**-8 + 2**-11)).all()
    ref = x.float() @ w.t()
    assert rel_err(half, ref) < rel_err(bf, ref) / 4  # fp16's rounding: 3 bits finer


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_int8_rows_read_in_halves_order(dtype):
    """[q; k; v] int8 codes as stored, their scales in halves order (projections.build): the plain epilogue stores
    each row where W has it, the rope epilogue is that launch followed by glue.rope_cache, dequant gives W back; x,
    the scales and the tables in bf16 or fp16 (GPTQ 8-bit's default)."""
    from yi_cli.kernels import glue

    heads, kv, hd, k, group = 32, 4, 128, 4096, 128
    n = (heads + 2 * kv) * hd
    q, sz, w = _int8(n, k, group, seed=3, dtype=dtype)
    szh = sz[:, mma_layout.halves_order(n, hd, q.device)].contiguous()
    x, seq = _x(8, k, 9).to(dtype), 64
    cos, sin = rope_tables(seq, hd, 2, dtype)
    for t in (1, 8):
        xt, pos = x[:t].contiguous(), torch.arange(30, 30 + t, device="cuda")
        y = gemv_mma.gemv_mma(xt, q, szh, n, k, group, halves=hd)
        assert torch.equal(y, gemv_mma.gemv_mma(xt, q, sz, n, k, group))
        caches = [_x(kv * seq, hd, 20 + i).to(dtype).view(1, kv, seq, hd) for i in range(2)]
        caches += [c.clone() for c in caches]
        want = glue.rope_cache(y, cos, sin, pos, caches[0], caches[1], heads, kv, hd, True)
        rope = (cos, sin, pos, caches[2], caches[3], heads, kv, hd)
        got = gemv_mma.gemv_mma(xt, q, szh, n, k, group, halves=hd, rope=rope)
        assert torch.equal(got, want) and torch.equal(caches[2], caches[0]) and torch.equal(caches[3], caches[1])
    out = torch.empty(n, k, device="cuda")
    mma_layout.dequant(q, szh, out, group, accumulate=False, halves=hd)
    assert torch.allclose(out, w, rtol=8e-3, atol=1e-5)


def test_int8_x_past_fp16s_range_saturates_instead_of_nan():
    """x meets int8 codes in fp16: a bf16 value past fp16's range (1e5) goes in as its largest finite value,
    65504, so the row is x with that value @ W.T, finite (as inf it would make s·D + (c - 1024·s)·X NaN); the other
    row is untouched."""
    n, k, group = SHAPES["qkv"]
    q, sz, w = _int8(n, k, group, seed=5)
    x = _x(2, k, 6)
    x[0, 7] = 1e5
    y = gemv_mma.gemv_mma(x, q, sz, n, k, group)
    assert torch.isfinite(y).all()
    xs = x.float()
    xs[0, 7] = 65504.0
    assert rel_err(y[0].float(), xs[0] @ w.t()) < 3e-3
    assert torch.equal(y[1:], gemv_mma.gemv_mma(x[1:].contiguous(), q, sz, n, k, group))

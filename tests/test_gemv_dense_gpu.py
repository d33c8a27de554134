"""The tensor-core GEMV on dense bf16 / fp16 weights (gemv_mma with sz None: W read as stored, no repacking) on
Yi-6B's and Yi-34B's projection shapes and a tiny model's: against x @ W.T in fp32, each row of x bit for bit the
same alone or beside up to 7 others, and the chained decode step's epilogues (silu, residual, norm, rope) as the
plain launch followed by the glue they replace."""

from __future__ import annotations

import pytest
import torch
from test_fast import rel_err
from test_gemv_rows_gpu import rope_tables

from yi_cli.kernels import gemv_mma, glue

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

SHAPES = {  # (n, k)
    "qkv": (5120, 4096),
    "o": (4096, 4096),
    "gate_up": (22016, 4096),
    "down": (4096, 11008),
    "34b_qkv": (9216, 7168),
    "34b_down": (7168, 20480),
    "head": (64000, 4096),  # Yi's lm_head (FastLlama.head_gemv)
    "34b_head": (64000, 7168),
    "tiny": (256, 128),
}


def _t(shape, seed, dtype=torch.bfloat16, scale=1.0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return (torch.randn(*shape, device="cuda", generator=g) * scale).to(dtype)


def _w(n, k, dtype=torch.bfloat16, seed=0):
    return _t((n, k), seed, dtype, k**-0.5)


def _dense(x, w, **kw):
    n, k = w.shape
    return gemv_mma.gemv_mma(x, w, None, n, k, 0, **kw)


@pytest.mark.parametrize(
    "shape,dtype",
    [(s, torch.bfloat16) for s in SHAPES] + [("qkv", torch.float16), ("down", torch.float16), ("tiny", torch.float16)],
)
def test_dense_matches_fp32_for_every_row_count(shape, dtype):
    n, k = SHAPES[shape]
    w, x = _w(n, k, dtype), _t((8, k), 1, dtype)
    ref = x.float() @ w.float().t()
    alone = [_dense(x[i : i + 1], w) for i in range(8)]
    for i, y in enumerate(alone):
        assert y.shape == (1, n) and y.dtype == dtype
        assert rel_err(y[0].float(), ref[i]) < 3e-3, f"row {i}"
    for t in (2, 3, 5, 8):
        y = _dense(x[:t].contiguous(), w)
        for i in range(t):
            assert torch.equal(y[i : i + 1], alone[i]), f"{t} rows: row {i} differs from the one-row launch"


@pytest.mark.parametrize("shape", ["gate_up", "head", "tiny"])
def test_dense_silu_and_norm_epilogues(shape):
    """SILU: silu(gate)·up of the plain launch bit for bit; NORM: each row scaled by its own 1 / rms (against fp32,
    and each row of 8 its one-row launch's bits)."""
    n, k = SHAPES[shape]
    w, x, nw, eps = _w(n, k), _t((8, k), 2, scale=3.0), (_t((1, k), 3) * 0.1 + 1).flatten(), 1e-6
    y = _dense(x[:5].contiguous(), w, rt=2)
    assert torch.equal(_dense(x[:5].contiguous(), w, rt=2, silu=True), glue.silu_mul(y, True))
    part = x.float().pow(2).view(8, 64, -1).sum(2).contiguous()  # as a RESIDUAL launch of 64 programs writes them
    xw = (x * nw).contiguous()
    got = _dense(xw, w, norm=(part, eps))
    rstd = torch.rsqrt(x.float().pow(2).mean(1, keepdim=True) + eps)
    assert rel_err(got.float(), (x.float() * rstd * nw.float()) @ w.float().t()) < 4e-3
    for i in (0, 6):
        assert torch.equal(_dense(xw[i : i + 1].contiguous(), w, norm=(part[i:].contiguous(), eps)), got[i : i + 1])


@pytest.mark.parametrize("shape", ["o", "down", "tiny"])
def test_dense_residual_epilogue(shape):
    n, k = SHAPES[shape]
    w, x, xr, nw = _w(n, k), _t((8, k), 4), _t((8, n), 5, scale=4.0), (_t((1, n), 6) + 1).flatten()
    rt = gemv_mma.config(n, k, 16)[0]
    for t in (1, 4, 8):
        xt = x[:t].contiguous()
        want = xr[:t] + _dense(xt, w)
        got = xr[:t].clone()
        h, part = _dense(xt, w, residual=(got, nw))
        assert torch.equal(got, want) and torch.equal(h, want * nw)
        assert torch.allclose(part[:t], want.float().pow(2).view(t, -1, 16 * rt).sum(2), rtol=1e-5, atol=0)


@pytest.mark.parametrize("heads,kv,hd,k,dtype", [(32, 4, 128, 4096, torch.bfloat16), (4, 2, 32, 128, torch.float16)])
def test_dense_rope_epilogue_reads_rows_in_halves_order(heads, kv, hd, k, dtype):
    """halves: the plain epilogue stores every row where W has it (bit for bit the launch without halves), and the
    rope epilogue equals that launch followed by glue.rope_cache."""
    n = (heads + 2 * kv) * hd
    w, x, seq = _w(n, k, dtype), _t((8, k), 7, dtype), 64
    cos, sin = rope_tables(seq, hd, 1, dtype)
    for t in (1, 8):
        xt, pos = x[:t].contiguous(), torch.arange(30, 30 + t, device="cuda")
        y = _dense(xt, w, halves=hd)
        assert torch.equal(y, _dense(xt, w))
        caches = [_t((1, kv, seq, hd), 8 + i, dtype) for i in range(2)]
        caches += [c.clone() for c in caches]
        want = glue.rope_cache(y, cos, sin, pos, caches[0], caches[1], heads, kv, hd, True)
        got = _dense(xt, w, halves=hd, rope=(cos, sin, pos, caches[2], caches[3], heads, kv, hd))
        assert torch.equal(got, want) and torch.equal(caches[2], caches[0]) and torch.equal(caches[3], caches[1])


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_dense_model_chains_its_steps_through_the_gemv(monkeypatch, dtype):
    """A plain checkpoint on CUDA: every projection on gemv_mma (1..8 rows; more through cuBLAS), the decode step
    chained and a verify's rows exact, in bf16 and in fp16."""
    from test_fast import checkpoint

    from yi_cli.checkpoint.loader import open_checkpoint
    from yi_cli.runtime.decoder import FastDecoder

    dec = FastDecoder(open_checkpoint(checkpoint(0), device="cuda", dtype=dtype))
    m = dec.model
    layer = m.layers[0]
    assert layer.qkv.mma and layer.qkv.halves == m.hd and m.exact_rows and m.chained
    calls = []
    real = gemv_mma.gemv_mma
    monkeypatch.setattr(gemv_mma, "gemv_mma", lambda *a, **kw: calls.append(a[0].shape[0]) or real(*a, **kw))
    x = _t((12, layer.qkv.k), 9, m.dtype)
    with torch.inference_mode():
        for t in (1, 8, 12):
            assert rel_err(layer.qkv.mm(x[:t]).float(), x[:t].float() @ layer.qkv.w.float().t()) < 1e-2
        layer.gate_up.silu_mm(x[:3], True)
    assert calls == [1, 8, 3]

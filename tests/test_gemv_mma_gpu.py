"""The tensor-core int4 GEMV (yi_cli/kernels/gemv_mma.py) on Yi-6B's projection shapes, Yi-34B's down and a tiny
model's: against x @ W.T with the exact dequantized weights, and each row of x bit for bit the same whether it runs
alone or beside up to 7 others (what makes a speculative verify's rows decode steps)."""

from __future__ import annotations

import pytest
import torch
from test_fast import rel_err
from test_gemv_fold_gpu import weights_other
from test_gemv_rows_gpu import SHAPES as ROWS_SHAPES
from test_gemv_rows_gpu import weights

from yi_cli.kernels import gemv_mma

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

# the multi-row GEMV's shapes that this kernel serves (groups of 64 columns and more), and Yi-34B's down
SHAPES = {name: s for name, s in ROWS_SHAPES.items() if gemv_mma.supported(*s)} | {"34b_down": (7168, 20480, 128)}


def _x(t, k, seed, scale=1.0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return (torch.randn(t, k, device="cuda", generator=g) * scale).to(torch.bfloat16)


def _mma_weights(n, k, group, other=False):
    """(packed for gemv_mma, sz) and the fp32 weights they hold (other: a second, different plane)."""
    from yi_cli.kernels import tinygemm

    packed, sz, w, _ = (weights_other if other else weights)(n, k, group)
    return (gemv_mma.pack(tinygemm.codes(packed, n, k)), sz), w


def _mma(planes, x, n, k, group, **kw):
    (packed, sz), *rest = planes
    return gemv_mma.gemv_mma(x, packed, sz, n, k, group, plane2=(rest or [None])[0], **kw)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_mma_gemv_matches_dequantized_weights_for_every_row_count(shape):
    n, k, group = SHAPES[shape]
    plane, w = _mma_weights(n, k, group)
    x = _x(8, k, 1)
    ref = x.float() @ w.t()
    alone = [_mma([plane], x[i : i + 1], n, k, group) for i in range(8)]
    for i, y in enumerate(alone):
        assert y.shape == (1, n) and y.dtype == torch.bfloat16
        assert rel_err(y[0].float(), ref[i]) < 3e-3, f"row {i}"
    for t in range(2, 9):
        y = _mma([plane], x[:t].contiguous(), n, k, group)
        assert y.shape == (t, n)
        for i in range(t):
            assert torch.equal(y[i : i + 1], alone[i]), f"{t} rows: row {i} differs from the one-row launch"


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


@pytest.mark.parametrize("shape", ["qkv", "down", "tiny64"])
def test_mma_two_planes(shape):
    n, k, group = SHAPES[shape]
    a, w1 = _mma_weights(n, k, group)
    b, w2 = _mma_weights(n, k, group, other=True)
    x = _x(3, k, 3)
    y = _mma([a, b], x, n, k, group)
    assert rel_err(y.float(), x.float() @ (w1 + w2).t()) < 3e-3
    assert torch.equal(_mma([a, b], x[2:3].contiguous(), n, k, group), y[2:3])


@pytest.mark.parametrize("shape", ["o", "tiny64"])
def test_mma_dequant_for_prefill(shape):
    n, k, group = SHAPES[shape]
    (packed, sz), w = _mma_weights(n, k, group)
    got = torch.empty(n, k, dtype=torch.bfloat16, device="cuda")
    gemv_mma.dequant(packed, sz, got, group, accumulate=False)
    assert torch.allclose(got.float(), w, rtol=8e-3, atol=1e-5)
    gemv_mma.dequant(packed, sz, got, group, accumulate=True)
    assert torch.allclose(got.float(), 2 * w, rtol=8e-3, atol=1e-5)


def test_projection_routes_rows_to_the_mma_gemv(monkeypatch):
    """Int4 on CUDA: 1..8 rows through gemv_mma (silu in its epilogue), more through the dequantized GEMM."""
    from test_fast import checkpoint
    from test_fast_gpu import cuda_pair

    _, dec = cuda_pair(checkpoint(0, "awq", group=64))
    m = dec.model
    layer = m.layers[0]
    assert layer.qkv.mma and layer.gate_up.gemv_silu and m.exact_rows and not m.chained
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

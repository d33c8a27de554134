"""The multi-row int4 GEMV (gemv.gemv_int4_rows: a speculative verify's k + 1 <= 8 tokens, each weight word read
once) on every Yi-6B projection shape: against x @ W.T with the exact dequantized weights (the one-row GEMV's
bound) and bit for bit against the one-row GEMV on each row (the same per-row arithmetic)."""

from __future__ import annotations

import pytest
import torch
from test_fast import rel_err

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

SHAPES = {  # (N, K, group): Yi-6B's qkv, o, gate_up (silu), down; two of the tiny test models' (groups < a tile)
    "qkv": (5120, 4096, 128),
    "o": (4096, 4096, 128),
    "gate_up": (22016, 4096, 128),
    "down": (4096, 11008, 128),
    "tiny32": (64, 256, 32),
    "tiny64": (96, 576, 64),
}


def weights(n, k, group):
    from yi_cli.kernels import tinygemm

    g = torch.Generator(device="cuda").manual_seed(n + k + group)
    q = torch.randint(0, 16, (n, k), dtype=torch.uint8, device="cuda", generator=g)
    s = torch.rand(k // group, n, device="cuda", generator=g) * 0.01 + 1e-3
    zf = torch.randn(k // group, n, device="cuda", generator=g) * 0.02
    sz = torch.stack([s, zf], -1).to(torch.bfloat16).contiguous()
    szf = sz.float().repeat_interleave(group, 0)  # [K, N, 2]
    w = (q.float() - 8) * szf[..., 0].t() + szf[..., 1].t()
    return tinygemm.pack(q), sz, w, 2 * tinygemm.inner_k_tiles(k)


def rope_tables(seq: int, hd: int, seed: int, dtype=torch.bfloat16) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [seq, hd] of random angles in [0, 6), each half repeated as RoPE's tables are: the rope epilogue
    tests' input."""
    ang = torch.rand(seq, hd // 2, device="cuda", generator=torch.Generator(device="cuda").manual_seed(seed)) * 6
    return torch.cat([ang.cos()] * 2, -1).to(dtype), torch.cat([ang.sin()] * 2, -1).to(dtype)


@pytest.mark.parametrize("m", [2, 3, 4, 8])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_gemv_rows_match_dequantized_weights_and_the_one_row_gemv(shape, m):
    from yi_cli.kernels import gemv, glue

    n, k, group = SHAPES[shape]
    packed, sz, w, wpr = weights(n, k, group)
    x = torch.randn(m, k, device="cuda", generator=torch.Generator(device="cuda").manual_seed(m)).to(torch.bfloat16)
    y = gemv.gemv_int4_rows(x, packed, sz, n, k, group, wpr)
    ref = x.float() @ w.t()
    one = torch.cat([gemv.gemv_int4(x[i : i + 1], packed, sz, n, k, group, wpr) for i in range(m)])
    tiny = torch.ops.aten._weight_int4pack_mm(x, packed, group, sz)
    print(f"{shape} M={m}: rows rel err {rel_err(y.float(), ref):.2e}, tinygemm {rel_err(tiny.float(), ref):.2e}")
    assert y.shape == (m, n) and y.dtype == torch.bfloat16
    assert rel_err(y.float(), ref) < 3e-3
    assert torch.equal(y, one), f"differs from the one-row GEMV in {(y != one).sum()} of {y.numel()}"
    if shape in ("gate_up", "tiny32", "tiny64"):  # [gate; up] with the silu·up epilogue
        fused = gemv.gemv_int4_rows(x, packed, sz, n, k, group, wpr, silu=True)
        assert fused.shape == (m, n // 2)
        assert torch.equal(fused, glue.silu_mul(y, True))


def test_projection_uses_the_rows_gemv_for_a_verify(monkeypatch, cuda_core):
    """Int4.mm / silu_mm route 2..8 rows to the multi-row GEMV (and to tinygemm past gemv.MAX_X)."""
    from test_fast import checkpoint
    from test_fast_gpu import cuda_pair

    from yi_cli.kernels import gemv

    monkeypatch.setattr(gemv, "MAX_X", 8)  # YI_CHAT_GEMV_ROWS=8 (opt-in)
    _, dec = cuda_pair(checkpoint(0, "awq"))
    layer = dec.model.layers[0]
    assert layer.gate_up.gemv and layer.gate_up.gemv_silu
    calls = []
    real = gemv.gemv_int4_rows
    monkeypatch.setattr(gemv, "gemv_int4_rows", lambda *a, **kw: calls.append(a[0].shape[0]) or real(*a, **kw))
    x = torch.randn(4, layer.qkv.k, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        a = layer.qkv.mm(x)
        layer.gate_up.silu_mm(x, True)
        monkeypatch.setattr(gemv, "MAX_X", 2)
        b = layer.qkv.mm(x)
    assert calls == [4, 4]
    assert rel_err(a.float(), b.float()) < 1e-2  # tinygemm: bf16 weights, another order

"""What the decode GEMV folds into itself (yi_cli/kernels/gemv.py): GPTQ int8's two planes in one launch, the
residual add and the next RMSNorm's first half in the epilogue of o / down, and the norm's 1 / rms in qkv / gate_up
(runtime/llama.py's `chained` decode step). Each against the same arithmetic done by separate kernels / torch ops."""

from __future__ import annotations

import pytest
import torch
from test_fast import PROMPT, assert_greedy_match, checkpoint, fast_tokens, reference_greedy, rel_err
from test_fast_gpu import exact_weights
from test_gemv_rows_gpu import SHAPES, rope_tables, weights

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _x(k, seed, scale=1.0):
    return (torch.randn(1, k, device="cuda", generator=torch.Generator(device="cuda").manual_seed(seed)) * scale).to(
        torch.bfloat16
    )


@pytest.mark.parametrize("shape", list(SHAPES))
def test_two_planes_in_one_launch(shape):
    """W = plane 1 + plane 2 summed in fp32 (GPTQ int8): against x @ (W1 + W2).T, and within one output rounding
    of the two one-plane GEMVs added in bf16 (the path it replaces)."""
    from yi_cli.kernels import gemv, glue

    n, k, group = SHAPES[shape]
    p1, sz1, w1, wpr = weights(n, k, group)
    p2, sz2, w2, _ = weights_other(n, k, group)
    x = _x(k, 1)
    y = gemv.gemv_int4(x, p1, sz1, n, k, group, wpr, plane2=(p2, sz2))
    ref = x.float() @ (w1 + w2).t()
    assert y.shape == (1, n) and y.dtype == torch.bfloat16
    assert rel_err(y.float(), ref) < 3e-3
    apart = gemv.gemv_int4(x, p1, sz1, n, k, group, wpr) + gemv.gemv_int4(x, p2, sz2, n, k, group, wpr)
    assert rel_err(y.float(), apart.float()) < 6e-3
    if n % 8 == 0 and shape in ("gate_up", "tiny32", "tiny64"):
        fused = gemv.gemv_int4(x, p1, sz1, n, k, group, wpr, silu=True, plane2=(p2, sz2))
        assert torch.equal(fused, glue.silu_mul(y, True))


def weights_other(n, k, group):
    """A second, different plane of the same shape."""
    packed, sz, w, wpr = weights(n, k, group)
    perm = torch.randperm(n, device="cuda", generator=torch.Generator(device="cuda").manual_seed(7))
    from yi_cli.kernels import tinygemm

    q = tinygemm.codes(packed, n, k)[perm]
    return tinygemm.pack(q), sz[:, perm].contiguous(), w[perm], wpr


@pytest.mark.parametrize("shape", ["o", "down", "tiny32", "tiny64"])
def test_residual_epilogue(shape):
    """RESIDUAL: xr += y as a bf16 add of the rounded output, then xr·w and partial sums of squares of xr, all
    bit for bit what the plain GEMV followed by torch ops computes (the partials up to fp32 summation order)."""
    from yi_cli.kernels import gemv

    n, k, group = SHAPES[shape]
    packed, sz, _, wpr = weights(n, k, group)
    x, xr, w = _x(k, 2), _x(n, 3, 4.0), (_x(n, 4) + 1).flatten()
    y = gemv.gemv_int4(x, packed, sz, n, k, group, wpr)
    want = xr + y
    got = xr.clone()
    h, part = gemv.gemv_int4(x, packed, sz, n, k, group, wpr, residual=(got, w))
    assert torch.equal(got, want)
    assert torch.equal(h, want * w)
    assert part.shape == (n // gemv.ROWS,) and part.dtype == torch.float32
    sq = want.float().pow(2).view(-1, gemv.ROWS).sum(1)
    assert torch.allclose(part, sq, rtol=1e-5, atol=0)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_norm_prologue(shape):
    """NORM: x·w in, the partial sums of squares of x beside it: the output is RMSNorm(x)·w @ W.T with the norm's
    1 / rms applied to the fp32 sum (against the fp32 reference; and close to the unfused bf16 path)."""
    from yi_cli.kernels import gemv, glue

    n, k, group = SHAPES[shape]
    packed, sz, w, wpr = weights(n, k, group)
    x, nw, eps = _x(k, 5, 3.0), (_x(k, 6) * 0.1 + 1).flatten(), 1e-6
    part = x.float().pow(2).view(-1, 8).sum(1)  # as a RESIDUAL GEMV of 8 rows a program writes them
    rstd = torch.rsqrt(x.float().pow(2).mean() + eps)
    y = gemv.gemv_int4(x * nw, packed, sz, n, k, group, wpr, norm=(part, eps))
    ref = (x.float() * rstd * nw.float()) @ w.t()
    assert rel_err(y.float(), ref) < 4e-3
    _, h = glue.add_rmsnorm(x, None, nw, eps, True)
    unfused = gemv.gemv_int4(h, packed, sz, n, k, group, wpr)
    assert rel_err(y.float(), unfused.float()) < 8e-3
    if shape in ("gate_up", "tiny32", "tiny64"):
        fused = gemv.gemv_int4(x * nw, packed, sz, n, k, group, wpr, silu=True, norm=(part, eps))
        assert torch.equal(fused, glue.silu_mul(y, True))


@pytest.mark.parametrize("kernel", ["cuda_core", "mma"])
@pytest.mark.parametrize("quant", ["awq", "gptq8", None])
def test_chained_decode_step_matches_the_unchained_one(request, quant, kernel):
    """The chained decode step (norms, residual adds, rope and the cache write inside the GEMVs: the CUDA-core one,
    or the tensor-core one, whose qkv is packed with each rotary pair in one lane; int4, int8 codes and a plain
    checkpoint's bf16 weights) against the same step with separate glue kernels, and greedy tokens against
    transformers."""
    import yi_cli
    from yi_cli.checkpoint.loader import open_checkpoint
    from yi_cli.runtime.decoder import FastDecoder

    if kernel == "cuda_core":
        if quant is None:
            pytest.skip("a plain checkpoint chains on the tensor-core GEMV only")
        request.getfixturevalue("cuda_core")
    path = checkpoint(0, quant, group=32 if kernel == "cuda_core" else 64)  # gemv_mma: groups of 64 and more
    dec = FastDecoder(open_checkpoint(path, device="cuda", dtype="bf16"))
    assert dec.model.chained and dec.model.exact_rows == (kernel == "mma")
    assert kernel == "cuda_core" or dec.model.layers[0].qkv.halves == dec.model.hd
    x = torch.tensor(PROMPT * 4, device="cuda")
    m = dec.model
    with torch.inference_mode():
        m.prefill(x[:-1], 0, dense=False)
        pos = m.arange[x.shape[0] - 1 : x.shape[0]]
        chained = m.decode_step(x[-1:], pos, 256)
        m.chained = False
        plain = m.decode_step(x[-1:], pos, 256)
        m.chained = True
    assert rel_err(chained[0], plain[0]) < 2e-2
    model = yi_cli.load(path, device="cuda", dtype="bf16").model
    with exact_weights(model):  # the GEMVs' weights: transformers' forward rounds them to bf16 first, which on the
        # GPTQ int8 model flips a greedy token the exact weights agree with (a margin of 0.17 in its logits)
        assert_greedy_match(model, PROMPT, fast_tokens(dec, PROMPT), reference_greedy(model, PROMPT), tie=5e-2)


@pytest.mark.parametrize(
    "heads,kv,hd,k,group,planes", [(32, 4, 128, 4096, 128, 1), (32, 4, 128, 4096, 128, 2), (9, 3, 64, 576, 64, 1)]
)
def test_rope_epilogue(heads, kv, hd, k, group, planes):
    """ROPE ([q; k; v] rows in pairs (d, d + hd/2)): q roped and k, v in the caches at pos, bit for bit the plain
    GEMV followed by glue.rope_cache (the kernel the decode step ran before), with and without the norm's 1/rms."""
    from yi_cli.kernels import gemv, glue

    n = (heads + 2 * kv) * hd
    packed, sz, _, wpr = weights(n, k, group)
    plane2 = weights_other(n, k, group)[:2] if planes == 2 else None
    seq, p = 64, 37
    g = torch.Generator(device="cuda").manual_seed(hd)
    cos, sin = rope_tables(seq, hd, hd)
    pos = torch.tensor([p], device="cuda")
    x = _x(k, 8, 3.0)
    for norm in (None, (x.float().pow(2).view(-1, 8).sum(1), 1e-6)):
        caches = [torch.randn(1, kv, seq, hd, device="cuda", generator=g).bfloat16() for _ in range(2)]
        caches += [c.clone() for c in caches]
        y = gemv.gemv_int4(x, packed, sz, n, k, group, wpr, plane2=plane2, norm=norm)
        want = glue.rope_cache(y, cos, sin, pos, caches[0], caches[1], heads, kv, hd, True)
        q = gemv.gemv_int4(
            x,
            packed,
            sz,
            n,
            k,
            group,
            wpr,
            plane2=plane2,
            norm=norm,
            rope=(cos, sin, pos, caches[2], caches[3], heads, kv, hd),
        )
        assert q.shape == (1, heads * hd)
        assert torch.equal(q.view(want.shape), want)
        assert torch.equal(caches[2], caches[0]) and torch.equal(caches[3], caches[1])

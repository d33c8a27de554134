"""FastDecoder on CUDA: the CUDA-graph decode path against eager transformers on the same model and dtype.

Tolerances (relative L2 norm of logits):
  tiny bf16 model, fused Triton glue vs torch ops    3e-2 (bf16 roundings in another order, tiny random model)
  Yi-6B-shape random AWQ, prefill + 8 graph steps   4e-2 and < 1.5x transformers' int4 forward against the same
      exact-weight reference (the bf16 noise floor through 32 layers, ~0.022; measured ~0.024)
Greedy tokens must agree except at near-ties of the reference (see test_fast.assert_greedy_match).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from test_fast import GREEDY, PROMPT, assert_greedy_match, checkpoint, fast_tokens, reference_greedy, rel_err

import yi_cli
from yi_cli.checkpoint.loader import open_checkpoint
from yi_cli.engines.settings import GenSettings
from yi_cli.runtime.decoder import FastDecoder

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(autouse=True)
def plain_decode(monkeypatch):
    """These tests check the plain decode path against transformers; speculation on CUDA is test_speculate_gpu's."""
    from yi_cli.runtime import decoder

    monkeypatch.setitem(decoder.SPECULATE_AUTO, "cuda", False)


ROOT = Path(__file__).resolve().parents[1]


def cuda_pair(path):
    """(transformers model, FastDecoder) of one checkpoint on CUDA in bf16."""
    return (
        yi_cli.load(path, device="cuda", dtype="bf16").model,
        FastDecoder(open_checkpoint(path, device="cuda", dtype="bf16")),
    )


def test_graph_greedy_matches_eager_dense_bf16():
    model, dec = cuda_pair(checkpoint(0))
    assert dec.graphs is not None
    assert_greedy_match(model, PROMPT, fast_tokens(dec, PROMPT), reference_greedy(model, PROMPT), tie=5e-2)


def test_graph_greedy_matches_eager_int4():
    model, dec = cuda_pair(checkpoint(0, "awq"))
    assert_greedy_match(model, PROMPT, fast_tokens(dec, PROMPT), reference_greedy(model, PROMPT), tie=5e-2)


def test_dense_unpack_matches_dequantize():
    model, dec = cuda_pair(checkpoint(0, "awq"))
    src = model.model.layers[0].mlp.down_proj
    want = src.dequantize()
    got = dec.model.layers[0].down.dense(torch.float32)
    assert rel_err(got, want) < 1e-2  # bf16 scales vs fp32
    gate_up = dec.model.layers[0].gate_up.dense(torch.float32)
    mlp = model.model.layers[0].mlp
    assert rel_err(gate_up, torch.cat([mlp.gate_proj.dequantize(), mlp.up_proj.dequantize()])) < 1e-2


def test_graph_prefix_reuse_cancel_stop():
    _, warm = cuda_pair(checkpoint(1))
    first = fast_tokens(warm, PROMPT, GenSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=20))
    turn2 = PROMPT + first + [7, 8, 6]
    assert fast_tokens(warm, turn2) == fast_tokens(cuda_pair(checkpoint(1))[1], turn2)
    ref = fast_tokens(warm, PROMPT)
    assert fast_tokens(warm, PROMPT, stop={ref[9]}) == ref[: ref.index(ref[9]) + 1]
    cancel, got = threading.Event(), []
    for tok in warm.generate(PROMPT, GREEDY, cancel, set()):
        got.append(tok)
        if len(got) == 4:
            cancel.set()
    assert got == ref[:4]
    s = GenSettings(temperature=0.8, top_p=0.9, repetition_penalty=1.2, max_new_tokens=40, seed=11)
    assert fast_tokens(warm, PROMPT, s) == fast_tokens(warm, PROMPT, s)


def test_the_loop_reads_the_tokens_its_steps_posted():
    """The decode loop reads each token where the graphed sampler wrote it in pinned memory (slot by step, a ring
    of sampling.HOSTS): the same tokens as a loop that copies each step's token out, across several turns of the
    ring, sampling and greedy."""
    _, dec = cuda_pair(checkpoint(1))
    assert dec.sampler.host is not None and dec.sampler.host.is_pinned()
    for s in (GenSettings(temperature=0.8, top_p=0.9, max_new_tokens=30, seed=5), GREEDY):
        posted = fast_tokens(dec, PROMPT, s)
        host, dec.sampler.host = dec.sampler.host, None  # _launch copies tok out; the graph still posts
        try:
            copied = fast_tokens(dec, PROMPT, s)
        finally:
            dec.sampler.host = host
        assert len(posted) > 8 and posted == copied


def _yi6b(fmt: str, tmp_path_factory) -> Path:
    """The Yi-6B-shape random checkpoint scripts/bench.py writes (reused from YI_BENCH_DIR where it is there)."""
    cached = Path(os.environ.get("YI_BENCH_DIR", "/tmp/yi-bench")) / f"yi-6b-{fmt}"
    if (cached / "config.json").is_file():
        return cached
    out = tmp_path_factory.mktemp("ckpt") / f"yi-6b-{fmt}"
    script = str(ROOT / "scripts" / "make_checkpoint.py")
    subprocess.run([sys.executable, script, "--format", fmt, "--shape", "yi-6b", "--out", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def yi6b_awq(tmp_path_factory):
    return _yi6b("awq", tmp_path_factory)


@pytest.fixture(scope="module")
def yi6b_gptq8(tmp_path_factory):
    return _yi6b("gptq8", tmp_path_factory)


@pytest.fixture(scope="module")
def yi6b_fp16(tmp_path_factory):
    return _yi6b("fp16", tmp_path_factory)


@contextlib.contextmanager
def exact_weights(model):
    """Within it, each quantized linear of the transformers model runs as x (bf16) @ W.T in fp32, W the fp32
    dequantization, output rounded to bf16: what yi-chat's decode GEMVs compute ((q - 8)·s + zf, q·s + c exactly),
    where transformers' own forward rounds W to bf16 first (tinygemm, DequantLinear)."""
    import torch.nn.functional as F

    from yi_cli.runtime.qlinear import QuantLinear

    mods = [m for m in model.modules() if isinstance(m, QuantLinear)]
    try:
        for m in mods:
            w, b = m.dequantize(), m.bias
            m.forward = lambda x, w=w, b=b: F.linear(x.float(), w, None if b is None else b.float()).to(x.dtype)
        yield model
    finally:
        for m in mods:
            m.__dict__.pop("forward", None)


def exact_weight_logits(model, ids: list[int]) -> torch.Tensor:
    """The reference with the exact dequantized weights (exact_weights): logits [T, V] of ids."""
    with exact_weights(model):
        return model(torch.tensor([ids], device="cuda")).logits[0].float()


@pytest.mark.parametrize("fmt,dtype", [("awq", torch.bfloat16), ("gptq8", torch.bfloat16), ("gptq8", None)])
def test_yi6b_int_teacher_forced_graph_steps(request, fmt, dtype):
    """Prefill and 8 graph-step logits against the reference with exact weights (what the decode GEMV computes),
    in bf16 activations (AWQ int4; GPTQ int8, whose codes meet x converted to fp16 on the tensor cores) or GPTQ
    8-bit's default dtype on CUDA, fp16 (x meets the codes as it is; chained all the same). Tolerance 4e-2, and no
    worse than 1.5x transformers' own forward (int4: tinygemm, W rounded to bf16; int8: W dequantized to the
    model's dtype) against that reference: the noise floor of the activations' dtype through 32 layers of this
    random model, measured in the same test (bf16 ~0.022; the fast path ~0.024).
    The random checkpoint's weights are centred (scripts/make_checkpoint.py): with codes uniform on 0..15 around
    zero 8 every weight had mean -s/2, the residual stream grew ~100x per layer and saturated attention turned
    bf16-level differences into a flipped output at one step in eight."""
    loaded = yi_cli.load(str(request.getfixturevalue(f"yi6b_{fmt}")), device="cuda", dtype=dtype)
    dec = FastDecoder(loaded.checkpoint, max_seq_len=512)
    want = torch.float16 if dtype is None else dtype
    assert dec.model.chained and dec.model.layers[0].gate_up.op_dtype == want == loaded.checkpoint.dtype
    ids = torch.randint(10, 64000, (72,), generator=torch.Generator().manual_seed(0)).tolist()
    with torch.inference_mode():
        ref = exact_weight_logits(loaded.model, ids)
        tf = loaded.model(torch.tensor([ids], device="cuda")).logits[0].float()
    assert_teacher_forced(dec, ids, 64, ref, tf, "transformers", dense=True)


def assert_teacher_forced(dec, ids: list[int], n: int, ref, other, label: str, dense: bool | None = None) -> None:
    """The prefill of ids[:n] (`dense` as FastLlama.prefill takes it) and 8 graph steps fed ids[n:], one replay a
    step: each one's logits within 4e-2 of ref [T, V], and in sum no worse than 1.5x another forward's logits
    (`other`, the noise floor) against ref."""
    with torch.inference_mode():
        floor = [rel_err(a, b) for a, b in zip(other[n - 1 :], ref[n - 1 :], strict=False)]
        dec._prefill(ids[:n], GREEDY, threading.Event())
        errs = []
        for j in range(8):  # feed the reference's tokens, one graph replay per step
            dec.tok.fill_(ids[n + j])
            dec.pos.fill_(n + j)
            errs.append(rel_err(dec.graphs.replay(n + j + 1)[0], ref[n + j]))
        first = dec.model.prefill(torch.tensor(ids[:n], device="cuda"), 0, dense=dense)
    errs = [rel_err(first[0], ref[n - 1])] + errs
    print(f"rel err prefill + graph steps {[round(e, 4) for e in errs]}; {label} {[round(e, 4) for e in floor]}")
    assert all(e < 4e-2 for e in errs)
    assert sum(errs) < 1.5 * sum(floor)


def test_yi6b_fp16_teacher_forced_graph_steps(yi6b_fp16):
    """The fp16 model on the tensor-core GEMV (dense weights, chained steps): prefill and 8 graph-step logits
    against transformers' forward in fp32, no worse than 1.5x transformers' own fp16 forward against it (the fp16
    noise floor through 32 layers, measured in the same test) and within 4e-2."""
    loaded = yi_cli.load(str(yi6b_fp16), device="cuda", dtype=torch.float16)
    dec = FastDecoder(loaded.checkpoint, max_seq_len=512)
    assert dec.model.chained and dec.model.layers[0].gate_up.mma
    ids = torch.randint(10, 64000, (72,), generator=torch.Generator().manual_seed(0)).tolist()
    with torch.inference_mode():
        half = loaded.model(torch.tensor([ids], device="cuda")).logits[0].float()
        ref = loaded.model.float()(torch.tensor([ids], device="cuda")).logits[0].float()
    assert_teacher_forced(dec, ids, 64, ref, half, "fp16 floor")


def test_fused_glue_kernels_match_torch_ops():
    _, dec = cuda_pair(checkpoint(0, "awq"))
    assert dec.model.fused
    x = torch.tensor(PROMPT * 4, device="cuda")
    with torch.inference_mode():
        fused = dec.model.prefill(x, 0, dense=False, all_logits=True)
        step = dec.model.decode_step(x[-1:], dec.model.arange[x.shape[0] - 1 : x.shape[0]], 256)  # decode kernel
        dec.model.fused = False
        plain = dec.model.prefill(x, 0, dense=False, all_logits=True)
    assert rel_err(fused, plain) < 3e-2  # bf16 roundings in a different order, amplified by the tiny random model
    assert rel_err(step[0], plain[-1]) < 3e-2


@pytest.mark.parametrize(
    "n,k,group", [(64, 256, 32), (96, 576, 64), (128, 1536, 64), (5120, 4096, 128), (4096, 11008, 128)]
)
def test_gemv_int4_matches_dequantized_weights(n, k, group):
    """The decode GEMV (yi_cli/kernels/gemv.py) reads tinygemm-packed codes: its output against x @ W.T in fp32, W
    dequantized from the codes; the bound is the bf16 rounding of the output (tinygemm's own error is printed)."""
    from yi_cli.kernels import gemv, tinygemm

    ikt = tinygemm.inner_k_tiles(k)
    assert tinygemm.gemv_layout(ikt, torch.device("cuda")), "tinygemm's tile layout changed: the GEMV is off"
    g = torch.Generator(device="cuda").manual_seed(n + k + group)
    q = torch.randint(0, 16, (n, k), dtype=torch.uint8, device="cuda", generator=g)
    s = torch.rand(k // group, n, device="cuda", generator=g) * 0.01 + 1e-3
    zf = torch.randn(k // group, n, device="cuda", generator=g) * 0.02
    sz = torch.stack([s, zf], -1).to(torch.bfloat16).contiguous()
    x = torch.randn(1, k, device="cuda", generator=g).to(torch.bfloat16)
    szf = sz.float().repeat_interleave(group, 0)  # [K, N, 2]
    w = (q.float() - 8) * szf[..., 0].t() + szf[..., 1].t()
    ref = x.float() @ w.t()
    packed = tinygemm.pack(q)
    y = gemv.gemv_int4(x, packed, sz, n, k, group, 2 * ikt)
    tiny = torch.ops.aten._weight_int4pack_mm(x, packed, group, sz)
    print(f"gemv rel err {rel_err(y.float(), ref):.2e}, tinygemm {rel_err(tiny.float(), ref):.2e}")
    assert y.shape == (1, n) and y.dtype == torch.bfloat16
    assert rel_err(y.float(), ref) < 3e-3

    if n % 8 == 0:  # as [gate; up]: the GEMV's silu(gate)·up epilogue against the glue kernel on its own output
        from yi_cli.kernels import glue

        fused = gemv.gemv_int4(x, packed, sz, n, k, group, 2 * ikt, silu=True)
        want = glue.silu_mul(y, True)
        assert fused.shape == (1, n // 2)
        assert torch.equal(fused, want), (fused.float() - want.float()).abs().max()


@pytest.mark.parametrize(
    "temperature,top_p,top_k,penalty",
    [(0.6, 0.8, 0, 1.2), (1.0, 1.0, 0, 1.0), (0.9, 0.95, 40, 1.1), (0, 0.8, 0, 1.3), (1.3, 0.5, 3000, 1.0)],
)
def test_graph_sampler_kernels_pick_what_the_torch_ops_pick(temperature, top_p, top_k, penalty):
    """nucleus.sample (the graphed sampler on CUDA) against Sampler's torch ops: the same token, the same `seen`
    marks and step counter, over peaked and flat logits of Yi's vocabulary size."""
    from yi_cli.runtime.sampling import Sampler

    vocab = 64000
    settings = GenSettings(temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=penalty, seed=11)
    fused, plain = Sampler(vocab, "cuda"), Sampler(vocab, "cuda")
    assert fused.fused
    plain.fused = False
    same = 0
    for step in range(40):
        g = torch.Generator(device="cuda").manual_seed(step)
        logits = torch.randn(1, vocab, device="cuda", generator=g) * (8.0 if step % 2 else 0.5)
        picks = []
        for s in (fused, plain):
            s.reset(settings, [1, 2, 3, int(logits.argmax())])
            s.rng[1] = step
            out = torch.zeros(1, dtype=torch.long, device="cuda")
            s.step(logits, out)
            picks.append((int(out), int(s.rng[1]), s.seen.nonzero().flatten().tolist()))
        same += picks[0] == picks[1]
    assert same == 40

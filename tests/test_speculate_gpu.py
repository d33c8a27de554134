"""Speculative decoding on CUDA: the captured verify graphs (decoder.VERIFY_ROWS) against plain graph steps.

An int4 verify runs each row through the same arithmetic as a decode step: the multi-row GEMV (each row the one-row
GEMV's bits), one attention launch whose per-token programs are a decode step's, the glue kernels row by row. So
a verify row's final hidden state is bit for bit the decode step's. On the tensor-core GEMV the lm_head is one too
(FastLlama.head_gemv), so its logits are as well; elsewhere cuBLAS multiplies T rows with another kernel than one
row unless they are padded (YI_CHAT_EXACT_HEAD), so the bf16 logits may differ in rounding and greedy tokens must
agree except at near-ties of the reference (test_fast.assert_greedy_match).
"""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch
from test_fast import PROMPT, assert_greedy_match, checkpoint, fast_tokens, rel_err
from test_fast_gpu import cuda_pair
from test_speculate import DOC, GREEDY, oracle  # noqa: F401 (a fixture)

from yi_cli.checkpoint.loader import open_checkpoint
from yi_cli.runtime.decoder import FastDecoder

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(params=["mma", "rows"])
def exact_rows(request, monkeypatch):
    """The exact verify: the tensor-core GEMV (the default), or the opt-in of the CUDA-core path
    (YI_CHAT_MMA=0 YI_CHAT_GEMV_ROWS=8 YI_CHAT_EXACT_HEAD=1): the multi-row GEMV for verify rows."""
    from yi_cli.kernels import gemv

    if request.param == "rows":
        request.getfixturevalue("cuda_core")
        monkeypatch.setattr(gemv, "MAX_X", 8)
    return request.param


def _group(mode: str) -> int:
    """The tensor-core GEMV takes groups of 64 columns and more; the CUDA-core path's checkpoints keep 32."""
    return 64 if mode == "mma" else 32


@pytest.mark.parametrize("quant", [None, "awq"])
def test_cuda_greedy_with_verify_graphs(oracle, quant):  # noqa: F811
    model, dec = cuda_pair(checkpoint(0, quant))
    settings = replace(GREEDY, max_new_tokens=64)
    off = fast_tokens(dec, DOC, replace(settings, speculate="off"))
    oracle(off, len(DOC))
    on = fast_tokens(dec, DOC, replace(settings, speculate="lookup"))
    # drafts were kept (after a near-tie flip the oracle's drafts are another reply's: rejected from there on)
    assert dec.steps < len(on) - 1
    print(f"{quant}: lookup gave the very tokens off gave: {on == off}")
    assert_greedy_match(model, DOC, on, off, tie=5e-2)
    assert {rows for rows, _, _ in dec.vgraphs} <= {2, 4, 8} and dec.vgraphs


@pytest.mark.parametrize("quant", ["awq", None])
@pytest.mark.parametrize("exact_head", [False, True])
@pytest.mark.parametrize("rows", [2, 4, 8])
def test_cuda_verify_rows_are_decode_steps_bit_for_bit(monkeypatch, exact_rows, rows, exact_head, quant):
    """The verify's final hidden states [T, D] against T decode steps' (int4: the multi-row GEMV, one attention
    launch for all rows; a plain checkpoint: the tensor-core GEMV on its dense weights); logits within 3e-2 (the
    lm_head's T-row GEMM rounds differently), or the same bits with llama.EXACT_HEAD."""
    from yi_cli.runtime import llama

    if quant is None and exact_rows == "rows":
        pytest.skip("the CUDA-core multi-row GEMV is int4's")
    monkeypatch.setattr(llama, "EXACT_HEAD", exact_head)
    _, dec = cuda_pair(checkpoint(0, quant, group=_group(exact_rows)))
    qkv = dec.model.layers[0].qkv
    assert qkv.mma if exact_rows == "mma" else qkv.gemv, "the int4 projections should run the GEMVs"
    toks = fast_tokens(dec, PROMPT, replace(GREEDY, max_new_tokens=rows, speculate="off"))
    m, n = dec.model, len(PROMPT)
    with torch.inference_mode():
        m.prefill(torch.tensor(PROMPT, device="cuda"), 0)
        length = dec.graphs.bucket(n + rows)
        h = m.verify(torch.tensor(toks, device="cuda"), torch.arange(n, n + rows, device="cuda"), length)
        steps = [
            m._forward(
                torch.tensor([t], device="cuda"),
                torch.tensor([n + j], device="cuda"),
                length,
                None,
                False,
                True,
                head=False,
            )
            for j, t in enumerate(toks)
        ]  # decode_step before its head (fused: no mask)
        logits = torch.cat([m.head(x) for x in steps])
    for j, x in enumerate(steps):
        assert torch.equal(h[j : j + 1], x), f"row {j}: max diff {(h[j] - x[0]).abs().max()}"
    assert rel_err(m.head(h), logits) < 3e-2
    if exact_head:
        assert torch.equal(m.head(h), logits)
    # the logits a verify graph samples from against each row's decode_step (the graphed step's): the same bits
    # where the rows chain (the lm_head's GEMV, or cuBLAS on padded rows)
    with torch.inference_mode():
        pos = torch.arange(n, n + rows, device="cuda")
        got = m.verify(torch.tensor(toks, device="cuda"), pos, length, logits=True)
        one = [m.decode_step(torch.tensor([t], device="cuda"), pos[j : j + 1], length) for j, t in enumerate(toks)]
    assert m.head_gemv == (exact_rows == "mma")
    assert got.dtype == torch.float32 and rel_err(got, logits) < 3e-2
    if m.head_gemv or exact_head:
        for j, x in enumerate(one):
            assert torch.equal(got[j : j + 1], x), f"row {j}: logits differ by {(got[j] - x[0]).abs().max()}"


def test_cuda_lookup_gives_the_very_tokens_with_exact_head(monkeypatch, exact_rows, oracle):  # noqa: F811
    """With llama.EXACT_HEAD a CUDA verify row is a decode step bit for bit, logits included: greedy and seeded
    sampling give exactly the tokens decoding without speculation gives (as on CPU)."""
    from yi_cli.runtime import llama

    monkeypatch.setattr(llama, "EXACT_HEAD", True)
    _, dec = cuda_pair(checkpoint(0, "awq", group=_group(exact_rows)))
    for s in (
        replace(GREEDY, max_new_tokens=64),
        replace(GREEDY, temperature=0.8, top_p=0.9, repetition_penalty=1.2, seed=5, max_new_tokens=64),
    ):
        off = fast_tokens(dec, DOC, replace(s, speculate="off"))
        oracle(off, len(DOC))
        on = fast_tokens(dec, DOC, replace(s, speculate="lookup"))
        assert dec.steps < len(on) - 1  # drafts were kept
        assert on == off


def test_cuda_verify_greedy_rows_pick_the_argmax():
    """The greedy verify graph (one penalized-argmax launch, no sort) picks, row by row, what the sampling
    graph's sort-based pick takes at temperature 0 (on the same logits)."""
    _, dec = cuda_pair(checkpoint(0, "awq"))
    s = replace(GREEDY, max_new_tokens=1, repetition_penalty=1.3, speculate="off")
    picks = []
    for greedy in (True, False):
        first = fast_tokens(dec, DOC, s)[0]  # the prompt's state: seen ids, step counter
        dec._verify(first, len(DOC), DOC[:7], greedy)  # drafts already seen: the penalty matters
        picks.append(dec.vout.tolist())
    assert {k[2] for k in dec.vgraphs} == {True, False}
    assert picks[0] == picks[1]


def test_cuda_stop_length_cancel_sampling(monkeypatch, exact_rows, oracle):  # noqa: F811
    from yi_cli.runtime import llama

    monkeypatch.setattr(llama, "EXACT_HEAD", True)  # a shorter limit drafts fewer rows: the same tokens all the same
    # a 96-slot cache: the verify graphs' padding rows must stay inside it
    path = checkpoint(2, "awq", group=_group(exact_rows))
    dec = FastDecoder(open_checkpoint(path, device="cuda", dtype="bf16"), max_seq_len=96)
    off = fast_tokens(dec, DOC, replace(GREEDY, max_new_tokens=200, speculate="off"))
    oracle(off, len(DOC))
    on = fast_tokens(dec, DOC, replace(GREEDY, max_new_tokens=200, speculate="lookup"))
    assert len(on) == len(off) == 96 - len(DOC)
    for n in (1, 2, 5, 13):
        assert fast_tokens(dec, DOC, replace(GREEDY, max_new_tokens=n, speculate="lookup")) == on[:n]
    stop = on[9]
    assert fast_tokens(dec, DOC, replace(GREEDY, speculate="lookup"), stop={stop}) == on[: on.index(stop) + 1]
    cancel, got = threading.Event(), []
    for tok in dec.generate(DOC, replace(GREEDY, speculate="lookup"), cancel, set()):
        got.append(tok)
        if len(got) == 4:
            cancel.set()
    assert got == on[:4]
    s = replace(GREEDY, temperature=0.8, top_p=0.9, repetition_penalty=1.2, seed=5, max_new_tokens=40)
    off = fast_tokens(dec, DOC, replace(s, speculate="off"))
    oracle(off, len(DOC))
    on = fast_tokens(dec, DOC, replace(s, speculate="lookup"))
    # the same seed gives the same tokens up to where a bf16 rounding difference first flips a choice
    same = next((i for i, (a, b) in enumerate(zip(on, off, strict=False)) if a != b), len(off))
    assert len(on) == len(off) and same >= 20


def test_cuda_auto_speculates_where_verify_rows_are_decode_steps(monkeypatch, oracle):  # noqa: F811
    """speculate=auto: on with the tensor-core GEMV (verify rows are decode steps bit for bit, so the reply keeps
    its tokens; int4 and dense weights), off on the CUDA-core path (YI_CHAT_MMA=0), whose tinygemm verifies (and
    cuBLAS's) round differently."""
    from yi_cli.kernels import gemv_mma

    path = checkpoint(0, "awq", group=64)
    dec = FastDecoder(open_checkpoint(path, device="cuda", dtype="bf16"))
    auto = replace(GREEDY, max_new_tokens=48, speculate="auto")
    assert dec.model.exact_rows and dec.speculating(auto)
    off = fast_tokens(dec, DOC, replace(auto, speculate="off"))
    oracle(off, len(DOC))
    assert fast_tokens(dec, DOC, auto) == off
    assert dec.steps < len(off) - 1  # drafts were kept
    plain = FastDecoder(open_checkpoint(checkpoint(0), device="cuda", dtype="bf16"))
    assert plain.model.exact_rows and plain.speculating(auto)
    monkeypatch.setattr(gemv_mma, "ENABLED", False)
    core = FastDecoder(open_checkpoint(path, device="cuda", dtype="bf16"))
    assert not core.model.exact_rows and not core.speculating(auto)
    plain = FastDecoder(open_checkpoint(checkpoint(0), device="cuda", dtype="bf16"))
    assert not plain.model.exact_rows and not plain.speculating(auto)
    assert core.speculating(replace(auto, speculate="lookup"))

"""Speculative decoding on CUDA: the captured verify graphs (decoder.VERIFY_ROWS) against plain graph steps.

On CUDA the verify rows run through tinygemm's few-row int4 kernel while a plain step runs yi-chat's one-row GEMV,
so their bf16 logits differ in rounding: greedy tokens must agree except at near-ties of the reference
(test_fast.assert_greedy_match), and a verify row's logits are within 3e-2 (relative L2) of the step's.
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


@pytest.mark.parametrize("quant", [None, "awq"])
def test_cuda_greedy_with_verify_graphs(oracle, quant):  # noqa: F811
    model, dec = cuda_pair(checkpoint(0, quant))
    settings = replace(GREEDY, max_new_tokens=64)
    off = fast_tokens(dec, DOC, replace(settings, speculate="off"))
    oracle(off, len(DOC))
    on = fast_tokens(dec, DOC, replace(settings, speculate="lookup"))
    # drafts were kept (after a near-tie flip the oracle's drafts are another reply's: rejected from there on)
    assert dec.steps < len(on) - 1
    assert_greedy_match(model, DOC, on, off, tie=5e-2)
    assert {rows for rows, _, _ in dec.vgraphs} <= {2, 4, 8} and dec.vgraphs


def test_cuda_verify_rows_close_to_steps():
    _, dec = cuda_pair(checkpoint(0, "awq"))
    toks = fast_tokens(dec, PROMPT, replace(GREEDY, max_new_tokens=8, speculate="off"))
    m, n = dec.model, len(PROMPT)
    with torch.inference_mode():
        m.prefill(torch.tensor(PROMPT, device="cuda"), 0)
        length = dec.graphs.bucket(n + 8)
        steps = torch.cat(
            [
                m.decode_step(torch.tensor([t], device="cuda"), torch.tensor([n + j], device="cuda"), length)
                for j, t in enumerate(toks)
            ]
        )
        rows = m.head(m.verify(torch.tensor(toks, device="cuda"), torch.arange(n, n + 8, device="cuda"), length))
    assert rel_err(rows, steps) < 3e-2


def test_cuda_stop_length_cancel_sampling(oracle):  # noqa: F811
    # a 96-slot cache: the verify graphs' padding rows must stay inside it
    dec = FastDecoder(open_checkpoint(checkpoint(2, "awq"), device="cuda", dtype="bf16"), max_seq_len=96)
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

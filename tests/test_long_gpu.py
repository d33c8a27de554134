"""Long context on CUDA: the split-K decode attention against torch's attention at lengths where it splits into
hundreds of programs, and a tiny 200K-context model decoding past 32K (the long split) through CUDA graphs against
transformers. Tolerances: the kernel's output against fp32 attention 1e-2 relative (bf16 P·V operands and output);
greedy tokens as test_fast.assert_greedy_match with the bf16 tie margin of test_fast_gpu."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from test_fast import assert_greedy_match, checkpoint, reference_greedy, rel_err
from test_fast_gpu import plain_decode  # noqa: F401 (autouse: the plain decode path, as in test_fast_gpu)
from test_long_context import REPLY, YI_200K, attach_file_turn, random_ids

import yi_cli
from yi_cli.checkpoint.loader import open_checkpoint
from yi_cli.runtime import kvcache
from yi_cli.runtime.decoder import FastDecoder

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize(
    "n_kv,groups,slots,pos,length",
    [
        (4, 8, 131072, 99_999, 114_688),  # Yi-6B heads at 100K: the long split, a bucket past pos
        (8, 7, 100_003, 100_002, 100_003),  # Yi-34B heads, a cache size that no split divides
        (4, 8, 4096, 700, 1024),  # the short split
    ],
)
def test_split_k_decode_attention_matches_torch(n_kv, groups, slots, pos, length):
    from yi_cli.kernels import decode_attn

    g = torch.Generator(device="cuda").manual_seed(slots)
    kc = torch.randn(1, n_kv, slots, 128, device="cuda", generator=g).to(torch.bfloat16)
    vc = torch.randn(1, n_kv, slots, 128, device="cuda", generator=g).to(torch.bfloat16)
    q = torch.randn(1, n_kv, groups, 128, device="cuda", generator=g).to(torch.bfloat16)
    kc[:, :, 3] = q[:, :, 0] * 3.0  # a needle far back: row 0 attends mostly to slot 3, not to the recent slots
    kc[:, :, pos + 1 :] = 100.0  # slots past pos must not count
    split = decode_attn.split_slots(length)
    # hundreds of programs per layer at 100K
    assert n_kv * -(-length // split) >= (400 if length > decode_attn.LONG else 1)
    out = decode_attn.decode_attention(q, kc, vc, torch.tensor([pos], device="cuda"), length)
    want = F.scaled_dot_product_attention(q.float(), kc[:, :, : pos + 1].float(), vc[:, :, : pos + 1].float())
    assert rel_err(out, want) < 1e-2
    assert rel_err(out[:, :, 0], want[:, :, 0]) < 1e-2  # the needle's row on its own


def test_tiny_200k_model_decodes_past_32k_in_graphs():
    path = checkpoint(4, **YI_200K)
    model = yi_cli.load(path, device="cuda", dtype="bf16").model
    dec = FastDecoder(open_checkpoint(path, device="cuda", dtype="bf16"))
    assert dec.max_seq == 200000 and dec.model.k_cache[0].shape[2] == kvcache.START
    ids = random_ids(40_000, 7)
    got = list(dec.generate(ids, REPLY, threading.Event(), set()))
    assert dec.model.k_cache[0].shape[2] == kvcache.capacity(40_016, 200000)
    long = [n for n in dec.graphs.graphs if n > kvcache.START]
    assert long == [dec.graphs.bucket(40_001)]  # past START: captured when first needed, only that one
    assert_greedy_match(model, ids, got, reference_greedy(model, ids, 16), tie=5e-2)


def test_a_100k_token_file_through_the_cli(tmp_path):
    turn = attach_file_turn(tmp_path, 100_000, "cuda", "--speculate", "off")
    assert turn["prompt_tokens"] > 100_000
    assert turn["new_tokens"] == 8

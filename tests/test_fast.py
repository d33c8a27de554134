"""FastDecoder fidelity on CPU: greedy tokens and teacher-forced logits vs eager transformers on the same model.

Tolerances (relative L2 norm of the logits over all positions):
  fp32 dense                        1e-5 (same math, different op order)
  int4, reference op also in bf16   5e-4 (the same tinygemm kernel on the same bf16 activations; the AWQ file
                                    keeps lm_head in fp16, which the CPU fast path multiplies in fp16)
  int4 vs fp32-activation reference 5e-2 (the fast path rounds activations to bf16 before the int4 kernel)
  int8 GPTQ as two int4 planes      5e-2 (bf16 activations and bf16 scales vs the fp32 dequantized reference)
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
import torch

import yi_cli
from yi_cli.checkpoint import writer
from yi_cli.checkpoint.loader import open_checkpoint
from yi_cli.engines.settings import GenSettings
from yi_cli.runtime import llama, qlinear
from yi_cli.runtime.decoder import FastDecoder
from yi_cli.runtime.sampling import Sampler

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
GREEDY = GenSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=64)


def tiny_llama(seed: int = 0, vocab: int = 512, **overrides):
    """A random Llama with peaked logits (large init); overrides change its config (e.g. a 200K context)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = dict(
        vocab_size=vocab,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.1,
        tie_word_embeddings=False,
    )
    cfg = LlamaConfig(**{**cfg, **overrides})
    return LlamaForCausalLM(cfg).eval()


_CKPTS: dict = {}


def checkpoint(seed: int = 0, quant: str | None = None, group: int = 32, **overrides) -> Path:
    """tiny_llama(seed) written to disk as a real checkpoint (safetensors + a byte tokenizer): plain fp32, AutoAWQ
    int4 ("awq") or AutoGPTQ int8 ("gptq8"), the formats yi-chat reads. Cached per test session."""
    key = (seed, quant, group, tuple(sorted(overrides.items())))
    if key not in _CKPTS:
        root = Path(tempfile.mkdtemp(prefix="yi-fast-"))
        atexit.register(shutil.rmtree, root, True)
        plain = root / "plain"
        tiny_llama(seed, **overrides).save_pretrained(str(plain))
        writer.write_byte_tokenizer(plain)
        out = plain
        if quant == "awq":
            out = writer.make_awq(plain, root / "awq", group_size=group)
        elif quant == "gptq8":
            out = writer.make_gptq(plain, root / "gptq8", bits=8, group_size=group)
        _CKPTS[key] = out
    return _CKPTS[key]


def fast_decoder(path, **kw) -> FastDecoder:
    return FastDecoder(open_checkpoint(path, device="cpu", dtype="fp32"), **kw)


def reference(path, op_dtype=None):
    """The same checkpoint as a transformers model (yi_cli's quantized linears); op_dtype overrides the int4 op's."""
    model = yi_cli.load(path, device="cpu", dtype="fp32").model
    for mod in model.modules():
        if op_dtype is not None and isinstance(mod, qlinear.Int4Linear):
            mod.op_dtype = op_dtype
            mod.scales_and_zeros = mod.scales_and_zeros.to(op_dtype)
    return model


def reference_greedy(model, ids: list[int], n: int = 64) -> list[int]:
    x = torch.tensor([ids], device=model.device)
    with torch.inference_mode():
        out = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            repetition_penalty=1.0,
            eos_token_id=None,
            pad_token_id=0,
        )
    return out[0, len(ids) :].tolist()


def assert_greedy_match(model, ids: list[int], fast: list[int], ref: list[int], tie: float = 1e-2) -> None:
    """Same tokens, except that a divergence is allowed at a near-tie of the reference's own top two logits
    (random tiny models have them: transformers' incremental decode and its full forward already disagree there)."""
    assert len(fast) == len(ref)
    i = next((i for i, (a, b) in enumerate(zip(fast, ref, strict=False)) if a != b), None)
    if i is None:
        return
    x = torch.tensor([ids + ref[:i]], device=model.device)
    with torch.inference_mode():
        top = model(x).logits[0, -1].float().topk(2).values
    assert float(top[0] - top[1]) < tie, f"diverged at step {i} where the reference's margin is {top[0] - top[1]:.4f}"


def fast_tokens(dec, ids, settings=GREEDY, stop=(), cancel=None) -> list[int]:
    return list(dec.generate(ids, settings, cancel or threading.Event(), set(stop)))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def teacher_forced(model, dec, ids: list[int]):
    """(reference logits, fast logits) [T, V] for the whole sequence in one prefill."""
    x = torch.tensor(ids, device=model.device)
    with torch.inference_mode():
        ref = model(x[None]).logits[0].float()
        out = dec.model.prefill(x, 0, dense=True, all_logits=True)
    return ref, out


PROMPT = [5, 17, 301, 44, 9, 250, 3, 77, 120, 64, 33, 400, 12, 8, 91, 2]


def test_dense_fp32_matches_transformers():
    model, dec = reference(checkpoint()), fast_decoder(checkpoint())
    assert_greedy_match(model, PROMPT, fast_tokens(dec, PROMPT), reference_greedy(model, PROMPT))
    ref, fast = teacher_forced(model, dec, PROMPT + reference_greedy(model, PROMPT, 16))
    assert rel_err(fast, ref) < 1e-5


def test_int4_matches_transformers_same_activation_dtype():
    model, dec = reference(checkpoint(0, "awq"), op_dtype=torch.bfloat16), fast_decoder(checkpoint(0, "awq"))
    assert isinstance(model.model.layers[0].self_attn.q_proj, qlinear.Int4Linear)
    # bf16 activations: one-ulp rounding differences between decode orders move logits by up to ~1e-2 here
    assert_greedy_match(model, PROMPT, fast_tokens(dec, PROMPT), reference_greedy(model, PROMPT), tie=5e-2)
    ref, fast = teacher_forced(model, dec, PROMPT * 3)
    assert rel_err(fast, ref) < 5e-4


def test_int4_close_to_fp32_activation_reference():
    model, dec = reference(checkpoint(0, "awq")), fast_decoder(checkpoint(0, "awq"))
    ref, fast = teacher_forced(model, dec, PROMPT * 3)
    assert rel_err(fast, ref) < 5e-2


def test_gptq_int8_as_two_int4_planes():
    model, dec = reference(checkpoint(0, "gptq8")), fast_decoder(checkpoint(0, "gptq8"))
    assert isinstance(model.model.layers[0].mlp.down_proj, qlinear.DequantLinear)
    assert len(dec.model.layers[0].gate_up.planes) == 2
    ref, fast = teacher_forced(model, dec, PROMPT * 3)
    assert rel_err(fast, ref) < 5e-2


@pytest.mark.parametrize("quant", ["awq", "gptq8"])
def test_cpu_dequantization_is_the_formula_bit_for_bit(quant):
    """The CPU prefill's dense W (in place, one buffer a plane) is sum over planes of addcmul(zf, q - 8, s), the
    out-of-place formula, to the last bit."""
    from yi_cli.kernels import tinygemm

    dec = fast_decoder(checkpoint(0, quant))
    for proj in (dec.model.layers[0].qkv, dec.model.layers[1].down):
        want = None
        for packed, sz in proj.planes:
            q = tinygemm.codes(packed, proj.n, proj.k).reshape(proj.n, -1, proj.group).float()
            s, zf = sz.float().permute(1, 0, 2).unsqueeze(-1).unbind(2)
            p = torch.addcmul(zf, q - 8, s).reshape(proj.n, proj.k)
            want = p if want is None else want + p
        assert torch.equal(proj.dense(torch.float32), want)


def test_prefix_reuse_matches_cold_start():
    warm = fast_decoder(checkpoint(1))
    first = fast_tokens(warm, PROMPT, GenSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=20))
    turn2 = PROMPT + first + [7, 8, 6, 100, 101]
    assert fast_tokens(warm, turn2) == fast_tokens(fast_decoder(checkpoint(1)), turn2)
    assert warm.cached[: len(turn2)] == turn2
    # a prompt that diverges mid-way only keeps the common prefix
    other = PROMPT[:5] + [1, 2, 3]
    assert fast_tokens(warm, other) == fast_tokens(fast_decoder(checkpoint(1)), other)


def test_cancel_and_stop_ids_and_length():
    dec = fast_decoder(checkpoint(2), max_seq_len=64)
    ref = fast_tokens(dec, PROMPT)
    assert len(ref) == 64 - len(PROMPT)  # the cache (max_seq_len) is full
    stop = ref[5]
    got = fast_tokens(dec, PROMPT, stop={stop})
    assert got == ref[: ref.index(stop) + 1]
    cancel = threading.Event()
    got = []
    for tok in dec.generate(PROMPT, GREEDY, cancel, set()):
        got.append(tok)
        if len(got) == 3:
            cancel.set()
    assert got == ref[:3]
    assert dec.steps == 2  # the steps of tokens 2 and 3: the one whose token the cancel dropped is not the reply's
    short = GenSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=7)
    assert fast_tokens(dec, PROMPT, short) == ref[:7]


def test_long_prompt_dequantizes_each_projection_once(monkeypatch):
    """CPU: a prompt of several dense prefill chunks dequantizes each int4 projection once (FastLlama.keep_dense):
    the same reply and KV cache, bit for bit, as dequantizing per chunk; nothing is kept after the prompt, nor after
    a Ctrl-C between its chunks (and the prompt sent again resumes to the same reply)."""
    from yi_cli.runtime import decoder, projections

    monkeypatch.setitem(decoder.PREFILL_CHUNK, "cpu", 8)
    monkeypatch.setitem(llama.DENSE_PREFILL_MIN, "cpu", 8)  # read when a decoder is built
    ids = PROMPT * 2 + PROMPT[:4]  # 36 tokens: 4 dense chunks of 8, then 4 through the int4 kernel
    settings = GenSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=8)
    dequants = []
    real = projections.Int4.dense
    monkeypatch.setattr(projections.Int4, "dense", lambda self, dtype: dequants.append(id(self)) or real(self, dtype))
    runs = {}
    for limit in (0, llama.KEEP_DENSE_BYTES):
        monkeypatch.setattr(llama, "KEEP_DENSE_BYTES", limit)
        dec = fast_decoder(checkpoint(3, quant="awq"))
        dequants.clear()
        tokens = fast_tokens(dec, ids, settings)
        assert dec.model.kept is None
        runs[limit > 0] = (tokens, dec.model.k_cache, dec.model.v_cache, list(dequants))
    (per_chunk, k0, v0, d0), (kept, k1, v1, d1) = runs[False], runs[True]
    assert kept == per_chunk
    assert all(torch.equal(a, b) for a, b in zip(k0 + v0, k1 + v1, strict=True))
    projs = set(d1)
    assert len(projs) >= 4 and len(d1) == len(projs) and len(d0) == 4 * len(projs)

    cancel = threading.Event()
    dec = fast_decoder(checkpoint(3, quant="awq"))
    dec.on_chunk = lambda done, total: cancel.set() if done >= 16 else None
    assert fast_tokens(dec, ids, settings, cancel=cancel) == []
    assert dec.model.kept is None and dec.cached == ids[:16]
    dec.on_chunk = None
    assert fast_tokens(dec, ids, settings) == kept


@pytest.mark.parametrize("quant", ["awq", "gptq8"])
def test_decode_runs_large_projections_on_every_thread(monkeypatch, quant):
    """CPU decode holds the layers to one thread, but a projection of more than WIDE_BYTES runs its matmul on all
    of them (Yi-6B: 1.4 -> 0.8 s a token on 2 cores), with the same tokens; small ones (the demo's) stay on one,
    and the caller's thread count is back when the reply ends."""
    from yi_cli.kernels import tinygemm
    from yi_cli.runtime import projections

    seen = []
    real = tinygemm.mm
    monkeypatch.setattr(tinygemm, "mm", lambda x, *a: seen.append((x.shape[0], torch.get_num_threads())) or real(x, *a))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = {}
        for wide in (False, True):
            monkeypatch.setattr(projections, "WIDE_BYTES", 0 if wide else 1 << 40)
            dec = fast_decoder(checkpoint(4, quant=quant))
            seen.clear()
            runs[wide] = fast_tokens(dec, PROMPT, GenSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=6))
            steps = {threads for rows, threads in seen if rows == 1}  # decode steps (the prompt is one prefill)
            assert steps == ({2} if wide else {1}), (wide, seen)
            assert torch.get_num_threads() == 2
            assert all(p.threads == 0 for layer in dec.model.layers for p in (layer.qkv, layer.gate_up))
    finally:
        torch.set_num_threads(before)
    assert runs[True] == runs[False] and len(runs[True]) == 6


def test_sampling_seeded_and_penalized():
    dec = fast_decoder(checkpoint(3))
    s = GenSettings(temperature=1.0, top_p=0.9, top_k=0, repetition_penalty=1.3, max_new_tokens=32, seed=7)
    a, b = fast_tokens(dec, PROMPT, s), fast_tokens(dec, PROMPT, s)
    assert a == b
    assert a != fast_tokens(dec, PROMPT, GenSettings(**{**s.to_dict(), "seed": 8}))
    top1 = GenSettings(temperature=0.7, top_k=1, repetition_penalty=1.3, max_new_tokens=32, seed=1)
    greedy = GenSettings(temperature=0, repetition_penalty=1.3, max_new_tokens=32)
    assert fast_tokens(dec, PROMPT, top1) == fast_tokens(dec, PROMPT, greedy)


@pytest.mark.parametrize(
    "temperature,top_p,top_k,penalty", [(1.0, 1.0, 0, 1.0), (0.7, 0.8, 0, 1.2), (1.3, 0.95, 5, 1.5)]
)
def test_sampler_distribution_matches_transformers_warpers(temperature, top_p, top_k, penalty):
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(0)
    vocab, prompt = 12, [1, 4, 4, 9]
    logits = torch.randn(1, vocab) * 2
    scores = RepetitionPenaltyLogitsProcessor(penalty)(torch.tensor([prompt]), logits.clone())
    scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1:
        scores = TopPLogitsWarper(top_p)(None, scores)
    want = scores.softmax(-1)[0]
    sampler = Sampler(vocab, "cpu")
    settings = GenSettings(temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=penalty, seed=3)
    counts = torch.zeros(vocab)
    n = 4000
    for _ in range(n):
        sampler.reset(settings, prompt)  # keeps `seen` to the prompt; the step counter restarts, so vary the seed
        sampler.rng[1] = int(counts.sum())
        counts[sampler.step(logits, torch.empty(1, dtype=torch.long))] += 1
    assert (counts / n - want).abs().max() < 0.03
    assert counts[want == 0].sum() == 0


def test_supports_llama_only():
    from transformers import GPT2Config

    from yi_cli.runtime.decoder import supports

    assert supports(open_checkpoint(checkpoint(), device="cpu"))
    assert not llama.supports(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32))


@pytest.mark.parametrize(
    "top_p,top_k,temperature", [(0.8, 0, 0.9), (1.0, 0, 0.9), (0.9, 40, 0.9), (0.5, 2000, 0.9), (0.9, 0, 0.05)]
)
def test_sampler_cpu_shortcut_picks_what_the_full_sort_picks(top_p, top_k, temperature):
    """temperature 0.05: scores spread over hundreds, most far below exp's normal range (the clamped logsumexp)."""
    vocab = 5000
    sampler = Sampler(vocab, "cpu")
    settings = GenSettings(temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=1.1, seed=5)
    for step in range(50):
        logits = torch.randn(1, vocab, generator=torch.Generator().manual_seed(step)) * 3
        picks = []
        for eager in (True, False):
            sampler.reset(settings, [1, 2, 3])
            sampler.rng[1] = step
            pick = sampler.eager(logits, greedy=False) if eager else sampler.step(logits, torch.empty(1).long())
            picks.append(int(pick))
        assert picks[0] == picks[1]


def test_seeds_that_differ_above_32_bits_sample_apart():
    """Seeds are taken up to 2**63 - 1, but only their low 32 bits seeded the sampler (and torch's generator, in
    the generate engine): 0, 2**32 and 2**33 gave the same reply (a review). Each seeds its own stream now; a seed
    under 2**32 seeds the one it did (a session's seed replays as it did)."""
    from yi_cli.runtime.sampling import seed32

    vocab = 5000
    sampler = Sampler(vocab, "cpu")
    noise = {}
    for seed in (0, 2**32, 2**33, 2**63 - 1, 7):
        sampler.reset(GenSettings(temperature=1.0, seed=seed), [1])
        noise[seed] = sampler._gumbel(torch.arange(vocab))
    assert len({tuple(n.tolist()) for n in noise.values()}) == 5
    assert [seed32(s) for s in (0, 7, 2**32 - 1)] == [0, 7, 2**32 - 1]
    assert len({seed32(k * 2**32) for k in range(1000)}) == 1000


def test_the_sampling_noise_is_finite_for_every_id_and_step():
    """The Gumbel noise's uniform was (24-bit hash + 0.5) * 2**-24: the top hash rounds to 1.0 in float32, its noise
    to +inf, and that id was picked whatever its score, past top-p and top-k (-inf + inf: NaN, argmax's pick): one
    id in 2**24 a step, with Yi's vocabulary a junk token in most 500-token replies (a fidelity review: ' Bit' at
    probability 9e-9, seed 196). Every (seed, step) here covers Yi's 64000 ids; ~11 of them hit it before."""
    vocab = 64000
    sampler = Sampler(vocab, "cpu")
    ids = torch.arange(vocab)
    for seed in range(60):
        sampler.reset(GenSettings(temperature=1.0, seed=seed), [1])
        for step in range(50):
            sampler.rng[1] = step
            noise = sampler._gumbel(ids)
            assert torch.isfinite(noise).all(), (seed, step, ids[~torch.isfinite(noise)].tolist())
    logits = torch.randn(1, vocab, generator=torch.Generator().manual_seed(0)) * 3
    sampler.reset(GenSettings(temperature=1.0, top_k=1, repetition_penalty=1.0, seed=5), [1])
    for _ in range(20):  # top_k 1: greedy whatever the noise
        assert int(sampler.step(logits, torch.zeros(1, dtype=torch.long))) == int(logits.argmax())


def test_sampler_top_k_at_its_bound_is_off():
    """top_k 2**31 - 1 (the most a setting takes) keeps every token, as 0 does; the sampler holds it as the
    vocabulary size, which float32 and the CUDA kernel's int32 keep exact (float32 rounds 2**31 - 1 up to 2**31)."""
    from yi_cli.engines.settings import TOP_K_MAX

    vocab = 5000
    sampler = Sampler(vocab, "cpu")
    for step in range(20):
        logits = torch.randn(1, vocab, generator=torch.Generator().manual_seed(step)) * 3
        picks = []
        for top_k in (0, TOP_K_MAX):
            sampler.reset(GenSettings(temperature=0.9, top_p=0.95, top_k=top_k, repetition_penalty=1.0, seed=5), [1])
            sampler.rng[1] = step
            picks.append(int(sampler.step(logits, torch.empty(1).long())))
        assert picks[0] == picks[1]
    assert float(sampler.params[2]) == vocab


@pytest.mark.slow
def test_demo_awq_greedy_64_tokens_match_transformers():
    """The quantized demo model (a real chat model): the same 64 greedy tokens as eager transformers."""
    from yi_cli.checkpoint import demo
    from yi_cli.errors import LoadError

    try:
        loaded = yi_cli.load(str(demo.ensure("demo")), device="cpu")
    except LoadError as e:
        pytest.skip(str(e))
    ids = loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Write a short poem about the sea."}], add_generation_prompt=True, tokenize=True
    )
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    ref = reference_greedy(loaded.model, ids)
    assert fast_tokens(FastDecoder(loaded.checkpoint), ids) == ref

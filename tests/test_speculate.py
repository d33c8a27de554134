"""Prompt-lookup speculative decoding (runtime/speculate.py) on CPU: lossless against decoding without it.

Greedy and seeded sampling give the very same tokens with and without speculation (the CPU verify computes each
row's logits bit for bit as a decode step, and the sampler's noise depends only on (seed, step, id)); the
acceptance rule's output distribution is checked statistically on a small vocabulary.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import ClassVar

import pytest
import torch
from test_fast import PROMPT, checkpoint, fast_decoder, fast_tokens

from yi_cli.engines.settings import GenSettings, parse
from yi_cli.errors import UsageError
from yi_cli.runtime import speculate
from yi_cli.runtime.sampling import Sampler

# A prompt that repeats itself: the tiny models continue such patterns, so drafts are found and kept.
DOC = PROMPT * 3
PARAGRAPH = (
    "Speculative decoding drafts several tokens cheaply and checks them with one forward pass of the large "
    "model. Prompt lookup takes the drafts from the conversation itself, so it needs no second model."
)
GREEDY = GenSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=120)


def both(dec, ids, settings, **kw) -> tuple[list[int], list[int], int]:
    """(tokens with speculation off, with lookup, forward steps of the lookup run)."""
    off = fast_tokens(dec, ids, replace(settings, speculate="off"), **kw)
    on = fast_tokens(dec, ids, replace(settings, speculate="lookup"), **kw)
    return off, on, dec.steps


class Oracle(speculate.Lookup):
    """Drafts the reply decoding without speculation gave (`want`), every 4th drafted token wrong: verify steps
    then keep long bursts and also reject, whatever the tiny random model does."""

    want: ClassVar[list[int]] = []
    prompt = 0

    def __init__(self, ids):
        super().__init__(ids)
        Oracle.prompt = Oracle.prompt or len(ids) - 1

    def draft(self, k):
        at = len(self.ids) - Oracle.prompt
        drafts = [t if (at + j) % 4 != 3 else (t + 1) % 512 for j, t in enumerate(Oracle.want[at : at + k])]
        return drafts, speculate.RUN_MAX  # as a long copied run: Adapt drafts long


@pytest.fixture
def oracle(monkeypatch):
    from yi_cli.runtime import decoder

    def use(want, prompt_len):
        Oracle.want, Oracle.prompt = want, prompt_len
        monkeypatch.setattr(decoder.speculate, "Lookup", Oracle)

    return use


def test_lookup_drafts_the_longest_latest_match():
    look = speculate.Lookup([1, 2, 3, 4, 9, 2, 3, 5, 6, 7, 2, 3])
    assert look.draft(3) == ([5, 6, 7], 2)  # "2 3" last followed by 5 6 7 (the later of its two occurrences)
    look.append(4)
    assert look.draft(2) == ([9, 2], 3)  # "2 3 4" matches at the start: the longer match wins over "4"
    assert speculate.Lookup([1, 2, 3]).draft(4) == ([], 0)  # nothing repeats: no draft, a plain step


def test_lookup_reports_how_long_the_copied_run_is():
    text = list(range(10, 30))
    look = speculate.Lookup(text + [99] + text[:12])  # the reply has copied 12 tokens of the text so far
    assert look.draft(3) == (text[12:15], speculate.RUN_MAX)  # counted past the indexed n-grams, up to RUN_MAX
    look = speculate.Lookup(text + [99] + [5, 16, 17])  # only "16 17" matches (N_MAX-gram "5 16 17" does not)
    assert look.draft(2) == ([18, 19], 2)
    assert look.draft(0) == ([], 2)


def test_accept_keeps_matching_prefix_plus_one():
    asked = []

    def choose(i):
        asked.append(i)
        return [5, 6, 0, 8][i]

    assert speculate.accept([5, 6, 7], choose) == [5, 6, 0]
    assert asked == [0, 1, 2]
    assert speculate.accept([5, 6], lambda i: [5, 6, 9][i]) == [5, 6, 9]  # all kept: a bonus token
    assert speculate.accept([], lambda i: 4) == [4]


CPU_COST = speculate.Costs({2: 1.29, 3: 1.52, 4: 1.76, 5: 2.26, 6: 2.49, 7: 2.73, 8: 3.0}, head=0.11)


def test_adapt_drafts_by_the_length_of_the_copied_run():
    a = speculate.Adapt(CPU_COST.ratio, CPU_COST.head)
    # the prior rates at CPU prices: one matching token is not worth a verify row, a long copied run is
    assert a.k(1) == 0
    assert 0 < a.k(2) < a.k(4) <= a.k(speculate.RUN_MAX) < 5  # 5+ rows: the CPU int4 kernel's cost jumps
    assert a.k(speculate.RUN_MAX, most=2) == 2  # never more than the drafts found
    for _ in range(12):  # every draft of a long run kept: then 8 rows pay even at CPU prices
        a.update(speculate.RUN_MAX, 7, 7)
    assert a.k(speculate.RUN_MAX) == speculate.K_MAX
    free = speculate.Adapt()  # a verify costs one step whatever its rows: every draft pays
    assert free.k(1) == speculate.K_MAX


def test_adapt_learns_each_run_lengths_acceptance():
    a = speculate.Adapt(CPU_COST.ratio, CPU_COST.head)
    k2 = a.k(2)
    for _ in range(8):  # drafts after 2-token matches are all rejected (this model paraphrases)
        a.update(2, 3, 0)
    assert a.k(2) == 0 and a.rate(2) < 0.2
    assert a.rate(speculate.RUN_MAX) == speculate.PRIOR_RATE[-1]  # long runs keep their rate
    for _ in range(3):  # a kept draft of 4 after a 2-token match counts at runs 2, 3, 4, 5, a rejection at 6
        a.update(2, 5, 4)
    assert a.rate(3) > speculate.PRIOR_RATE[2] and a.rate(6) < speculate.PRIOR_RATE[5]
    for _ in range(20):
        a.update(2, 1, 1)
    assert a.k(2) >= k2


def test_adapt_probes_a_passed_over_match_now_and_then():
    a = speculate.Adapt(CPU_COST.ratio, CPU_COST.head)
    assert [a.k(1) for _ in range(speculate.PROBE)] == [0] * (speculate.PROBE - 1) + [1]
    assert a.k(1) == 0
    assert a.k(1, most=0) == 0 and a.passed == 1  # no draft found: nothing passed over
    a.update(1, 1, 1)
    assert a.passed == 0


def test_costs_start_from_the_prior_then_follow_the_clock():
    c = speculate.Costs({2: 1.5, 4: 2.0, 8: 3.0}, bucket=lambda t: next(r for r in (2, 4, 8) if r >= t))
    assert c.ratio(1) == 1.0 and c.ratio(3) == 2.0 and c.ratio(8) == 3.0  # rows 3 run as 4
    c.observe(1, 0.010)
    assert c.ratio(4) == 2.0  # no verify of 4 timed yet
    c.observe(3, 0.012)
    assert c.ratio(4) == pytest.approx(1.2)
    c.observe(4, 0.022)  # averaged, recent timings weighing 0.2
    assert c.ratio(4) == pytest.approx((0.012 + 0.2 * (0.022 - 0.012)) / 0.010)
    fixed = speculate.Costs({2: 1.5}, timed=False)  # CUDA: the prior stands, whatever the clock says
    fixed.observe(1, 0.010)
    fixed.observe(2, 0.011)
    assert fixed.ratio(2) == 1.5
    free = speculate.Costs({2: 1.26, 4: 1.73})
    assert free.ratio(3) == pytest.approx((1.26 + 1.73) / 2) and free.ratio(6) == pytest.approx(1.73 + 0.47)


def test_costs_take_the_kept_rows_logits_off_a_verifys_time():
    c = speculate.Costs({2: 1.5}, head=0.1)
    c.observe(3, 0.030, logits=3)  # no step timed yet: the two further rows' logits cannot be priced
    assert c.ratio(3) == pytest.approx(2.0)  # the prior (extrapolated), untouched
    c.observe(1, 0.010)
    c.observe(3, 0.030, logits=3)  # 2 more rows' logits at 0.1 steps (1 ms) each
    assert c.ratio(3) == pytest.approx(2.8)


@pytest.mark.parametrize("quant", [None, "awq", "gptq8"])
def test_greedy_identical_with_and_without(quant):
    dec = fast_decoder(checkpoint(3, quant))  # seed 3 falls into loops that lookup drafts
    off, on, steps = both(dec, DOC, GREEDY)
    assert on == off
    assert steps < len(on) - 1, "no draft was ever kept: the test would not exercise the verify step"
    penalized = replace(GREEDY, repetition_penalty=1.3)  # `seen` must grow token by token through kept drafts
    off, on, _ = both(dec, DOC, penalized)
    assert on == off


@pytest.mark.parametrize("quant,penalty", [(None, 1.0), ("awq", 1.3)])
def test_greedy_identical_through_long_bursts(oracle, quant, penalty):
    dec = fast_decoder(checkpoint(0, quant))
    settings = replace(GREEDY, repetition_penalty=penalty)
    off = fast_tokens(dec, DOC, replace(settings, speculate="off"))
    oracle(off, len(DOC))
    on = fast_tokens(dec, DOC, replace(settings, speculate="lookup"))
    assert on == off
    assert dec.steps < len(on) / 2


@pytest.mark.parametrize(
    "temperature,top_p,top_k,penalty",
    [(1.0, 1.0, 0, 1.0), (0.7, 0.8, 0, 1.2), (1.3, 0.95, 5, 1.5), (0.3, 0.9, 40, 1.1)],
)
def test_seeded_sampling_identical_with_and_without(oracle, temperature, top_p, top_k, penalty):
    dec = fast_decoder(checkpoint(3, "awq"))
    s = GenSettings(
        temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=penalty, max_new_tokens=40, seed=11
    )
    off, on, _ = both(dec, DOC, s)
    assert on == off
    oracle(off, len(DOC))
    assert fast_tokens(dec, DOC, replace(s, speculate="lookup")) == off
    assert dec.steps < len(off) / 2


def test_stop_length_cancel_and_cache_end_with_speculation(oracle):
    dec = fast_decoder(checkpoint(0), max_seq_len=96)
    off = fast_tokens(dec, DOC, replace(GREEDY, max_new_tokens=200, speculate="off"))
    oracle(off, len(DOC))
    on = fast_tokens(dec, DOC, replace(GREEDY, max_new_tokens=200, speculate="lookup"))
    assert on == off and len(on) == 96 - len(DOC)  # the cache is full: verify rows never pass its end
    assert dec.steps < len(on) / 2
    for n in (1, 2, 5, 13):  # max_new_tokens cuts inside a burst of kept drafts
        assert both(dec, DOC, replace(GREEDY, max_new_tokens=n))[1] == off[:n]
    stop = off[9]
    assert both(dec, DOC, GREEDY, stop={stop})[1] == off[: off.index(stop) + 1]
    cancel = threading.Event()
    got = []
    for tok in dec.generate(DOC, replace(GREEDY, speculate="lookup"), cancel, set()):
        got.append(tok)
        if len(got) == 4:
            cancel.set()
    assert got == off[:4]
    # the cache holds what was fed: a follow-up turn reuses it and still matches a cold decoder
    turn2 = DOC + off[:4] + [7, 8, 9]
    cold = fast_tokens(fast_decoder(checkpoint(0), max_seq_len=96), turn2, replace(GREEDY, speculate="off"))
    oracle(cold, len(turn2))
    assert fast_tokens(dec, turn2, replace(GREEDY, speculate="lookup")) == cold


def test_verify_rows_are_decode_steps_bit_for_bit():
    dec = fast_decoder(checkpoint(0, "awq"))
    toks = fast_tokens(dec, PROMPT, replace(GREEDY, max_new_tokens=8, speculate="off"))
    m, n = dec.model, len(PROMPT)
    with torch.inference_mode():
        m.prefill(torch.tensor(PROMPT), 0)
        steps = torch.cat(
            [m.decode_step(torch.tensor([t]), torch.tensor([n + j]), n + j + 1) for j, t in enumerate(toks)]
        )
        h = m.verify(torch.tensor(toks), torch.arange(n, n + len(toks)), n + len(toks))
        assert torch.equal(torch.cat([m.head(h[i : i + 1]) for i in range(len(toks))]), steps)


@pytest.mark.slow
def test_cpu_step_logits_on_every_thread_are_one_threads_bits(demo_dir):
    """The CPU decode loop runs the layers on one thread and the lm_head on all (decoder._head): on the demo's
    [49152, 576] head, split over 2 threads, the logits are decode_step's on one thread, bit for bit."""
    from yi_cli.checkpoint.loader import open_checkpoint
    from yi_cli.runtime.decoder import FastDecoder

    dec = FastDecoder(open_checkpoint(demo_dir, device="cpu", dtype="fp32"))
    m, threads = dec.model, torch.get_num_threads()
    ids = torch.arange(100, 140)
    try:
        with torch.inference_mode():
            m.prefill(ids, 0)
            tok, pos = ids[-1:], torch.tensor([len(ids)])
            torch.set_num_threads(1)
            want = m.decode_step(tok, pos, len(ids) + 1)
            dec.threads = 2
            h = m.verify(tok, pos, len(ids) + 1)
            assert torch.equal(dec._head(h), want)
            assert torch.get_num_threads() == 1  # back to the decode loop's one
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "temperature,top_p,top_k,penalty,draft", [(1.0, 1.0, 0, 1.0, 2), (0.7, 0.9, 0, 1.3, 4), (1.2, 1.0, 3, 1.0, 0)]
)
def test_acceptance_rule_distribution(temperature, top_p, top_k, penalty, draft):
    """A point-mass draft d is kept with probability p(d); a rejection draws from p without d, renormalised;
    so the first token is distributed as p (p: the sampler's processed distribution)."""
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    vocab, prompt = 8, [1, 4]
    logits = torch.tensor([[1.5, 0.3, 1.0, -0.5, 0.8, 0.0, -1.0, 0.6]])
    scores = RepetitionPenaltyLogitsProcessor(penalty)(torch.tensor([prompt]), logits.clone())
    scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1:
        scores = TopPLogitsWarper(top_p)(None, scores)
    p = scores.softmax(-1)[0]
    sampler = Sampler(vocab, "cpu")
    n, kept, first, rejected = 6000, 0, torch.zeros(vocab), torch.zeros(vocab)
    for trial in range(n):
        sampler.reset(
            GenSettings(temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=penalty, seed=trial),
            prompt,
        )
        out = speculate.accept([draft], lambda i: int(sampler.eager(logits, greedy=False)))
        first[out[0]] += 1
        if out[0] == draft:
            kept += 1
        else:
            rejected[out[0]] += 1
    assert abs(kept / n - float(p[draft])) < 0.025
    assert (first / n - p).abs().max() < 0.025
    residual = p.clone()
    residual[draft] = 0
    if residual.sum() > 0:
        assert (rejected / rejected.sum() - residual / residual.sum()).abs().max() < 0.03
    assert first[p == 0].sum() == 0


def test_speculate_setting_parses():
    assert GenSettings().speculate == "auto"
    assert parse("speculate", " Lookup ") == "lookup"
    assert GenSettings.from_dict({"speculate": "off"}).speculate == "off"
    with pytest.raises(UsageError, match="speculate must be one of"):
        parse("speculate", "medusa")


@pytest.mark.slow
def test_demo_document_greedy_identical_and_faster_per_step(demo_dir):
    """The real demo model, asked to repeat a paragraph: the same greedy tokens, in fewer forward steps."""
    from yi_cli.checkpoint.loader import open_checkpoint
    from yi_cli.runtime.decoder import FastDecoder

    ckpt = open_checkpoint(demo_dir, device="cpu", dtype="fp32")
    ids = ckpt.hf_tokenizer.apply_chat_template(
        [{"role": "user", "content": f"Repeat this text:\n\n{PARAGRAPH}"}], add_generation_prompt=True, tokenize=True
    )
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    dec = FastDecoder(ckpt)
    settings = GenSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=64)  # the demo's own setting
    off, on, steps = both(dec, ids, settings)
    assert on == off
    assert (len(on) - 1) / steps > 1.5
    off, on, _ = both(dec, ids, replace(settings, repetition_penalty=1.2))  # Yi's recipe penalises copying
    assert on == off


def test_stats_report_tokens_per_step():
    from yi_cli.engines.events import Stats
    from yi_cli.ui.render import footer

    assert "tokens_per_step" not in Stats().to_dict()  # engines that do not know it (remote, generate)
    s = Stats(new_tokens=9, tokens_per_step=2.666)
    assert s.to_dict()["tokens_per_step"] == 2.67
    assert "2.67 tok/step" in footer(s)
    assert "tok/step" not in footer(Stats(new_tokens=9, tokens_per_step=1.0))
    # a one-token reply of the fast engine (no decode step): the key stays, null (it was left out, so one object of
    # a run lacked the key the others had)
    one = Stats(new_tokens=1, tokens_per_step=None)
    assert "tokens_per_step" in one.to_dict() and one.to_dict()["tokens_per_step"] is None
    assert "tok/step" not in footer(one)


@pytest.mark.slow
def test_cli_speculate_flag_same_reply_and_json(demo_dir):
    """`yi-chat --speculate lookup|off` on the demo model (with its own settings: no repetition penalty): the same
    greedy reply; --json reports tokens_per_step."""
    import json

    from test_cli import yi

    runs = {}
    for mode in ("off", "lookup"):
        p = yi(
            "-m",
            "demo",
            "--device",
            "cpu",
            "--temperature",
            "0",
            "--max-new-tokens",
            "64",
            "--speculate",
            mode,
            "--json",
            "-p",
            f"Repeat this text:\n\n{PARAGRAPH}",
        )
        assert p.returncode == 0, p.stderr.decode()
        runs[mode] = json.loads(p.stdout.decode().splitlines()[-1])
    assert runs["lookup"]["reply"] == runs["off"]["reply"]
    assert runs["off"]["tokens_per_step"] == 1.0 and runs["lookup"]["tokens_per_step"] > 1.2
    p = yi("--speculate", "medusa", "-p", "hi")
    assert p.returncode == 2 and b"invalid choice" in p.stderr


def test_speculate_is_taken_in_any_case_as_config_and_set_take_it():
    """`--speculate LOOKUP` was "invalid choice" where config.toml's `speculate = "LOOKUP"` and `/set speculate
    LOOKUP` ran (a sampling review)."""
    from yi_cli.ui.args import parse_args

    assert parse_args(["--speculate", "LOOKUP", "-p", "hi"]).speculate == "lookup"
    assert parse_args(["--speculate", "Off", "-p", "hi"]).speculate == "off"


def test_cuda_verify_prior_follows_the_model_size():
    """CUDA's verify costs by weight bytes: each measured model gets its own, sizes between are interpolated, and
    sizes past either end keep the nearer one (a prior, not an extrapolation)."""
    from yi_cli.runtime import decoder

    (small, c_small), (large, c_large) = decoder.CUDA_VERIFY_ANCHORS
    assert decoder.cuda_verify_prior(int(small)) == pytest.approx(c_small)
    assert decoder.cuda_verify_prior(int(large)) == pytest.approx(c_large)
    assert decoder.cuda_verify_prior(10**6) == pytest.approx(c_small)
    assert decoder.cuda_verify_prior(20 * 10**9) == pytest.approx(c_large)  # Yi-34B: as Yi-6B
    mid = decoder.cuda_verify_prior(int((small * large) ** 0.5))  # halfway in log(bytes)
    for rows in c_small:
        assert mid[rows] == pytest.approx((c_small[rows] + c_large[rows]) / 2)
    # the tensor-core GEMV's exact verifies have their own anchors: cheaper rows for a Yi-6B-sized model
    (_, e_small), (_, e_large) = decoder.CUDA_EXACT_ANCHORS
    assert decoder.cuda_verify_prior(int(small), exact=True) == pytest.approx(e_small)
    assert decoder.cuda_verify_prior(int(large), exact=True) == pytest.approx(e_large)
    assert all(e_large[rows] < c_large[rows] for rows in c_large)

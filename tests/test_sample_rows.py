"""nucleus.sample_rows (a speculative verify's choices, all rows in one pass) against row-by-row choices: row t
is what nucleus.sample and Sampler's torch ops pick after rows < t chose the drafts, and the state is untouched.

On CUDA (Yi's vocabulary), or interpreted on the CPU (a small vocabulary): see triton_interpret.py.
"""

from __future__ import annotations

import pytest
import torch
from triton_interpret import CUDA, DEV

from yi_cli.engines.settings import GenSettings
from yi_cli.kernels import nucleus
from yi_cli.runtime.sampling import Sampler

VOCAB = 64000 if CUDA else 5000  # two chunks of nucleus.BLOCK interpreted


@pytest.mark.parametrize(
    "temperature,top_p,top_k,penalty",
    [(0, 0.8, 0, 1.3), (0, 1.0, 0, 1.0), (0.6, 0.8, 0, 1.2), (0.9, 0.95, 40, 1.1), (1.3, 0.5, 3000, 1.0)],
)
def test_rows_pick_what_one_row_steps_pick(temperature, top_p, top_k, penalty):
    settings = GenSettings(temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=penalty, seed=11)
    t = 8
    g = torch.Generator().manual_seed(int(temperature * 10 + top_k))
    logits = (torch.randn(t, VOCAB, generator=g) * torch.tensor([0.5, 8.0] * 4).unsqueeze(1)).to(DEV)
    # the drafts: row i has seen tokens[1..i], mostly its own maximum (then the penalty matters) and one repeat
    top = logits.argmax(-1).tolist()
    tokens = torch.tensor([7, top[1], top[2], 9, top[4], 9, top[6], top[7]], device=DEV)
    rows = Sampler(VOCAB, DEV)
    rows.reset(settings, [1, 2, 3, int(logits[5].argmax())])
    rows.rng[1] = 17
    seen, rng = rows.seen.clone(), rows.rng.clone()
    out = torch.full((t,), -1, dtype=torch.long, device=DEV)
    nucleus.sample_rows(logits, tokens, rows.seen, rows.params, rows.rng, out, temperature == 0, rows.work())
    assert torch.equal(rows.seen, seen) and torch.equal(rows.rng, rng)  # replayable: the state is untouched
    for i in range(t):
        want = []
        for fused in (True, False):  # nucleus.sample, and Sampler's torch ops
            one = Sampler(VOCAB, DEV)
            one.fused = fused
            one.params.copy_(rows.params)
            one.seen.copy_(seen)
            one.seen[tokens[1 : i + 1]] = True  # rows < i chose the drafts
            one.rng.copy_(rng)
            one.rng[1] += i
            o = torch.zeros(1, dtype=torch.long, device=DEV)
            one.step(logits[i : i + 1].contiguous(), o)
            want.append(int(o))
        assert [int(out[i])] * 2 == want, f"row {i}"


@pytest.mark.parametrize(
    "temperature,top_p,top_k",
    [(1.0, 0.05, 0), (0.7, 0.5, 0), (1.0, 0.9, 7), (1.0, 1.0, 1), (0.5, 0.3, 2500)],
)
def test_ties_and_narrow_nuclei_pick_what_the_torch_ops_pick(temperature, top_p, top_k):
    """Scores in steps of 0.25 (ties at the top-p edge and at the k-th score, where the stable sort's id order
    decides), small top_p on flat scores (several rejection rounds): one-row launches, rows launched together and
    rows launched one at a time all choose what Sampler's torch ops choose, and the barrier counters are back at 0."""
    settings = GenSettings(temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=1.0, seed=3)
    t = 8
    g = torch.Generator().manual_seed(top_k + int(top_p * 100))
    logits = ((torch.randn(t, VOCAB, generator=g) * torch.tensor([0.3, 2.0] * 4).unsqueeze(1)) * 4).round() / 4
    logits = logits.to(DEV)
    tokens = torch.full((t,), 5, device=DEV)  # the same id every row: the penalty is off, rows differ by step
    rows = Sampler(VOCAB, DEV)
    rows.reset(settings, [1])
    work = rows.work()
    outs = []
    for sms in (work.sms, 1):  # all rows in one grid where they fit, and a launch a row
        work.sms = sms
        out = torch.full((t,), -1, dtype=torch.long, device=DEV)
        nucleus.sample_rows(logits, tokens, rows.seen, rows.params, rows.rng, out, False, work)
        outs.append(out.tolist())
        assert not work.sync.any()
    want = []
    for i in range(t):
        one = Sampler(VOCAB, DEV)
        one.fused = False
        one.params.copy_(rows.params)
        one.seen.copy_(rows.seen)
        one.rng.copy_(rows.rng)
        one.rng[1] += i
        o = torch.zeros(1, dtype=torch.long, device=DEV)
        one.step(logits[i : i + 1].contiguous(), o)
        want.append(int(o))
    assert outs == [want, want]


@pytest.mark.parametrize("top_k", [1, 5, 64])
def test_top_k_keeps_exactly_the_k_highest(top_k):
    """At temperature 5 the k highest are about equally likely, so an id past them (a bisection that stops one
    short) would be picked within a few steps: every pick is one of the k highest, and what the torch ops pick."""
    settings = GenSettings(temperature=5.0, top_p=1.0, top_k=top_k, repetition_penalty=1.0, seed=9)
    logits = (torch.randn(1, VOCAB, generator=torch.Generator().manual_seed(top_k)) * 2).to(DEV)
    allowed = set(logits[0].topk(top_k).indices.tolist())
    fused, plain = Sampler(VOCAB, DEV), Sampler(VOCAB, DEV)
    plain.fused = False
    picks = set()
    for step in range(24):
        got = []
        for sm, run in (
            (fused, lambda sm, o: nucleus.sample(logits, sm.seen, sm.params, sm.rng, o, sm.work())),
            (plain, lambda sm, o: sm.step(logits, o)),
        ):
            sm.reset(settings, [0])
            sm.rng[1] = step
            o = torch.zeros(1, dtype=torch.long, device=DEV)
            run(sm, o)
            got.append(int(o))
        assert got[0] == got[1] and got[0] in allowed
        picks.add(got[0])
    assert top_k == 1 or len(picks) > 1  # the temperature spreads the picks over the k


@pytest.mark.parametrize("kind", ["some", "all", "inf"])
def test_broken_scores_still_give_an_id(kind):
    """NaN or infinite logits (a broken checkpoint) end in a vocabulary id, not a hang or an id past the table."""
    logits = torch.randn(1, VOCAB, generator=torch.Generator().manual_seed(4))
    if kind == "some":
        logits[0, ::7] = float("nan")
    elif kind == "all":
        logits[:] = float("nan")
    else:
        logits[0, 3::11] = float("inf")
    logits = logits.to(DEV)
    for top_k in (0, 50):
        sm = Sampler(VOCAB, DEV)
        sm.reset(GenSettings(temperature=0.8, top_p=0.9, top_k=top_k, seed=1), [2])
        out = torch.full((1,), -1, dtype=torch.long, device=DEV)
        nucleus.sample(logits, sm.seen, sm.params, sm.rng, out, sm.work())
        assert 0 <= int(out) < VOCAB and not sm.work().sync.any()


def test_a_step_posts_its_token_to_its_host_slot():
    """nucleus.sample with a host ring (pinned on CUDA): the token also lands in slot step % H, nothing else in
    the ring changes; a verify's rows post nothing."""
    settings = GenSettings(temperature=0.7, top_p=0.9, seed=3)
    sm = Sampler(VOCAB, DEV)
    sm.reset(settings, [1, 2, 3])
    host = torch.full((4,), -1, dtype=torch.long, pin_memory=CUDA)
    g = torch.Generator().manual_seed(0)
    for step in range(6):
        logits = (torch.randn(1, VOCAB, generator=g) * 4).to(DEV)
        out = torch.zeros(1, dtype=torch.long, device=DEV)
        before = host.clone()
        nucleus.sample(logits, sm.seen, sm.params, sm.rng, out, sm.work(), host)
        if CUDA:
            torch.cuda.synchronize()
        assert int(sm.rng[1]) == step + 1
        before[step % 4] = int(out)
        assert torch.equal(host, before), step
    rows = torch.randn(3, VOCAB, generator=g).to(DEV)
    kept = host.clone()
    nucleus.sample_rows(
        rows,
        torch.tensor([5, 6, 7], device=DEV),
        sm.seen,
        sm.params,
        sm.rng,
        torch.zeros(3, dtype=torch.long, device=DEV),
        False,
        sm.work(),
    )
    if CUDA:
        torch.cuda.synchronize()
    assert torch.equal(host, kept)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16] if CUDA else [torch.float16])
def test_a_step_on_half_logits_picks_what_fp32_logits_pick_and_advances_pos(dtype):
    """The graphed decode step hands the lm_head GEMV's logits to nucleus.sample as they are (no fp32 copy) and
    lets it advance the position: the same token, the same state as the fp32 logits of the same values, over greedy,
    top-p, top-k and penalty settings; pos advanced by exactly one each step, only where it is given."""
    g = torch.Generator().manual_seed(5)
    for settings in (
        GenSettings(temperature=0, repetition_penalty=1.3, seed=1),
        GenSettings(temperature=0.8, top_p=0.9, seed=2),
        GenSettings(temperature=1.1, top_k=40, repetition_penalty=1.1, seed=3),
    ):
        half, full = Sampler(VOCAB, DEV), Sampler(VOCAB, DEV)
        for sm in (half, full):
            sm.reset(settings, [1, 2, 3])
        pos = torch.full((1,), 41, dtype=torch.long, device=DEV)
        for step in range(4):
            logits = (torch.randn(1, VOCAB, generator=g) * 4).to(dtype).to(DEV)
            a = torch.zeros(1, dtype=torch.long, device=DEV)
            b = torch.zeros(1, dtype=torch.long, device=DEV)
            nucleus.sample(logits, half.seen, half.params, half.rng, a, half.work(), pos=pos)
            nucleus.sample(logits.float(), full.seen, full.params, full.rng, b, full.work())
            assert int(a) == int(b), (settings, step)
            assert torch.equal(half.seen, full.seen) and torch.equal(half.rng, full.rng)
            assert int(pos) == 42 + step


def test_the_noise_is_finite_where_its_hash_is_at_the_top():
    """Seed 4, step 13: id 1067's 24-bit hash is the largest, and (h + 0.5) * 2**-24 rounded to 1.0 in float32: its
    Gumbel noise was +inf, and both the kernel and the torch ops picked it over a token of probability ~1 (a fidelity
    review). On 23 bits the noise is at most ~16.6: the token 50 above every other is picked, whichever path."""
    vocab = 64000
    logits = torch.zeros(1, vocab)
    logits[0, 0] = 50.0
    logits = logits.to(DEV)
    for fused in (True, False):  # nucleus.sample, and Sampler's torch ops
        one = Sampler(vocab, DEV)
        one.fused = fused
        one.reset(GenSettings(temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0, seed=4), [1])
        one.rng[1] = 13
        o = torch.zeros(1, dtype=torch.long, device=DEV)
        one.step(logits, o)
        assert int(o) == 0, (fused, int(o))

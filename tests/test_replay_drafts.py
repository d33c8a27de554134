"""scripts/replay_drafts.py's replay of the drafter over a known reply (pure Python: no model)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import replay_drafts  # noqa: E402

from yi_cli.runtime import speculate  # noqa: E402
from yi_cli.runtime.decoder import VERIFY_COST  # noqa: E402

PRIOR, _, _, HEAD = VERIFY_COST["cpu"]


def test_a_reply_without_matches_costs_one_step_a_token():
    prompt = list(range(100, 140))
    reply = list(range(1000, 1060))  # no token of it occurs earlier: never a draft
    for oracle in (False, True):
        assert replay_drafts.replay(prompt, reply, oracle, PRIOR, HEAD) == (59, 59.0)


def test_copying_the_prompt_takes_fewer_steps_and_the_oracle_pays_only_for_kept_drafts():
    doc = [(7 * i) % 997 + 2 for i in range(120)]  # distinct tokens
    prompt, reply = [1] + doc + [1], doc[:100]
    steps, cost = replay_drafts.replay(prompt, reply, False, PRIOR, HEAD)
    o_steps, o_cost = replay_drafts.replay(prompt, reply, True, PRIOR, HEAD)
    assert steps < 99 / 2 and cost < 99 / 1.5  # whole drafts kept
    # every draft is kept and the reply's first token already matches: each oracle step gives K_MAX + 1 tokens
    assert o_steps == -(-99 // (speculate.K_MAX + 1))
    assert o_cost < cost or (o_cost == cost and o_steps == steps)


def test_a_draft_the_reply_leaves_costs_its_verify_but_not_the_oracle():
    doc = [(11 * i) % 991 + 2 for i in range(40)]
    reply = doc[:10] + [5000] + list(range(6000, 6020))  # copies 10 tokens, then leaves the document
    prompt = [1] + doc + [1]
    steps, cost = replay_drafts.replay(prompt, reply, False, PRIOR, HEAD)
    o_steps, o_cost = replay_drafts.replay(prompt, reply, True, PRIOR, HEAD)
    assert o_cost < cost  # a rejected draft was verified (the prior's rates say a copy run goes on)
    assert o_steps <= steps

"""Prompt-lookup drafting replayed over real replies, without timing noise: each of bench_speculate.py's workloads is
answered once on the CPU (the demo model, its own settings, speculation off: the reply speculation gives too), then
the drafter (speculate.Lookup + Adapt) is stepped over prompt + reply with the CPU's verify-cost prior
(decoder.VERIFY_COST["cpu"]): how many tokens each forward would give and the decode speedup those costs imply,
against `oracle`, which verifies exactly the drafts that will be kept (the best any draft-count policy can do with
these drafts and costs). Also the first drafted token's acceptance by matched run length (speculate.PRIOR_RATE's
measure), over every position of the replies.

    OMP_WAIT_POLICY=PASSIVE python scripts/replay_drafts.py [--new-tokens 160] [--costs JSON --head H]
Prints JSON lines; the last one is a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speculate import DOCUMENT, WORKLOADS, workload_prompt  # noqa: E402

from yi_cli.checkpoint import demo  # noqa: E402
from yi_cli.checkpoint.loader import open_checkpoint, resolve  # noqa: E402
from yi_cli.engines.settings import GenSettings  # noqa: E402
from yi_cli.runtime import speculate  # noqa: E402
from yi_cli.runtime.decoder import VERIFY_COST, FastDecoder  # noqa: E402


def replies(new: int) -> dict[str, tuple[list[int], list[int]]]:
    """workload -> (prompt ids, reply ids), as bench_speculate.cpu_workloads builds and answers them."""
    ckpt = open_checkpoint(str(resolve("demo")), device="cpu", dtype="fp32")
    dec, tok = FastDecoder(ckpt), ckpt.hf_tokenizer
    settings = replace(GenSettings(**demo.RECOMMENDED, seed=0), max_new_tokens=new, speculate="off")
    out = {}
    for name, turns in WORKLOADS.items():
        ids = workload_prompt(dec, tok, settings, turns)
        out[name] = (ids, list(dec.generate(ids, settings, threading.Event(), set())))
    return out


def replay(prompt: list[int], reply: list[int], oracle: bool, prior: dict, head: float) -> tuple[int, float]:
    """(forward steps, cost in decode steps) to produce reply[1:] after its first token, as decoder._spec_steps
    would with these verify costs (rows -> decode steps; head: one more row's logits) (oracle: each verify holds
    exactly the drafts that will be kept)."""
    look, adapt = speculate.Lookup(prompt + reply[:1]), speculate.Adapt(prior.__getitem__, head)
    made, steps, cost = 1, 0, 0.0
    while made < len(reply):
        drafts, run = look.draft(min(speculate.K_MAX, len(reply) - made - 1))
        kept = 0
        while kept < len(drafts) and drafts[kept] == reply[made + kept]:
            kept += 1
        drafts = drafts[:kept] if oracle else drafts[: adapt.k(run, len(drafts))]
        kept = min(kept, len(drafts))
        if drafts and not oracle:
            adapt.update(run, len(drafts), kept)
        cost += prior[len(drafts) + 1] + head * kept if drafts else 1.0
        for t in reply[made : made + kept + 1]:
            look.append(t)
        made, steps = made + kept + 1, steps + 1
    return steps, cost


def acceptance(seqs: dict) -> dict[str, dict[int, list]]:
    """P(the first draft is kept) by matched run length (1..RUN_MAX), documents and chat apart: [tries, rate]."""
    counts = {kind: defaultdict(lambda: [0, 0]) for kind in ("document", "chat")}
    for name, (prompt, reply) in seqs.items():
        c = counts["document" if name in DOCUMENT else "chat"]
        look = speculate.Lookup(prompt + reply[:1])
        for made in range(1, len(reply)):
            drafts, run = look.draft(1)
            if drafts:
                c[run][0] += 1
                c[run][1] += drafts[0] == reply[made]
            look.append(reply[made])
    return {k: {r: [n, round(ok / n, 2)] for r, (n, ok) in sorted(c.items())} for k, c in counts.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=160)
    ap.add_argument(
        "--costs",
        help="verify costs to replay with instead of the CPU prior, as bench_speculate.py prints them: JSON "
        '{"2": 1.26, ..., "8": 2.73}, rows 2..8',
    )
    ap.add_argument("--head", type=float, help="one more row's logits, in decode steps (default: the prior's)")
    a = ap.parse_args(argv)
    prior, _, _, head = VERIFY_COST["cpu"]
    if a.costs:
        prior = {int(r): float(c) for r, c in json.loads(a.costs).items()}
    head = head if a.head is None else a.head
    seqs = replies(a.new_tokens)
    speedups = {"document": [], "oracle_document": []}
    for name, (prompt, reply) in seqs.items():
        steps, cost = replay(prompt, reply, False, prior, head)
        o_steps, o_cost = replay(prompt, reply, True, prior, head)
        n = len(reply) - 1
        row = {
            "workload": name,
            "document": name in DOCUMENT,
            "new_tokens": len(reply),
            "tokens_per_step": round(n / steps, 2),
            "decode_speedup_replayed": round(n / cost, 3),
            "oracle_tokens_per_step": round(n / o_steps, 2),
            "oracle_decode_speedup": round(n / o_cost, 3),
        }
        if name in DOCUMENT:
            speedups["document"].append(row["decode_speedup_replayed"])
            speedups["oracle_document"].append(row["oracle_decode_speedup"])
        print(json.dumps(row), flush=True)
    summary = {k + "_mean": round(sum(v) / len(v), 3) for k, v in speedups.items()}
    print(json.dumps({"workload": "summary", **summary, "first_draft_kept_by_run": acceptance(seqs)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

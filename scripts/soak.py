"""Soak: a long piped-style session on the demo model with a small context; memory must stay flat.

The CLI has no flag to shrink the context, so this drives `yi_cli.conversation.chat.Chat` in-process, exactly as
`run_pipe` does (one `chat.handle(line)` per line), with a `LocalEngine` whose `context_length` is cut to force the
overflow policy to drop old exchanges many times. Every turn goes through the --json renderer into a transcript
file and through the autosave. Prints one JSON line; exits 1 when a check fails.

    OMP_WAIT_POLICY=PASSIVE python scripts/soak.py --turns 500 --context 256 --max-new-tokens 8
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # libgomp spinning on 2 cores makes small ops ~100x slower

TOPICS = ["the sea", "volcanoes", "bread", "owls", "the moon", "trains", "chess", "rain", "copper", "tea"]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def prompts(n: int):
    # Varied lengths and content so prompt sizes, drops and replies differ turn to turn.
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        yield f"Turn {i + 1}: tell me one short fact about {topic}." + " Please be brief." * (i % 4)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--turns", type=int, default=500)
    ap.add_argument("--context", type=int, default=256, help="context length the engine is cut to")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--engine", default="auto", choices=["auto", "fast", "generate"], help="as the CLI's --engine")
    ap.add_argument("--early", type=int, default=50, help="turn of the first RSS reading")
    ap.add_argument("--max-growth-mb", type=float, default=32.0, help="RSS growth early->end that still counts as flat")
    args = ap.parse_args(argv)

    from rich.console import Console

    from yi_cli.checkpoint.loader import open_checkpoint
    from yi_cli.conversation import store
    from yi_cli.conversation.chat import Chat, Options
    from yi_cli.engines.local import LocalEngine
    from yi_cli.engines.settings import GenSettings
    from yi_cli.ui.render import JsonRenderer

    t0 = time.perf_counter()
    engine = LocalEngine(open_checkpoint(args.model, device="cpu", dtype="fp32"), backend=args.engine)
    native_ctx = engine.context_length
    engine.context_length = args.context
    load_s = time.perf_counter() - t0

    # Autosave and transcript go to a scratch home; the model cache above was resolved before the switch.
    work = Path(tempfile.mkdtemp(prefix="yi-soak-"))
    os.environ["YI_CHAT_HOME"] = str(work)
    transcript_path = work / "transcript.jsonl"
    transcript = open(transcript_path, "w", encoding="utf-8")
    err = io.StringIO()
    render = JsonRenderer(Console(file=io.StringIO()), Console(file=err, width=200, color_system=None), out=transcript)
    drops = {"notices": 0}
    notice = render.notice

    def counting_notice(msg):
        if msg.startswith("context full"):
            drops["notices"] += 1
        notice(msg)

    render.notice = counting_notice
    settings = GenSettings(temperature=0.0, max_new_tokens=args.max_new_tokens, repetition_penalty=1.0)
    saver = store.Autosave("pipe")  # as run_pipe's: the session file written after every turn
    chat = Chat(engine, render, settings, options=Options(overflow="drop"), on_turn=saver)

    sent = list(prompts(args.turns))
    rss = {}
    t1 = time.perf_counter()
    for i, line in enumerate(sent, 1):
        chat.handle(line)
        if i in (1, args.early, args.turns):
            gc.collect()
            rss[i] = rss_mb()
    run_s = time.perf_counter() - t1
    transcript.close()

    records = [json.loads(x) for x in transcript_path.read_text(encoding="utf-8").splitlines() if x.strip()]
    saver.close()
    saved, _, _ = store.read(str(saver.path))
    shutil.rmtree(work, ignore_errors=True)
    replies = [r for r in records if "prompt" in r]
    in_order = [r["prompt"] for r in replies] == sent
    finished = all(r.get("finish_reason") in ("stop", "length") for r in replies)
    turns = saved.turns
    alternate = all(t.role == ("user" if k % 2 == 0 else "assistant") for k, t in enumerate(turns))
    last_ok = bool(turns) and turns[-2].content == sent[-1] and turns[-1].content == replies[-1]["reply"]
    # What the overflow policy promises: each prompt fits the context less the room kept for its reply (the reply
    # itself may take the conversation past the context; the next turn drops again). The last prompt: the session's
    # messages less the last reply, as Chat built it.
    budget = args.context - min(args.max_new_tokens, args.context // 4)
    fits = len(engine.template.build(chat.session.messages()[:-1]).ids) <= budget
    growth = rss[args.turns] - rss[args.early]
    ok = (
        len(replies) == args.turns
        and in_order
        and finished
        and chat.failures == 0
        and alternate
        and last_ok
        and fits
        and drops["notices"] > 0
        and growth <= args.max_growth_mb
    )
    result = {
        "script": "soak",
        "model": args.model,
        "engine": engine.backend,
        "turns": args.turns,
        "context_length": args.context,
        "native_context_length": native_ctx,
        "max_new_tokens": args.max_new_tokens,
        "transcript_turns": len(replies),
        "transcript_in_order": in_order,
        "failures": chat.failures,
        "overflow_drop_notices": drops["notices"],
        "session_turns_kept": len(turns),
        "new_tokens_total": sum(r.get("new_tokens", 0) for r in replies),
        "rss_mb_turn1": round(rss[1], 1),
        f"rss_mb_turn{args.early}": round(rss[args.early], 1),
        f"rss_mb_turn{args.turns}": round(rss[args.turns], 1),
        "rss_growth_mb": round(growth, 1),
        "load_s": round(load_s, 1),
        "run_s": round(run_s, 1),
        "s_per_turn": round(run_s / args.turns, 3),
        "torch_threads": __import__("torch").get_num_threads(),
        "ok": ok,
    }
    print(json.dumps(result))
    if not ok and err.getvalue():
        print(err.getvalue()[-2000:], file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

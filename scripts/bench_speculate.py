"""Prompt-lookup speculative decoding benchmark: the same replies with `speculate` off and lookup, in one run.

The real demo model (or --model DIR) on real text (repeat / edit / summarise / answer about a document, chat):
    python scripts/bench_speculate.py --device cpu [--model demo]
    python scripts/bench_speculate.py --device cuda --model DIR     # DEVELOPERS.md: the demo's files on the GPU
GPU, the Yi-6B shape (random AWQ weights, built by scripts/make_checkpoint.py under --dir): the verify cost
t(k+1 rows) / t(1 row) of the captured graphs (verify_cost_ratio: the greedy graphs, _sampling: the sampling
ones; gemv_rows: the most rows the multi-row int4 GEMV takes (YI_CHAT_GEMV_ROWS; 0: tinygemm); exact_head:
YI_CHAT_EXACT_HEAD=1, verify rows bit for bit decode steps, a step's lm_head on 8 rows), and synthetic workloads
(random ids: the text is meaningless, so a random model never copies it; `oracle` rows draft the reply that
decoding without speculation produced, every `--oracle-miss`-th draft token wrong, to time the verify machinery
at a known acceptance):
    python scripts/bench_speculate.py --device cuda --shape yi-6b
One JSON line per workload: tokens_per_step (lookup), decode tok/s off and on, spec_speedup (request to last
token, off time / lookup time, best of --repeats alternating runs), same_tokens (lookup gave the tokens off gave).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from yi_cli.checkpoint.loader import open_checkpoint, resolve  # noqa: E402
from yi_cli.engines.settings import GenSettings  # noqa: E402
from yi_cli.kernels import gemv  # noqa: E402
from yi_cli.runtime import decoder as decoder_mod  # noqa: E402
from yi_cli.runtime import llama, speculate  # noqa: E402
from yi_cli.runtime.decoder import FastDecoder  # noqa: E402

DOC = """The Tour de France is an annual men's multiple-stage bicycle race held primarily in France. It is the oldest \
of the three Grand Tours, and is generally considered the most prestigious. The race was first organized in 1903 \
to increase sales for the newspaper L'Auto and has been held annually since, except when it was stopped for the two \
World Wars. As the Tour gained prominence and popularity, the race was lengthened and gained more international \
participation. The race typically covers approximately 3,500 kilometres, passing through the Pyrenees and the Alps, \
and finishes on the Champs-Elysees in Paris. Teams of eight riders compete, and the rider with the lowest \
cumulative time wears the yellow jersey. There are also a points classification, with a green jersey, and a \
mountains classification, whose leader wears a white jersey with red dots. The modern editions consist of 21 \
day-long stages over a 23-day period."""

WORKLOADS = {  # name -> the user's messages (earlier ones answered by the model itself, then timed: the last)
    "repeat": [f"Repeat the following document word for word.\n\n{DOC}"],
    "edit": [
        (
            f'Here is a document:\n\n{DOC}\n\nRewrite the document, replacing the word "race" with '
            '"competition" everywhere. Change nothing else.'
        )
    ],
    "summarise": [f"Summarise the following document in a few sentences.\n\n{DOC}"],
    "qa": [
        (
            f"Read this document:\n\n{DOC}\n\nWhen was the race first organized, and why? Quote the sentence "
            "that says so, then list the three jerseys it mentions."
        )
    ],
    "chat": ["Write a short story about a lighthouse keeper who finds a message in a bottle."],
    "chat2": ["What are three good habits for learning a new language?", "Tell me more about the second one."],
}
DOCUMENT = ("repeat", "edit", "summarise", "qa")


def timed(dec, ids: list[int], settings: GenSettings) -> tuple[list[int], list[float], int]:
    """(tokens, [t_request, t_tok1, ...], forward steps after the first token), from a cold cache."""
    dec.cached = []
    if dec.cuda:
        torch.cuda.synchronize()
    times, out = [time.perf_counter()], []
    for tok in dec.generate(ids, settings, threading.Event(), set()):
        out.append(tok)
        times.append(time.perf_counter())
    return out, times, dec.steps


def compare(dec, ids: list[int], settings: GenSettings, repeats: int) -> dict:
    best = {}
    for _ in range(repeats):
        for mode in ("off", "lookup"):
            out, times, steps = timed(dec, ids, replace(settings, speculate=mode))
            if mode not in best or times[-1] - times[0] < best[mode][1][-1] - best[mode][1][0]:
                best[mode] = (out, times, steps)
    (off, t_off, _), (on, t_on, steps) = best["off"], best["lookup"]

    def decode_rate(t, n):
        return round((n - 1) / (t[-1] - t[1]), 2) if n > 1 else 0.0

    return {
        "prompt_tokens": len(ids),
        "new_tokens": len(on),
        "tokens_per_step": round((len(on) - 1) / max(steps, 1), 2),
        "decode_tok_s_off": decode_rate(t_off, len(off)),
        "decode_tok_s_on": decode_rate(t_on, len(on)),
        "spec_speedup": round((t_off[-1] - t_off[0]) / (t_on[-1] - t_on[0]), 3),
        "decode_speedup": round((t_off[-1] - t_off[1]) / (t_on[-1] - t_on[1]), 3),
        "same_tokens": on == off,
    }


def chat_ids(tok, messages: list[dict]) -> list[int]:
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def workload_prompt(dec, tok, settings: GenSettings, turns: list[str]) -> list[int]:
    """The ids of a workload's last user turn; each earlier turn is answered by the model itself (up to
    settings.max_new_tokens, stopping at <|im_end|>) and its answer becomes context."""
    messages = []
    for i, text in enumerate(turns):
        messages.append({"role": "user", "content": text})
        ids = chat_ids(tok, messages)
        if i < len(turns) - 1:
            stop = set(tok.convert_tokens_to_ids(["<|im_end|>"]))
            reply = list(dec.generate(ids, settings, threading.Event(), stop))
            messages.append({"role": "assistant", "content": tok.decode(reply, skip_special_tokens=True)})
    return ids


def cpu_workloads(dec, tok, settings: GenSettings, new: int, repeats: int, base: dict) -> list[dict]:
    rows = []
    for name, turns in WORKLOADS.items():
        ids = workload_prompt(dec, tok, replace(settings, max_new_tokens=new), turns)
        row = {
            **base,
            "workload": name,
            "document": name in DOCUMENT,
            **compare(dec, ids, replace(settings, max_new_tokens=new), repeats),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def verify_cost(dec, base: dict, reps: int = 30, threads: int = 1) -> dict:
    """t(verify of k+1 rows) / t(one decode step) at the same position: CUDA, the captured graphs' replays; CPU,
    FastLlama.verify plus one row's lm_head, as the decoder runs them (the CPU computes further rows' logits only
    for kept drafts: head_cost_ratio, one row's lm_head / a step). CPU `threads` > 1: the verify's layers on that
    many threads (the decoder runs them on one), and whether its rows are still the one-thread verify's bits."""
    pos = 600
    ids = torch.randint(100, 1000, (pos,), generator=torch.Generator().manual_seed(0)).tolist()
    list(dec.generate(ids, GenSettings(temperature=0, max_new_tokens=2, speculate="off"), threading.Event(), set()))
    m, out = dec.model, {}

    def clock(fn) -> float:
        for _ in range(3):
            fn()
        ts = []
        for _ in range(reps):
            if dec.cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if dec.cuda:
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t)
        return sorted(ts)[len(ts) // 2]

    sampled = {}  # CUDA: the verify graphs that sample (temperature > 0: a batched sort), against the same step
    head = None  # CPU: one more row's logits
    same = {}  # CPU with threads > 1: rows -> the verify's hidden states equal to the one-thread verify's
    with torch.inference_mode():
        if dec.cuda:
            length = dec.graphs.bucket(pos + decoder_mod.VERIFY_ROWS[-1])
            one = clock(lambda: (dec.pos.fill_(pos), dec.graphs.replay(length)))
            for rows in decoder_mod.VERIFY_ROWS:
                for greedy, ratios in ((True, out), (False, sampled)):
                    dec._verify(ids[0], pos, ids[1:rows], greedy)  # captures this row count's graph
                    ratios[rows] = clock(lambda g=dec.vgraphs[rows, length, greedy]: g.replay(length)) / one
        else:
            dec.threads = torch.get_num_threads()
            torch.set_num_threads(1)  # as the decode loop (decoder._one_thread; _head takes every thread)
            tk, ps = torch.tensor([ids[0]]), torch.tensor([pos])
            one = clock(lambda: dec._head(m.verify(tk, ps, pos + 1)))
            h = m.verify(tk, ps, pos + 1)
            head = clock(lambda: dec._head(h)) / one

            def verify(tk, ps):
                torch.set_num_threads(threads)
                try:
                    return m.verify(tk, ps, ps[-1] + 1)
                finally:
                    torch.set_num_threads(1)

            for rows in range(2, decoder_mod.VERIFY_ROWS[-1] + 1):
                tk, ps = torch.tensor(ids[:rows]), torch.arange(pos, pos + rows)
                out[rows] = clock(lambda tk=tk, ps=ps: dec._head(verify(tk, ps)[:1])) / one
                if threads > 1:
                    same[rows] = torch.equal(verify(tk, ps), m.verify(tk, ps, ps[-1] + 1))
            torch.set_num_threads(dec.threads)
    return {
        **base,
        "workload": "verify_cost",
        "step_ms": round(one * 1e3, 3),
        "verify_cost_ratio": {str(k): round(v, 3) for k, v in out.items()},
        **({"verify_cost_ratio_sampling": {str(k): round(v, 3) for k, v in sampled.items()}} if sampled else {}),
        **({"head_cost_ratio": round(head, 3)} if head is not None else {}),
        **({"verify_threads": threads, "same_bits_as_one_thread": same} if threads > 1 else {}),
    }


class Oracle(speculate.Lookup):
    """Drafts the reply speculation-off produced (`want`), every `miss`-th drafted token wrong."""

    want: ClassVar[list[int]] = []
    prompt, miss, vocab = 0, 0, 0

    def draft(self, k):
        at = len(self.ids) - Oracle.prompt
        return [
            t if not Oracle.miss or (at + j) % Oracle.miss != Oracle.miss - 1 else (t + 1) % Oracle.vocab
            for j, t in enumerate(Oracle.want[at : at + k])
        ], speculate.RUN_MAX


def gpu_workloads(dec, vocab: int, settings: GenSettings, new: int, repeats: int, miss: int, base: dict) -> list:
    g = torch.Generator().manual_seed(1)
    chat = torch.randint(100, vocab, (512,), generator=g).tolist()
    doc = torch.randint(100, vocab, (400,), generator=g).tolist()
    rows = []
    for name, ids in (("chat_random", chat), ("document_repeated_random", doc + doc)):
        rows.append({**base, "workload": name, **compare(dec, ids, settings, repeats)})
        print(json.dumps(rows[-1]), flush=True)
    off = list(dec.generate(doc, replace(settings, speculate="off"), threading.Event(), set()))
    Oracle.want, Oracle.prompt, Oracle.vocab = off, len(doc), vocab
    lookup = decoder_mod.speculate.Lookup
    try:
        decoder_mod.speculate.Lookup = Oracle
        for m in (0, miss):
            Oracle.miss = m
            rows.append({**base, "workload": f"oracle_miss_{m}", **compare(dec, doc, settings, repeats)})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        decoder_mod.speculate.Lookup = lookup
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--model",
        help="the checkpoint for the real-text workloads (default: the demo model on CPU; on CUDA, without it, the "
        "random --shape checkpoint and synthetic workloads)",
    )
    ap.add_argument("--shape", default="yi-6b", help="CUDA: the random checkpoint's shape")
    ap.add_argument("--dir", type=Path, default=Path(os.environ.get("YI_BENCH_DIR", "/tmp/yi-bench")))
    ap.add_argument(
        "--new-tokens", type=int, default=None, help="tokens per reply (default: 160 on text, 256 synthetic)"
    )
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--oracle-miss", type=int, default=4)
    ap.add_argument("--verify-threads", type=int, default=1, help="CPU: time verifies on this many threads")
    ap.add_argument("--verify-only", action="store_true", help="only the verify-cost line, no workloads")
    a = ap.parse_args(argv)
    cuda = a.device.startswith("cuda")
    text = not cuda or a.model is not None  # real text on a real model (the demo's settings)
    if text:
        a.model = a.model or "demo"
        ckpt = open_checkpoint(str(resolve(a.model)), device=a.device, dtype="bf16" if cuda else "fp32")
        from yi_cli.checkpoint import demo

        settings = GenSettings(**demo.RECOMMENDED, seed=0)  # what `yi-chat` runs the demo with
        model = Path(a.model).name if cuda else a.model
    else:
        path = a.dir / f"{a.shape}-awq"
        if not (path / "config.json").is_file():
            subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "scripts" / "make_checkpoint.py"),
                    "--format",
                    "awq",
                    "--shape",
                    a.shape,
                    "--out",
                    str(path),
                ],
                check=True,
            )
        ckpt = open_checkpoint(str(path), device=a.device, dtype="bf16")
        settings = GenSettings(temperature=0, repetition_penalty=1.0)
        model = f"{a.shape}-awq (random)"
    dec = FastDecoder(ckpt)
    device = torch.cuda.get_device_name() if cuda else f"cpu ({os.cpu_count()} cores)"
    base = {
        "device": device,
        "model": model,
        "torch": torch.__version__,
        "speculate_auto": decoder_mod.SPECULATE_AUTO["cuda" if cuda else "cpu"] and dec.exact,
    }
    if cuda:  # which verify paths ran: the multi-row GEMV (YI_CHAT_GEMV_ROWS=0: tinygemm) and the one-row GEMV
        base["gemv_rows"] = gemv.MAX_X if getattr(dec.model.layers[0].qkv, "gemv", False) else 0
        base["exact_head"] = llama.EXACT_HEAD  # YI_CHAT_EXACT_HEAD=1: the lm_head always multiplies 8 rows
        base["exact_rows"] = dec.model.exact_rows  # the tensor-core GEMV (YI_CHAT_MMA=1, the default): exact verifies
    settings = replace(settings, max_new_tokens=a.new_tokens or (160 if text else 256))
    print(json.dumps({**base, **{k: v for k, v in vars(settings).items() if k != "speculate"}}), flush=True)
    print(json.dumps(verify_cost(dec, base, threads=a.verify_threads)), flush=True)
    if a.verify_only:
        return 0
    if not text:
        gpu_workloads(dec, ckpt.config.vocab_size, settings, settings.max_new_tokens, a.repeats, a.oracle_miss, base)
    else:
        rows = cpu_workloads(dec, ckpt.hf_tokenizer, settings, settings.max_new_tokens, a.repeats, base)
        doc = [r["spec_speedup"] for r in rows if r["document"]]
        chat = [r["spec_speedup"] for r in rows if not r["document"]]
        print(
            json.dumps(
                {
                    **base,
                    "workload": "summary",
                    "document_spec_speedup_mean": round(sum(doc) / len(doc), 3),
                    "chat_spec_speedup_mean": round(sum(chat) / len(chat), 3),
                    "all_same_tokens": all(r["same_tokens"] for r in rows),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

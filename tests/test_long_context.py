"""Long context on CPU: a tiny random model with Yi-6B-200K's context and rope theta, run past a "native" 4K with
the KV cache growing as the conversation does (runtime.kvcache), greedy tokens against transformers' forward."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from test_fast import assert_greedy_match, checkpoint, fast_decoder, reference, reference_greedy

from yi_cli.checkpoint.loader import open_checkpoint
from yi_cli.engines.events import FINISH_INTERRUPTED, Finish
from yi_cli.engines.local import LocalEngine
from yi_cli.engines.settings import GenSettings
from yi_cli.engines.template import Prompt
from yi_cli.runtime import decoder, kvcache

YI_200K = {"max_position_embeddings": 200000, "rope_theta": 5e6}  # Yi-6B-200K's config.json
REPLY = GenSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=16)


def random_ids(n: int, seed: int) -> list[int]:
    return torch.randint(3, 512, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def cache_slots(dec) -> int:
    return dec.model.k_cache[0].shape[2]


def test_200k_config_runs_past_4k_with_a_growing_cache():
    path = checkpoint(4, **YI_200K)
    dec, model = fast_decoder(path), reference(path)
    assert dec.max_seq == 200000
    assert cache_slots(dec) == kvcache.START  # nothing sized for 200K up front
    held = sum(c.numel() * c.element_size() for c in dec.model.k_cache + dec.model.v_cache)
    assert held == kvcache.START * kvcache.token_bytes(dec.model)

    turn1 = random_ids(3000, 1)
    got = list(dec.generate(turn1, REPLY, threading.Event(), set()))
    assert_greedy_match(model, turn1, got, reference_greedy(model, turn1, 16))
    assert cache_slots(dec) == 4096  # 3000 + 16 tokens fit the cache it started with

    # the second turn goes past 4096 positions: the cache grows with its filled prefix copied, and only the new
    # tail is prefilled (prefix reuse across the reallocation)
    turn2 = turn1 + got + random_ids(1500, 2)
    got2 = list(dec.generate(turn2, REPLY, threading.Event(), set()))
    assert cache_slots(dec) == 8192
    assert dec.last_prefill[0] == len(turn1) + len(got) - 1
    assert len(turn2) + len(got2) > 4096
    assert_greedy_match(model, turn2, got2, reference_greedy(model, turn2, 16))


def test_capacity_steps():
    assert [kvcache.capacity(n, 200000) for n in (1, 257, 4096, 16385, 40016, 131072, 199999)] == [
        256,
        512,
        4096,
        24576,
        40960,
        131072,
        200000,
    ]
    assert kvcache.capacity(5000, 3000) == 3000


def test_context_flag_caps_the_model_context():
    ckpt = open_checkpoint(checkpoint(4, **YI_200K), device="cpu", dtype="fp32")
    engine = LocalEngine(ckpt, context=1000)
    assert engine.context_length == engine.decoder.max_seq == 1000
    assert LocalEngine(ckpt).context_length == 200000


def run_cli(*args: str, home) -> subprocess.CompletedProcess:
    env = {**os.environ, "YI_CHAT_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "yi_cli", *args], capture_output=True, text=True, env=env, timeout=600, check=False
    )


def test_model_command_shows_the_capped_context(tmp_path):
    done = run_cli("-m", str(checkpoint(4, **YI_200K)), "--context", "32K", "-p", "/model", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "context                32768 (model 200000)" in done.stdout
    assert "5000000.0" in done.stdout


@pytest.mark.parametrize("where", ["flag", "config"])
def test_a_context_past_the_models_is_said(tmp_path, where):
    """--context 300K on a 200K model was capped to 200000 silently (a run-through); the config's context was said
    as a --context never given (run-through 4)."""
    flags = ["--context", "300K"] if where == "flag" else []
    if where == "config":
        (tmp_path / "config").mkdir()
        (tmp_path / "config" / "config.toml").write_text('context = "300K"\n')
    done = run_cli("-m", str(checkpoint(4, **YI_200K)), *flags, "-p", "/model", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "context                200000" in done.stdout
    given = "--context 300K" if where == "flag" else "config.toml: context = 300K"  # as written (it said 307200)
    assert done.stderr.splitlines() == [f"context 200000 tokens: the most this model takes here ({given})"], done.stderr


def test_integer_context_in_config_caps_the_context(tmp_path):
    """README: `context` is tokens, as --context: the TOML integer 32768 as "32K" (it crashed: 'int' object has no
    attribute 'strip')."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.toml").write_text("context = 32768\n")
    done = run_cli("-m", str(checkpoint(4, **YI_200K)), "-p", "/model", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "context                32768 (model 200000)" in done.stdout


@pytest.mark.parametrize("value", ["0", "-5", "lots", "1.5K"])
def test_bad_context_flag_is_a_usage_error(tmp_path, value):
    done = run_cli("--context", value, "-p", "hi", home=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"yi-chat: argument --context: {value!r} is not a positive number of tokens (e.g. 32768 or 32K)"
        " (see yi-chat --help)"
    ]


def test_bad_context_in_config_is_a_usage_error(tmp_path):
    where = subprocess.run(
        [sys.executable, "-c", "from yi_cli.ui import config; print(config.path())"],
        capture_output=True,
        text=True,
        env={**os.environ, "YI_CHAT_HOME": str(tmp_path)},
        check=True,
    )
    cfg = Path(where.stdout.strip())
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("context = 0\n")
    done = run_cli("-p", "hi", home=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"yi-chat: {cfg}: context: '0' is not a positive number of tokens (e.g. 32768 or 32K)"
    ]


def long_prompt_engine(monkeypatch):
    from yi_cli.engines import local

    monkeypatch.setattr(local, "PROGRESS_AFTER_S", 0.0)  # every chunk reports (the product waits 1 s)
    engine = LocalEngine(open_checkpoint(checkpoint(4, **YI_200K), device="cpu", dtype="fp32"))
    statuses: list = []
    engine.progress = statuses.append
    return engine, statuses


def test_long_prefill_reports_progress_then_clears_it(monkeypatch):
    engine, statuses = long_prompt_engine(monkeypatch)
    ids = random_ids(1000, 3)
    events = list(engine.stream(Prompt([], ids=ids), REPLY, threading.Event()))
    assert isinstance(events[-1], Finish) and len(events[-1].token_ids) == 16
    chunk = decoder.PREFILL_CHUNK["cpu"]
    done = [min(e, 1000) for e in range(chunk, 1000 + chunk, chunk)]
    assert statuses == [f"reading the prompt: {d}/1000 tokens ({100 * d // 1000}%)" for d in done] + [None]


def test_cancel_during_a_long_prefill_stops_between_chunks_and_keeps_the_cache_usable(monkeypatch):
    engine, statuses = long_prompt_engine(monkeypatch)
    chunk = decoder.PREFILL_CHUNK["cpu"]
    ids = random_ids(6 * chunk, 5)
    cancel = threading.Event()

    def ctrl_c(status):  # Ctrl-C in the REPL sets the turn's cancel event; here after the second chunk
        statuses.append(status)
        if len(statuses) == 2:
            cancel.set()

    engine.progress = ctrl_c
    events = list(engine.stream(Prompt([], ids=ids), REPLY, cancel))
    assert [type(e) for e in events] == [Finish]
    assert events[0].stats.finish_reason == FINISH_INTERRUPTED and events[0].token_ids == []
    assert statuses[-1] is None and len(statuses) == 3  # two chunks read, then the line erased
    assert engine.decoder.cached == ids[: 2 * chunk]
    # the next turn reuses the chunks read and answers as a fresh decoder does
    again = list(engine.decoder.generate(ids, REPLY, threading.Event(), set()))
    assert engine.decoder.last_prefill[0] == 2 * chunk
    assert again == list(fast_decoder(checkpoint(4, **YI_200K)).generate(ids, REPLY, threading.Event(), set()))


def test_progress_line_only_on_a_terminal():
    import io

    from rich.console import Console

    from yi_cli.ui.render import PlainRenderer, TerminalRenderer

    tty, pipe = io.StringIO(), io.StringIO()
    TerminalRenderer(Console(file=io.StringIO()), Console(file=tty, force_terminal=True)).progress("reading 5%")
    PlainRenderer(Console(file=io.StringIO()), Console(file=pipe), out=io.StringIO()).progress("reading 5%")
    assert tty.getvalue() == "\r\x1b7\x1b[2K\x1b8reading 5%\r" and pipe.getvalue() == ""  # the cursor at its start
    narrowed = io.StringIO()  # a terminal narrowed under a status of 40 cells rewraps it into 3 rows of 15: all erased
    err = Console(file=narrowed, force_terminal=True, width=80)
    r = TerminalRenderer(Console(file=io.StringIO()), err)
    r.progress("reading the prompt: 512/6356 tokens (8%)")
    err.width = 15
    r.progress(None)
    assert narrowed.getvalue().endswith("\r\x1b7\x1b[2K" + "\x1b[B\x1b[2K" * 2 + "\x1b8")
    dumb = io.StringIO()  # TERM=dumb: no erase-line; spaces over what the longer status before left
    err = Console(file=dumb, force_terminal=True, _environ={"TERM": "dumb"})
    r = TerminalRenderer(Console(file=io.StringIO()), err)
    for status in ("reading 95%", "done", None):
        r.progress(status)
    assert dumb.getvalue() == "\rreading 95%" + "\rdone" + " " * 7 + "\rdone" + "\r" + " " * 4 + "\r"


def test_free_gpu_memory_caps_the_context(monkeypatch):
    """kvcache.fit's arithmetic with the GPU's free bytes stubbed: the Yi-6B shape (64 KiB a token in bf16)."""
    from types import SimpleNamespace

    yi6b = SimpleNamespace(
        embed=SimpleNamespace(device=torch.device("cuda")), layers=[None] * 32, n_kv=4, hd=128, dtype=torch.bfloat16
    )
    yi6b.k_cache = yi6b.v_cache = []  # nothing held yet
    assert kvcache.token_bytes(yi6b) == 64 << 10
    free = kvcache.RESERVE + 50_000 * (64 << 10)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 2 * free))
    assert kvcache.fit(yi6b, 200000) == 50_000
    assert kvcache.fit(yi6b, 32768) == 32768  # --context below what memory holds
    assert kvcache.fit(yi6b, 96) == 96  # a cache smaller than the smallest step stays as asked


def attach_file_turn(tmp_path, chars: int, device: str, *extra: str) -> dict:
    """`yi-chat -f FILE -p QUESTION --json` on the tiny 200K model (a byte tokenizer: a token per character), sampled
    with a fixed seed (unseeded, the random model drew a stop token before its 8 tokens in one CI run of many)."""
    import json

    doc = tmp_path / "book.txt"
    words = "the quick brown fox jumps over the lazy dog and keeps on running far away "
    doc.write_text((words * (chars // len(words) + 1))[:chars])
    path = checkpoint(4, **YI_200K)
    done = run_cli(
        "-m", str(path), "--device", device, "--json", "--max-new-tokens", "8", "--seed", "0", "-f", str(doc),
        "-p", "what?", *extra, home=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_attached_file_past_the_first_cache_reaches_the_model(tmp_path):
    turn = attach_file_turn(tmp_path, 6000, "cpu")
    assert turn["prompt_tokens"] > 6000 > kvcache.START  # the whole file went in: the cache grew for it
    assert turn["new_tokens"] == 8

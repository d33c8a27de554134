"""Faults inside the engine (issue 5): an exception in the worker thread, out of memory during prefill, a streamer
timeout. Each fails the reply with one line; the session is kept and the next turn works.

The real LocalEngine runs a tiny random Llama (tests/test_bad_input.make_tiny) with faults injected into its
model; the chat-level cases use the scripted engine.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from tests.fixtures import CUT, ScriptedEngine, plain_chat
from tests.test_bad_input import make_tiny
from yi_cli.engines.events import Text
from yi_cli.engines.settings import GenSettings

OOM = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
OOM_TEXT = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB"
GREEDY = GenSettings(temperature=0.0, max_new_tokens=3, repetition_penalty=1.0)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, demo_fp32_dir):
    from yi_cli.checkpoint.loader import open_checkpoint

    return open_checkpoint(
        make_tiny(tmp_path_factory.mktemp("faults") / "tiny", demo_fp32_dir), device="cpu", dtype="fp32"
    )


@pytest.fixture(params=["generate", "fast"])
def engine(request, tiny_ckpt):
    from yi_cli.engines.local import LocalEngine

    return LocalEngine(tiny_ckpt, backend=request.param)


def errors(err) -> list[str]:  # not a short reply's own notice (CUT): a fault's lines
    return [ln for ln in err.getvalue().splitlines() if ln.strip() and ln != CUT.strip()]


def check_kept_and_recovers(chat, err, before: list[tuple[str, str]]) -> None:
    """After a failed reply: the session is what it was, and the next turn works."""
    assert [(t.role, t.content) for t in chat.session.turns] == before
    n = len(errors(err))
    assert chat.handle("and now?") is True
    assert len(errors(err)) == n, err.getvalue()
    assert [t.role for t in chat.session.turns] == ["user", "assistant"] * (len(before) // 2 + 1)
    assert chat.session.turns[-2].content == "and now?"


def snapshot(chat):
    return [(t.role, t.content) for t in chat.session.turns]


# --- an exception in the worker thread ---------------------------------------------------------------------------


class FailingMidStream(ScriptedEngine):
    """Streams two words, then raises from inside the engine's iterator (the worker thread)."""

    def __init__(self, exc):
        super().__init__()
        self.exc = exc
        self.armed = True

    def stream(self, prompt, settings, cancel):
        if not self.armed:
            yield from super().stream(prompt, settings, cancel)
            return
        self.armed = False
        yield Text("partial")
        yield Text(" words")
        raise self.exc


@pytest.mark.parametrize(
    "exc,line",
    [
        (RuntimeError("boom"), "error: generation failed (RuntimeError: boom)"),
        (KeyError("past_key_values"), "error: generation failed (KeyError: 'past_key_values')"),
        (RuntimeError("boom\n  at frame 1\n  at frame 2"), "error: generation failed (RuntimeError: boom)"),
    ],
)
def test_exception_in_worker_thread_chat(exc, line):
    engine = FailingMidStream(exc)
    engine.armed = False
    chat, out, err = plain_chat(engine)
    chat.handle("first")
    before = snapshot(chat)
    engine.armed = True
    assert chat.handle("second") is True  # the REPL lives on
    assert errors(err) == [line]
    assert chat.failures == 1
    assert "partial words" in out.getvalue()
    check_kept_and_recovers(chat, err, before)


def test_exception_in_worker_thread_local_engine(engine, monkeypatch, request):
    chat, out, err = plain_chat(engine, settings=GenSettings(**GREEDY.to_dict()))
    chat.handle("first")
    before = snapshot(chat)
    fast = engine.decoder is not None

    def broken(*a, **kw):
        raise ValueError("shapes do not match\nsecond line of detail")

    target = engine.decoder.model if fast else engine.model
    monkeypatch.setattr(target, "prefill" if fast else "generate", broken)
    assert chat.handle("second") is True
    assert errors(err) == ["error: generation failed (ValueError: shapes do not match)"]
    monkeypatch.undo()
    check_kept_and_recovers(chat, err, before)


# --- CUDA out of memory during prefill ------------------------------------------------------------------------------


def test_out_of_memory_during_prefill(engine, monkeypatch, request):
    chat, out, err = plain_chat(engine, settings=GenSettings(**GREEDY.to_dict()))
    chat.handle("first")
    before = snapshot(chat)
    freed = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(1))
    fast = engine.decoder is not None
    target = engine.decoder.model if fast else engine.model
    calls = []

    def oom(*a, **kw):  # the first forward of the turn is the prefill
        calls.append(1)
        raise OOM(OOM_TEXT)

    monkeypatch.setattr(target, "prefill" if fast else "forward", oom)
    assert chat.handle("a question that needs a long prefill") is True
    assert calls, "the fault was not reached"
    lines = errors(err)
    assert len(lines) == 1, lines
    assert "out of memory" in lines[0] and "session is kept" in lines[0] and "shorter context" in lines[0], lines
    assert freed, "the CUDA cache was not freed"
    monkeypatch.undo()
    check_kept_and_recovers(chat, err, before)


def test_out_of_memory_keeps_a_continued_reply(monkeypatch):
    """An OOM during /continue leaves the cut reply as it was; a later /continue extends it."""
    engine = ScriptedEngine(["one two three four five six", "seven eight"])
    chat, out, err = plain_chat(engine, settings=GenSettings(max_new_tokens=3))
    chat.handle("count")
    assert chat.session.turns[-1].finish_reason == "length"
    before = snapshot(chat)
    engine.fail_with = OOM(OOM_TEXT)
    chat.handle("/continue")
    assert len(errors(err)) == 1 and "out of memory" in errors(err)[0].lower()
    assert snapshot(chat) == before
    engine.fail_with = None
    chat.settings.max_new_tokens = 50
    chat.handle("/continue")
    last = chat.session.turns[-1]
    assert last.content.startswith("one two three") and last.content.endswith("seven eight"), last.content


@pytest.mark.parametrize("command", ["/retry", "/retry 7", "/edit a better question"])
def test_failed_regeneration_keeps_the_session(command):
    engine = ScriptedEngine(["the first answer"])
    chat, out, err = plain_chat(engine)
    chat.handle("question")
    before = snapshot(chat)
    engine.fail_with = OOM(OOM_TEXT)
    chat.handle(command)
    said = errors(err)
    if command.startswith("/edit"):  # the edit is kept for /retry, and said after the error
        assert said[1:] == ["the edit was not applied: /retry sends it again, /edit rewrites it"], said
        said = said[:1]
    assert len(said) == 1, err.getvalue()
    assert snapshot(chat) == before


# --- a streamer timeout ----------------------------------------------------------------------------------------------


def fake_generate(tokenizer, gap_s: float, release: threading.Event, n_tokens: int = 50):
    """A stand-in for model.generate: the prompt goes to the streamer, then one token per `gap_s` (each checked by
    the stopping criteria, like transformers does); `gap_s=None` hangs before the first token (a stuck prefill)
    until `release` is set."""
    tok_id = tokenizer.convert_tokens_to_ids("Hello") if "Hello" in tokenizer.get_vocab() else 100

    def generate(input_ids, streamer=None, stopping_criteria=None, **kw):
        streamer.put(input_ids[0])
        out = input_ids
        if gap_s is None:
            release.wait(60)
        for _ in range(n_tokens):
            if gap_s is not None:
                release.wait(gap_s)
            nxt = torch.tensor([[tok_id]])
            out = torch.cat([out, nxt], 1)
            streamer.put(nxt[0])
            if any(bool(c(out, None).all()) for c in stopping_criteria):
                break
        streamer.end()
        return out

    return generate


@pytest.mark.parametrize(
    "stall",
    [
        "between-tokens",
        "in-prefill",
    ],
)
def test_streamer_timeout(tiny_ckpt, monkeypatch, stall):
    import yi_cli.engines.local as eng

    engine = eng.LocalEngine(tiny_ckpt, backend="generate")
    chat, out, err = plain_chat(engine, settings=GenSettings(**GREEDY.to_dict()))
    chat.handle("first")
    before = snapshot(chat)
    monkeypatch.setattr(eng, "STREAM_TIMEOUT_S", 1.0)
    release = threading.Event()
    monkeypatch.setattr(
        engine.model,
        "generate",
        fake_generate(engine.template.tokenizer, 2.5 if stall == "between-tokens" else None, release),
    )
    worker = threading.Thread(target=chat.handle, args=("second",), daemon=True)
    t0 = time.monotonic()
    worker.start()
    worker.join(timeout=6)
    took = time.monotonic() - t0
    release.set()  # let a stuck fake finish either way
    worker.join(timeout=60)
    assert took < 6, f"the reply hung {took:.0f} s past a 1 s stream timeout"
    assert errors(err) == ["error: the model produced no token for 1 s; reply abandoned"]
    monkeypatch.undo()
    check_kept_and_recovers(chat, err, before)


def test_failed_reply_after_a_context_drop_keeps_the_session():
    engine = ScriptedEngine(["one two", "three four", "five six"])
    engine.context_length = 40
    chat, out, err = plain_chat(engine)
    for q in ("first question here", "second question here", "third question here"):
        chat.handle(q)
    before = snapshot(chat)
    engine.fail_with = OOM(OOM_TEXT)
    chat.handle("a fourth question that no longer fits next to all the others")
    assert "context full" in err.getvalue()  # the turn needed a drop
    assert snapshot(chat) == before

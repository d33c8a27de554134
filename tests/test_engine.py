"""The local engine on the real demo model (CPU): template, stop tokens, streaming, cancel, worker errors."""

import threading

import pytest

from yi_cli.engines.events import Finish, Text
from yi_cli.engines.settings import GenSettings

pytestmark = pytest.mark.slow
GREEDY = GenSettings(temperature=0, max_new_tokens=30, repetition_penalty=1.0)
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def run(engine, messages, settings=GREEDY, cancel=None):
    events = list(engine.stream(engine.template.build(messages), settings, cancel or threading.Event()))
    assert isinstance(events[-1], Finish) and all(isinstance(e, Text) for e in events[:-1])
    return "".join(e.text for e in events[:-1]), events[-1].stats


def test_answers_paris_and_stops_at_end_of_turn(demo_engine):
    text, stats = run(demo_engine, FRANCE)
    assert "Paris" in text
    assert stats.finish_reason == "stop" and stats.new_tokens < 30
    assert stats.prompt_tokens == len(demo_engine.template.build(FRANCE).ids)
    assert "<|im_end|>" not in text


def test_without_the_end_of_turn_token_it_runs_on(demo_engine):
    tpl = demo_engine.template
    im_end = tpl.tokenizer.convert_tokens_to_ids("<|im_end|>")
    saved = tpl.stop_ids
    tpl.stop_ids = saved - {im_end}
    try:
        text, stats = run(demo_engine, FRANCE, GenSettings(temperature=0, max_new_tokens=12, repetition_penalty=1.0))
    finally:
        tpl.stop_ids = saved
    assert stats.finish_reason in ("length", "stop") and stats.new_tokens > 9  # past "...Paris.<|im_end|>"


def test_cancel_stops_generation(demo_engine):
    cancel = threading.Event()
    gen = demo_engine.stream(
        demo_engine.template.build([{"role": "user", "content": "Write a long story about a dragon."}]),
        GenSettings(temperature=0, max_new_tokens=200),
        cancel,
    )
    pieces = []
    for ev in gen:
        if isinstance(ev, Text):
            pieces.append(ev.text)
            cancel.set()
        else:
            stats = ev.stats
    assert stats.finish_reason == "interrupted" and stats.new_tokens < 20


def test_worker_exception_surfaces_as_one_line(demo_engine, monkeypatch):
    from yi_cli.errors import YiError

    def boom(*a, **k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr(demo_engine.model, "generate", boom)
    with pytest.raises(YiError, match="out of memory while generating; the session is kept"):
        run(demo_engine, FRANCE)


def test_a_generation_config_asking_for_beam_search_still_streams_one_sequence(demo_engine, monkeypatch):
    """A checkpoint's generation_config.json with num_beams 2 (or num_return_sequences 2) made generate stream
    nothing: every reply waited the stream's 300 s, deaf to Ctrl-C and SIGTERM (a hostile-checkpoint hunt); with
    stop_strings every turn failed ("could not locate a tokenizer"; a review). The engine asks for one sequence a
    token a step, stopped by the template's ids, whatever the config says."""
    from yi_cli.engines import local

    monkeypatch.setattr(local, "STREAM_TIMEOUT_S", 60.0)  # a failure is the stall's error, not a 300 s wait
    greedy = run(demo_engine, FRANCE)
    monkeypatch.setattr(demo_engine.model.generation_config, "num_beams", 2)
    monkeypatch.setattr(demo_engine.model.generation_config, "num_return_sequences", 2)
    monkeypatch.setattr(demo_engine.model.generation_config, "stop_strings", ["zzz"])  # failed every turn (a review)
    assert run(demo_engine, FRANCE)[0] == greedy[0] and "Paris" in greedy[0]


def test_a_generate_that_returns_without_ending_the_stream_ends_the_reply(demo_engine, monkeypatch):
    """Where generate returned without calling the streamer's end (a generation mode that does not stream), the
    reply waited the stream's timeout (300 s) for text that never came: it ends as generate returns."""
    import torch

    from yi_cli.engines import local

    monkeypatch.setattr(local, "STREAM_TIMEOUT_S", 60.0)  # a failure is the stall's error after it, not 300 s

    def silent(input_ids, **kw):
        return torch.cat([input_ids, torch.tensor([[42, 43]])], 1)

    monkeypatch.setattr(demo_engine.model, "generate", silent)
    text, stats = run(demo_engine, FRANCE)
    assert stats.new_tokens == 2 and stats.finish_reason == "length"


def test_seed_makes_sampling_reproducible(demo_engine):
    s = GenSettings(temperature=1.0, top_p=0.95, max_new_tokens=12, seed=1234)
    assert run(demo_engine, FRANCE, s)[0] == run(demo_engine, FRANCE, s)[0]


def test_a_reply_without_a_seed_does_not_follow_on_from_a_seeded_one(demo_engine):
    """The generate engine seeded torch's own generator for a seeded reply and left it so: every later unseeded
    reply of the run (after `/set seed none`, or after `/retry SEED`) followed on from that state, the same text on
    every run (a sampling review: 3 of 3). An unseeded reply takes a seed of its own, as the fast engine does."""
    import torch

    from yi_cli.runtime.sampling import seed32

    run(demo_engine, FRANCE, GenSettings(temperature=1.0, max_new_tokens=2, seed=5))
    assert torch.initial_seed() == seed32(5)
    run(demo_engine, FRANCE, GenSettings(temperature=1.0, max_new_tokens=2, seed=None))
    first = torch.initial_seed()
    run(demo_engine, FRANCE, GenSettings(temperature=1.0, max_new_tokens=2, seed=None))
    assert len({seed32(5), first, torch.initial_seed()}) == 3  # each its own (2**-64 that two meet)


def test_detokenizer_matches_full_decode(demo_loaded):
    from yi_cli.engines.template import Detokenizer

    tok = demo_loaded.tokenizer
    text = "Hello — naïve café 東京 🙂 code:\n```py\nprint('x')\n```\n" * 3
    ids = tok(text, add_special_tokens=False)["input_ids"]
    d = Detokenizer(tok)
    out = "".join(d.add(i) for i in ids) + d.flush()
    assert out == tok.decode(ids, skip_special_tokens=True)


def test_detokenizer_cut_inside_a_character_continues_it(demo_loaded):
    """A reply cut inside a character ends before it (no U+FFFD), and the stream of its /continue, given the cut
    reply's ids as context, begins with that character: the two add up to the whole decode at every cut."""
    from yi_cli.engines.template import Detokenizer

    tok = demo_loaded.tokenizer
    ids = tok("So 東京 🙂👍🏽 naïve مرحبا end", add_special_tokens=False)["input_ids"]
    inside = 0
    for k in range(1, len(ids)):
        inside += tok.decode(ids[:k]).endswith("\ufffd")
        a = Detokenizer(tok)
        first = "".join(a.add(i) for i in ids[:k]) + a.flush()
        b = Detokenizer(tok, context=ids[:k])
        rest = "".join(b.add(i) for i in ids[k:]) + b.flush()
        assert "\ufffd" not in first + rest and first + rest == tok.decode(ids), k
    assert inside >= 3  # the emoji and the CJK are several tokens each: cuts inside them were tried


@pytest.mark.parametrize("backend", ["fast", "generate"])
def test_continue_after_a_cut_inside_a_character(demo_dir, backend):
    """Greedy on the demo: a reply cut where its text ends inside a character, then /continue, is the uncut
    reply, with no U+FFFD in the session (the continuation completes the character)."""
    from tests.fixtures import CUT, plain_chat
    from yi_cli.checkpoint.loader import open_checkpoint
    from yi_cli.engines.local import LocalEngine

    engine = LocalEngine(open_checkpoint(demo_dir, device="cpu", dtype="fp32"), backend=backend)
    ask = "Repeat exactly: 😀👍🏽 你好世界 مرحبا بالعالم שלום 🙂🙂 東京"
    prompt = engine.template.build([{"role": "user", "content": ask}])
    events = list(engine.stream(prompt, GenSettings(temperature=0, max_new_tokens=40), threading.Event()))
    whole, ids = "".join(e.text for e in events[:-1]), events[-1].token_ids
    decode = engine.template.tokenizer.decode
    cuts = [k for k in range(1, len(ids)) if decode(ids[:k], skip_special_tokens=True).endswith("\ufffd")]
    assert cuts, f"the reply has no character of several tokens: {whole!r}"
    chat, out, err = plain_chat(engine, settings=GenSettings(temperature=0, max_new_tokens=cuts[0]))
    chat.handle(ask)
    assert "\ufffd" not in chat.session.turns[-1].content
    chat.settings.max_new_tokens = len(ids) - cuts[0]
    chat.handle("/continue")
    assert err.getvalue() == 2 * CUT  # the reply, then its continuation, each cut at its token limit
    assert chat.session.turns[-1].content == whole and "\ufffd" not in whole


@pytest.mark.parametrize("backend", ["fast", "generate"])
def test_continue_extends_the_cut_reply_in_place(demo_dir, backend):
    """Greedy: a reply cut at N tokens, then /continue (N more), is the uncut reply of 2N tokens, in one turn."""
    from tests.fixtures import CUT, plain_chat
    from yi_cli.checkpoint.loader import open_checkpoint
    from yi_cli.engines.local import LocalEngine

    engine = LocalEngine(open_checkpoint(demo_dir, device="cpu", dtype="fp32"), backend=backend)
    story = "Tell me a story about a cat."
    whole, _ = plain_chat(engine, settings=GenSettings(temperature=0, max_new_tokens=24))[:2]
    whole.handle(story)
    chat, out, err = plain_chat(engine, settings=GenSettings(temperature=0, max_new_tokens=12))
    chat.handle(story)
    cut = chat.session.turns[-1].content
    assert chat.session.turns[-1].finish_reason == "length"
    chat.handle("/continue")
    assert err.getvalue() == 2 * CUT  # the reply, then its continuation, each cut at its token limit
    assert [t.role for t in chat.session.turns] == ["user", "assistant"]
    reply = chat.session.turns[-1]
    assert reply.content.startswith(cut) and len(reply.content) > len(cut) and reply.tokens == 24
    assert reply.content == whole.session.turns[-1].content


@pytest.mark.parametrize("backend", ["fast", "generate"])
def test_a_stop_id_that_is_an_ordinary_word_ends_the_reply_without_its_text(demo_dir, backend):
    """A generation_config may list an ordinary word among its eos ids. The fast engine stopped there without the
    word's text; the generate engine showed it (transformers' streamer decodes every id it is given): the same
    checkpoint answered differently on each. Neither shows it, as neither shows <|im_end|>."""
    from yi_cli.checkpoint.loader import open_checkpoint
    from yi_cli.engines.local import LocalEngine

    engine = LocalEngine(open_checkpoint(demo_dir, device="cpu", dtype="fp32"), backend=backend)
    prompt = engine.template.build(FRANCE)
    events = list(engine.stream(prompt, GREEDY, threading.Event()))
    ids = events[-1].token_ids
    k = next(k for k in range(3, len(ids)) if ids[k] not in ids[:k])  # a word the reply has not said before
    word = engine.template.tokenizer.decode([ids[k]])
    assert word.strip() and ids[k] not in engine.template.stop_ids
    engine.template.stop_ids = engine.template.stop_ids | {ids[k]}
    text, stats = run(engine, FRANCE)
    assert (stats.finish_reason, stats.new_tokens) == ("stop", k + 1)
    assert text == engine.template.tokenizer.decode(ids[:k], skip_special_tokens=True), (text, word)


@pytest.mark.parametrize("backend", ["fast", "generate"])
def test_a_stop_mid_reply_is_no_decode_time(demo_dir, backend, monkeypatch):
    """Ctrl-Z mid-reply, then `fg`: the stopped time counted as decode time and the tok/s fell to a fraction. A stop
    that clock.paused measures (as clock.suspend does; here 1000 s, perf_counter moved on meanwhile) is left out
    of the reply's timing on both local paths."""
    import time

    from yi_cli import clock
    from yi_cli.checkpoint.loader import open_checkpoint
    from yi_cli.engines.local import LocalEngine

    real, shift = time.perf_counter, [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: real() + shift[0])
    engine = LocalEngine(open_checkpoint(demo_dir, device="cpu", dtype="fp32"), backend=backend)
    prompt = engine.template.build([{"role": "user", "content": "Write a long story about a dragon."}])
    events = []
    for ev in engine.stream(prompt, GenSettings(temperature=0, max_new_tokens=12), threading.Event()):
        events.append(ev)
        if len(events) == 3:  # mid-reply
            with clock.paused():
                shift[0] += 1000.0
    stats = events[-1].stats
    assert stats.new_tokens == 12 and stats.finish_reason == "length"
    assert stats.ttft_s + stats.decode_s < 100, stats


def test_model_summary_shows_a_long_path_whole():
    """/model's first row cut a path wider than the terminal with an ellipsis (a hub snapshot's, at 80 columns; any
    at 40: run-through 4): it folds onto the next lines instead."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from yi_cli.engines.describe import summary

    path = "/root/.cache/huggingface/hub/models--01-ai--Yi-6B-Chat-4bits/snapshots/" + "0123456789abcdef" * 3
    ckpt = SimpleNamespace(path=path, config=SimpleNamespace(), quant=None, context_length=4096, device="cpu")
    ckpt.dtype = "torch.float32"
    buf = io.StringIO()
    Console(file=buf, width=80, color_system=None).print(summary(ckpt, "LlamaForCausalLM", 6_000_000_000, 1 << 30))
    assert path in "".join(line.strip() for line in buf.getvalue().splitlines()), buf.getvalue()


def test_model_tree_shows_one_of_alike_layers_and_folds_unlike_ones():
    """/model printed three identical decoder layers in full (~60 lines for the demo) before "... 27 more": layers
    all alike are shown by the first, the rest named as its copies; layers that differ are folded as before."""
    import io

    from rich.console import Console
    from torch import nn

    from yi_cli.engines.describe import tree

    def shown(model) -> list[str]:
        buf = io.StringIO()
        Console(file=buf, width=100, color_system=None).print(tree(model))
        return [ln.strip("│├└─ ") for ln in buf.getvalue().splitlines()]

    class Block(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.proj = nn.Linear(n, n, bias=False)

    alike = shown(nn.ModuleDict({"layers": nn.ModuleList(Block(4) for _ in range(30))}))
    assert alike == [
        "ModuleDict",
        "layers: ModuleList",
        "0: Block",
        "proj: Linear (4, 4) float32",
        "1-29: 29 more Block layers, each as 0",
    ]
    unlike = shown(nn.ModuleDict({"layers": nn.ModuleList(Block(n) for n in range(1, 31))}))
    assert unlike[2:] == [
        "0: Block",
        "proj: Linear (1, 1) float32",
        "1: Block",
        "proj: Linear (2, 2) float32",
        "2: Block",
        "proj: Linear (3, 3) float32",
        "... 27 more Block layers",
    ]


def test_a_greedy_retry_repeats_the_reply_after_a_continue_or_an_undo(demo_dir):
    """Greedy on the fast engine: `/retry` gave the same reply again, but not after a `/continue` or an `/undo` (a
    run-through: "Count to fifty", /continue, /retry went "...with the number of words" where the reply had been
    "...with the count to fifty"): the prompt was then a prefix of the cache, prefilled as its last token alone,
    which rounds otherwise than the prefill the reply had and flips near-ties. A prompt prefilled before is
    prefilled again from where it began."""
    from tests.fixtures import CUT, plain_chat
    from yi_cli.checkpoint.loader import open_checkpoint
    from yi_cli.engines.local import LocalEngine

    engine = LocalEngine(open_checkpoint(demo_dir, device="cpu", dtype="fp32"), backend="fast")
    chat, out, err = plain_chat(engine, settings=GenSettings(temperature=0, max_new_tokens=20, repetition_penalty=1.0))
    for ask in ("Count to fifty", "What is 7 times 8?"):
        chat.handle("/clear")
        chat.handle(ask)
        first = chat.session.turns[-1].content
        chat.handle("/continue")
        chat.handle("/retry")
        assert chat.session.turns[-1].content == first, ask
        chat.handle("Tell me more")
        chat.handle("/undo")
        chat.handle("/retry")
        assert chat.session.turns[-1].content == first, ask
    assert {ln for ln in err.getvalue().splitlines()} <= {CUT.strip()}  # nothing but the cut replies' notice

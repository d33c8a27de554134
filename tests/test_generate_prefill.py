"""The generate engine's long prompts (runtime.prompt_cache): read in chunks with a status line and Ctrl-C between
them, resumed where a Ctrl-C stopped them, and the previous turn's keys and values kept — greedy tokens against
transformers' own generate of the whole prompt (a tiny random model with Yi-6B-200K's config, CPU)."""

from __future__ import annotations

import threading

import pytest
from test_fast import assert_greedy_match, checkpoint, reference, reference_greedy
from test_long_context import REPLY, YI_200K, random_ids

from yi_cli.checkpoint.loader import open_checkpoint
from yi_cli.engines import local
from yi_cli.engines.events import FINISH_INTERRUPTED, Finish
from yi_cli.engines.local import LocalEngine
from yi_cli.engines.template import Prompt
from yi_cli.runtime.decoder import PREFILL_CHUNK

pytestmark = pytest.mark.slow
CHUNK = PREFILL_CHUNK["cpu"]


@pytest.fixture(autouse=True)
def chunks_of_a_big_model(monkeypatch):
    """These tiny models read their prompts in the chunks of a big one (PREFILL_CHUNK's), as the tests count them."""
    from yi_cli.runtime import prompt_cache

    monkeypatch.setattr(prompt_cache, "SMALL_PARAMS", 0)


def test_a_small_model_on_the_cpu_reads_bigger_chunks(monkeypatch):
    """A model of at most SMALL_PARAMS parameters reads SMALL_CPU_CHUNK tokens a chunk on the CPU (256 cost the demo
    a quarter more time to its first token than one forward); a bigger one the fast path's PREFILL_CHUNK."""
    from yi_cli.runtime import prompt_cache

    eng = LocalEngine(open_checkpoint(checkpoint(4, **YI_200K), device="cpu", dtype="fp32"), backend="generate")
    assert eng.prompt_cache.chunk == CHUNK
    monkeypatch.setattr(prompt_cache, "SMALL_PARAMS", 1_000_000_000)
    assert prompt_cache.PromptCache(eng.model, "cpu").chunk == prompt_cache.SMALL_CPU_CHUNK == 1024


@pytest.fixture
def engine(monkeypatch):
    """The generate engine with every chunk reporting (the product waits a second) and the tokens each forward of
    the model read counted (`fed`, one entry a forward: the prompt's chunks, then generate's own steps)."""
    monkeypatch.setattr(local, "PROGRESS_AFTER_S", 0.0)
    eng = LocalEngine(open_checkpoint(checkpoint(4, **YI_200K), device="cpu", dtype="fp32"), backend="generate")
    eng.statuses, eng.fed = [], []
    eng.progress = eng.statuses.append
    eng.model.model.register_forward_pre_hook(
        lambda mod, args, kw: eng.fed.append((kw.get("input_ids") if "input_ids" in kw else args[0]).shape[1]),
        with_kwargs=True,
    )
    return eng


@pytest.fixture(scope="module")
def model():
    return reference(checkpoint(4, **YI_200K))


def reply(engine, ids, cancel=None):
    events = list(engine.stream(Prompt([], ids=ids), REPLY, cancel or threading.Event()))
    assert isinstance(events[-1], Finish)
    return events[-1]


def test_a_long_prompt_is_read_in_chunks_with_its_progress(engine, model):
    """generate read the prompt in one forward: no status line, and Ctrl-C waited for all of it."""
    ids = random_ids(1000, 3)
    got = reply(engine, ids).token_ids
    assert_greedy_match(model, ids, got, reference_greedy(model, ids, len(got)))
    assert engine.fed[:4] == [CHUNK, CHUNK, CHUNK, 999 - 3 * CHUNK] and engine.fed[4] == 1  # then generate: the last
    done = [CHUNK, 2 * CHUNK, 3 * CHUNK, 999]
    assert engine.statuses == [f"reading the prompt: {d}/1000 tokens ({100 * d // 1000}%)" for d in done] + [None]


def test_ctrl_c_while_reading_stops_between_chunks_and_the_same_prompt_resumes(engine, model):
    ids = random_ids(5 * CHUNK, 5)
    cancel = threading.Event()

    def ctrl_c(status):  # Ctrl-C in the REPL sets the turn's cancel event; here after the second chunk
        engine.statuses.append(status)
        if len(engine.statuses) == 2:
            cancel.set()

    engine.progress = ctrl_c
    stopped = reply(engine, ids, cancel)
    assert stopped.stats.finish_reason == FINISH_INTERRUPTED and stopped.token_ids == []
    assert engine.fed == [CHUNK, CHUNK] and engine.statuses[-1] is None  # the line erased
    engine.fed.clear()
    got = reply(engine, ids).token_ids  # /continue sends the same prompt: the chunks read are kept
    assert engine.fed[:3] == [CHUNK, CHUNK, CHUNK - 1] and engine.fed[3] == 1
    assert_greedy_match(model, ids, got, reference_greedy(model, ids, len(got)))


def test_the_next_turn_reads_only_what_is_new(engine, model):
    """Each turn read the whole conversation again (a /continue, a /retry, the next message)."""
    turn1 = random_ids(600, 1)
    got1 = reply(engine, turn1).token_ids
    engine.fed.clear()
    turn2 = turn1 + got1 + random_ids(300, 2)
    got2 = reply(engine, turn2).token_ids
    # the previous reply's last token was never fed back: it and the new 300 before the last, then the last
    assert engine.fed[:3] == [CHUNK, 300 - CHUNK, 1]
    assert_greedy_match(model, turn2, got2, reference_greedy(model, turn2, len(got2)))


def test_a_prompt_that_departs_from_the_cached_one_keeps_only_their_common_start(engine, model):
    """An /edit or /undo: the cache is cut where the prompts part, and the reply is the whole prompt's."""
    first = random_ids(700, 7)
    again = reply(engine, first).token_ids
    assert reply(engine, first).token_ids == again  # /retry: the same last token over the same cache, same reply
    engine.fed.clear()
    edited = first[:400] + random_ids(100, 8)
    got = reply(engine, edited).token_ids
    assert engine.fed[:2] == [99, 1]
    assert_greedy_match(model, edited, got, reference_greedy(model, edited, len(got)))


def test_a_failure_while_reading_is_one_line_and_the_next_prompt_starts_clean(engine, monkeypatch):
    ids = random_ids(3 * CHUNK, 9)
    real = engine.model.forward
    calls = []

    def oom_at_the_second_chunk(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*a, **kw)

    monkeypatch.setattr(engine.model, "forward", oom_at_the_second_chunk)
    with pytest.raises(local.YiError, match="^out of memory while generating; the session is kept"):
        reply(engine, ids)
    assert engine.prompt_cache.ids == [] and engine.prompt_cache.cache is None
    monkeypatch.setattr(engine.model, "forward", real)
    engine.fed.clear()
    reply(engine, ids)
    assert engine.fed[:3] == [CHUNK, CHUNK, CHUNK - 1]  # from the start: nothing of the failed read trusted


@pytest.mark.parametrize("quant", ["awq", "gptq8"])
def test_a_quantized_model_dequantizes_once_for_all_the_chunks(quant, monkeypatch):
    """Each chunk dequantized every projection again: a long prompt on the CPU took ~1.8x one forward's time."""
    from yi_cli.runtime import qlinear

    eng = LocalEngine(open_checkpoint(checkpoint(4, quant, **YI_200K), device="cpu", dtype="fp32"), backend="generate")
    lins = [m for m in eng.model.modules() if isinstance(m, qlinear.QuantLinear)]
    built = []
    for cls in {type(m) for m in lins}:
        real = cls._weight
        monkeypatch.setattr(cls, "_weight", lambda self, dtype, real=real: built.append(self) or real(self, dtype))
    ids = random_ids(4 * CHUNK, 11)
    assert eng.prompt_cache.prefill(ids, threading.Event()) is not None
    assert len(built) == len(lins) and set(map(id, built)) == set(map(id, lins))  # once each, for all 4 chunks
    assert all(m.kept is None for m in lins)  # given back after the prompt
    built.clear()
    monkeypatch.setattr(qlinear, "KEEP_DENSE_BYTES", 0)  # where they would not fit: per chunk, as before
    eng.prompt_cache.forget()
    eng.prompt_cache.prefill(ids, threading.Event())
    assert len(built) == 4 * len(lins)


@pytest.mark.parametrize(
    "asks",
    [
        {"cache_implementation": "static"},  # generate refused the cache given: every turn failed, exit 1
        {"use_cache": False},  # (a checkpoint trained with gradient checkpointing) generate read the context again
        {"prompt_lookup_num_tokens": 3},  # on top of the cache at every step, or at the first assisted one:
        {"assistant_early_exit": 1},  # other replies, the cache growing by the whole context a step
    ],
)
def test_a_generation_config_the_cache_does_not_go_with_still_answers_as_transformers(tmp_path, model, asks):
    """What a generation_config.json may ask that the engine's own cache does not go with is left out: the reply is
    transformers' own for the whole prompt, and the cache holds the prompt and the reply (its last token aside)."""
    import json
    import shutil

    path = tmp_path / "asks"
    shutil.copytree(checkpoint(4, **YI_200K), path)
    (path / "generation_config.json").write_text(json.dumps(asks))
    eng = LocalEngine(open_checkpoint(path, device="cpu", dtype="fp32"), backend="generate")
    ids = random_ids(300, 12)
    got = reply(eng, ids).token_ids
    assert_greedy_match(model, ids, got, reference_greedy(model, ids, len(got)))
    assert eng.prompt_cache.ids == (ids + got)[: len(ids) + len(got) - 1]
    assert eng.prompt_cache.cache.get_seq_length() == len(ids) + len(got) - 1

"""The local engine: a checkpoint on this machine, streamed as Text events then one Finish.

Two backends behind it, chosen once at load: the fast runtime (yi_cli.runtime: static KV cache, CUDA graphs, int4
kernels; Llama-architecture safetensors checkpoints) and transformers `generate` in a worker thread feeding a
TextIteratorStreamer (any architecture, the reference).
"""

from __future__ import annotations

import threading
from queue import Empty

from .. import clock, env
from ..errors import NOT_NUMBERS, LoadError, YiError, failure
from .events import FINISH_INTERRUPTED, FINISH_LENGTH, FINISH_STOP, Finish, Stats, Text
from .settings import GenSettings
from .template import Prompt, Template

STREAM_TIMEOUT_S = env.number("YI_CHAT_STREAM_TIMEOUT", 300.0, float, 1e-3, 1e9)
PROGRESS_AFTER_S = 1.0  # a prompt whose prefill runs longer shows its progress


class LocalEngine:
    def __init__(self, ckpt, backend: str = "auto", raw: bool = False, context: int | None = None):
        """context: cap the session's context below the model's (--context)."""
        from ..runtime import decoder

        self.ckpt = ckpt
        self.name, self.quant = ckpt.name, ckpt.quant
        self.context_length = min(context or ckpt.context_length, ckpt.context_length)
        self.template = Template(ckpt.tokenizer, ckpt.config, ckpt.generation_config, raw)
        usable = decoder.supports(ckpt)
        if backend == "fast" and not usable:
            window = getattr(ckpt.config, "sliding_window", None)
            raise LoadError(
                f"--engine fast does not support this model ({ckpt.config.model_type}, "
                f"{'safetensors' if ckpt.safetensors else 'pickle'} weights"
                + (f", a sliding window of {window} positions: use --engine generate)" if window else ")")
            )
        self.decoder = self.model = None
        self.progress = None  # renderer hook: a status line (str) while a long prompt is read, None clears it
        self.showing = False  # a status line is up
        if usable and backend != "generate":
            self.decoder = decoder.FastDecoder(ckpt, self.context_length)
            self.context_length = self.decoder.max_seq  # what the free GPU memory holds
        else:
            from ..runtime.hf import build_model
            from ..runtime.prompt_cache import PromptCache

            self.model = build_model(ckpt)
            if not ckpt.trust_remote_code:  # (a remote-code model's own generate may read more of it)
                self.model.generation_config = _ids_only(self.model.generation_config)
            self.hf_tokenizer = ckpt.hf_tokenizer  # the streamer's: transformers' own, built at load
            # a remote-code model's forward may take no cache object: its prompt goes to generate whole
            self.prompt_cache = None if ckpt.trust_remote_code else PromptCache(self.model, ckpt.device)
        self.backend = "fast" if self.decoder is not None else "generate"
        if self.decoder is not None and ckpt.device.startswith("cuda"):
            self._warm_up()

    def _warm_up(self) -> None:
        """Run both prefill paths once at load (dense GEMM for long prompts, int4 kernel for short ones), so the
        first reply does not pay for kernel compilation and library handles (~1.5 s on an H100)."""
        ids = list(range(100, 180))
        for prompt_ids in (ids, ids + list(range(200, 208))):
            for _ in self.decoder.generate(prompt_ids, GenSettings(max_new_tokens=2), threading.Event(), set()):
                pass

    def describe(self) -> list:
        from . import describe

        return describe.describe(self)

    def stream(self, prompt: Prompt, settings: GenSettings, cancel: threading.Event):
        assert prompt.ids is not None and len(prompt.ids) + settings.max_new_tokens <= self.context_length, (
            "the conversation layer fits the prompt and the reply into the context"
        )
        context = prompt.ids if prompt.continue_final else ()  # a /continue's open reply: the new text's context
        if self.decoder is not None:
            yield from self._stream_fast(prompt.ids, settings, cancel, context)
        else:
            yield from self._stream_generate(prompt.ids, settings, cancel, context)

    def _stream_fast(self, ids, settings, cancel, context=()):
        try:
            yield from self._fast_events(ids, settings, cancel, context)
        except YiError:
            raise
        except Exception as e:  # out of memory and the like: one line, cache freed (engine_error)
            raise engine_error(e) from None

    def _prefill_progress(self, t0: float):
        """The decoder's per-chunk hook: a status line once the prompt has taken PROGRESS_AFTER_S."""

        def chunk(done: int, total: int) -> None:
            if self.progress is not None and clock.now() - t0 >= PROGRESS_AFTER_S:
                self.showing = True
                self.progress(f"reading the prompt: {done}/{total} tokens ({100 * done // total}%)")

        return chunk

    def _progress_end(self) -> None:
        if self.showing:
            self.showing = False
            self.progress(None)

    def _fast_events(self, ids, settings, cancel, context=()):
        stats = Stats(prompt_tokens=len(ids))
        detok = self.template.detokenizer(context)
        stop_ids = self.template.stop_ids
        t0 = clock.now()  # not perf_counter: the time stopped by Ctrl-Z is no decode time (clock.py)
        out: list[int] = []
        self.decoder.on_chunk = self._prefill_progress(t0)
        try:
            for tok in self.decoder.generate(ids, settings, cancel, stop_ids):
                now = clock.now()
                if not out:
                    stats.ttft_s = now - t0
                    self._progress_end()  # before the reply's first text
                out.append(tok)
                stats.new_tokens = len(out)
                stats.decode_s = now - t0 - stats.ttft_s
                if tok in stop_ids:
                    break
                piece = detok.add(tok)
                if piece:
                    yield Text(piece)
        finally:
            self.decoder.on_chunk = None
            self._progress_end()  # cancelled or failed while reading the prompt
        tail = detok.flush()
        if tail:
            yield Text(tail)
        # the key is there for every reply of this engine: null where no decode step ran (it was left out)
        stats.tokens_per_step = (len(out) - 1) / self.decoder.steps if self.decoder.steps else None
        stats.finish_reason = finish_reason(out[-1] if out else None, stop_ids, cancel)
        yield Finish(stats, out)

    def _stream_generate(self, ids, settings, cancel, context=()):
        import torch
        from transformers import (
            LogitsProcessor,
            LogitsProcessorList,
            StoppingCriteria,
            StoppingCriteriaList,
            TextIteratorStreamer,
        )

        from ..runtime.prompt_cache import cache_of

        class Streamer(TextIteratorStreamer):
            """transformers' queue of text, the text made by the fast path's Detokenizer (a cut inside a character,
            a /continue's context, as there)."""

            def __init__(self, tokenizer, detok, timeout, stops):
                super().__init__(tokenizer, skip_prompt=True, timeout=timeout)
                self.detok, self.ended, self.stops = detok, False, stops

            def put(self, value):
                if self.next_tokens_are_prompt:  # generate passes the prompt first
                    self.next_tokens_are_prompt = False
                    return
                for tok in value.reshape(-1).tolist():  # "" too: the consumer's stall timeout counts tokens
                    # a stop id's text is never the reply's, as on the fast path (an ordinary word among the eos
                    # ids of a generation_config was shown here, not there)
                    self.on_finalized_text("" if tok in self.stops else self.detok.add(tok))

            def end(self):
                if not self.ended:  # once: generate's own end, or work()'s where generate did not end it
                    self.ended = True
                    self.on_finalized_text(self.detok.flush(), stream_end=True)

        stats = Stats(prompt_tokens=len(ids))
        stop_ids = self.template.stop_ids
        t0 = clock.now()  # the stops of Ctrl-Z left out, as on the fast path
        times: list[float] = []
        stop = threading.Event()  # set when the consumer goes away early; `cancel` stays the caller's
        timed_out = threading.Event()

        class Numbers(LogitsProcessor):
            """The first step's logits are numbers, as the fast engine checks them: NaN weights gave an empty
            reply, `stop`, exit 0 (greedy) or transformers' own words (sampled)."""

            def __init__(self):
                self.first = True

            def __call__(self, input_ids, scores):
                if self.first and torch.isnan(scores).any():  # -inf is a warper's; NaN is no number at all
                    raise YiError(NOT_NUMBERS)
                self.first = False
                return scores

        class Watch(StoppingCriteria):
            # Called once per generated token: records timing and stops on cancel (Ctrl-C).
            def __call__(self, input_ids, scores, **kw):
                times.append(clock.now())
                return torch.full(
                    (input_ids.shape[0],), cancel.is_set() or stop.is_set(), dtype=torch.bool, device=input_ids.device
                )

        kwargs = generation_kwargs(settings, sorted(stop_ids))
        if self.prompt_cache is not None:
            try:
                cache = self.prompt_cache.prefill(ids, cancel, self._prefill_progress(t0))
            except Exception as e:  # out of memory reading a long prompt: one line, as in generate
                raise engine_error(e) from None
            finally:
                self._progress_end()
            if cancel.is_set():  # while reading the prompt: nothing generated, what was read kept for /continue
                stats.finish_reason = FINISH_INTERRUPTED
                yield Finish(stats, [])
                return
            self.prompt_cache.forget()  # generate grows it: held again only where generate returns (held, below)
            kwargs.update(
                {self.prompt_cache.arg: cache, "return_dict_in_generate": True},
                # what a generation_config.json may ask that the cache given does not go with: a cache_implementation
                # (static) had generate refuse it; use_cache false, prompt lookup or an early-exit assistant had
                # generate read the prompt again on top of it (other replies, the cache growing by the context a step)
                cache_implementation=None,
                use_cache=True,
                prompt_lookup_num_tokens=None,
                assistant_early_exit=None,
            )
        streamer = Streamer(self.hf_tokenizer, self.template.detokenizer(context), STREAM_TIMEOUT_S, stop_ids)
        input_ids = torch.tensor([ids], device=self.ckpt.device)
        result: dict = {}

        def work():
            try:
                if settings.seed is not None:  # torch's CPU generator too keeps 32 bits of a seed
                    from ..runtime.sampling import seed32

                    torch.manual_seed(seed32(settings.seed))
                else:  # a seed of its own: after a seeded reply (or /retry SEED) every later one followed on from
                    torch.seed()  # that seed's state, the same on every run
                with torch.inference_mode():
                    result["out"] = self.model.generate(
                        input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([Watch()]),
                        logits_processor=LogitsProcessorList([Numbers()]),
                        **kwargs,
                    )
            except BaseException as e:  # surfaced in the REPL thread below
                result["error"] = e
            finally:  # also where generate returned without ending the stream: the reader waited STREAM_TIMEOUT_S
                streamer.end()

        worker = threading.Thread(target=work, name="yi-generate", daemon=True)
        worker.start()
        try:
            try:
                for piece in streamer:
                    if piece:
                        yield Text(piece)
            except Empty:
                stop.set()
                timed_out.set()
                raise YiError(f"the model produced no token for {STREAM_TIMEOUT_S:.0f} s; reply abandoned") from None
        finally:
            stop.set()
            # After a timeout generate may be stuck before its first token: leave the daemon thread behind.
            worker.join(timeout=1 if timed_out.is_set() else None)
        if "error" in result:
            raise engine_error(result["error"])
        sequences = getattr(result["out"], "sequences", result["out"])  # a tensor where no dict was asked for
        if self.prompt_cache is not None:
            self.prompt_cache.held(sequences[0].tolist(), cache_of(result["out"]))
        out = sequences[0, len(ids) :].tolist()
        stats.new_tokens = len(out)
        if times:
            stats.ttft_s = times[0] - t0
            stats.decode_s = times[-1] - times[0]
        stats.finish_reason = finish_reason(out[-1] if out else None, stop_ids, cancel)
        yield Finish(stats, out)


def _ids_only(g):
    """A checkpoint's generation config less all but its token ids: yi-chat's settings decide the rest, as on the
    fast engine. Its other fields failed every turn (min_p 2.0, typical_p 0, bad_words_ids past the vocabulary),
    cut replies called the token limit (max_time), printed transformers' warnings (min_new_tokens) or answered
    otherwise than the fast engine (no_repeat_ngram_size)."""
    from transformers import GenerationConfig

    return GenerationConfig(bos_token_id=g.bos_token_id, eos_token_id=g.eos_token_id, pad_token_id=g.pad_token_id)


def generation_kwargs(s: GenSettings, stop: list[int]) -> dict:
    kw = {
        # one sequence, a token a step, streamed: a checkpoint's generation_config.json asking for beam search
        # (num_beams 2) made generate stream nothing, and the reply waited STREAM_TIMEOUT_S deaf to Ctrl-C
        "num_beams": 1,
        "num_return_sequences": 1,
        "stop_strings": None,  # the config's need the tokenizer passed in: every turn failed ("could not locate a
        # tokenizer"); yi-chat stops on the template's end-of-turn ids
        "max_new_tokens": s.max_new_tokens,
        "eos_token_id": stop,
        "pad_token_id": stop[0] if stop else None,
        "repetition_penalty": s.repetition_penalty,
    }
    if s.temperature == 0:
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kw.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or None)
    return kw


def finish_reason(last, stop_ids, cancel) -> str:
    if last is not None and last in stop_ids:
        return FINISH_STOP
    return FINISH_INTERRUPTED if cancel.is_set() else FINISH_LENGTH


def engine_error(e: BaseException) -> YiError:
    if isinstance(e, YiError):
        return e
    name = e.__class__.__name__
    if "OutOfMemory" in name or "out of memory" in str(e):
        try:
            import torch

            torch.cuda.empty_cache()
        except Exception:
            pass
        return YiError(
            "out of memory while generating; the session is kept — try a shorter context "
            "(/clear or /undo) or lower max_new_tokens"
        )
    return YiError(f"generation failed ({failure(e)})")

"""The local engine: stream(messages, settings, cancel) -> Text events, then one Finish.

Two backends behind it: transformers `generate` in a worker thread feeding a TextIteratorStreamer (any
architecture, the reference), and the fast decoder of yi_cli.fast (static KV cache, CUDA graphs) where it applies.
"""
from __future__ import annotations

import os
import threading
import time
from queue import Empty

from . import prompt
from .errors import YiError, failure
from .events import FINISH_INTERRUPTED, FINISH_LENGTH, FINISH_STOP, Finish, Stats, Text
from .settings import GenSettings

STREAM_TIMEOUT_S = float(os.environ.get("YI_CHAT_STREAM_TIMEOUT", "300"))


class LocalEngine:
    def __init__(self, loaded, backend: str = "auto", raw: bool = False):
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.template = None if raw else prompt.template_of(self.tokenizer)  # None: raw completion
        self.stop_ids = prompt.stop_ids(self.tokenizer, loaded.config,
                                        getattr(loaded.model, "generation_config", None))
        self.context_length = loaded.context_length
        self.decoder = self._pick(backend)
        self.backend = "fast" if self.decoder is not None else "generate"
        self.model_name = loaded.name
        self.quant = loaded.quant
        if self.decoder is not None and loaded.device.startswith("cuda"):
            self._warm_up()

    def _warm_up(self) -> None:
        """Run both prefill paths once at load (dense GEMM for long prompts, int4 kernel for short ones), so the
        first reply does not pay for kernel compilation and library handles (~1.5 s on an H100)."""
        ids = list(range(100, 180))
        for prompt_ids in (ids, ids + list(range(200, 208))):
            for _ in self.decoder.generate(prompt_ids, GenSettings(max_new_tokens=2), threading.Event(), set()):
                pass

    def _pick(self, backend: str):
        if backend == "generate":
            return None
        try:
            from .fast import FastDecoder, supports
        except ImportError:
            supports = None
        usable = supports is not None and supports(self.loaded)
        if backend == "fast" and not usable:
            raise YiError(f"--engine fast does not support this model ({type(self.loaded.model).__name__})")
        if not usable:
            return None
        return FastDecoder(self.loaded)

    def describe(self) -> list:
        from . import inspect_model

        return [inspect_model.summary(self.loaded), f"engine: {self.backend}", inspect_model.tree(self.loaded.model)]

    def count_text(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count(self, messages: list[dict]) -> int:
        return len(prompt.build_ids(self.tokenizer, messages, self.template))

    def prompt_text(self, messages: list[dict]) -> str:
        return prompt.render(self.tokenizer, messages, self.template)

    def stream(self, messages: list[dict], settings: GenSettings, cancel: threading.Event):
        ids = prompt.build_ids(self.tokenizer, messages, self.template)
        if len(ids) >= self.context_length:
            raise YiError(f"the prompt is {len(ids)} tokens; the model's context is {self.context_length}")
        settings = GenSettings(**{**settings.to_dict(),
                                  "max_new_tokens": min(settings.max_new_tokens, self.context_length - len(ids))})
        if self.decoder is not None:
            yield from self._stream_fast(ids, settings, cancel)
        else:
            yield from self._stream_generate(ids, settings, cancel)

    def _stream_fast(self, ids, settings, cancel):
        try:
            yield from self._fast_events(ids, settings, cancel)
        except YiError:
            raise
        except Exception as e:  # out of memory and the like: one line, cache freed (engine_error)
            raise engine_error(e) from None

    def _fast_events(self, ids, settings, cancel):
        stats = Stats(prompt_tokens=len(ids))
        detok = Detokenizer(self.tokenizer)
        t0 = time.perf_counter()
        last = None
        for tok in self.decoder.generate(ids, settings, cancel, self.stop_ids):
            now = time.perf_counter()
            if stats.new_tokens == 0:
                stats.ttft_s = now - t0
            stats.new_tokens += 1
            stats.decode_s = now - t0 - stats.ttft_s
            last = tok
            if tok in self.stop_ids:
                break
            piece = detok.add(tok)
            if piece:
                yield Text(piece)
        tail = detok.flush()
        if tail:
            yield Text(tail)
        stats.finish_reason = finish_reason(last, self.stop_ids, cancel)
        yield Finish(stats)

    def _stream_generate(self, ids, settings, cancel):
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        stats = Stats(prompt_tokens=len(ids))
        t0 = time.perf_counter()
        times: list[float] = []
        stop = threading.Event()  # set when the consumer goes away early; `cancel` stays the caller's
        timed_out = threading.Event()

        class Watch(StoppingCriteria):
            # Called once per generated token: records timing and stops on cancel (Ctrl-C).
            def __call__(self, input_ids, scores, **kw):
                times.append(time.perf_counter())
                return torch.full((input_ids.shape[0],), cancel.is_set() or stop.is_set(), dtype=torch.bool,
                                  device=input_ids.device)

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True,
                                        timeout=STREAM_TIMEOUT_S)
        kwargs = generation_kwargs(settings, sorted(self.stop_ids))
        input_ids = torch.tensor([ids], device=self.loaded.device)
        result: dict = {}

        def work():
            try:
                if settings.seed is not None:
                    torch.manual_seed(settings.seed)
                with torch.inference_mode():
                    result["out"] = self.loaded.model.generate(
                        input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([Watch()]), **kwargs)
            except BaseException as e:  # surfaced in the REPL thread below
                result["error"] = e
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
        out = result["out"][0, len(ids):].tolist()
        stats.new_tokens = len(out)
        if times:
            stats.ttft_s = times[0] - t0
            stats.decode_s = times[-1] - times[0]
        stats.finish_reason = finish_reason(out[-1] if out else None, self.stop_ids, cancel)
        yield Finish(stats)


def generation_kwargs(s: GenSettings, stop: list[int]) -> dict:
    kw = {"max_new_tokens": s.max_new_tokens, "eos_token_id": stop, "pad_token_id": stop[0] if stop else None,
          "repetition_penalty": s.repetition_penalty}
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
        return YiError("out of memory while generating; the session is kept — try a shorter context "
                       "(/clear or /undo) or lower max_new_tokens")
    return YiError(f"generation failed ({failure(e)})")


class Detokenizer:
    """Token ids -> text deltas, holding back incomplete UTF-8 pieces (byte-level BPE emits them as U+FFFD)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.start = 0  # ids before this are already emitted and final
        self.emitted = ""  # text of ids[start:] already emitted

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tok.decode(self.ids[self.start:], skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        delta = text[len(self.emitted):]
        self.emitted = text
        if len(self.ids) - self.start > 16:  # keep decoding windows short: O(n) per reply, not O(n^2)
            self.start, self.emitted = len(self.ids) - 4, self.tok.decode(self.ids[-4:], skip_special_tokens=True)
        return delta

    def flush(self) -> str:
        text = self.tok.decode(self.ids[self.start:], skip_special_tokens=True)
        delta = text[len(self.emitted):] if text.startswith(self.emitted) else ""
        self.emitted = text
        return delta

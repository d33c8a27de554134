"""The remote engine: the Engine protocol (engines/base.py) over an OpenAI-compatible
chat-completions server (vLLM, llama.cpp's server, lmdeploy, SGLang, ollama serve, Azure-style services), read as
server-sent events (no torch). HTTP, credentials and bounds live in remote_http.py.

The server owns the chat template and the tokenizer, so this engine has no template and no context_length: the
chat does no local fitting and /prompt says the template is applied server-side.
"""

from __future__ import annotations

import json
import re
import threading

from .. import clock
from ..errors import LoadError, ReplyCut, UsageError, YiError, shown
from .events import FINISH_INTERRUPTED, FINISH_LENGTH, FINISH_STOP, Finish, Stats, Text
from .remote_endpoint import Endpoint, StreamRedactor
from .remote_http import Limits, Transport, one_line
from .settings import GenSettings
from .template import Prompt

ROUTE = "/chat/completions"
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# A chunk's content may end with the first half of a character outside the BMP (a high surrogate) and the next start
# with its second (a low one): a server streaming UTF-16 code units (a JavaScript proxy slicing its text) splits a
# rare CJK character (𠮷, U+20BB7) or an emoji so, JSON escaping each half alone. Not lone: the two are one character.
SPLIT_HALVES = re.compile("\\A[\udc00-\udfff]|[\ud800-\udbff]\\Z")
LONE = "content is not valid Unicode (a lone surrogate)"
# Data events tolerated after the reply reached max_new_tokens, for the finish reason, usage and [DONE] that
# follow the last token; past them the server is ignoring max_tokens and the reply ends as "length".
GRACE_EVENTS = 16
# Seconds of silence after the finish reason before the reply is taken as ended: the usage and [DONE] that follow
# it come at once; a server that sent neither and held the stream open had the reply wait out the idle timeout
# (60 s), then marked it interrupted with "no data from the server".
FINISH_GRACE = 2.0
EVENT_LINES = 10_000  # data lines of one event joined at most (a pretty-printed chunk has tens)
# The largest token count taken from a server's usage, as a session stores one (session.MAX_TURN_TOKENS): past it
# the usage is no count (10**400 ended the turn in an OverflowError and was lost; 3e9 saved a session that
# --resume then refused).
MAX_COUNT = 2**31 - 1


class BadChunk(Exception):
    """A stream chunk that cannot be used (not JSON, not text, invalid Unicode): skipped with a note."""


class RemoteEngine:
    quant = None
    context_length = None  # unknown: the server truncates or refuses on its own
    template = None  # the server applies its own
    origin = ""  # where the endpoint and key came from (flag, environment, config), for /model

    def __init__(
        self,
        endpoint: str,
        api_key: str | None,
        model: str | None = None,
        timeout: float | None = None,
        *,
        limits: Limits | None = None,
        notify=None,
        verify=True,
    ):
        """`timeout` is the idle timeout (seconds without data), kept as a shortcut for limits.idle_timeout;
        `notify(text)` receives notes (bad chunks skipped); `verify` is httpx's TLS verification setting."""
        if model is not None and not _text(model):  # from argv, the environment or config.toml
            raise UsageError(f"the model name {shown(model)} is not valid UTF-8 text")
        if model and not _listable(model):  # a line break split the banner and the toolbar in two
            raise UsageError(f"the model name {shown(model, 80)} is not one line of printable text")
        self.limits = limits or Limits()
        if timeout is not None:
            self.limits.idle_timeout = timeout
        self.http = Transport(Endpoint(endpoint), api_key, self.limits, verify)
        self.notify = notify or (lambda text: None)
        deployment = self.http.endpoint.deployment
        if not model and deployment and not _listable(deployment):  # `deployments/gpt%0aFAKE`, unquoted
            raise UsageError(f"the URL's deployment name {shown(deployment, 80)} is not one line of printable text")
        self.name = model or deployment or self._first_model()

    @property
    def base(self) -> str:
        """The base URL as shown to the user: credentials as ***."""
        return self.http.endpoint.shown()

    def describe(self) -> list:
        return [
            f"remote model {self.name} at {self.base}",
            "the server applies the chat template and tokenizes; context size and weights are its own",
            *([self.origin] if self.origin else []),
        ]

    def _first_model(self) -> str:
        try:
            with self.http.request("GET", "/models") as answer:
                body, where = answer.read(self.limits.max_json_bytes, "model list"), answer.shown
        except YiError as e:
            raise LoadError(str(e)) from None
        try:
            listed = json.loads(body).get("data")
            # an id of one printable line: one with a line break split the banner and the toolbar in two; an empty
            # one names no model, and one of a megabyte was the banner and every redraw of the toolbar
            ids = [m["id"] for m in listed if isinstance(m, dict) and _listable(m.get("id"))]
        except (ValueError, RecursionError, AttributeError, TypeError):  # not JSON, or JSON of another shape
            raise LoadError(f"{where}: the answer is not an OpenAI model list (JSON with data[].id)") from None
        if not ids:
            raise LoadError(f"{where}: the server lists no models; pass --model NAME")
        return self.http.redact(ids[0])  # shown by /model and saved in sessions: no echo of a credential there

    def request_body(self, messages: list[dict], s: GenSettings) -> dict:
        body = {
            "model": self.name,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_new_tokens,
        }
        # Not in the OpenAI API: vLLM, SGLang and lmdeploy accept them, most others ignore unknown fields, and
        # their neutral values are left out so `--repetition-penalty 1` makes a request strict servers accept.
        if s.repetition_penalty != 1.0:
            body["repetition_penalty"] = s.repetition_penalty
        if s.top_k > 0:
            body["top_k"] = s.top_k
        if s.seed is not None:
            body["seed"] = s.seed
        return body

    def stream(self, prompt: Prompt, settings: GenSettings, cancel: threading.Event):
        reply = Reply(settings.max_new_tokens)
        # A server may echo a credential in the reply itself: it is redacted there too, even split across chunks.
        scrub = StreamRedactor(self.http.redact)
        try:
            body = self.request_body(prompt.messages, settings)
            if prompt.continue_final:  # /continue: vLLM's and SGLang's extension; other servers start a new reply
                body.update(add_generation_prompt=False, continue_final_message=True)
            with self.http.request("POST", ROUTE, body, cancel) as answer:
                reply.watch = answer.watch
                # a server that ignores stream: true; not an event stream labelled as JSON (read to its end, then
                # refused as "neither an event stream nor a chat completion")
                if answer.content_type == "application/json" and not answer.starts(b"data:"):
                    pieces = self._whole(answer, reply)
                else:
                    pieces = self._events(answer, reply, cancel)
                for piece in pieces:
                    if text := scrub.feed(piece):
                        yield Text(text)
                stats = self._finish(answer, reply, cancel)
            if text := scrub.flush(cut=stats.finish_reason in (FINISH_LENGTH, FINISH_INTERRUPTED)):
                yield Text(text)
        except YiError as e:
            self._note(reply)
            if reply.reason is not None and (reply.ended or reply.watch is not None and reply.watch.why == "idle"):
                # the reply ended as the server said (a finish reason on its own chunk), then the server held the
                # stream open or dropped it without [DONE]: the drop made the whole reply a failure, exit 1
                if text := scrub.flush():
                    yield Text(text)
                yield Finish(reply.stats(map_reason(reply.reason)))
                return
            if not (cancel.is_set() or reply.chunks):
                raise
            if text := scrub.flush(cut=True):  # a held-back end: "***" where it began like a secret
                yield Text(text)
            if not cancel.is_set():  # text reached the user: the reply is kept, marked, and the error says why
                raise ReplyCut(str(e), reply.stats(FINISH_INTERRUPTED)) from None
            stats = reply.stats(FINISH_INTERRUPTED)  # the watch shut the socket on a cancel: not a failure
        else:
            self._note(reply)
        if reply.reason == FILTERED and stats.finish_reason != FINISH_INTERRUPTED:  # it ended as if whole
            self.notify("the server's content filter ended the reply (finish_reason: content_filter)")
        yield Finish(stats)

    def _events(self, answer, reply: Reply, cancel: threading.Event):
        # Cancel is also checked between lines, but mostly it arrives through the watch, which shuts the socket
        # down: leaving the `with` closes the connection, which makes the server stop generating.
        pieces = Halves(reply)
        try:
            yield from self._event_texts(answer, reply, cancel, pieces)
        finally:
            pieces.end()

    def _datas(self, answer, reply: Reply, cancel: threading.Event):
        """The stream's events' data, as text. An event's data may come in several `data:` lines (a server that
        pretty-prints its chunks: an SSE library sends each of their lines so), joined with new lines up to the
        blank line that ends the event, as the format says (each line was dropped as a bad chunk, the reply's words
        with it). A data line that is JSON alone, or [DONE], is an event at once (the next data line can only make
        it no JSON); the data lines of an event that are no JSON together are taken a line each (a server that
        puts no blank line between its events). Each comes with what it decodes to (NOT_JSON where it does not),
        decoded once. An event past max_line_bytes (or EVENT_LINES lines) is taken a line each there: 64 MB of
        `data:ab` lines with no blank line held 600 MB of strings."""
        event: list[str] = []
        size = 0

        def ended(whole: bool = True):
            nonlocal size
            if whole and len(event) > 1 and (chunk := _loads(joined := "\n".join(event))) is not NOT_JSON:
                yield joined, chunk
            else:
                yield from ((data, _loads(data)) for data in event)
            event.clear()
            size = 0

        for line in answer.lines():
            if cancel.is_set():
                return
            if not line:  # a blank line: the event ends
                yield from ended()
                continue
            if not line.startswith(b"data:"):  # comments (`: ping`), event and id fields
                continue
            answer.watch.data()  # only data events hold the idle timeout off, not keep-alives
            reply.seen += 1
            try:
                data = line[5:].decode("utf-8").strip()
            except UnicodeDecodeError:
                reply.bad("not UTF-8", repr(line[5:4096]))  # cut by `bad` with a "…", which the redaction sees
                continue
            if not event and (data == "[DONE]" or (chunk := _loads(data)) is not NOT_JSON):
                yield data, None if data == "[DONE]" else chunk
            else:
                event.append(data)
                size += len(data)
                if size > self.limits.max_line_bytes or len(event) > EVENT_LINES:
                    yield from ended(whole=False)  # no chunk: a line each
        yield from ended()

    def _event_texts(self, answer, reply: Reply, cancel: threading.Event, pieces: Halves):
        for data, chunk in self._datas(answer, reply, cancel):
            if data == "[DONE]":
                reply.done = True
                return
            try:
                usage, choices = parse_chunk(chunk, answer.fail)
            except BadChunk as e:
                reply.bad(str(e), data)
                continue
            if not choices and usage and reply.reason is not None:
                # OpenAI's usage-only chunk, after the finish reason (one that came with the last text, too): the
                # reply has ended; only [DONE] may follow (a server holding the stream open waited out the idle
                # timeout, 60 s, for it)
                answer.watch.finishing(FINISH_GRACE)
                reply.ended = True
            for content, finish in choices:
                # A finish reason on its own chunk ends the reply: its usage and [DONE] follow at once, if at all (a
                # server that held the stream open cut it at the idle timeout). Some servers send one on content
                # chunks too ("stop" on every chunk, on a reasoning part): text after it waits the whole timeout.
                # A chunk with neither (an empty delta, `{}` again and again) leaves the clock as it is: it held a
                # finished reply open for the whole idle timeout or, sent each second, to the deadline.
                if finish and not content:
                    answer.watch.finishing(FINISH_GRACE)
                elif content:
                    answer.watch.finishing(None)
                reply.reason = finish or reply.reason
                reply.ended = bool(finish and not content) or (reply.ended and not content)
                if content:
                    if reply.full:  # the server ignores max_tokens: the client-side bound ends the reply
                        reply.cut = True
                        return
                    reply.read = answer.reads
                    if content := pieces.join(content):
                        yield content
            # after the chunk's text: a usage report counts the text that comes with it (the last token before
            # max_new_tokens was dropped where its chunk reported the count it reached)
            reply.usage = usage or reply.usage
            if reply.full:
                reply.grace += 1
                if reply.grace > GRACE_EVENTS:
                    reply.cut = True
                    return

    def _whole(self, answer, reply: Reply):
        body = answer.read(self.limits.max_json_bytes, "reply")
        try:
            obj = json.loads(body)
            err = obj.get("error")
            if err:  # a 200 whose body is only the server's error (a quota, a proxy's refusal)
                raise answer.fail(f"server error: {server_words(err)}")
            choice = obj["choices"][0]
            content, reply.reason = choice["message"].get("content") or "", choice.get("finish_reason")
            reply.usage = usage_of(obj.get("usage"))
        except (ValueError, RecursionError, AttributeError, TypeError, KeyError, IndexError):
            raise answer.fail("the answer is neither an event stream nor a chat completion") from None
        if not _text(content):
            raise answer.fail("the reply's content is not valid text")
        reply.done = True
        if content:
            reply.token()
            yield content

    def _finish(self, answer, reply: Reply, cancel: threading.Event) -> Stats:
        if reply.cut:
            return reply.stats(FINISH_LENGTH)
        if reply.done or reply.ended:  # whole, as the server said: a Ctrl-C after its end interrupted nothing
            return reply.stats(map_reason(reply.reason))
        if cancel.is_set():
            return reply.stats(FINISH_INTERRUPTED)
        if reply.reason is not None:
            return reply.stats(map_reason(reply.reason))
        if reply.seen == 0 and answer.content_type == "text/event-stream":  # it said "not an event stream" of one
            raise answer.fail("the server ended the event stream before its first event")
        if reply.seen == 0:
            raise answer.fail(f"the answer is not an event stream (Content-Type: {answer.content_type or 'none'})")
        raise answer.fail("the server closed the stream before the reply ended")  # went away mid-reply

    def _note(self, reply: Reply) -> None:
        if reply.bad_chunks:
            n = reply.bad_chunks
            self.notify(
                self.http.redact(
                    f"skipped {n} bad chunk{'s' * (n > 1)} of the server's stream (first: {reply.first_bad})"
                )
            )


class Reply:
    """What one streamed reply has seen so far, and the client-side token bound."""

    def __init__(self, max_new_tokens: int):
        self.max_new_tokens = max_new_tokens
        self.t0 = clock.now()  # the time stopped by Ctrl-Z left out of ttft and decode (clock.py)
        self.first = self.last = None
        self.chunks = self.seen = self.grace = self.bad_chunks = 0
        # chunks came in more than one of the body's reads (not all at once): their times give a decode rate
        self.spread, self.read, self.token_read = False, 0, None
        self.usage: tuple[int | None, int | None] | None = None
        self.reason: str | None = None
        self.done = self.cut = False
        self.ended = False  # a finish reason came on a chunk of its own, and no text after it
        self.first_bad = ""
        self.watch = None  # the request's Watch (remote_http), once it is made: why it ended the request

    @property
    def full(self) -> bool:
        # A chunk is about one token; a usage report mid-stream (vLLM's continuous usage) counts too.
        return max(self.chunks, (self.usage[1] or 0) if self.usage else 0) >= self.max_new_tokens

    def token(self) -> None:
        self.spread = self.spread or self.token_read not in (None, self.read)
        self.token_read = self.read
        self.last = clock.now()
        self.first = self.first or self.last
        self.chunks += 1

    def bad(self, why: str, data: str) -> None:
        self.bad_chunks += 1
        if self.bad_chunks == 1:
            self.first_bad = f"{why}: {one_line(data, 60)}"

    def stats(self, reason: str) -> Stats:
        s = Stats(finish_reason=reason, prompt_tokens=None)  # known only from the server's usage report
        if self.usage:
            s.prompt_tokens, s.new_tokens = self.usage
        # a usage without a completion count is counted from the chunks, as no usage is (it read 0 new tokens)
        if s.new_tokens is None or not self.usage or reason == FINISH_INTERRUPTED or self.cut:
            s.new_tokens = self.chunks  # what was shown: one chunk is about one token
        # The server's "length" short of max_tokens, by its own count: its context is full, not --max-new-tokens
        # reached (which the line blamed). A count from the chunks cannot tell: a chunk may hold several tokens.
        counted = self.usage[1] if self.usage else None
        s.at_context = (
            reason == FINISH_LENGTH and not self.cut and counted is not None and counted < self.max_new_tokens
        )
        if self.first is not None:
            s.ttft_s = self.first - self.t0
            # chunks that all came in one read (a proxy's buffer, a server that writes the reply in one go) say
            # nothing of its speed: 3 chunks in 60 µs read "33524.4 tok/s"; no rate then, as for a one-chunk reply
            s.decode_s = self.last - self.first if self.spread else 0.0
        return s


def server_words(err) -> str:
    """An `error` member's message on one line: {"message": ...} (OpenAI, vLLM) or the value itself."""
    return one_line(str(err.get("message", err) if isinstance(err, dict) else err))


MAX_MODEL_ID = 1000  # characters of a listed model id taken (Hugging Face ids are under 100)


def _listable(value) -> bool:
    """A model id from a server's list that can name its model: text of one printable line, not empty, not huge."""
    return _text(value) and value.isprintable() and 0 < len(value.strip()) and len(value) <= MAX_MODEL_ID


def _text(value) -> bool:
    """A string that can go back to the server in a request's JSON: no lone surrogate (a model list's `"a\\ud800b"`
    made every later request fail to encode)."""
    return isinstance(value, str) and not LONE_SURROGATE.search(value)


def usage_of(u) -> tuple[int | None, int | None] | None:
    if not isinstance(u, dict):
        return None
    p, c = u.get("prompt_tokens"), u.get("completion_tokens")
    if not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= MAX_COUNT for x in (p or 0, c or 0)):
        return None
    return p, c  # a count the server left out stays unknown (None), not 0


NOT_JSON = object()  # what _loads gives for text that is no JSON


def _loads(data: str):
    """The value the JSON text `data` holds, or NOT_JSON."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return NOT_JSON


def parse_chunk(chunk, fail) -> tuple[tuple[int, int] | None, list[tuple[str | None, str | None]]]:
    """One chat.completion.chunk, decoded (NOT_JSON: its text was no JSON) -> ((prompt, completion) tokens or None,
    [(content delta, finish reason)]). BadChunk for a chunk to skip; `fail(text)` makes the YiError for a server's own
    error chunk."""
    if chunk is NOT_JSON:
        raise BadChunk("not JSON")
    if not isinstance(chunk, dict):
        raise BadChunk("not a JSON object")
    err = chunk.get("error")
    if err:  # vLLM, llama.cpp and others report failures after the 200 as an error chunk
        raise fail(f"server error mid-stream: {server_words(err)}")
    choices = chunk.get("choices") or []
    if not isinstance(choices, list):
        raise BadChunk("choices is not a list")
    out = []
    for c in choices:
        delta = c.get("delta") if isinstance(c, dict) else None
        content = delta.get("content") if isinstance(delta, dict) else None
        if content is not None and not isinstance(content, str):
            raise BadChunk("content is not text")
        if content and LONE_SURROGATE.search(SPLIT_HALVES.sub("", content)):
            raise BadChunk(LONE)
        finish = c.get("finish_reason") if isinstance(c, dict) else None
        out.append((content, finish if isinstance(finish, str) else None))
    return usage_of(chunk.get("usage")), out


class Halves:
    """Joins a character a server split between chunks as UTF-16 halves (SPLIT_HALVES): a chunk's trailing high
    surrogate is held back until the next chunk, whose leading low one completes it. A half that the other does not
    complete is skipped as a bad chunk, said, as one inside a chunk is."""

    def __init__(self, reply: Reply):
        self.reply = reply
        self.half = ""  # the first half, held

    def join(self, content: str) -> str:
        """The text of a chunk's content to show now (counted as a token, as the chunk is, held half or not)."""
        starts_low = "\udc00" <= content[0] <= "\udfff"
        if self.half and starts_low:
            content = (self.half + content[0]).encode("utf-16-le", "surrogatepass").decode("utf-16-le") + content[1:]
        elif self.half:
            self.reply.bad(LONE, repr(self.half))
        elif starts_low:  # skipped whole, as a chunk with a lone half inside
            self.reply.bad(LONE, repr(content))
            return ""
        self.half = ""
        if "\ud800" <= content[-1] <= "\udbff":
            content, self.half = content[:-1], content[-1]
        self.reply.token()
        return content

    def end(self) -> None:
        """The stream ended (or was given up): a half held is one that no second half came for."""
        if self.half:
            self.reply.bad(LONE, repr(self.half))
            self.half = ""


FILTERED = "content_filter"  # OpenAI's and Azure's reason for a reply their filter ended


def map_reason(reason: str | None) -> str:
    # "length" is the only reason that means "cut short"; stop, eos, content_filter and tool_calls end a turn.
    return FINISH_LENGTH if reason == "length" else FINISH_STOP

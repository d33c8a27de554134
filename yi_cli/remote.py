"""The remote engine: the same stream(messages, settings, cancel) protocol over an OpenAI-compatible
chat-completions server (vLLM, lmdeploy, SGLang, ollama serve), read as server-sent events (no torch).

The server owns the chat template and the tokenizer, so this engine has no count/prompt_text and no
context_length: the chat does no local fitting and /prompt says the template is applied server-side.
"""
from __future__ import annotations

import json
import threading
import time
from urllib.parse import urlsplit

import httpx

from .errors import LoadError, YiError
from .events import FINISH_INTERRUPTED, FINISH_LENGTH, FINISH_STOP, Finish, Stats, Text
from .settings import GenSettings


class RemoteEngine:
    quant = None
    context_length = None  # unknown: the server truncates or refuses on its own
    origin = ""  # where the endpoint and key came from (flag, environment, config), for /model

    def __init__(self, endpoint: str, api_key: str | None, model: str | None = None, timeout: float = 60):
        self.base = base_url(endpoint)
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.model_name = model or self._first_model()

    def client(self) -> httpx.Client:
        # A client per request: one connect per turn costs nothing next to a reply, and no socket outlives
        # its turn (the chat has no close hook). The timeout bounds the silence between two chunks, not the reply.
        return httpx.Client(headers=self.headers, timeout=httpx.Timeout(self.timeout))

    def describe(self) -> list:
        return [f"remote model {self.model_name} at {self.base}",
                "the server applies the chat template and tokenizes; context size and weights are its own",
                *([self.origin] if self.origin else [])]

    def _first_model(self) -> str:
        url = f"{self.base}/models"
        try:
            with self.client() as client:
                resp = client.get(url)
            check_status(resp, url)
            ids = [m["id"] for m in resp.json()["data"]]
        except YiError as e:
            raise LoadError(str(e)) from None
        except httpx.HTTPError as e:
            raise LoadError(f"{url}: {transport_cause(e)}") from None
        except (ValueError, KeyError, TypeError):  # json.JSONDecodeError is a ValueError
            raise LoadError(f"{url}: the answer is not an OpenAI model list (JSON with data[].id)") from None
        if not ids:
            raise LoadError(f"{url}: the server lists no models; pass --model NAME")
        return ids[0]

    def request_body(self, messages: list[dict], s: GenSettings) -> dict:
        body = {"model": self.model_name, "messages": messages, "stream": True,
                "stream_options": {"include_usage": True},
                "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_new_tokens}
        # Not in the OpenAI API: vLLM, SGLang and lmdeploy accept them, most others ignore unknown fields, and
        # their neutral values are left out so `--repetition-penalty 1` makes a request strict servers accept.
        if s.repetition_penalty != 1.0:
            body["repetition_penalty"] = s.repetition_penalty
        if s.top_k > 0:
            body["top_k"] = s.top_k
        if s.seed is not None:
            body["seed"] = s.seed
        return body

    def stream(self, messages: list[dict], settings: GenSettings, cancel: threading.Event):
        url = f"{self.base}/chat/completions"
        stats = Stats()
        t0 = time.perf_counter()
        first = last = None
        reason, done, seen, chunks = None, False, 0, 0
        try:
            body = self.request_body(messages, settings)
            with self.client() as client, client.stream("POST", url, json=body) as resp:
                check_status(resp, url)
                # Cancel is checked between lines: servers send a chunk per token, so Ctrl-C answers within
                # one token; leaving the `with` closes the connection, which makes the server stop generating.
                for line in resp.iter_lines():
                    if cancel.is_set():
                        break
                    data = sse_data(line)
                    if data is None:
                        continue
                    seen += 1
                    if data == "[DONE]":
                        done = True
                        break
                    usage, choices = parse_chunk(data, url)
                    if usage:
                        stats.prompt_tokens, stats.new_tokens = usage
                    for delta, finish in choices:
                        reason = finish or reason
                        if delta:
                            last = time.perf_counter()
                            first = first or last
                            chunks += 1
                            yield Text(delta)
        except httpx.HTTPError as e:
            raise YiError(f"{url}: {transport_cause(e)}") from None
        if cancel.is_set():
            stats.finish_reason = FINISH_INTERRUPTED
        elif done or reason is not None:
            stats.finish_reason = map_reason(reason)
        elif seen == 0:
            raise YiError(f"{url}: the answer is not an event stream "
                          f"(Content-Type: {resp.headers.get('content-type', 'none')})")
        else:  # a clean close without [DONE] or a finish reason: the server went away mid-reply
            raise YiError(f"{url}: the server closed the stream before the reply ended")
        stats.new_tokens = stats.new_tokens or chunks  # no usage chunk: one chunk is about one token
        if first is not None:
            stats.ttft_s, stats.decode_s = first - t0, last - first
        yield Finish(stats)


def base_url(endpoint: str) -> str:
    """`host:8000`, `http://host:8000`, `.../v1` and `.../v1/chat/completions` all name the base `.../v1`."""
    url = endpoint.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    url = url.removesuffix("/chat/completions")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LoadError(f"{endpoint}: not an http(s) URL of an OpenAI-compatible server")
    # A bare host gets the usual /v1; any other path (a proxy's prefix, /v1beta/openai) is kept as given.
    return url + "/v1" if parts.path in ("", "/") else url


def check_status(resp: httpx.Response, url: str) -> None:
    if resp.status_code < 400:
        return
    resp.read()
    detail = f": {error_message(resp)}" if resp.content.strip() else ""
    raise YiError(f"{url}: HTTP {resp.status_code} {resp.reason_phrase}{detail}")


def error_message(resp: httpx.Response) -> str:
    """The server's own words from the error shapes in use: OpenAI/vLLM {"error": {"message"}}, ollama
    {"error": "..."}, older vLLM {"message"}, FastAPI {"detail"}; else the body's first line."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    msg = None
    if isinstance(body, dict):
        err = body.get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        msg = msg or body.get("message") or body.get("detail")
    text = str(msg) if msg else resp.text
    return one_line(text)


def one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def transport_cause(e: httpx.HTTPError) -> str:
    if isinstance(e, httpx.ConnectError):
        return f"cannot connect ({one_line(str(e)) or 'connection refused'})"
    if isinstance(e, httpx.TimeoutException):
        return f"timed out waiting for the server ({e.__class__.__name__})"
    if isinstance(e, (httpx.RemoteProtocolError, httpx.ReadError)):
        return f"the connection dropped mid-stream ({one_line(str(e))})"
    return f"{e.__class__.__name__}: {one_line(str(e))}"


def sse_data(line: str) -> str | None:
    """The payload of an SSE `data:` line; None for blank lines, comments (`: ping`), event and id fields."""
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


def parse_chunk(data: str, url: str) -> tuple[tuple[int, int] | None, list[tuple[str | None, str | None]]]:
    """One chat.completion.chunk -> ((prompt, completion) tokens or None, [(content delta, finish reason)])."""
    try:
        chunk = json.loads(data)
        err = chunk.get("error")
        if err:  # vLLM and others report failures after the 200 as an error chunk
            msg = err.get("message", err) if isinstance(err, dict) else err
            raise YiError(f"{url}: server error mid-stream: {one_line(str(msg))}")
        u = chunk.get("usage")
        usage = (int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)) if u else None
        choices = [((c.get("delta") or {}).get("content"), c.get("finish_reason")) for c in chunk.get("choices") or []]
    except (ValueError, AttributeError, TypeError):  # not JSON, or JSON of another shape
        raise YiError(f"{url}: malformed stream chunk {one_line(data, 80)!r}") from None
    return usage, choices


def map_reason(reason: str | None) -> str:
    # "length" is the only reason that means "cut short"; stop, eos, content_filter and tool_calls end a turn.
    return FINISH_LENGTH if reason == "length" else FINISH_STOP

"""The hub's HTTP client, guarded against a hub that misbehaves: a timeout on calls that set none, one line of
ours for each retry huggingface_hub makes (its own warnings are off), and an error at once for a hub that asks
for a long wait or sends too slowly, where huggingface_hub would sit silent for hours or days, or whose answers
or listing never end."""

from __future__ import annotations

import json
import logging
import re
import threading
import time

# huggingface_hub's client has no timeout (httpx's None): a hub that accepted the connection and never answered its
# API calls hung a pull silently for good. Downloads keep their own (HF_HUB_DOWNLOAD_TIMEOUT, retried).
CONNECT_S, ANSWER_S = 10.0, 60.0
# huggingface_hub waits as long as a 429 / 503's Retry-After (or rate-limit reset) says, five times over, saying
# nothing: `Retry-After: 3600` held a pull silent for hours. Longer than this is one line at once instead.
RETRY_WAIT_S = 10
# A hub that trickles (a byte a second) resets every read timeout and never times out: a pull sat for days. Under
# SLOW_RATE bytes a second over SLOW_WINDOW_S is one line instead (1 kB/s: a 4 GB shard in 46 days).
SLOW_RATE, SLOW_WINDOW_S = 1000, 60.0
# An answer's status line and headers, whole, within this: a hub that sent them a byte every few seconds reset every
# read timeout and held a pull for a day (h11's 16 KiB cap on headers was the only end).
HEADERS_S = ANSWER_S
# A safetensors header's first read (a 6B model's is ~50 kB): longer ones take a second request.
PEEK = 256 << 10
# An API answer (the model's info, a page of its file listing) longer than this is refused: a hub whose JSON never
# ended filled the memory (1.5 GB in 5 s). A page lists up to 1,000 files in ~0.3 MB.
API_BYTES = 64 << 20
# ... and whole within this, from its headers: one sent just over SLOW_RATE (1.5 kB/s) held `pull` silent for the
# 12 hours its 64 MB cap takes at that rate. A listing's page (~0.3 MB) takes 300 s at SLOW_RATE itself.
API_S = 5 * ANSWER_S
# Pages of one pull's listing: a hub whose next page is one it already sent (or new ones without end) listed for good.
MAX_PAGES = 1000
# Times one pull continues a file with a Range request that the hub answers with the whole file from its start: one
# that ignores Range and cuts every answer at the same byte sent the same first bytes for good (each a little
# progress to huggingface_hub's retries, each thrown away as the next answer started over).
MAX_RESTARTS = 3


class TooMuch(Exception):
    """An API answer past API_BYTES, or a listing that goes back to a page it sent or runs past MAX_PAGES."""


class StartsOver(TooMuch):
    """A file continued with a Range request came back from its start, more than MAX_RESTARTS times."""

    def __init__(self, times: int):
        super().__init__(f"{times} answers from the file's start")
        self.times = times


class TooSlow(Exception):
    """The hub sent under SLOW_RATE bytes a second over SLOW_WINDOW_S."""

    def __init__(self, got: int, seconds: float):
        super().__init__(f"{got} bytes in {seconds:.0f} s")
        self.got, self.seconds = got, seconds


class AnswerTooLong(TooSlow):
    """An answer of the hub's API not whole within API_S of its headers."""


class WaitTooLong(Exception):
    """The hub answered an error asking to be retried only after more than RETRY_WAIT_S seconds."""

    def __init__(self, status: int, wait: int):
        super().__init__(f"HTTP {status}, retry after {wait} s")
        self.status, self.wait = status, wait


def endpoint() -> str:
    """The hub's base URL as yi-chat's lines say it: a user and password in HF_ENDPOINT shown as ***."""
    from ..env_files import hidden_login, hub_constants

    return hidden_login(hub_constants().ENDPOINT)  # a URL the command line's check took (cli._check_hf_endpoint)


def bounded_client() -> None:
    """huggingface_hub's HTTP client with a connect and a read timeout where a call sets none (its API calls)."""
    import httpx2
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils import _http

    def factory():
        client = _http.default_client_factory()
        client.timeout = httpx2.Timeout(ANSWER_S, connect=CONNECT_S)
        client.event_hooks = {**client.event_hooks, "response": [*client.event_hooks.get("response", []), _impatient]}
        # Each transport (the default and any proxy's) reads its bodies through _steady, and its headers within
        # HEADERS_S. Private attributes: a release without them is read as before, without these limits.
        if isinstance(getattr(client, "_transport", None), httpx2.BaseTransport):
            client._transport = _steady_transport(client._transport)
        mounts = getattr(client, "_mounts", None)
        if isinstance(mounts, dict):
            for k, t in mounts.items():
                if isinstance(t, httpx2.BaseTransport):
                    mounts[k] = _steady_transport(t)
        return client

    set_client_factory(factory)


class Pages:
    """The listing pages one pull was sent (reset as it starts): TooMuch for a next page already sent, or one past
    MAX_PAGES."""

    def __init__(self):
        self.sent: set[str] = set()
        self.restarts: dict[str, int] = {}

    def reset(self) -> None:
        self.sent, self.restarts = set(), {}

    def ranged(self, request, response) -> None:
        """TooMuch once a file continued from past its start (Range: bytes=N-) was answered from its start (200)
        more than MAX_RESTARTS times: the hub ignores Range and the file never gets further."""
        rng = request.headers.get("Range", "")
        if response.status_code != 200 or not rng.startswith("bytes=") or rng.startswith("bytes=0-"):
            return
        url = f"{request.url.host}{request.url.path}"  # a CDN's signature may change at each redirect
        self.restarts[url] = self.restarts.get(url, 0) + 1
        if self.restarts[url] > MAX_RESTARTS:
            raise StartsOver(self.restarts[url])

    def answered(self, request, response) -> None:
        if response.status_code != 200:
            return  # an error, retried or reported as it is
        self.sent.add(str(request.url))
        following = response.links.get("next", {}).get("url")
        if following is None:
            return
        nxt = request.url.join(following)
        if (nxt.scheme, nxt.host, nxt.port) != (request.url.scheme, request.url.host, request.url.port):
            # huggingface_hub sends the token with each page: a listing whose next page is elsewhere would hand it on
            raise TooMuch(f"its file listing's next page is on another host ({nxt.host})")
        if str(nxt) in self.sent:
            raise TooMuch("its file listing goes back to a page it sent before")
        if len(self.sent) >= MAX_PAGES:
            raise TooMuch(f"its file listing runs past {MAX_PAGES} pages")


PAGES = Pages()


def _steady(stream, cap: int | None = None, whole_s: float | None = None):
    """stream's chunks as they come off the socket; TooSlow once a window of SLOW_WINDOW_S brought under
    SLOW_RATE bytes a second (checked as each chunk arrives: a hub sending nothing at all is the read timeout's);
    TooMuch past `cap` bytes; AnswerTooLong where it is not whole within `whole_s`."""
    start, got, total = time.monotonic(), 0, 0
    begun = start
    for chunk in stream:
        got += len(chunk)
        total += len(chunk)
        if cap is not None and total > cap:
            raise TooMuch(f"an answer of its API runs past {cap >> 20} MB")
        if whole_s is not None and time.monotonic() - begun > whole_s:
            raise AnswerTooLong(total, time.monotonic() - begun)
        elapsed = time.monotonic() - start
        if elapsed >= SLOW_WINDOW_S:
            if got < SLOW_RATE * elapsed:
                raise TooSlow(got, elapsed)
            start, got = time.monotonic(), 0
        yield chunk


class _Deadline(threading.local):
    """When the answer being waited for on this thread must have its headers whole (time.monotonic()); None: no
    answer's headers are being read."""

    at: float | None = None


HEADERS_BY = _Deadline()


def _bounded_backend(backend):
    """backend (httpcore2's network backend) whose streams' reads end by HEADERS_BY: each read's timeout is the time
    left, and a read past it is a ReadTimeout, however the bytes trickle."""
    import httpcore2

    class Stream(httpcore2.NetworkStream):
        def __init__(self, inner):
            self.inner = inner

        def read(self, max_bytes, timeout=None):
            at = HEADERS_BY.at
            if at is not None:
                left = at - time.monotonic()
                if left <= 0:
                    raise httpcore2.ReadTimeout(f"no whole answer headers in {HEADERS_S:.0f} s")
                timeout = left if timeout is None else min(timeout, left)
            return self.inner.read(max_bytes, timeout)

        def write(self, buffer, timeout=None):
            return self.inner.write(buffer, timeout)

        def close(self):
            return self.inner.close()

        def start_tls(self, ssl_context, server_hostname=None, timeout=None):
            return Stream(self.inner.start_tls(ssl_context, server_hostname, timeout))

        def get_extra_info(self, info):
            return self.inner.get_extra_info(info)

    class Backend(httpcore2.NetworkBackend):
        def connect_tcp(self, *args, **kwargs):
            return Stream(backend.connect_tcp(*args, **kwargs))

        def connect_unix_socket(self, *args, **kwargs):
            return Stream(backend.connect_unix_socket(*args, **kwargs))

        def sleep(self, seconds):
            return backend.sleep(seconds)

    return Backend()


def _steady_transport(inner):
    """inner (an httpx2 transport) whose response bodies are read through _steady, and whose answers' headers come
    whole within HEADERS_S (_bounded_backend)."""
    import httpx2

    pool = getattr(inner, "_pool", None)
    if pool is not None and hasattr(pool, "_network_backend"):
        pool._network_backend = _bounded_backend(pool._network_backend)

    class Body(httpx2.SyncByteStream):
        def __init__(self, stream, api: bool):
            self.stream, self.api = stream, api

        def __iter__(self):
            yield from _steady(self.stream, API_BYTES, API_S) if self.api else _steady(self.stream)

        def close(self):
            self.stream.close()

    class Steady(httpx2.BaseTransport):
        def handle_request(self, request):
            # A call's own timeout=None overrides the client's: the file listing's pages are asked with it, and a hub
            # that never answered one held `pull` silent for ever. No read or connect waits past ours.
            limits = request.extensions.get("timeout")
            if isinstance(limits, dict):
                request.extensions["timeout"] = {
                    **limits,
                    "connect": CONNECT_S if limits.get("connect") is None else limits["connect"],
                    "read": ANSWER_S if limits.get("read") is None else limits["read"],
                }
            api = "/api/" in request.url.path  # JSON answers, read whole into memory (a file's bytes go to disk)
            if api:  # counted as they come off the socket: a compressed answer (1000:1) would pass the cap
                request.headers["Accept-Encoding"] = "identity"
            HEADERS_BY.at = time.monotonic() + HEADERS_S  # the answer's headers are read before it returns
            try:
                response = inner.handle_request(request)
            finally:
                HEADERS_BY.at = None
            try:
                PAGES.ranged(request, response)
            except StartsOver:
                response.stream.close()
                raise
            if api:
                try:
                    coding = response.headers.get("Content-Encoding", "").strip().lower()
                    if coding not in ("", "identity"):
                        raise TooMuch(f"its API answered {coding}-compressed where it was asked for plain JSON")
                    PAGES.answered(request, response)
                except TooMuch:
                    response.stream.close()
                    raise
            response.stream = Body(response.stream, api)
            return response

        def close(self):
            inner.close()

    return Steady()


def _impatient(response) -> None:
    """Raise WaitTooLong for an error whose wait (read as huggingface_hub's retries read it) is over RETRY_WAIT_S;
    a shorter one is noted for RETRIES, which says it when huggingface_hub does retry."""
    if response.status_code < 400:
        return
    try:  # huggingface_hub's own readers of those headers (private: a release without them waits as it did)
        from huggingface_hub.utils._http import _parse_retry_after, parse_ratelimit_headers
    except ImportError:
        return
    limit = parse_ratelimit_headers(response.headers) if response.status_code == 429 else None
    wait = limit.reset_in_seconds if limit is not None and limit.remaining == 0 else None
    wait = _parse_retry_after(response.headers) if wait is None else wait
    if wait is not None and wait > RETRY_WAIT_S:
        raise WaitTooLong(response.status_code, wait)
    RETRIES.asked = (response.status_code, wait)


class RetryNotice(logging.Filter):
    """huggingface_hub's warning before each retry's sleep, as one line of ours: a 429 with `Retry-After: 10` was
    up to a minute of silence (its warnings are off: multi-line, with whole URLs). Only a retry it makes is said,
    so a call it does not retry (the error ends the pull) says nothing more. Its other warnings stay off."""

    RETRY = re.compile(r"(?:Rate limited\. Waiting|Retrying in) ([\d.]+)s.*\[Retry (\d+)/(\d+)\]")

    def __init__(self):
        super().__init__()
        self.repo, self.progress, self.asked = "", None, None

    def notify(self, repo: str, progress) -> None:
        """Say this pull's retries through its display (a line above the bar on a terminal)."""
        self.repo, self.progress, self.asked = repo, progress, None
        # its modules' loggers: the API's retries, and a file's (http_get asks again where a read timed out)
        for name in ("huggingface_hub.utils._http", "huggingface_hub.file_download"):
            log = logging.getLogger(name)
            if self not in log.filters:
                log.addFilter(self)
                log.setLevel(logging.WARNING)  # the library's is ERROR (set_verbosity_error): its warnings reach here

    def filter(self, record) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        text = record.getMessage()
        if m := self.RETRY.match(text):
            status, wait = self.asked or (None, None)
            said = f"answered HTTP {status}" if status else "did not answer"
            then = f" and asks to wait {wait} s; retrying" if wait is not None else f"; retrying in {float(m[1]):g} s"
            if self.progress is not None:
                self.progress._line(f"{self.repo}: {endpoint()} {said}{then} (retry {m[2]} of {m[3]})")
            self.asked = None
        elif text.endswith("Trying to resume download...") and ("timed out" in text or "answer headers" in text):
            # a file whose answer did not come within the read timeout: asked again five times, a minute each, with
            # nothing said (6 minutes of silence); a dropped connection resumes quietly, as before
            if self.progress is not None:  # a body's read waits the download's timeout, its headers HEADERS_S
                from ..env_files import hub_constants

                waited = HEADERS_S if "answer headers" in text else hub_constants().HF_HUB_DOWNLOAD_TIMEOUT
                self.progress._line(f"{self.repo}: {endpoint()} sent nothing for {waited:g} s; asking again")
        elif " thrown while requesting " in text and not text.startswith("HTTP Error "):
            self.asked = None  # a connection error, not an answer: what an earlier answer asked is not this one's
        return False


RETRIES = RetryNotice()


def header_names(url: str, limit: int) -> list[str] | None:
    """The tensor names of the safetensors file at `url`, from its header alone: its first PEEK bytes, then the rest
    of a longer header, by Range requests. None where the bytes are not a safetensors header of at most `limit`
    bytes (the load will say what they are)."""
    head = _first_bytes(url, 0, PEEK)
    n = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if not 0 < n <= limit:
        return None
    if 8 + n > len(head):
        head += _first_bytes(url, len(head), 8 + n)
    try:
        header = json.loads(head[8 : 8 + n])
    except ValueError:
        return None
    return [k for k in header if k != "__metadata__"] if isinstance(header, dict) else None


def _first_bytes(url: str, start: int, end: int) -> bytes:
    """Bytes start..end of `url`, streamed and cut off there: a server that ignores the Range answers 200 with the
    whole file, of which no more than `end` bytes are read."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    headers = {**build_hf_headers(), "Range": f"bytes={start}-{end - 1}"}
    with get_session().stream("GET", url, headers=headers, follow_redirects=True) as r:
        hf_raise_for_status(r)
        skip = start if r.status_code == 200 else 0
        got = bytearray()
        for chunk in r.iter_bytes():
            got += chunk
            if len(got) >= skip + end - start:
                break
    return bytes(got[skip : skip + end - start])

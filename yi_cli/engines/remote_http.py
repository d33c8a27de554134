"""HTTP for the remote engine: requests to an Endpoint (remote_endpoint.py) with its credentials, redirects kept
to the same host, and every answer read within bounds of bytes and time (no torch).

Bounds: a line of the event stream, a whole stream, a JSON answer (/models) and an error body each have a byte
limit, checked while reading in the socket's own chunks (at most 64 KiB), so memory stays near the limit whatever
the server sends. Time: a connect timeout, an idle timeout on *data* (SSE comments and keep-alives do not reset it)
and an overall deadline per request. A watcher thread enforces the idle timeout, the deadline and the caller's
cancel Event by shutting the socket down, which wakes a read blocked in it at once (closing alone would not).
"""

from __future__ import annotations

import base64
import errno
import html
import json
import math
import os
import re
import selectors
import socket
import threading
from contextlib import contextmanager
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from .. import clock, env_files, http_env
from ..errors import UsageError, YiError
from .remote_endpoint import Endpoint, Redactor, shown_url
from .remote_limits import Limits

try:  # httpcore's own stream over a socket (not exported): Connector hands its sockets back in it
    from httpcore._backends.sync import SyncStream
except ImportError:  # an httpcore laid out otherwise: the trace hook alone holds each socket, once connected
    SyncStream = None

REDIRECTS = (301, 302, 303, 307, 308)
BLANKS = re.compile(rb"[\r\n]*")  # a run of line ends: blank lines of an event stream
LINE_END = re.compile(rb"\r\n|\r|\n")  # an event stream's line ends, all three
BOM = b"\xef\xbb\xbf"


class Watch:
    """One request's time bounds and cancel: a thread that shuts the socket down when the caller cancels, the
    deadline passes, or no data event came for idle_timeout; `why` says which."""

    POLL = 0.05  # seconds: how late a cancel is seen, at most

    def __init__(self, limits: Limits, cancel: threading.Event | None):
        self.limits = limits
        self.cancel = cancel or threading.Event()
        self.start = self.last = clock.now()
        self.idle = limits.idle_timeout  # seconds of silence that end the request (less once the reply has ended)
        self.ending = False  # the finish reason came: only more text restarts the idle clock
        self.why: str | None = None  # "cancel" | "deadline" | "idle"
        self.socks: list[socket.socket] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="yi-remote-watch", daemon=True)
        self.thread.start()

    def hold(self, sock: socket.socket) -> None:
        """Watch `sock` from now on, through a duplicate of its descriptor: TLS takes the plain socket's descriptor
        over (wrap_socket detaches it), and a shutdown through the duplicate still stops the handshake; closed by
        stop(), after the request's own close."""
        try:
            self.socks.append(sock.dup())
        except OSError:  # out of descriptors: the connect timeout still bounds it
            return
        if self.why:
            self._shut()

    def trace(self, event: str, info: dict) -> None:
        """httpcore's trace hook: the socket once connected, where the pool's backend could not be replaced by
        Connector (which holds it before it connects)."""
        if event == "connection.connect_tcp.complete":
            sock = info["return_value"].get_extra_info("socket")
            if sock is not None:
                self.hold(sock)

    def data(self) -> None:
        """A data event (not a comment) arrived: the idle clock restarts, unless the reply has ended (an empty
        chunk each second after the finish reason held the reply open to the deadline)."""
        if not self.ending:
            self.last = clock.now()

    def finishing(self, seconds: float | None) -> None:
        """The reply has ended (its finish reason came): what may follow comes at once, or the request ends after
        `seconds` of silence, not the whole idle timeout. None: the idle timeout again (more text came)."""
        self.ending = seconds is not None
        if self.ending:
            self.idle = min(self.idle, seconds)
        else:
            self.idle, self.last = self.limits.idle_timeout, clock.now()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()
        for s in self.socks:
            s.close()

    def _run(self) -> None:
        lim = self.limits
        while not self.done.wait(self.POLL):
            now = clock.now()
            why = (
                "cancel"
                if self.cancel.is_set()
                else "deadline"
                if now - self.start >= lim.deadline
                else "idle"
                if now - self.last >= self.idle
                else None
            )
            if why:
                self.why = why
                self._shut()
                return

    def _shut(self) -> None:
        for s in self.socks:
            try:  # wakes a blocked read, a TLS handshake and (on Linux) a connect, without touching SSL state
                s.shutdown(socket.SHUT_RDWR)
            except OSError:  # not connected yet, or already shut
                pass


@contextmanager
def _connect_errors():
    """OSError as httpcore's connect errors, which httpx maps to its own (as httpcore's backend does)."""
    try:
        yield
    except TimeoutError as e:
        raise httpcore.ConnectTimeout(str(e)) from e
    except OSError as e:
        raise httpcore.ConnectError(str(e)) from e


class Connector(httpcore.SyncBackend):
    """httpcore's socket backend with a connect the watch can stop: a cancel, the deadline or the idle timeout ends
    a connect to a host that drops the SYN at once, where Ctrl-C waited out --connect-timeout; the watch holds the
    socket from before its connect, so the TLS handshake that follows is stopped the same way. The host name is
    looked up on a thread of its own and waited for the same way (a DNS server that never answers held Ctrl-C for
    as long as the C library's resolver retried)."""

    def __init__(self, watch: Watch):
        self.watch = watch

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        # socket.create_connection's loop over the addresses, each connect polled as the watch polls
        error: OSError | None = None
        end = clock.now() + (timeout if timeout is not None else math.inf)
        with _connect_errors():
            for family, kind, proto, _, addr in self._resolve(host, port, end):
                sock = socket.socket(family, kind, proto)
                try:
                    self.watch.hold(sock)
                    if local_address is not None:
                        sock.bind((local_address, 0))
                    for option in socket_options or ():
                        sock.setsockopt(*option)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self._connect(sock, addr, end)
                    sock.settimeout(timeout)  # httpcore's stream sets each read's and write's own
                    return SyncStream(sock)
                except OSError as e:
                    sock.close()
                    if self.watch.why or isinstance(e, TimeoutError):
                        raise
                    error = e
            raise error or OSError("the host name resolves to no address")

    def _resolve(self, host, port, end: float) -> list:
        """getaddrinfo's answer, waited for as a connect is: the lookup runs on a daemon thread (the C call cannot be
        interrupted), left to finish alone when the watch stops the request or the connect timeout passes."""
        answer: dict = {}
        done = threading.Event()

        def look_up():
            try:
                answer["addresses"] = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
            except Exception as e:  # gaierror, or whatever else: raised in the caller's thread, as before
                answer["error"] = e
            finally:
                done.set()

        try:
            threading.Thread(target=look_up, name="yi-remote-resolve", daemon=True).start()
        except RuntimeError:  # no thread to be had: looked up here, as before
            look_up()
        while not done.wait(max(0.0, min(end - clock.now(), Watch.POLL))):
            if self.watch.why:
                raise OSError(errno.ECANCELED, f"stopped ({self.watch.why})")
            if clock.now() >= end:
                raise TimeoutError("timed out looking up the host name")
        if "error" in answer:
            raise answer["error"]
        return answer["addresses"]

    def _connect(self, sock: socket.socket, addr, end: float) -> None:
        sock.setblocking(False)
        err = sock.connect_ex(addr)
        with selectors.DefaultSelector() as sel:  # not select(): a descriptor past 1024 is its ValueError
            sel.register(sock, selectors.EVENT_WRITE)
            while err in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
                if self.watch.why:
                    raise OSError(errno.ECANCELED, f"stopped ({self.watch.why})")
                left = end - clock.now()
                if left <= 0:
                    raise TimeoutError("timed out")
                if sel.select(min(left, Watch.POLL)):
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))

    @staticmethod
    def install(client: httpx.Client, watch: Watch) -> None:
        """The client's connection pools (its own and its proxies') connect through a Connector. httpx has no
        public way to pass a backend; where its internals differ the trace hook still holds each socket once it
        is connected."""
        if SyncStream is None:
            return
        for transport in (client._transport, *client._mounts.values()):
            pool = getattr(transport, "_pool", None)
            if pool is not None and hasattr(pool, "_network_backend"):
                pool._network_backend = Connector(watch)


# The keys servers' own docs give for a server that checks none: Ollama's, vLLM's and SGLang's, LM Studio's,
# llama.cpp's llama-server's, llamafile's; and the words put there for any such server (compared without case):
# a key `none` masked every "none" out of the replies, as *** (saved so).
PLACEHOLDER_KEYS = frozenset({"ollama", "empty", "lm-studio", "sk-no-key-required", "no-key", "not-needed"})
PLACEHOLDER_KEYS |= {"none", "null", "dummy", "test", "key", "nokey", "placeholder", "anything", "sk-xxx", "xxx"}


class Transport:
    """Requests to one endpoint with one set of credentials and limits."""

    def __init__(self, endpoint: Endpoint, api_key: str | None, limits: Limits, verify=True):
        self.endpoint = endpoint
        self.limits = limits
        self.headers = {"Accept-Encoding": "identity"}  # compressed bodies could not be bounded while read
        api_key = (api_key or "").strip()  # `$(cat keyfile)` ends in a newline
        if not env_files.header_text(api_key):  # the message must not echo it
            raise UsageError("the API key has a character that cannot go in an HTTP header (only printable ASCII)")
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
            if "api-version=" in endpoint.query:  # Azure-style endpoints read the key from api-key
                self.headers["api-key"] = api_key
        elif endpoint.user is not None:
            self.headers["Authorization"] = (
                "Basic " + base64.b64encode(f"{endpoint.user}:{endpoint.password or ''}".encode()).decode()
            )
        # A server's documented placeholder key is no secret: `OPENAI_API_KEY=ollama` masked the word out of every
        # reply about Ollama (`***.com/install.sh`, saved so), and vLLM's EMPTY every "EMPTY".
        secret = api_key if api_key and api_key.lower() not in PLACEHOLDER_KEYS else None
        self.redact = Redactor(([secret] if secret else []) + endpoint.secrets())
        # what a proxy says goes into errors only: the server beyond it never sees the proxy's login, and a reply's
        # words ("ask the user for the password") were masked where the proxy's user was `user`
        self.redact_errors = Redactor(self.redact.secrets + proxy_secrets(endpoint.url()))
        # One TLS context for the engine's life (loading the CA bundle per request costs ~20 ms).
        self.verify = http_env.tls_context(httpx, verify)
        self._client().close()  # a proxy from the environment that cannot be used, said now, once

    def _client(self, timeout: httpx.Timeout | None = None) -> httpx.Client:
        def make():
            return httpx.Client(headers=self.headers, timeout=timeout, verify=self.verify, trust_env=True)

        return http_env.client(make, httpx, self.redact)

    def fail(self, shown: str, what: str) -> YiError:
        return YiError(self.redact_errors(f"{shown}: {what}"))

    @contextmanager
    def request(self, method: str, route: str, body: dict | None = None, cancel: threading.Event | None = None):
        """Send one request and yield an Answer whose status is below 400, redirects within the same host followed.
        Failures raise YiError with one line naming the URL as shown (credentials hidden)."""
        lim = self.limits
        watch = Watch(lim, cancel)
        ep = self.endpoint
        url, shown = ep.url(route), ep.shown(route)
        # The watch ends a silence (idle_timeout) on clock.now(), which leaves a Ctrl-Z's stop out; a socket's read
        # timeout counts it, and cut a reply stopped longer than that on `fg`. Only the deadline bounds the reads.
        timeout = httpx.Timeout(lim.deadline + 1, connect=lim.connect_timeout)
        try:
            with self._client(timeout) as client:
                Connector.install(client, watch)
                for _ in range(lim.max_redirects + 1):
                    req = client.build_request(method, url, json=body, extensions={"trace": watch.trace})
                    resp = client.send(req, stream=True)
                    if resp.status_code not in REDIRECTS:
                        break
                    resp.close()
                    url, shown = self._redirect(url, shown, resp, route)
                else:
                    raise self.fail(shown, f"more than {lim.max_redirects} redirects")
                try:
                    answer = Answer(self, resp, watch, shown)
                    answer.check_status()
                    yield answer
                finally:
                    resp.close()
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as e:
            raise self.transport_error(e, watch, shown) from None
        except UnicodeEncodeError:  # a lone surrogate in the request's JSON, where a check above missed it
            raise self.fail(shown, "the request holds text that is not valid Unicode; not sent") from None
        except UnicodeError:  # a host name the IDNA rules refuse, where Endpoint's own check passed it
            raise self.fail(shown, "the host name is not a valid internet name (IDNA)") from None
        finally:
            watch.stop()

    def _redirect(self, url: str, shown: str, resp: httpx.Response, route: str) -> tuple[str, str]:
        """Follow http -> https and moves within the same origin; refuse any other host, where the key must not go."""
        loc = resp.headers.get("location")
        if not loc:
            raise self.fail(shown, f"HTTP {resp.status_code} redirect without a Location")
        try:
            target = urljoin(url, loc)
            t, here = urlsplit(target), urlsplit(url)
            t_port = t.port if t.port is not None else (443 if t.scheme == "https" else 80)
        except ValueError:
            raise self.fail(shown, f"HTTP {resp.status_code} redirect to an invalid URL") from None
        h_port = here.port if here.port is not None else (443 if here.scheme == "https" else 80)
        same_host = (t.hostname or "").lower() == (here.hostname or "").lower()
        upgrade = here.scheme == "http" and t.scheme == "https"
        if not same_host or not (upgrade or (t.scheme == here.scheme and t_port == h_port)):
            shown_target = shown_url(target)
            if not same_host:
                why = "another host"
            elif t.scheme == here.scheme:
                why = "another port"
            else:
                why = "a downgrade to http" if t.scheme == "http" else f"another scheme, {t.scheme}"  # [a-z0-9+.-]
            raise self.fail(
                shown,
                f"redirected to {shown_target} ({why}); not followed, so the credentials are "
                f"not sent there (use that URL as --endpoint if you trust it)",
            )
        try:
            moved = self.endpoint.moved(target, route)
        except UsageError:  # a URL no endpoint can be (port 0, a space in the host)
            raise self.fail(shown, f"HTTP {resp.status_code} redirect to an invalid URL") from None
        if moved is not None:
            self.endpoint = moved  # later requests go straight to the new place
        return target, self.endpoint.shown(route) if moved else shown_url(target)

    def transport_error(self, e: Exception, watch: Watch, shown: str) -> YiError:
        lim = self.limits
        if watch.why == "deadline":
            return self.fail(shown, f"no complete answer within the {lim.deadline:g} s deadline (--deadline)")
        if watch.why == "idle":
            return self.fail(shown, f"no data from the server for {lim.idle_timeout:g} s (--idle-timeout)")
        text = one_line(str(e))  # its "…" where cut: the redaction masks a secret's first characters before it
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            detail = text.split("certificate verify failed:")[-1].split("(_ssl")[0].strip(" :")
            return self.fail(
                shown,
                f"TLS: the server's certificate is not trusted ({detail or 'verify failed'}); "
                f"for a private CA point SSL_CERT_FILE at its certificate",
            )
        if isinstance(e, httpx.ConnectError) and ("SSL" in text or "TLS" in text):
            return self.fail(shown, f"TLS handshake failed ({text})")
        if isinstance(e, httpx.ConnectTimeout):
            return self.fail(shown, f"cannot connect within {lim.connect_timeout:g} s (--connect-timeout)")
        if isinstance(e, httpx.ConnectError):
            via = env_files.proxy_for(self.endpoint.url())
            return self.fail(
                shown, f"cannot connect{f' through {via}' if via else ''} ({text or 'connection refused'})"
            )
        if isinstance(e, httpx.TimeoutException):
            return self.fail(shown, f"no data from the server for {lim.idle_timeout:g} s (--idle-timeout)")
        if text.startswith("Invalid URL in location header"):  # httpx reads a redirect's Location as it comes
            return self.fail(shown, f"a redirect to an invalid URL ({text.partition(': ')[2] or text})")
        if isinstance(e, (httpx.RemoteProtocolError, httpx.ReadError)):
            return self.fail(shown, f"the connection dropped mid-stream ({text})")
        return self.fail(shown, f"{e.__class__.__name__}: {text}")


def proxy_secrets(url: str) -> list[str]:
    """The password of the environment's proxy that a request to `url` goes through, and its `user:password` (what
    Proxy-Authorization carries, base64-encoded): a proxy's 407 that quoted them showed them in clear. A value that
    is not UTF-8 can be in no answer as such: none."""
    from urllib.parse import unquote

    found = env_files.proxy_setting(url)
    if found is None or "@" not in found[1]:
        return []
    user, _, password = found[1].split("//", 1)[-1].rsplit("@", 1)[0].partition(":")
    try:
        user, password = unquote(user, errors="strict"), unquote(password, errors="strict")
        (user + password).encode("utf-8")
    except (UnicodeError, ValueError):
        return []
    return [password, f"{user}:{password}"] if password else []


class Answer:
    """A response being read: bounded lines for event streams, bounded bytes for JSON."""

    def __init__(self, transport: Transport, resp: httpx.Response, watch: Watch, shown: str):
        self.t, self.resp, self.watch, self.shown = transport, resp, watch, shown
        self.content_type = resp.headers.get("content-type", "").split(";")[0].strip().lower()
        self.reads = 0  # the body's chunks read so far: what came in one read came at once
        self._raw = None  # the body's one iterator (httpx reads a body once); _ahead: its chunks read by starts()
        self._ahead: list[bytes] = []

    def fail(self, what: str) -> YiError:
        return self.t.fail(self.shown, what)

    def check_status(self) -> None:
        resp = self.resp
        enc = resp.headers.get("content-encoding", "identity").strip().lower()
        compressed = enc not in ("", "identity")
        if compressed and resp.status_code < 400:
            raise self.fail(f"the answer is compressed ({enc}) although yi-chat asked for none")
        if resp.status_code < 400:
            return
        if compressed:  # the status still says what went wrong (a 401's hint too); the words cannot be read
            detail = f"its message compressed ({enc}), which yi-chat asked for none of"
        else:
            limit = self.t.limits.max_error_bytes
            body = self.read(limit + 1, cut=True)
            # cut within a credential, the "…" lets the redaction mask its first characters too
            detail = error_message(body[:limit])
            detail += "…" if len(body) > limit and not detail.endswith("…") else ""
        hint = " (check --api-key / $OPENAI_API_KEY)" if resp.status_code in (401, 403) else ""
        # a server may send no reason phrase ("HTTP/1.1 404 \r\n"): the status's standard words, else none
        words = resp.reason_phrase.strip() or httpx.codes.get_reason_phrase(resp.status_code)
        status = f"HTTP {resp.status_code}" + (f" {words}" if words else "")
        raise self.fail(status + (f": {detail}" if detail else "") + hint)

    def chunks(self):
        """The body's raw chunks as the socket gives them (64 KiB at most each), those starts() read first;
        transport failures as YiError. A cancel ends the body quietly; the deadline and the idle timeout raise."""
        while self._ahead:
            yield self._ahead.pop(0)
        if self._raw is None:
            self._raw = self._body()
        yield from self._raw

    def starts(self, prefix: bytes) -> bool:
        """Whether the body, past white space, starts with `prefix`: its first chunks read ahead, given again by
        chunks()."""
        if self._raw is None:
            self._raw = self._body()
        while len(head := b"".join(self._ahead).lstrip()) < len(prefix):
            chunk = next(self._raw, None)
            if chunk is None:
                break
            self._ahead.append(chunk)
        return head.startswith(prefix)

    def _body(self):
        try:
            for chunk in self.resp.iter_raw():
                self.reads += 1
                yield chunk
                if self.watch.why:
                    break
        except httpx.HTTPError as e:
            if self.watch.why != "cancel":
                raise self.t.transport_error(e, self.watch, self.shown) from None
        if self.watch.why in ("deadline", "idle"):
            raise self.t.transport_error(httpx.ReadError(""), self.watch, self.shown)

    def read(self, limit: int, what: str = "answer", cut: bool = False) -> bytes:
        """The whole body, refused past `limit` bytes (or cut there with cut=True, for error bodies)."""
        declared = self.resp.headers.get("content-length", "")
        if not cut and declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise self.fail(f"the {what} is {int(declared)} bytes, over the limit of {limit}")
        buf = bytearray()
        for chunk in self.chunks():
            self.watch.data()
            buf += chunk[: limit + 1 - len(buf)]
            if len(buf) > limit:
                if cut:
                    return bytes(buf[:limit])
                raise self.fail(f"the {what} is over the limit of {limit} bytes")
        return bytes(buf)

    def lines(self):
        """The body's lines that are not blank (bytes, without the line end), each at most max_line_bytes and all
        of them at most max_stream_bytes: past either the answer is refused with a clear line, holding no more than
        the limit; after a line, a run of blank lines (the end of an event) is one empty line, passed over at once
        (the reader skips them: 64 MiB of them, one at a time, cost 136 s of CPU). As the event stream format has
        them: a line ends at CRLF, LF or a lone CR (a stream of CR-ended lines was one bad line, the reply lost), and
        a UTF-8 BOM that starts the stream is not the first line's (its event was skipped without a word)."""
        lim = self.t.limits
        buf, total, first, open_line = bytearray(), 0, True, False
        for chunk in self.chunks():
            total += len(chunk)
            if total > lim.max_stream_bytes:
                raise self.fail(f"the event stream is over the limit of {lim.max_stream_bytes} bytes")
            buf += chunk
            if first:
                if BOM.startswith(buf):  # all of it may yet be the BOM: wait for more
                    continue
                first = False
                if buf.startswith(BOM):
                    del buf[: len(BOM)]
            start = BLANKS.match(buf).end()
            if start and open_line:  # the line before ended the last chunk: these are blank lines after it
                open_line = False
                yield b""
            while (end := LINE_END.search(buf, start)) is not None:
                if end.start() - start > lim.max_line_bytes:
                    break
                if end.group() == b"\r" and end.end() == len(buf):  # a CR whose LF may be in the next chunk
                    break
                yield bytes(buf[start : end.start()])
                start = BLANKS.match(buf, end.end()).end()
                open_line = start == end.end()
                if not open_line:
                    yield b""
            del buf[:start]
            if len(buf) - buf.endswith(b"\r") > lim.max_line_bytes:  # a CR held for its LF is the line's end
                raise self.fail(f"a line of the event stream is over the limit of {lim.max_line_bytes} bytes")
        if buf := buf.rstrip(b"\r\n"):
            yield bytes(buf.removeprefix(BOM) if first else buf)


def error_message(body: bytes) -> str:
    """The server's own words from the error shapes in use: OpenAI/vLLM/llama.cpp/Azure {"error": {"message"}},
    ollama {"error": "..."}, older vLLM {"message"}, FastAPI {"detail"}; an HTML page's title (a proxy's 502),
    else its text without the tags (it was shown as tag soup); else the body, its lines joined."""
    text = body.decode("utf-8", errors="replace").removeprefix("\ufeff")  # a byte order mark hid either shape
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        obj = None
    msg = None
    if isinstance(obj, dict):
        err = obj.get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        msg = msg or obj.get("message") or obj.get("detail")
    if not msg and text.lstrip().startswith("<"):  # an HTML error page (a proxy's): its title, else its text
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
        msg = html.unescape(title[1] if title and title[1].strip() else re.sub(r"<[^>]*>", " ", text))
    return one_line(str(msg) if msg else text)


def one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

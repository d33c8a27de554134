"""The remote engine's connect, its environment and the numbers and names a server hands it: a host that never
answers the SYN or the TLS handshake, or whose name no DNS server answers, is left at once on a cancel or the deadline
(not after --connect-timeout; a lookup is bounded by --connect-timeout too); a
proxy or a CA file from the environment that cannot be used is one line, exit 2; a usage count past what a session
stores, a listed model id that is no text, a 200 that is only an error and a redirect to a URL no endpoint can be
are each handled in one line. Real sockets on 127.0.0.1; a wait that would hang is bounded by a watchdog join."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from tests.compat_servers import Server
from yi_cli.engines.events import FINISH_INTERRUPTED, Finish, Text
from yi_cli.engines.remote import RemoteEngine
from yi_cli.engines.remote_http import Limits
from yi_cli.engines.settings import GenSettings
from yi_cli.engines.template import Prompt
from yi_cli.errors import EXIT_USAGE, LoadError, UsageError, YiError
from yi_cli.http_env import PROXY_VARS

HELLO = Prompt([{"role": "user", "content": "hello"}])
WATCHDOG_S = 120  # far past the ~50 ms a stopped connect takes; the connect timeouts below are 600 s


def stream_in_thread(engine, cancel: threading.Event):
    """engine.stream's events, or the error it raised; None where it was still running after WATCHDOG_S."""
    out = {}

    def go():
        try:
            out["events"] = list(engine.stream(HELLO, GenSettings(), cancel))
        except YiError as e:
            out["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(WATCHDOG_S)
    return None if t.is_alive() else out


@pytest.fixture
def unanswered_port():
    """A port whose SYNs go unanswered: a listener whose accept queue is full and never drained."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    port = ls.getsockname()[1]
    filler = []
    for _ in range(8):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        filler.append(c)
    yield port
    for c in filler:
        c.close()
    ls.close()


@pytest.fixture
def mute_port():
    """A port whose server accepts and then says nothing: a TLS handshake there never completes."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    held, stop = [], threading.Event()

    def accept():
        ls.settimeout(0.05)
        while not stop.is_set():
            try:
                held.append(ls.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield ls.getsockname()[1]
    stop.set()
    t.join()
    for c in held:
        c.close()
    ls.close()


def test_a_cancel_ends_a_connect_that_the_host_never_answers(unanswered_port):
    engine = RemoteEngine(
        f"http://127.0.0.1:{unanswered_port}/v1", None, model="m", limits=Limits(connect_timeout=600, deadline=600)
    )
    cancel = threading.Event()
    cancel.set()  # Ctrl-C while the connect waits: seen at the watch's next poll
    out = stream_in_thread(engine, cancel)
    assert out is not None, "the connect went on after the cancel"
    assert out.get("error") is None and isinstance(out["events"][-1], Finish)
    assert out["events"][-1].stats.finish_reason == FINISH_INTERRUPTED
    assert not any(isinstance(e, Text) for e in out["events"])


def test_the_deadline_ends_a_tls_handshake_that_the_server_never_answers(mute_port):
    engine = RemoteEngine(
        f"https://127.0.0.1:{mute_port}/v1", None, model="m", limits=Limits(connect_timeout=600, deadline=0.5)
    )
    out = stream_in_thread(engine, threading.Event())
    assert out is not None, "the handshake went on past the deadline"
    msg = str(out["error"])
    assert "no complete answer within the 0.5 s deadline (--deadline)" in msg and "\n" not in msg


@pytest.fixture
def hung_name(monkeypatch):
    """A host name whose lookup never answers, as behind a DNS server that drops every query: getaddrinfo is
    replaced for this one name (no resolver here can be made to hang), and released when the test ends."""
    name, release = "never-answers.invalid", threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == name:
            release.wait()
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield name
    release.set()


def test_a_cancel_ends_a_host_name_lookup_that_never_answers(hung_name):
    engine = RemoteEngine(f"http://{hung_name}:8080/v1", None, model="m", limits=Limits(connect_timeout=600))
    cancel = threading.Event()
    cancel.set()  # Ctrl-C while the name is looked up
    out = stream_in_thread(engine, cancel)
    assert out is not None, "the lookup went on after the cancel"
    assert out.get("error") is None and out["events"][-1].stats.finish_reason == FINISH_INTERRUPTED


def test_the_connect_timeout_bounds_a_host_name_lookup(hung_name):
    engine = RemoteEngine(f"http://{hung_name}:8080/v1", None, model="m", limits=Limits(connect_timeout=0.3))
    out = stream_in_thread(engine, threading.Event())
    assert out is not None, "the lookup went on past --connect-timeout"
    msg = str(out["error"])
    assert "cannot connect within 0.3 s (--connect-timeout)" in msg and "\n" not in msg


@pytest.fixture
def bare_env(monkeypatch):
    for name in (*PROXY_VARS, "NO_PROXY", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    "name, url",
    [
        pytest.param(
            "ALL_PROXY",
            "socks5://user:pw@127.0.0.1:7890",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("socksio") is not None, reason="httpx takes SOCKS proxies with socksio"
            ),
        ),
        ("HTTP_PROXY", "ftp://proxy.example:21"),
    ],
)
def test_a_proxy_from_the_environment_that_cannot_be_used_is_one_line_exit_2(bare_env, name, url):
    bare_env.setenv("HTTPS_PROXY", "http://proxy.example:3128")  # usable: not the one named
    bare_env.setenv(name, url)
    with pytest.raises(UsageError) as e:
        RemoteEngine("http://127.0.0.1:1/v1", None, model="m")
    msg = str(e.value)
    assert e.value.exit_code == EXIT_USAGE and f"unset {name} for yi-chat" in msg and "\n" not in msg
    assert "pw" not in msg  # the proxy's password is not echoed


def test_a_proxy_that_cannot_be_reached_is_named_in_the_line(bare_env):
    """`http_proxy=proxy.corp`: the line said `http://127.0.0.1:9/v1/models: cannot connect ([Errno -2] Name or
    service not known)`, a name lookup failing for a numeric address, the proxy never named (a flags hunt). Its
    password stays hidden; a host NO_PROXY names goes straight, and its line names no proxy."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    bare_env.setenv("http_proxy", f"http://me:pw-SECRET@127.0.0.1:{closed}")
    with pytest.raises(LoadError) as e:
        RemoteEngine("http://127.0.0.1:9/v1", None)  # its model list: a request
    assert f"cannot connect through http_proxy=http://***@127.0.0.1:{closed} (" in str(e.value), e.value
    assert "SECRET" not in str(e.value)
    bare_env.setenv("NO_PROXY", "127.0.0.1")
    with pytest.raises(LoadError) as e:
        RemoteEngine("http://127.0.0.1:9/v1", None)  # its model list: a request
    assert "cannot connect (" in str(e.value) and "proxy" not in str(e.value), e.value


def test_a_proxys_error_that_echoes_its_credentials_shows_them_masked(bare_env):
    """A proxy's 407 whose message quoted the login it refused (the user:password, its Proxy-Authorization in
    base64) was shown in clear, in the error line and --json's error (a review): the environment's proxy
    credentials are masked as the endpoint's own are."""
    import base64

    def answer(h):
        auth = h.headers.get("Proxy-Authorization", "")
        login = base64.b64decode(auth.split()[-1]).decode() if auth else ""
        h.json(407, {"error": {"message": f"proxy login {login} refused ({auth})"}})

    with Server(answer) as proxy:
        bare_env.setenv("HTTP_PROXY", f"http://me:Pr0xy%2FPassw0rd@127.0.0.1:{proxy.port}")
        with pytest.raises(YiError) as e:
            RemoteEngine("http://llm.example:8000/v1", None)
    msg = str(e.value)
    assert "HTTP 407" in msg and "refused" in msg, msg
    assert "Pr0xy" not in msg and base64.b64encode(b"me:Pr0xy/Passw0rd").decode()[:8] not in msg, msg
    assert "proxy login ***" in msg, msg


@pytest.mark.parametrize("proxy", [{"HTTPS_PROXY": "http"}, {"HTTP_PROXY": "http", "NO_PROXY": "127.0.0.1"}])
def test_a_proxy_login_off_the_route_masks_nothing_in_a_reply(bare_env, proxy):
    """The proxy credentials masked everywhere a reply went (a review of the fix above): with HTTPS_PROXY's user
    `user` and password `password`, "Ask the user for the password." came as "Ask the *** for the ***." from a
    server no proxy stood before (an http:// endpoint; NO_PROXY). A proxy's login is masked in errors, where a proxy
    can say it, and only the login of the proxy on the route."""

    def answer(h):
        if h.command == "GET":
            return h.json(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})
        h.sse_start()
        h.event({"choices": [{"index": 0, "delta": {"content": "Ask the user for the password."}}]})
        h.event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        h.sse_end()

    for name, value in proxy.items():
        bare_env.setenv(name, "http://user:password@127.0.0.1:9" if value == "http" else value)
    with Server(answer) as srv:
        events = list(RemoteEngine(srv.root + "/v1", None).stream(HELLO, GenSettings(), threading.Event()))
    assert "".join(e.text for e in events if isinstance(e, Text)) == "Ask the user for the password."


def test_a_proxy_setting_that_is_not_utf8_is_one_line(bare_env):
    """A proxy variable holding bytes that are not UTF-8 was an internal error (UnicodeEncodeError) once its login
    was masked (a review): it is the usage line it was."""
    bare_env.setenv("HTTP_PROXY", "http://j\udce9r\udcf4me:pw@proxy.example:3128")
    bare_env.setenv("NO_PROXY", "127.0.0.1")
    with pytest.raises(UsageError) as e:
        RemoteEngine("http://127.0.0.1:9/v1", None, model="m")
    assert "\n" not in str(e.value) and "proxies only" in str(e.value), e.value


@pytest.mark.parametrize(
    "name, value", [("NO_PROXY", "[::1]"), ("NO_PROXY", "m\u00fcnchen.de"), ("HTTP_PROXY", "http://u:pw@[::1")]
)
def test_proxy_settings_httpx_cannot_parse_are_one_line_exit_2(bare_env, name, value):
    """NO_PROXY='[::1]' (or a host name that is not ASCII, a proxy URL cut at its port) was an internal error
    (httpx's InvalidURL, a flags-and-environment hunt)."""
    bare_env.setenv(name, value)
    with pytest.raises(UsageError) as e:
        RemoteEngine("http://127.0.0.1:1/v1", None, model="m")
    msg = str(e.value)
    assert msg.startswith(f"the environment's proxy settings ({name}) cannot be used") and "pw" not in msg, msg
    # httpx's words quoted a proxy URL's parts: its password's start, where one is there
    bare_env.setenv("HTTP_PROXY", "http://bob:S3cr3t/word99@proxy.invalid:3128")
    with pytest.raises(UsageError) as e:
        RemoteEngine("http://127.0.0.1:1/v1", None, model="m")
    assert "S3cr3t" not in str(e.value) and "cannot be used; fix or unset them" in str(e.value), e.value


def test_a_ca_file_from_the_environment_that_cannot_be_read_is_one_line_exit_2(bare_env, tmp_path):
    for bad in (tmp_path / "missing.pem", tmp_path):
        bare_env.setenv("SSL_CERT_FILE", str(bad))
        with pytest.raises(UsageError) as e:
            RemoteEngine("http://127.0.0.1:1/v1", None, model="m")
        assert f"SSL_CERT_FILE / SSL_CERT_DIR ({bad}): cannot be read as CA certificates" in str(e.value)
    notcert = tmp_path / "passwd"
    notcert.write_text("root:x:0:0:root:/root:/bin/sh\n")
    bare_env.setenv("SSL_CERT_FILE", str(notcert))
    proc = subprocess.run(
        [sys.executable, "-m", "yi_cli", "--endpoint", "http://127.0.0.1:1/v1", "--model", "m", "-p", "hi"],
        env={**os.environ, "YI_CHAT_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == EXIT_USAGE and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"yi-chat: SSL_CERT_FILE / SSL_CERT_DIR ({notcert}): cannot be read as CA cert")


def words_then_usage(usage: dict):
    def answer(h):
        h.sse_start()
        for word in ("Hello", " there"):
            h.event({"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]})
        h.event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        h.event('{"choices": [], "usage": ' + usage + "}")
        h.sse_end()

    return answer


@pytest.mark.parametrize("count", ["1" + "0" * 400, "3000000000"])
def test_a_usage_count_past_what_a_session_stores_is_no_count(count):
    usage = f'{{"prompt_tokens": 7, "completion_tokens": {count}}}'
    with Server(words_then_usage(usage)) as srv:
        events = list(RemoteEngine(srv.root, None, model="m").stream(HELLO, GenSettings(), threading.Event()))
    stats = events[-1].stats
    assert "".join(e.text for e in events[:-1]) == "Hello there"
    assert stats.new_tokens == 2 and stats.prompt_tokens is None  # counted from the chunks, as without a usage
    assert stats.to_dict()["new_tokens"] == 2  # 10**400 ended here in an OverflowError


def test_a_listed_model_id_that_is_no_text_is_passed_over():
    both = '{"data": [{"id": "a\\ud800b"}, {"id": "yi-34b-chat"}]}'
    with Server(lambda h: _raw_json(h, both)) as srv:
        assert RemoteEngine(srv.root, None).name == "yi-34b-chat"
    with Server(lambda h: _raw_json(h, '{"data": [{"id": "a\\ud800b"}]}')) as srv, pytest.raises(LoadError) as e:
        RemoteEngine(srv.root, None)
    assert "the server lists no models; pass --model NAME" in str(e.value)


def test_a_listed_model_id_of_more_than_one_line_is_passed_over():
    """An id with a line break (`evil\nline2`): the banner, /model and the toolbar were split in two by it."""
    both = '{"data": [{"id": "evil\\u001b[31mRED\\nline2"}, {"id": "yi-6b-chat"}]}'
    with Server(lambda h: _raw_json(h, both)) as srv:
        assert RemoteEngine(srv.root, None).name == "yi-6b-chat"


def test_a_listed_model_id_that_is_empty_or_huge_is_passed_over():
    """An empty id named no model (every request asked for ""); one of a megabyte was the whole banner and every
    redraw of the toolbar."""
    ids = json.dumps({"data": [{"id": ""}, {"id": "  "}, {"id": "m" * 1_000_000}, {"id": "yi-6b-chat"}]})
    with Server(lambda h: _raw_json(h, ids)) as srv:
        assert RemoteEngine(srv.root, None).name == "yi-6b-chat"


def test_an_html_error_page_is_said_by_its_title():
    """A proxy's HTML error page was shown as tag soup (`HTTP 502 ...: <html><head><title>...`)."""
    page = b"<html>\n<head><title>502 Bad Gateway</title></head>\n<body><center><h1>502 Bad Gateway</h1></center>"

    def answer(h):
        h.send_response(502)
        h.send_header("Content-Type", "text/html")
        h.send_header("Content-Length", str(len(page)))
        h.end_headers()
        h.wfile.write(page)

    with Server(answer) as srv, pytest.raises(LoadError) as e:
        RemoteEngine(srv.root, None)
    assert str(e.value).endswith("502 Bad Gateway") and "<" not in str(e.value), e.value


def _raw_json(h, text: str) -> None:
    data = text.encode()
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


def test_a_model_name_that_is_not_utf8_is_a_usage_error():
    with pytest.raises(UsageError) as e:
        RemoteEngine("http://127.0.0.1:1/v1", None, model="m\udcff")  # argv's b"m\xff"
    assert e.value.exit_code == EXIT_USAGE and "the model name m\\xff is not valid UTF-8 text" in str(e.value)


@pytest.mark.parametrize(
    "url,model,said",
    [
        ("http://127.0.0.1:1/v1", "m\nFAKE", "the model name m\\nFAKE is not one line"),
        ("http://127.0.0.1:1/v1", "m\x1b[2J", "the model name m\\x1b[2J is not one line"),
        ("http://127.0.0.1:1/openai/deployments/gpt%0aFAKE?api-version=2024-10-21", None, "deployment name gpt\\nFAKE"),
    ],
    ids=["newline", "escape", "deployment"],
)
def test_a_model_name_of_more_than_one_printable_line_is_a_usage_error(url, model, said):
    """A model name with a line break (`--model`, config.toml, an Azure deployment's `%0a`) split the REPL's banner
    and toolbar in two, and an escape reached the toolbar: as a listed model id already, refused, before any
    request (port 1: nothing listens there)."""
    with pytest.raises(UsageError) as e:
        RemoteEngine(url, None, model=model)
    assert e.value.exit_code == EXIT_USAGE and said in str(e.value), str(e.value)


def test_a_200_that_is_only_an_error_shows_the_servers_words():
    with Server(lambda h: h.json(200, {"error": {"message": "quota exceeded", "code": 429}})) as srv:
        with pytest.raises(YiError) as e:
            list(RemoteEngine(srv.root, None, model="m").stream(HELLO, GenSettings(), threading.Event()))
    assert str(e.value).endswith("/chat/completions: server error: quota exceeded")


def test_a_redirect_to_a_port_no_endpoint_can_have_is_one_line():
    with Server(lambda h: h.redirect("https://127.0.0.1:0/v1/models", 307)) as srv, pytest.raises(LoadError) as e:
        RemoteEngine(srv.root + "/v1", None)
    assert str(e.value) == f"{srv.root}/v1/models: HTTP 307 redirect to an invalid URL"


def test_blank_lines_of_an_event_stream_are_passed_over_in_runs_and_the_words_still_come(monkeypatch):
    """64 MiB of blank lines cost 136 s of CPU, each one yielded and tested on its own. Runs of them (LF, CRLF, a
    CR at a chunk's end and its LF in the next) are passed over at once, said as one empty line (the end of an
    event); the data lines between come as before."""
    from yi_cli.engines import remote_http

    def answer(h):
        h.sse_start()
        h.chunk(b"\n" * 50_000 + b"\r\n" * 1000 + b'data: {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}\r')
        h.chunk(b"\n\r\n\n" + b'data: {"choices": [{"index": 0, "delta": {"content": "lo"}}]}\n\r')
        h.chunk(b"\n\n\n: keep-alive\n\n")
        h.event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        h.sse_end()

    seen: list[bytes] = []
    lines = remote_http.Answer.lines

    def counted(self):
        for line in lines(self):
            seen.append(line)
            yield line

    monkeypatch.setattr(remote_http.Answer, "lines", counted)
    with Server(answer) as srv:
        events = list(RemoteEngine(srv.root, None, model="m").stream(HELLO, GenSettings(), threading.Event()))
    assert "".join(e.text for e in events if isinstance(e, Text)) == "Hello"
    assert events[-1].stats.finish_reason == "stop"
    lines = [line for line in seen if line]
    assert len(lines) == 5, seen  # two words, a comment, the finish, [DONE]
    # each run of blank lines (an event's end) is one empty line, after a line: never two, never first
    assert seen[0] and all(a or b for a, b in itertools.pairwise(seen)) and len(seen) <= 2 * len(lines), seen

"""The remote engine against servers over real HTTP on 127.0.0.1 that answer as vLLM, llama.cpp's server, ollama
and an Azure-style endpoint do, then against hostile ones: a stream that never ends, a line that never ends, a
model list that never ends, keep-alives and nothing else, redirects elsewhere, bad chunks. Bounds are shrunk so
each case trips its limit quickly; the outcome never depends on timing luck."""

from __future__ import annotations

import json
import os
import threading
import tracemalloc

import pytest

from tests import compat_servers as cs
from tests.compat_servers import Server
from tests.fixtures import plain_chat
from yi_cli.engines.events import Finish, Text
from yi_cli.engines.remote import RemoteEngine
from yi_cli.engines.remote_endpoint import Endpoint
from yi_cli.engines.remote_http import Limits
from yi_cli.engines.settings import GenSettings
from yi_cli.engines.template import Prompt
from yi_cli.errors import EXIT_LOAD, LoadError, ReplyCut, UsageError, YiError

HELLO = [{"role": "user", "content": "hello"}]
WORDS = ["Paris", " is", " the", " capital", "."]


def run(engine, settings=None, cancel=None):
    events = list(engine.stream(Prompt(HELLO), settings or GenSettings(), cancel or threading.Event()))
    assert isinstance(events[-1], Finish) and all(isinstance(e, Text) for e in events[:-1])
    return "".join(e.text for e in events[:-1]), events[-1].stats


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


def small(**kw) -> Limits:
    return Limits(**{"connect_timeout": 5, "idle_timeout": 5, "deadline": 30, **kw})


# --- the compatibility matrix -------------------------------------------------------------------------------------

FLAVOURS = {
    "vllm": (cs.vllm_models, cs.vllm, cs.vllm_error, "/v1", "maximum context length is 32768"),
    "llamacpp": (cs.llamacpp_models, cs.llamacpp, cs.llamacpp_error, "/v1", "exceeds the available context size"),
    "ollama": (cs.ollama_models, cs.ollama, cs.ollama_error, "/v1", 'model "yi:34b" not found'),
    "azure": (
        None,
        cs.azure,
        cs.azure_error,
        "/openai/deployments/gpt-4o?api-version=2024-10-21",
        "filtered due to the prompt",
    ),
}


def flavour_server(name: str, state: dict):
    models, stream, error, _, _ = FLAVOURS[name]

    def answer(h):
        if name == "azure" and ("api-version=2024-10-21" not in h.path or h.headers.get("api-key") != "az-key-1234"):
            return h.json(
                404 if "api-version" not in h.path else 401, {"error": {"code": "404", "message": "Resource not found"}}
            )
        if h.command == "GET":
            return models(h) if models else h.json(404, {"error": {"code": "404", "message": "Resource not found"}})
        if state.get("error"):
            return error(h)
        n = h.body["max_tokens"]
        stream(h, WORDS[:n], "length" if n < len(WORDS) else "stop")

    return Server(answer)


@pytest.mark.parametrize("name", FLAVOURS)
def test_matrix_reply_usage_finish_and_errors(name):
    state = {}
    _, _, _, path, error_words = FLAVOURS[name]
    with flavour_server(name, state) as srv:
        key = "az-key-1234" if name == "azure" else None
        engine = RemoteEngine(srv.root + path, key, limits=small())
        text, stats = run(engine)
        assert text == "Paris is the capital."
        assert (stats.prompt_tokens, stats.new_tokens, stats.finish_reason) == (11, 5, "stop")
        text, stats = run(engine, GenSettings(max_new_tokens=2))
        assert text == "Paris is" and stats.finish_reason == "length" and stats.new_tokens == 2
        state["error"] = True
        with pytest.raises(YiError) as e:
            run(engine)
        msg = one_line(e)
        assert error_words in msg and "HTTP 4" in msg
    chat_paths = [r["path"] for r in srv.requests if r["method"] == "POST"]
    route = path.split("?")[0] + "/chat/completions" + ("?" + path.split("?")[1] if "?" in path else "")
    assert chat_paths == [route] * 3  # the query string (api-version) rides on every request
    if name == "azure":
        assert engine.name == "gpt-4o"  # the deployment names the model: no /models to ask
        assert all(r["headers"]["api-key"] == key for r in srv.requests)


@pytest.mark.parametrize("name", ["vllm", "llamacpp", "ollama"])
def test_matrix_first_listed_model_is_used(name):
    with flavour_server(name, {}) as srv:
        engine = RemoteEngine(srv.root, None, limits=small())  # bare host: /v1 is added
        text, _ = run(engine)
    assert text == "Paris is the capital."
    assert srv.requests[0]["path"] == "/v1/models"
    assert srv.requests[1]["body"]["model"] == engine.name != ""


@pytest.mark.parametrize(
    "form,base",
    [
        ("{root}/v1?api-version=2024-02-01", "/v1?api-version=2024-02-01"),
        ("{root}/v1/?api-version=2024-02-01", "/v1?api-version=2024-02-01"),
        ("{root}/v1/chat/completions?api-version=2024-02-01", "/v1?api-version=2024-02-01"),
        ("{root}/v1/models", "/v1"),
        ("{root}/proxy/openai/v1", "/proxy/openai/v1"),  # an OPENAI_BASE_URL with a gateway's prefix
        ("{root}", "/v1"),
    ],
)
def test_endpoint_forms_keep_the_query_on_every_request(form, base):
    def answer(h):
        return cs.vllm_models(h) if h.command == "GET" else cs.vllm(h, ["ok"])

    with Server(answer) as srv:
        engine = RemoteEngine(form.format(root=srv.root), None, limits=small())
        assert run(engine)[0] == "ok"
    path, _, query = base.partition("?")
    q = "?" + query if query else ""
    assert [r["path"] for r in srv.requests] == [f"{path}/models{q}", f"{path}/chat/completions{q}"]


def test_a_server_that_ignores_stream_true_still_answers():
    def answer(h):
        h.json(
            200,
            {
                "id": "x",
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "whole answer"}, "finish_reason": "stop"}
                ],
                "usage": cs.usage(3, 2),
            },
        )

    with Server(answer) as srv:
        text, stats = run(RemoteEngine(srv.root, None, model="m", limits=small()))
    assert text == "whole answer" and (stats.prompt_tokens, stats.new_tokens) == (3, 2)


def test_error_chunk_mid_stream_keeps_the_text_so_far():
    def answer(h):
        h.sse_start()
        h.event({"choices": [{"index": 0, "delta": {"content": "half"}}]})
        h.event(
            {"error": {"object": "error", "message": "CUDA out of memory", "type": "InternalServerError", "code": 500}}
        )
        h.sse_end()

    with Server(answer) as srv:
        chat, out, err = plain_chat(RemoteEngine(srv.root, None, model="m", limits=small()))
        chat.handle("hi")
    assert "server error mid-stream: CUDA out of memory" in err.getvalue()
    assert out.getvalue() == "half [interrupted]\n\n"
    assert chat.session.turns[-1].content == "half" and chat.session.turns[-1].finish_reason == "interrupted"


# --- hostile servers ----------------------------------------------------------------------------------------------


def test_a_stream_that_never_ends_stops_at_max_new_tokens():
    def answer(h):  # ignores max_tokens and never sends a finish reason
        h.sse_start()
        for i in cs.forever():
            h.event({"choices": [{"index": 0, "delta": {"content": f" w{i}"}, "finish_reason": None}]})

    with Server(answer) as srv:
        text, stats = run(RemoteEngine(srv.root, None, model="m", limits=small()), GenSettings(max_new_tokens=7))
    assert text == " w0 w1 w2 w3 w4 w5 w6"
    assert stats.finish_reason == "length" and stats.new_tokens == 7


def test_a_stream_of_empty_chunks_is_stopped_by_the_deadline():
    def answer(h):  # data events (they reset the idle clock) that carry no text
        h.sse_start()
        h.event({"choices": [{"index": 0, "delta": {"content": "start"}}]})
        for _ in cs.forever():
            h.event({"choices": [{"index": 0, "delta": {}}]})

    with Server(answer) as srv, pytest.raises(ReplyCut) as e:
        run(RemoteEngine(srv.root, None, model="m", limits=small(deadline=0.5)))
    assert "no complete answer within the 0.5 s deadline" in one_line(e)
    assert e.value.stats.finish_reason == "interrupted" and e.value.stats.new_tokens == 1


def endless_line(h):
    h.sse_start()
    h.chunk(b'data: {"choices": [{"delta": {"content": "')
    block = b"x" * 65536
    for _ in range(1 << 14):  # 1 GiB at most, never a newline
        h.chunk(block)


def test_an_endless_line_is_cut_at_the_limit_holding_no_more_than_it():
    limit = 1 << 20
    with Server(endless_line) as srv:
        engine = RemoteEngine(srv.root, None, model="m", limits=small(max_line_bytes=limit))
        tracemalloc.start()
        try:
            with pytest.raises(YiError) as e:
                run(engine)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert f"a line of the event stream is over the limit of {limit} bytes" in one_line(e)
    assert peak < 4 * limit  # the limit plus a socket read or two, not the gigabyte


def test_an_endless_stream_is_cut_at_the_stream_limit():
    def answer(h):
        h.sse_start()
        for _ in range(1 << 14):
            h.chunk(b": padding " + b"p" * 4000 + b"\n")  # comments: no data, so only the byte bound can stop it

    with Server(answer) as srv, pytest.raises(YiError) as e:
        run(RemoteEngine(srv.root, None, model="m", limits=small(max_stream_bytes=1 << 20)))
    assert "the event stream is over the limit of 1048576 bytes" in one_line(e)


@pytest.mark.parametrize("declared", [True, False])
def test_a_huge_model_list_is_refused(declared):
    def answer(h):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header(*(("Content-Length", str(1 << 30)) if declared else ("Transfer-Encoding", "chunked")))
        h.end_headers()
        entry = b'{"id": "model-0000", "object": "model"},' * 1000
        head = b'{"object": "list", "data": ['
        if declared:
            h.wfile.write(head)
            for _ in range((1 << 30) // len(entry)):
                h.wfile.write(entry)
        else:
            h.chunk(head)
            for _ in range((1 << 30) // len(entry)):
                h.chunk(entry)

    with Server(answer) as srv:
        tracemalloc.start()
        try:
            with pytest.raises(LoadError) as e:
                RemoteEngine(srv.root, None, limits=small(max_json_bytes=1 << 20))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    msg = one_line(e)
    assert "the model list is" in msg and "over the limit of 1048576" in msg and e.value.exit_code == EXIT_LOAD
    assert peak < 4 << 20


def test_keepalives_alone_do_not_hold_off_the_idle_timeout():
    def answer(h):
        h.sse_start()
        for _ in cs.forever():
            h.chunk(b": ping\n\n")
            h.wait_for_close(0.02)  # a keep-alive every 20 ms, forever

    with Server(answer) as srv:
        chat, _, err = plain_chat(RemoteEngine(srv.root, None, model="m", limits=small(idle_timeout=0.5)))
        chat.handle("hi")
    assert "no data from the server for 0.5 s (--idle-timeout)" in err.getvalue()
    assert chat.session.turns == [] and chat.failures == 1  # nothing came: nothing to keep


def test_a_redirect_to_another_host_is_refused_and_the_key_stays_home():
    with Server(lambda h: h.json(200, {"data": [{"id": "elsewhere"}]}), host="localhost") as other:

        def answer(h):
            h.redirect(f"http://localhost:{other.port}{h.path}", 307)

        with Server(answer) as srv, pytest.raises(LoadError) as e:
            RemoteEngine(srv.root + "/v1", "sk-secret-1234", limits=small())
    msg = one_line(e)
    assert f"redirected to http://localhost:{other.port}/v1/models (another host); not followed" in msg
    assert "credentials are not sent there" in msg and "sk-secret-1234" not in msg
    assert other.requests == []


def test_a_redirect_loop_ends():
    with Server(lambda h: h.redirect(h.path, 302)) as srv, pytest.raises(LoadError) as e:
        RemoteEngine(srv.root, None, limits=small())
    assert "more than 5 redirects" in one_line(e)


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    pair = cs.self_signed(tmp_path_factory.mktemp("tls"))
    if pair is None:
        pytest.skip("no openssl tool to make a test certificate")
    return pair


def test_http_to_https_on_the_same_host_is_followed(cert, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", cert[0])  # the test CA, as a user with a private CA would

    def secure(h):
        return cs.vllm_models(h) if h.command == "GET" else cs.vllm(h, ["safe"])

    with (
        Server(secure, tls=cert) as tls,
        Server(lambda h: h.redirect(f"https://127.0.0.1:{tls.port}{h.path}", 301)) as plain,
    ):
        engine = RemoteEngine(plain.root + "/v1?api-version=1", "sk-key-5678", limits=small())
        assert run(engine)[0] == "safe"
    assert [r["path"] for r in plain.requests] == ["/v1/models?api-version=1"]  # then straight to https
    assert [r["path"] for r in tls.requests] == ["/v1/models?api-version=1", "/v1/chat/completions?api-version=1"]
    assert engine.base == f"https://127.0.0.1:{tls.port}/v1?api-version=1"


def test_an_untrusted_certificate_is_one_line_exit_3(cert):
    with Server(cs.vllm_models, tls=cert) as tls, pytest.raises(LoadError) as e:
        RemoteEngine(tls.root, None, limits=small())
    msg = one_line(e)
    assert "TLS: the server's certificate is not trusted" in msg and "SSL_CERT_FILE" in msg


def test_https_to_http_downgrade_is_refused(cert, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", cert[0])
    with (
        Server(lambda h: h.redirect(f"http://127.0.0.1:1{h.path}", 308), tls=cert) as tls,
        pytest.raises(LoadError) as e,
    ):
        RemoteEngine(tls.root, "sk-key-5678", limits=small())
    assert "downgrade to http); not followed" in one_line(e)


def test_a_redirect_to_another_scheme_or_port_says_which():
    """A redirect to ftp:// on the same port was refused as "another port or a downgrade to http"."""
    for target, why in (
        ("ftp://127.0.0.1:{port}/v1/models", "another scheme, ftp"),
        ("http://127.0.0.1:1/v1", "another port"),
    ):
        with Server(lambda h, t=target: h.redirect(t.format(port=h.server.server_address[1]), 307)) as srv:
            with pytest.raises(LoadError) as e:
                RemoteEngine(srv.root, "sk-key-5678", limits=small())
        assert f"({why}); not followed" in one_line(e), one_line(e)


BAD_CHUNKS = [
    ('{"choices": [{"index": 0, "delta": {"content": "a\\ud800b"}}]}', "lone surrogate"),
    ('{"choices": [{"index": 0, "delta": {"content": "\\udc00b"}}]}', "lone surrogate"),  # no first half before
    ('{"choices": [{"index": 0, "delta": {"content": "a\\ud800\\n"}}]}', "lone surrogate"),  # not at the end
    ('{"choices": [{"index": 0, "delta": {"content": 42}}]}', "content is not text"),
    ('{"choices": [{"index": 0, "delta": {"content": ["a", "b"]}}]}', "content is not text"),
    ('{"choices": [{"index": 0, "delta": {"content": "unterminated', "not JSON"),
    ("[1, 2, 3]", "not a JSON object"),
    ('{"choices": "none"}', "choices is not a list"),
    ("[" * 100000, "not JSON"),  # nested past the parser's recursion limit
]


@pytest.mark.parametrize("bad,why", BAD_CHUNKS)
def test_bad_chunks_are_skipped_with_a_note(bad, why):
    def answer(h):
        h.sse_start()
        h.event({"choices": [{"index": 0, "delta": {"content": "good"}}]})
        h.event(bad)
        h.chunk(b"data: \xff\xfe not utf-8\n\n")
        h.event({"choices": [{"index": 0, "delta": {"content": " end"}, "finish_reason": "stop"}]})
        h.sse_end()

    notes = []
    with Server(answer) as srv:
        text, stats = run(RemoteEngine(srv.root, None, model="m", limits=small(), notify=notes.append))
    assert text == "good end" and stats.finish_reason == "stop"
    assert len(notes) == 1 and "skipped 2 bad chunks of the server's stream" in notes[0] and why in notes[0]


def test_an_event_whose_data_spans_several_lines_is_one_chunk():
    """A server that pretty-prints its chunks sends each of their lines as a `data:` line of one event (SSE
    libraries such as sse-starlette split data so), which the format joins with new lines: each line was skipped as
    a bad chunk ("skipped 2 bad chunks", "Hello" lost, exit 0; a review). Lines of an event that join no JSON are
    bad chunks, each, and the events after them are taken (a first fix joined lines across events: one bad event,
    or a list of numbers pretty-printed, lost the reply after it)."""

    def pretty(h, obj, end=b"\n"):
        text = json.dumps(obj, indent=2)
        h.chunk(b"".join(b"data: " + line.encode() + b"\n" for line in text.splitlines()) + end)

    def answer(h):
        h.sse_start()
        h.chunk(b"data: ping\n\n")  # no JSON: a bad chunk, which takes nothing after it down with it
        h.chunk(b'data: {"choices":[{"delta":\ndata: {"content":"Hello"}}]}\n\n')
        pretty(h, {"choices": [{"index": 0, "delta": {"content": " big"}, "token_ids": [9906, 1917]}]})
        h.chunk(b"data: {not json\ndata: still not\n\n")
        pretty(h, {"choices": [{"index": 0, "delta": {"content": " world"}}]}, end=b"\r\n")  # its blank line split
        h.chunk(b"\r\n")
        h.event({"choices": [{"index": 0, "delta": {"content": "!"}, "finish_reason": "stop"}]})
        h.sse_end()

    notes = []
    with Server(answer) as srv:
        text, stats = run(RemoteEngine(srv.root, None, model="m", limits=small(), notify=notes.append))
    assert text == "Hello big world!" and stats.finish_reason == "stop"
    assert len(notes) == 1 and "skipped 3 bad chunks" in notes[0] and "not JSON: ping" in notes[0], notes


def test_chunks_that_come_in_one_read_give_no_decode_rate():
    """A server (or a proxy's buffer) that writes the stream's chunks at once: the footer said "33524.4 tok/s",
    --json 8089.73 one run and 32498.66 the next (a review). Their arrival says nothing of the speed: no rate, as for
    a one-chunk reply (what came in one read of the body came at once). Chunks written apart still give one."""
    import time

    def answer(h, apart):
        h.sse_start()
        events = [{"choices": [{"index": 0, "delta": {"content": w}}]} for w in ["Hello", " there", "!"]]
        if apart:
            for e in events:
                h.event(e)
                time.sleep(0.05)  # the server's pace: well apart
        else:
            h.chunk(b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events))
        h.event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        h.sse_end()

    for apart in (False, True):
        with Server(lambda h, apart=apart: answer(h, apart)) as srv:
            text, stats = run(RemoteEngine(srv.root, None, model="m", limits=small()))
        assert text == "Hello there!" and stats.new_tokens == 3
        assert (stats.decode_tok_s > 0) == apart and (stats.to_dict()["decode_tok_s"] is None) == (not apart)


def test_a_character_split_between_two_chunks_as_utf16_halves_is_joined():
    """A server that streams UTF-16 code units (a JavaScript proxy slicing its text) can end a chunk with the first
    half of a character outside the BMP, a rare CJK one (𠮷, U+20BB7) or an emoji, and start the next with the second:
    JSON escapes each half alone ("\\ud842", "\\udfb7..."). Both chunks were skipped as bad ("skipped 2 bad chunks",
    the reply "家的牛肉饭"): the halves are one character. A half that nothing completes is still skipped, said."""

    def answer(h):
        h.sse_start()
        for piece in ["\ud842", "\udfb7野", "家\ud83d", "\ude00", "的牛肉饭\ud83d"]:
            h.event({"choices": [{"index": 0, "delta": {"content": piece}}]})
        h.event({"choices": [{"index": 0, "delta": {"content": "。"}, "finish_reason": "stop"}]})
        h.sse_end()

    notes = []
    with Server(answer) as srv:
        text, stats = run(RemoteEngine(srv.root, None, model="m", limits=small(), notify=notes.append))
    assert text == "\U00020bb7野家\U0001f600的牛肉饭。" and stats.finish_reason == "stop"
    assert len(notes) == 1 and "skipped 1 bad chunk" in notes[0] and "lone surrogate" in notes[0]


def test_cancel_closes_the_connection_while_the_server_is_silent():
    seen = {}
    got_request = threading.Event()
    answered = {"mid": threading.Event(), "before": threading.Event()}  # the handler thread has recorded `seen`

    def answer(h):
        when = h.body["messages"][-1]["content"]
        if when == "mid":  # a token, then silence; "before": not even the headers
            h.sse_start()
            h.event({"choices": [{"index": 0, "delta": {"content": "first"}}]})
        got_request.set()
        seen[when] = h.wait_for_close(20)  # True: the client hung up
        answered[when].set()

    with Server(answer) as srv:
        engine = RemoteEngine(srv.root, None, model="m", limits=small(idle_timeout=60))
        for when in ("mid", "before"):
            got_request.clear()
            cancel = threading.Event()
            if when == "before":
                threading.Thread(target=lambda c=cancel: (got_request.wait(10), c.set()), daemon=True).start()
            events = []
            for ev in engine.stream(Prompt([{"role": "user", "content": when}]), GenSettings(), cancel):
                events.append(ev)
                if isinstance(ev, Text):
                    cancel.set()  # Ctrl-C while the server says nothing more
            assert events[-1].stats.finish_reason == "interrupted"
            assert "".join(e.text for e in events[:-1]) == ("first" if when == "mid" else "")
            assert answered[when].wait(30)  # the server's handler runs on after the client has gone
    assert seen == {"mid": True, "before": True}  # closed by the client, not by the server's 20 s wait


def test_endpoint_parsing_and_shown_urls():
    ep = Endpoint("https://alice:s3cret%40pw@api.example.test/v1?api-version=2024-02-01&api-key=qk-999#frag")
    assert ep.url("/models") == "https://api.example.test/v1/models?api-version=2024-02-01&api-key=qk-999"
    assert ep.shown("/models") == "https://***@api.example.test/v1/models?api-version=2024-02-01&api-key=***"
    assert "s3cret@pw" in ep.secrets() and "qk-999" in ep.secrets()
    assert Endpoint("[::1]:8000").url() == "http://[::1]:8000/v1"
    assert Endpoint("localhost:11434").url("/models") == "http://localhost:11434/v1/models"
    with pytest.raises(YiError) as e:
        Endpoint("http://bob:hunter22@host:notaport/v1")
    assert "hunter22" not in str(e.value) and "***@" in str(e.value)


def test_remote_limits_from_config_are_checked():
    assert Limits.from_config({"idle_timeout": 5, "max_line_bytes": 4096}, "c.toml").idle_timeout == 5
    for bad in (
        {"idle_timeout": -1},
        {"idle_timout": 5},
        {"max_line_bytes": 1.5},
        {"deadline": float("inf")},
        {"deadline": True},
        {"deadline": "10"},
    ):
        with pytest.raises(YiError) as e:
            Limits.from_config(bad, "c.toml")
        assert e.value.exit_code == 2 and "c.toml: " in str(e.value)


def test_cli_bounds_from_config_and_flags(tmp_path):
    import os
    import subprocess
    import sys

    def keepalive(h):
        h.sse_start()
        for _ in cs.forever():
            h.chunk(b": ping\n\n")
            h.wait_for_close(0.02)

    home = tmp_path / "yi"
    (home / "config").mkdir(parents=True)
    env = {**os.environ, "YI_CHAT_HOME": str(home)}

    def yi(*args, remote="idle_timeout = 0.5"):
        (home / "config" / "config.toml").write_text(f'endpoint = "{srv.root}"\n[remote]\n{remote}\n')
        return subprocess.run(
            [sys.executable, "-m", "yi_cli", "--model", "m", "-p", "hi", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    with Server(keepalive) as srv:
        from_config, from_flag = yi(), yi("--idle-timeout", "0.3")
        typo, bad_flag = yi(remote="idle_timout = 5"), yi("--deadline", "0")
    assert from_config.returncode == 1 and "no data from the server for 0.5 s" in from_config.stderr
    assert from_flag.returncode == 1 and "no data from the server for 0.3 s" in from_flag.stderr
    assert typo.returncode == 2 and "unknown key remote.idle_timout (did you mean remote.idle_timeout?)" in typo.stderr
    assert bad_flag.returncode == 2 and "is not a positive number of seconds" in bad_flag.stderr
    for p in (from_config, from_flag, typo, bad_flag):
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_odd_keys_and_locations_are_one_line():
    with pytest.raises(YiError) as e:
        RemoteEngine("http://127.0.0.1:1/v1", "sk-caf\u00e9-1234", model="m")
    assert e.value.exit_code == 2 and "caf" not in one_line(e)
    with Server(lambda h: h.redirect("http://[broken/v1/models", 302)) as srv, pytest.raises(LoadError) as e:
        RemoteEngine(srv.root, None, limits=small())
    assert "redirect to an invalid URL" in one_line(e)
    with Server(lambda h: h.redirect("http://[::1/v1/models", 302)) as srv, pytest.raises(LoadError) as e:
        RemoteEngine(srv.root, None, limits=small())  # httpx refuses this Location itself: not "dropped mid-stream"
    assert "a redirect to an invalid URL" in one_line(e) and "mid-stream" not in one_line(e)
    with Server(lambda h: h.json(200, {"data": [{"id": "sk-live-9876"}]})) as srv:
        assert RemoteEngine(srv.root, "sk-live-9876", limits=small()).name == "***"


def test_a_note_during_a_live_reply_waits_for_its_end():
    import io

    from rich.console import Console

    from yi_cli.engines.events import Stats
    from yi_cli.ui.render import TerminalRenderer

    out, err = io.StringIO(), io.StringIO()
    render = TerminalRenderer(Console(file=out, width=80), Console(file=err, width=200), show_stats=False)
    render.reply_start("hi")
    render.reply_text("some text")
    render.notice("skipped 1 bad chunk")  # from the engine's thread, mid-reply
    assert err.getvalue() == ""
    render.reply_end("some text", Stats())
    assert err.getvalue() == "skipped 1 bad chunk\n" and "some text" in out.getvalue()
    render.notice("outside a reply")
    assert err.getvalue().endswith("outside a reply\n")


def _events_as(ends: bytes, bom: bytes = b""):
    """A server whose event stream ends its lines with `ends`, the BOM `bom` first: "Hello" then " world"."""

    def answer(h):
        h.sse_start()
        first = {"choices": [{"index": 0, "delta": {"content": "Hello"}}]}
        last = {"choices": [{"index": 0, "delta": {"content": " world"}, "finish_reason": "stop"}]}
        for i, obj in enumerate([first, last, "[DONE]"]):
            data = obj if isinstance(obj, str) else json.dumps(obj)
            h.chunk((bom if i == 0 else b"") + b"data: " + data.encode() + ends + ends)
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()

    return answer


@pytest.mark.parametrize("ends", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["plain", "BOM"])
def test_every_line_end_of_the_event_stream_format_and_a_leading_bom_are_read(ends, bom):
    """An event stream may end its lines with CRLF, LF or a lone CR, and may start with a UTF-8 BOM. Lines ended by
    CR alone were one bad line (the reply lost: "closed the stream before the reply ended"), and a BOM made the
    first event's line not start with `data:`, so "Hello" was dropped without a word (exit 0)."""
    notes = []
    with Server(_events_as(ends, bom)) as srv:
        text, stats = run(RemoteEngine(srv.root, None, model="m", limits=small(), notify=notes.append))
    assert text == "Hello world" and stats.finish_reason == "stop" and notes == []


def test_a_cr_split_from_its_lf_across_chunks_is_one_line_end():
    def answer(h):
        h.sse_start()
        h.chunk(b'data: {"choices": [{"index": 0, "delta": {"content": "one"}}]}\r')
        h.chunk(b'\n\r\ndata: {"choices": [{"index": 0, "delta": {"content": " two"}, "finish_reason": "stop"}]}\r')
        h.chunk(b"\n\r\n")
        h.sse_end()

    with Server(answer) as srv:
        text, stats = run(RemoteEngine(srv.root, None, model="m", limits=small()))
    assert text == "one two" and stats.finish_reason == "stop"


@pytest.mark.parametrize("own_chunk", [True, False], ids=["finish-chunk", "with-text"])
def test_a_reply_whose_server_holds_the_stream_open_after_its_end_is_whole(own_chunk):
    """The finish reason came and the server sent neither [DONE] nor closed: the reply waited out the idle timeout
    and was then marked interrupted, with "no data from the server" (exit 1). It ends as the server said: soon
    after a finish reason on a chunk of its own (the idle timeout here is 600 s), at the idle timeout after one on
    a chunk with text (some servers send one on every chunk)."""
    gone = threading.Event()
    last = {} if own_chunk else {"content": " text"}

    def answer(h):
        h.sse_start()
        h.event({"choices": [{"index": 0, "delta": {"content": "done"}}]})
        h.event({"choices": [{"index": 0, "delta": last, "finish_reason": "stop"}]})
        if h.wait_for_close(600):
            gone.set()

    with Server(answer) as srv:
        limits = small(idle_timeout=600 if own_chunk else 3)
        text, stats = run(RemoteEngine(srv.root, None, model="m", limits=limits))
        assert gone.wait(60)  # the request let go of the connection
    assert text == ("done" if own_chunk else "done text") and stats.finish_reason == "stop"


def test_text_after_a_finish_reason_is_not_cut():
    """A server that sends a finish reason on a chunk with text and then more text (on a reasoning part, or on
    every chunk): the reply is all of it, however long the pause between."""

    def answer(h):
        h.sse_start()
        h.event({"choices": [{"index": 0, "delta": {"content": "thinking done."}, "finish_reason": "stop"}]})
        h.wait_for_close(3)  # a pause longer than the 2 s granted a finish reason on a chunk of its own
        h.event({"choices": [{"index": 0, "delta": {"content": " The answer is 42."}, "finish_reason": "stop"}]})
        h.sse_end()

    with Server(answer) as srv:
        text, stats = run(RemoteEngine(srv.root, None, model="m", limits=small()))
    assert text == "thinking done. The answer is 42." and stats.finish_reason == "stop"


def test_an_event_stream_with_no_event_says_it_ended_before_one():
    """A 200 text/event-stream that closed at once: "the answer is not an event stream (Content-Type:
    text/event-stream)", which says the opposite of what came."""

    def answer(h):
        h.sse_start()
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()

    with Server(answer) as srv, pytest.raises(YiError) as e:
        run(RemoteEngine(srv.root, None, model="m", limits=small()))
    assert one_line(e).endswith("the server ended the event stream before its first event"), e.value


def test_a_reply_with_no_token_has_no_time_to_first_token():
    """Every chunk bad, the finish reason good: `--json` and the session said "ttft_s": 0.0, as if it came at once."""

    def answer(h):
        h.sse_start()
        h.event("not json")
        h.event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        h.sse_end()

    with Server(answer) as srv:
        text, stats = run(RemoteEngine(srv.root, None, model="m", limits=small(), notify=lambda n: None))
    assert text == "" and stats.new_tokens == 0 and stats.to_dict()["ttft_s"] is None


def test_ca_certificates_named_by_a_fifo_are_one_line(tmp_path, monkeypatch):
    """SSL_CERT_FILE naming a FIFO: the TLS context read it until its writer closed it, a hang at start (a
    flags-and-environment hunt); /dev/zero without end. One line, exit 2, before any request."""
    os.mkfifo(tmp_path / "ca.pem")
    with Server(cs.vllm_models) as srv:
        for name, value, said in (
            ("SSL_CERT_FILE", tmp_path / "ca.pem", "a FIFO, not a file of CA certificates"),
            ("SSL_CERT_FILE", "/dev/zero", "a character device, not a file of CA certificates"),
        ):
            with monkeypatch.context() as m:
                m.setenv(name, str(value))
                with pytest.raises(UsageError) as e:
                    RemoteEngine(srv.root, None, limits=small())
            assert f"{name}={value}: {said}" in one_line(e)
        assert srv.requests == []


def test_empty_chunks_after_a_finish_reason_do_not_hold_the_reply_open():
    """After a finish reason on a chunk of its own, a chunk with neither text nor a finish reason (an empty delta,
    `{}`) put the whole idle timeout back, and each one restarted it: a server sending one a second held a
    finished reply open to the deadline, then it was cut as interrupted. It ends as the server said."""
    gone, served = threading.Event(), threading.Event()

    def answer(h):
        h.sse_start()
        h.event({"choices": [{"index": 0, "delta": {"content": "done"}}]})
        h.event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        for i in range(60):  # 30 s of them, unless the client lets go (2 s after the finish reason)
            h.event({} if i % 2 else {"choices": [{"index": 0, "delta": {}, "finish_reason": None}]})
            if h.wait_for_close(0.5):
                gone.set()
                break
        served.set()  # else the server ends the stream itself: it was the client that should have

    with Server(answer) as srv:
        text, stats = run(RemoteEngine(srv.root, None, model="m", limits=small(idle_timeout=600, deadline=600)))
        assert served.wait(60) and gone.is_set()
    assert text == "done" and stats.finish_reason == "stop"


def test_a_usage_without_a_completion_count_counts_the_chunks():
    """A usage with `prompt_tokens` alone (or `completion_tokens: null`) made a reply of three chunks 0 new tokens,
    with no decode rate, in the footer, --json and the session: the chunks are counted, as with no usage."""

    def answer(h):
        h.sse_start()
        for word in ("a", " b", " c"):
            h.event({"choices": [{"index": 0, "delta": {"content": word}}]})
        h.event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        h.event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": None}})
        h.sse_end()

    with Server(answer) as srv:
        text, stats = run(RemoteEngine(srv.root, None, model="m", limits=small()))
    assert text == "a b c" and (stats.prompt_tokens, stats.new_tokens) == (7, 3)


def test_an_event_of_endless_short_data_lines_holds_no_more_than_the_line_limit():
    """Data lines with no blank line between them were kept as one event until it ended: 64 MB of `data:ab`
    lines (under the stream's limit) held 600 MB of strings. Past max_line_bytes they are taken a line each."""
    limit = 1 << 14

    def answer(h):
        h.sse_start()
        for _ in range(50):
            h.chunk(b"data:ab\n" * 4000)  # 200,000 data lines, 1.6 MB, not one blank line
        h.chunk(b"\n")
        h.event({"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]})
        h.sse_end()

    notes: list[str] = []
    with Server(answer) as srv:
        engine = RemoteEngine(srv.root, None, model="m", limits=small(max_line_bytes=limit), notify=notes.append)
        tracemalloc.start()
        try:
            text, stats = run(engine)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert text == "ok" and notes and "skipped 200000 bad chunks" in notes[0], notes
    assert peak < 4 << 20, peak  # a line limit's worth of strings and a socket read, not 200,000 of them


def test_an_error_body_cut_within_a_credential_shows_none_of_it():
    """An error body cut at max_error_bytes inside the API key (a server padding its error) showed its first 30
    characters: the cut had no "…", so the redaction did not see a secret's start there."""
    key = "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    limit = 4096

    def answer(h):
        h.raw(500, "text/plain", b" " * (limit - 30) + key.encode() + b" end")

    with Server(answer) as srv, pytest.raises(YiError) as e:
        run(RemoteEngine(srv.root, key, model="m", limits=small(max_error_bytes=limit)))
    assert one_line(e).endswith("HTTP 500 Internal Server Error: ***…") and key[:8] not in one_line(e), e.value


@pytest.mark.parametrize(
    "body, said",
    [
        ("\ufeff<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>", "502 Bad"),
        ('\ufeff{"error": {"message": "model is overloaded"}}', "model is overloaded"),
    ],
    ids=["html", "json"],
)
def test_an_error_body_led_by_a_byte_order_mark_is_said_by_its_words(body, said):
    """A byte order mark before an HTML page or a JSON error hid both shapes: the whole page, tags and all, with
    an invisible U+FEFF, or the raw JSON, was the line."""

    def answer(h):
        h.raw(502, "text/html" if "html" in body else "application/json", body.encode())

    with Server(answer) as srv, pytest.raises(YiError) as e:
        run(RemoteEngine(srv.root, None, model="m", limits=small()))
    msg = one_line(e)
    assert msg.endswith(f"HTTP 502 Bad Gateway: {said}" + (" Gateway" if said == "502 Bad" else "")), msg


@pytest.mark.parametrize("status, said", [(404, "HTTP 404 Not Found: no such model"), (599, "HTTP 599: no such model")])
def test_an_error_without_a_reason_phrase_says_the_statuss_own_words(status, said):
    """A status line with no reason phrase ("HTTP/1.1 404 ") read "HTTP 404 : no such model", a space before the
    colon; the standard words stand in where the status has them."""

    def answer(h):
        h.send_response(status, "")
        h.send_header("Content-Type", "application/json")
        data = b'{"error": {"message": "no such model"}}'
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    with Server(answer) as srv, pytest.raises(YiError) as e:
        run(RemoteEngine(srv.root, None, model="m", limits=small()))
    assert one_line(e).endswith(said), one_line(e)


def test_a_compressed_error_keeps_its_status_and_hint():
    """A 401 whose body came gzip-compressed was "the answer is compressed (gzip) although yi-chat asked for
    none": the status and the hint to check the key were lost. The status stays, its words said unreadable."""
    import gzip

    def answer(h):
        data = gzip.compress(b'{"error": {"message": "Incorrect API key"}}')
        h.raw(401, "application/json", data, {"Content-Encoding": "gzip"})

    with Server(answer) as srv, pytest.raises(YiError) as e:
        run(RemoteEngine(srv.root, "sk-wrong", model="m", limits=small()))
    msg = one_line(e)
    assert "HTTP 401 Unauthorized: its message compressed (gzip)" in msg and "check --api-key" in msg, msg


@pytest.mark.parametrize("limit", [1, 5])
@pytest.mark.parametrize("usage_on", ["last", "every"])
def test_the_chunk_whose_usage_reaches_max_new_tokens_keeps_its_text(limit, usage_on):
    """A usage report on the chunk that reached max_tokens (a server's last chunk; vLLM's running totals on every
    one) made the reply full before that chunk's text was read, which was then dropped: `t1 t2 t3 t4` of five
    tokens, nothing at all at --max-new-tokens 1, and still "stopped at the token limit"."""

    def answer(h):
        h.sse_start()
        for i in range(1, limit + 1):
            chunk = {"choices": [{"index": 0, "delta": {"content": f"t{i} "}}]}
            if i == limit:
                chunk["choices"][0]["finish_reason"] = "length"
            if usage_on == "every" or i == limit:
                chunk["usage"] = {"prompt_tokens": 3, "completion_tokens": i}
            h.event(chunk)
        h.sse_end()

    with Server(answer) as srv:
        text, stats = run(RemoteEngine(srv.root, None, model="m", limits=small()), GenSettings(max_new_tokens=limit))
    assert text == "".join(f"t{i} " for i in range(1, limit + 1))
    assert (stats.finish_reason, stats.new_tokens, stats.at_context) == ("length", limit, False)


def test_a_servers_length_short_of_max_tokens_is_its_context_not_the_limit():
    """ "length" after 2 tokens of the 512 asked for: the line blamed --max-new-tokens, which raising cannot help; by
    the server's own count it stopped at its context's end."""

    def answer(h):
        h.sse_start()
        h.event({"choices": [{"index": 0, "delta": {"content": "cut "}}]})
        h.event({"choices": [{"index": 0, "delta": {"content": "here"}, "finish_reason": "length"}]})
        h.event({"choices": [], "usage": {"prompt_tokens": 4090, "completion_tokens": 2}})
        h.sse_end()

    with Server(answer) as srv:
        text, stats = run(RemoteEngine(srv.root, None, model="m", limits=small()), GenSettings(max_new_tokens=512))
    assert text == "cut here" and stats.finish_reason == "length" and stats.at_context


def test_a_usage_chunk_after_a_finish_reason_on_text_ends_the_reply_at_once():
    """The finish reason on the last text chunk, then OpenAI's usage-only chunk, then the stream held open without
    [DONE]: the reply waited out the whole idle timeout (60 s by default) before the prompt came back."""
    gone = threading.Event()

    def answer(h):
        h.sse_start()
        h.event({"choices": [{"index": 0, "delta": {"content": "A complete answer."}}]})
        h.event({"choices": [{"index": 0, "delta": {"content": " The end."}, "finish_reason": "stop"}]})
        h.event({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}})
        if h.wait_for_close(600):
            gone.set()

    with Server(answer) as srv:
        text, stats = run(RemoteEngine(srv.root, None, model="m", limits=small(idle_timeout=600, deadline=600)))
        assert gone.wait(60)  # let go after the 2 s grace, not the 600 s idle timeout
    assert text == "A complete answer. The end." and stats.finish_reason == "stop"


def test_a_cancel_after_the_servers_finish_reason_keeps_the_reply_whole(monkeypatch):
    """Ctrl-C in the grace after a finish reason on its own chunk (the prompt is not back yet, the server holds the
    stream open): the whole reply was marked [interrupted], and a one-shot exited 130. It ended as the server said.
    The cancel comes as the finish reason is read (the watch's finishing), before the next read."""
    from yi_cli.engines import remote_http

    cancel = threading.Event()
    finishing = remote_http.Watch.finishing

    def and_cancel(self, seconds):
        finishing(self, seconds)
        if seconds is not None:
            cancel.set()

    monkeypatch.setattr(remote_http.Watch, "finishing", and_cancel)

    def answer(h):
        h.sse_start()
        h.event({"choices": [{"index": 0, "delta": {"content": "done text"}}]})
        h.event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        h.wait_for_close(600)

    with Server(answer) as srv:
        limits = small(idle_timeout=600, deadline=600)
        text, stats = run(RemoteEngine(srv.root, None, model="m", limits=limits), cancel=cancel)
    assert cancel.is_set() and text == "done text" and stats.finish_reason == "stop"


def test_a_reply_ended_by_the_servers_content_filter_says_so():
    """finish_reason "content_filter" (Azure's, OpenAI's) ended the reply as if whole, without a word."""
    notes: list[str] = []

    def answer(h):
        h.sse_start()
        h.event({"choices": [{"index": 0, "delta": {"content": "I can"}}]})
        h.event({"choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]})
        h.sse_end()

    with Server(answer) as srv:
        text, stats = run(RemoteEngine(srv.root, None, model="m", limits=small(), notify=notes.append))
    assert text == "I can" and stats.finish_reason == "stop"
    assert notes == ["the server's content filter ended the reply (finish_reason: content_filter)"], notes


def test_an_event_stream_labelled_as_json_is_read_as_the_stream_it_is():
    """A proxy that labels the event stream `Content-Type: application/json`: the body was read to its end as one
    JSON reply, then refused ("neither an event stream nor a chat completion"), exit 1. A body that starts `data:`
    is an event stream: its text comes as it is sent (the first piece before the server sends the second)."""
    go = threading.Event()

    def answer(h):
        h.sse_start("application/json")
        h.event({"choices": [{"index": 0, "delta": {"content": "Hello"}}]})
        go.wait(60)
        h.event({"choices": [{"index": 0, "delta": {"content": " world"}, "finish_reason": "stop"}]})
        h.sse_end()

    with Server(answer) as srv:
        events = RemoteEngine(srv.root, None, model="m", limits=small()).stream(
            Prompt(HELLO), GenSettings(), threading.Event()
        )
        try:
            first = next(events)
        finally:
            go.set()
        rest = list(events)
    assert isinstance(first, Text) and first.text == "Hello"
    assert "".join(e.text for e in rest[:-1]) == " world" and rest[-1].stats.finish_reason == "stop"

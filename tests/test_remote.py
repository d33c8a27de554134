"""The remote engine over real HTTP on loopback, against tests/openai_server.py: streaming, stats, finish
reasons, cancel, faults (dropped connection, HTTP errors, malformed chunks, timeouts), the chat on top of it,
and the CLI end to end against the real demo model served over the OpenAI protocol."""

import json
import re
import socket
import subprocess
import sys
import threading

import httpx
import pytest

from tests.fixtures import ScriptedEngine, plain_chat
from tests.openai_server import OpenAIServer
from yi_cli.engines.base import Engine
from yi_cli.engines.events import Finish, Text
from yi_cli.engines.remote import RemoteEngine
from yi_cli.engines.remote_endpoint import Endpoint
from yi_cli.engines.settings import GenSettings
from yi_cli.engines.template import Prompt
from yi_cli.errors import EXIT_LOAD, LoadError, ReplyCut, UsageError, YiError
from yi_cli.ui.render import footer

HELLO = [{"role": "user", "content": "hello"}]


def run(engine, messages=HELLO, settings=None, cancel=None):
    events = list(engine.stream(Prompt(messages), settings or GenSettings(), cancel or threading.Event()))
    assert isinstance(events[-1], Finish) and all(isinstance(e, Text) for e in events[:-1])
    return "".join(e.text for e in events[:-1]), events[-1].stats


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


@pytest.fixture
def served():
    """A server over a scripted engine that echoes the last user message (unless given replies)."""
    scripted = ScriptedEngine()
    with OpenAIServer(scripted) as srv:
        srv.scripted = scripted
        yield srv


def test_deltas_assemble_to_the_served_text_and_usage_becomes_stats(served):
    served.scripted.replies = ["Paris is the capital of France."]
    engine = RemoteEngine(served.url, None)
    assert engine.name == "demo"  # the first id of GET /models
    assert engine.context_length is None and engine.template is None and isinstance(engine, Engine)
    text, stats = run(engine)
    assert text == "Paris is the capital of France."
    assert stats.prompt_tokens == len(served.scripted.template.build(HELLO).ids)
    assert stats.new_tokens == 6 and stats.finish_reason == "stop"
    assert stats.ttft_s > 0 and stats.decode_s >= 0


def test_request_carries_settings_and_asks_for_usage(served):
    engine = RemoteEngine(served.url, None, model="yi-34b-chat")
    run(engine, settings=GenSettings(temperature=0.3, top_p=0.9, repetition_penalty=1.1, max_new_tokens=64))
    run(engine, settings=GenSettings(top_k=20, seed=7, repetition_penalty=1.0))
    first, second = served.requests
    assert first["model"] == "yi-34b-chat" and first["messages"] == HELLO
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    assert (first["temperature"], first["top_p"], first["max_tokens"]) == (0.3, 0.9, 64)
    assert first["repetition_penalty"] == 1.1
    assert "top_k" not in first and "seed" not in first  # off / unset: the server's own default applies
    assert (second["top_k"], second["seed"]) == (20, 7) and "repetition_penalty" not in second


def test_token_limit_finishes_with_length(served):
    served.scripted.replies = ["one two three four five"]
    text, stats = run(RemoteEngine(served.url, None), settings=GenSettings(max_new_tokens=2))
    assert text == "one two" and stats.finish_reason == "length" and stats.new_tokens == 2


def test_a_usage_without_its_prompt_count_leaves_it_unknown():
    from yi_cli.engines.remote import usage_of

    assert usage_of({"completion_tokens": 3}) == (None, 3)
    assert usage_of({"prompt_tokens": None, "completion_tokens": 3}) == (None, 3)
    assert usage_of({"prompt_tokens": 7, "completion_tokens": 3}) == (7, 3)
    assert usage_of({"prompt_tokens": 7}) == usage_of({"prompt_tokens": 7, "completion_tokens": None}) == (7, None)


def test_without_a_usage_chunk_new_tokens_are_counted_from_chunks(served):
    class NoUsage(RemoteEngine):
        def request_body(self, messages, s):
            return {k: v for k, v in super().request_body(messages, s).items() if k != "stream_options"}

    served.scripted.replies = ["a b c"]
    text, stats = run(NoUsage(served.url, None))
    assert text == "a b c" and stats.new_tokens == 3 and stats.prompt_tokens is None  # not known: not 0
    assert footer(stats).startswith("stop · 3 new tok · ")


@pytest.mark.parametrize(
    "form", ["{root}", "{root}/", "{root}/v1", "{root}/v1/", "{root}/v1/chat/completions", "127.0.0.1:{port}"]
)
def test_endpoint_forms_name_the_same_server(served, form):
    endpoint = form.format(root=f"http://127.0.0.1:{served.port}", port=served.port)
    engine = RemoteEngine(endpoint, None)
    assert engine.base == served.url
    assert run(engine)[0] == "echo: hello"


def test_endpoint_keeps_a_custom_prefix_and_refuses_other_schemes():
    assert Endpoint("https://example.test/v1beta/openai/").url() == "https://example.test/v1beta/openai"
    with pytest.raises(UsageError):
        Endpoint("ftp://example.test/v1")


@pytest.mark.parametrize(
    "value",
    ["not a url", "http://exa mple/v1", "http://h\u00a0x:8000", "http://127.0.0.1:0/v1"]
    + ["http://a..b/", "a..b:8000", f"http://{'a' * 64}.com/", "http://xn--/", "http://xn--zz.test/"]
    + ["http://256.1.1.1", "http://[::1]x:1", "http://127.0.0.1:1/v\x7f1", "http://[::1]:8000/v1?\x01"],
)
def test_an_endpoint_host_with_a_space_or_port_0_is_malformed(value):
    """`--endpoint 'not a url'` was looked up in DNS (`http://not a url/v1/models: cannot connect`, exit 3) where a
    malformed URL is a usage error (exit 2); `:0` was taken as no port, so requests went to port 80. A host with an
    empty label, one past 63 characters or an `xn--` label that is not Punycode reached the lookup, whose
    UnicodeError was an internal error. A dotted quad that is no IPv4 address, text between an IPv6 literal and its
    port, and a control character got past urlsplit to the HTTP client, whose InvalidURL was the run's error (exit 3,
    or 1 at each message of a chat that had started)."""
    with pytest.raises(UsageError) as e:
        Endpoint(value)
    assert str(e.value).endswith(": not an http(s) URL of an OpenAI-compatible server"), e.value


@pytest.mark.parametrize(
    "value",
    ["http://1.2.3", "http://10.0.0.1:9/v1", "http://[::1]:8000", "http://[fe80::1%25eth0]:80", "h:1/a b/?q=é"],
)
def test_an_endpoint_taken_is_a_url_the_http_client_takes(value):
    """What Endpoint takes, httpx takes too: a URL refused only at the first request was exit 3 (or 1 in a chat)."""
    url = Endpoint(value).url("/chat/completions")
    assert httpx.URL(url).host, url


@pytest.mark.parametrize("host", ["xn--fa-hia.de", "XN--bcher-kva.example", "bücher.example", "localhost.", "::1"])
def test_an_endpoint_host_dns_can_be_asked_for_is_taken(host):
    """The host check refuses only what no lookup can take: an IDNA 2008 name (`xn--fa-hia`, faß, which Python's
    IDNA 2003 round trip refuses), a trailing dot, an IPv6 literal are hosts."""
    url = f"http://[{host}]:8000" if ":" in host else f"http://{host}:8000"
    assert Endpoint(url).url() == url + "/v1"


def test_cancel_mid_stream_finishes_interrupted_and_the_engine_stays_usable(served):
    served.scripted.replies = [" ".join(f"w{i}" for i in range(100))]
    served.scripted.delay = 0.02
    engine = RemoteEngine(served.url, None)
    cancel = threading.Event()
    pieces, finish = [], None
    for ev in engine.stream(Prompt(HELLO), GenSettings(), cancel):
        if isinstance(ev, Text):
            pieces.append(ev.text)
            if len(pieces) == 3:
                cancel.set()
        else:
            finish = ev
    assert "".join(pieces) == "w0 w1 w2"
    assert finish.stats.finish_reason == "interrupted" and finish.stats.new_tokens == 3
    served.scripted.delay = 0
    assert run(engine)[0] == "echo: hello"  # a fresh connection after the one closed by cancel


def test_dropped_connection_mid_stream_is_one_line(served):
    served.drop_after = 2
    served.scripted.replies = ["one two three four"]
    with pytest.raises(YiError) as e:
        run(RemoteEngine(served.url, None))
    msg = one_line_error(e)
    assert "dropped mid-stream" in msg and served.url in msg


def test_a_first_reply_cut_before_the_servers_usage_leaves_the_meter_unknown_not_0(served):
    """The toolbar read `ctx 0` (and /stats "context used: 0") for a conversation holding a question and a cut
    reply, the server never having reported its usage: it is unknown ("?") until a reply's usage comes."""
    chat, out, _ = plain_chat(RemoteEngine(served.url, None))
    served.drop_after = 1
    served.scripted.replies = ["this reply is cut off"]
    chat.handle("first question")
    assert [t.content for t in chat.session.turns] == ["first question", "this"]
    assert chat.context_used() is None
    chat.handle("/stats")
    assert re.search(
        r"context used: \? / (\d+|\?) tokens \(the server reports it with its next reply\)", out.getvalue()
    )
    served.drop_after = None
    served.scripted.replies = ["a whole reply"]
    chat.handle("second question")
    last = chat.history[-1]
    assert chat.context_used() == last.prompt_tokens + last.new_tokens > 0
    out.truncate(0), out.seek(0)
    chat.handle("/stats")
    assert f"context used: {chat.context_used()} / " in out.getvalue() and "next reply" not in out.getvalue()


def test_the_meter_follows_undo_and_clear(served):
    """The toolbar's count came from every reply this run made: after /undo it kept the undone exchange's count,
    and after /clear a first reply cut before the server's usage brought back the cleared conversation's."""
    chat, _, _ = plain_chat(RemoteEngine(served.url, None))
    served.scripted.replies = ["one", "two words"]
    chat.handle("first question")
    first = chat.context_used()
    chat.handle("second question")
    assert chat.context_used() > first
    chat.handle("/undo")
    assert chat.context_used() == first
    chat.handle("/clear")
    assert chat.context_used() == 0
    served.drop_after = 1
    served.scripted.replies = ["this reply is cut off"]
    chat.handle("a new conversation")
    assert len(chat.session.turns) == 2 and chat.context_used() is None


def test_dropped_connection_keeps_the_partial_reply_marked(served):
    chat, out, err = plain_chat(RemoteEngine(served.url, None))
    chat.handle("first question")
    served.drop_after = 1
    served.scripted.replies = ["this reply is cut off"]
    chat.handle("second question")
    errors = [line for line in err.getvalue().splitlines() if line]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "dropped mid-stream" in errors[0]
    assert "this [interrupted]" in out.getvalue()  # shown, and marked
    cut = chat.session.turns[-1]
    assert [(t.role, t.content) for t in chat.session.turns] == [
        ("user", "first question"),
        ("assistant", "echo: first question"),
        ("user", "second question"),
        ("assistant", "this"),
    ]
    assert cut.finish_reason == "interrupted" and cut.tokens == 1
    # the server's usage never came for the cut reply: its prompt is not said to be 0 tokens, and the toolbar's
    # meter stays at the count the server last reported
    first = chat.history[0]
    assert first.prompt_tokens > 0 and chat.context_used() == first.prompt_tokens + first.new_tokens
    assert "0 prompt tok" not in out.getvalue() + err.getvalue()
    served.drop_after = None
    chat.handle("third question")
    assert chat.failures == 1
    assert [m["content"] for m in served.requests[-1]["messages"]] == [
        "first question",
        "echo: first question",
        "second question",
        "this",
        "third question",
    ]
    assert out.getvalue().endswith("echo: third question\n\n")


def test_failure_before_any_text_records_nothing(served):
    chat, out, err = plain_chat(RemoteEngine(served.url, None))
    served.drop_after = 0
    chat.handle("question")
    assert "dropped mid-stream" in err.getvalue() and chat.session.turns == [] and chat.failures == 1
    assert out.getvalue() == ""  # and writes no (empty) reply


def test_malformed_chunk_is_skipped_with_a_note(served):
    served.corrupt_after = 1
    notes = []
    served.scripted.replies = ["one two three"]
    text, stats = run(RemoteEngine(served.url, None, notify=notes.append))
    assert text == "one two three" and stats.finish_reason == "stop"
    assert len(notes) == 1 and "skipped 1 bad chunk" in notes[0] and "not JSON" in notes[0]


def test_error_after_the_headers_surfaces_the_servers_message(served):
    served.scripted.fail_with = YiError("the model fell over")
    with pytest.raises(YiError) as e:
        run(RemoteEngine(served.url, None))
    assert "the model fell over" in one_line_error(e)


def test_silent_server_times_out_and_keeps_what_came(served):
    # The first word comes at once, the next after 30 s: a 2 s idle timeout cuts the reply after the first word
    # even on a loaded machine (at 0.3 s, CI once waited longer than that for the first word itself).
    served.scripted.replies = ["slow reply"]
    served.scripted.delay = 30
    with pytest.raises(ReplyCut) as e:
        run(RemoteEngine(served.url, None, timeout=2.0))
    assert "no data from the server for 2 s" in one_line_error(e)
    assert e.value.stats.finish_reason == "interrupted" and e.value.stats.new_tokens == 1


def test_api_key_is_sent_and_a_wrong_one_is_a_401():
    with OpenAIServer(ScriptedEngine(), api_key="sekret") as srv:
        assert run(RemoteEngine(srv.url, "sekret"))[0] == "echo: hello"
        with pytest.raises(LoadError) as e:  # listing models at start: a load failure, exit code 3
            RemoteEngine(srv.url, "wrong")
        assert "HTTP 401" in one_line_error(e) and "Incorrect API key" in str(e.value)
        with pytest.raises(YiError) as e:  # model given: the first turn meets the 401
            run(RemoteEngine(srv.url, None, model="demo"))
        assert "HTTP 401" in one_line_error(e)


def test_http_500_carries_the_status_and_the_servers_message(served):
    served.error = (500, "CUDA error: an illegal memory access")
    chat, out, err = plain_chat(RemoteEngine(served.url, None))
    chat.handle("hello")
    assert err.getvalue().count("\n") == 1
    assert "HTTP 500" in err.getvalue() and "illegal memory access" in err.getvalue()
    # no reply at all on stdout: an empty one ("\n\n") was a phantom turn to a reader splitting on blank lines,
    # where a local turn refused writes nothing (a run-through)
    assert chat.session.turns == [] and out.getvalue() == ""


def test_unreachable_endpoint_is_a_load_error():
    with socket.socket() as s:  # a port nobody listens on: bound, then released
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LoadError) as e:
        RemoteEngine(f"http://127.0.0.1:{port}/v1", None)
    msg = one_line_error(e)
    assert f"http://127.0.0.1:{port}/v1/models" in msg and "cannot connect" in msg
    assert e.value.exit_code == EXIT_LOAD


def test_a_url_that_is_not_the_api_is_a_load_error_with_the_status(served):
    with pytest.raises(LoadError) as e:
        RemoteEngine(f"http://127.0.0.1:{served.port}/nothing-here", None)
    assert "HTTP 404" in one_line_error(e)


def test_two_turn_conversation_through_the_chat(served):
    chat, out, err = plain_chat(RemoteEngine(served.url, None))
    chat.handle("What is Yi?")
    chat.handle("And its context size?")
    assert out.getvalue() == "echo: What is Yi?\n\necho: And its context size?\n\n"
    assert err.getvalue() == ""
    assert [m["content"] for m in served.requests[1]["messages"]] == [
        "What is Yi?",
        "echo: What is Yi?",
        "And its context size?",
    ]
    last = chat.session.turns[-1]
    assert last.finish_reason == "stop" and last.tokens == 5 and last.stats["prompt_tokens"] > 0


def test_model_and_prompt_commands_on_a_remote_engine(served):
    chat, out, err = plain_chat(RemoteEngine(served.url, None))
    chat.handle("/model")
    assert f"remote model demo at {served.url}" in out.getvalue()
    chat.handle("/prompt")
    assert "server-side" in err.getvalue()


def test_the_test_server_also_answers_without_streaming(served):
    served.scripted.replies = ["plain answer"]
    body = httpx.post(f"{served.url}/chat/completions", json={"model": "demo", "messages": HELLO}).json()
    assert body["choices"][0]["message"]["content"] == "plain answer"
    assert body["choices"][0]["finish_reason"] == "stop" and body["usage"]["completion_tokens"] == 2


@pytest.fixture(scope="session")
def demo_fp32_engine(demo_fp32_dir):
    from yi_cli.checkpoint.loader import open_checkpoint
    from yi_cli.engines.local import LocalEngine

    return LocalEngine(open_checkpoint(demo_fp32_dir, device="cpu", dtype="fp32"), backend="generate")


@pytest.mark.slow
def test_cli_end_to_end_against_the_demo_model_served_over_http(demo_fp32_engine):
    with OpenAIServer(demo_fp32_engine, model="demo-fp32") as srv:
        proc = subprocess.run(
            [sys.executable, "-m", "yi_cli", "--endpoint", srv.url, "--temperature", "0"],
            input="What is the capital of France?\n",
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    assert srv.requests[0]["model"] == "demo-fp32" and srv.requests[0]["temperature"] == 0


def test_the_redaction_masks_a_secret_cut_short_and_a_held_end_cut_there():
    """Text cut before the redaction (one_line's "…") kept a secret's first characters: 44 of an API key's 51 in a
    bad chunk's note; a reply cut (token limit, dropped stream) while its end was held back as a possible secret
    let that end out. Four characters or more of a secret are masked; fewer are any text's ("al" of "partial")."""
    from yi_cli.engines.remote_endpoint import Redactor, StreamRedactor

    key = "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    r = Redactor([key, "alice"])
    assert r(f"bad: x {key[:20]}… (check)") == "bad: x ***… (check)"
    assert r(f"bad: x {key[:3]}… {key} ali…") == "bad: x sk-… *** ali…"  # three characters: not masked
    assert r("a whole word… ends") == "a whole word… ends"
    for cut, want in ((True, "says ***"), (False, f"says {key[:12]}")):
        s = StreamRedactor(r)
        assert s.feed("says ") + s.feed(key[:6]) + s.feed(key[6:12]) + s.flush(cut=cut) == want
    s = StreamRedactor(r)
    assert s.feed("partial") + s.flush(cut=True) == "partial"  # "al" held (alice's start), then let out


def test_a_credential_comes_back_masked_in_every_form_a_server_writes_it():
    """A server echoing what it received wrote the query as it was sent (`sig=Ab+Cd+...`, `%2f`), which only the
    decoded values' forms were masked in; a bad chunk's note quoted a JSON string (`p\\u00e4ss`, a key's `\\\\`) or
    the bytes of a line that was not UTF-8 (`p\\xc3\\xa4ss`) as they came. Each is *** now."""
    from yi_cli.engines.remote_endpoint import Redactor

    e = Endpoint("http://al%C3%AFce:p%C3%A4ss-SECRET77@127.0.0.1:9/v1?sig=Ab+Cd+SECRET99&token=ab%2fcd%2fSECRET55")
    key = "sk-ab\\cd-SECRET-1234"
    r = Redactor([key, *e.secrets()])
    echoes = [
        "unknown route /v1/chat/completions?sig=Ab+Cd+SECRET99&token=ab%2fcd%2fSECRET55",
        "ab%2Fcd%2FSECRET55 ab/cd/SECRET55 Ab Cd SECRET99 Ab%20Cd%20SECRET99",
        json.dumps({"echo": "p\u00e4ss-SECRET77"}) + json.dumps({"echo": key}),
        repr(b" \xff " + "p\u00e4ss-SECRET77".encode()) + repr(key.encode()),
        "p%C3%A4ss-SECRET77 p%c3%a4ss-SECRET77 p\u00e4ss-SECRET77",
    ]
    for text in echoes:
        assert "SECRET" not in r(text), (text, r(text))


def test_a_servers_placeholder_key_is_not_masked_out_of_replies():
    """`OPENAI_API_KEY=ollama` (Ollama's documented placeholder; vLLM's is EMPTY) had every "ollama" of a reply shown
    and saved as ***: "curl https://***.com/install.sh | sh, then run *** serve". Such a key is no secret; a real
    key still is, and so is a password in the URL."""
    from yi_cli.engines.remote_http import Transport
    from yi_cli.engines.remote_limits import Limits

    said = "curl -fsSL https://ollama.com/install.sh | sh, then run ollama serve; EMPTY means none"
    # llamafile's no-key; the words put there for a server that checks none: `none` masked "none" out of replies
    for key in ("ollama", "EMPTY", "lm-studio", "sk-no-key-required", "no-key", "none", "dummy", "test", "not-needed"):
        t = Transport(Endpoint("http://127.0.0.1:9/v1"), key, Limits(), verify=False)
        assert t.redact(said + f" ({key})") == said + f" ({key})" and t.headers["Authorization"] == f"Bearer {key}"
    t = Transport(Endpoint("http://127.0.0.1:9/v1"), "sk-ollama-live-1234", Limits(), verify=False)
    assert t.redact("key sk-ollama-live-1234") == "key ***"
    t = Transport(Endpoint("http://bob:ollama@127.0.0.1:9/v1"), None, Limits(), verify=False)
    assert t.redact("run ollama serve") == "run *** serve"  # a password, whatever its word


def test_the_redaction_looks_back_from_a_cut_only_where_a_secret_could_end():
    """Every "…" in a text had the text before it copied and searched for a secret's start: a reply (or a model
    id) of a million of them took a minute after it had come, past --deadline. Only a "…" whose last characters
    occur in a secret is looked back from, and no further than a secret's length."""
    from yi_cli.engines.remote_endpoint import Redactor

    key = "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    r = Redactor([key])
    looked: list[int] = []
    held = r.held
    r.held = lambda text: looked.append(len(text)) or held(text)
    assert r("…" * 100_000) == "…" * 100_000 and looked == []
    assert r(f"{'x' * 100_000} {key[:10]}…" * 3) == f"{'x' * 100_000} ***…" * 3
    assert len(looked) == 3 and max(looked) <= r.longest


@pytest.mark.parametrize(
    "value",
    [
        "http://host:99999/v1?q=caf\udce9",
        "http://host/v1?a=\udcff&api-key=K3Y-SECRET",
        "https://bob:S3cr3t#word99@h.example/v1",
    ]
    + ["https://bob:Pa55/word99-SECRET@h.example/v1", "https://bob:Pa55?word99-SECRET@h.example:99999/v1"],
)
def test_a_malformed_endpoints_line_hides_its_secrets_whatever_its_bytes(value):
    """A byte that is not UTF-8 in the query (argv's, as a surrogate) was an internal error (UnicodeEncodeError)
    in the line that shows the URL; a password holding `#`, `/` or `?` was shown whole (a review)."""
    with pytest.raises(UsageError) as e:
        Endpoint(value)
    msg = str(e.value)
    assert msg.endswith(": not an http(s) URL of an OpenAI-compatible server"), msg
    assert "SECRET" not in msg and "S3cr3t" not in msg and "word99" not in msg, msg

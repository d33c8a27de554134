"""Credentials never leave yi-chat: the CLI runs against a server that echoes every credential it receives (the
Authorization and api-key headers, the URL with its query) in its errors, its stream and its notes, and every
byte yi-chat wrote — stdout, stderr, the session files, the history, anything under its home — is searched for
them, in plain, URL-encoded and base64 forms."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.compat_servers import Server

USER, PASSWORD, KEY, TOKEN = "alice-user", "s3cret/pw@55", "sk-live-TOPSECRET-123", "qtok-SECRET-789"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode().rstrip("=")


# an API key echoed base64-encoded was shown (only user:password's base64 was masked)
SECRETS = [PASSWORD, quote(PASSWORD, safe=""), KEY, TOKEN, BASIC, USER, b64(KEY), b64(TOKEN)]


def echoing(h):
    """Every answer carries what the client sent: a server that would leak any credential it is given."""
    leak = f"auth={h.headers.get('Authorization')} api-key={h.headers.get('api-key')} url={h.path}"
    bearer = h.headers.get("Authorization") or ""
    key = bearer.removeprefix("Bearer ") if bearer.startswith("Bearer ") else h.headers.get("api-key") or ""
    leak += f" key64={b64(key)} token64={b64(TOKEN) if TOKEN in h.path else ''}"
    prompt = h.body["messages"][-1]["content"] if h.body else ""
    if h.command == "GET":
        return h.json(200, {"data": [{"id": "echo-model"}]})
    if prompt == "unauthorized":
        return h.json(401, {"error": {"message": f"Incorrect API key provided: {leak}"}})
    if prompt == "longerror":  # the message is cut (at 200 characters) within the credential
        return h.json(401, {"error": {"message": "x" * 170 + f" {leak}"}})
    if prompt == "crash":
        body = f"Traceback: {leak}".encode()
        h.send_response(500)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        return h.wfile.write(body)
    if prompt == "elsewhere":
        return h.redirect(f"http://localhost:{h.server.server_address[1]}/steal?token={TOKEN}&key={KEY}", 302)
    h.sse_start()
    h.event({"choices": [{"index": 0, "delta": {"content": "partial"}}]})
    if prompt == "midstream":
        h.event({"error": {"message": f"worker died: {leak}"}})
    elif prompt == "badchunk":
        h.event(f'{{"choices": [{{"delta": {{"content": 7, "echo": "{leak}"}}}}]}}')
        h.event({"choices": [{"index": 0, "delta": {"content": " done"}, "finish_reason": "stop"}]})
    elif prompt == "longbadchunk":  # the bad chunk's note is cut (at 60 characters) within the credential
        h.event("y" * 35 + f" {leak}")
        h.event({"choices": [{"index": 0, "delta": {"content": " done"}, "finish_reason": "stop"}]})
    elif prompt == "cutsecret":  # the reply repeats the credential's first 12 characters, then the stream drops
        secret = bearer.split(" ", 1)[1] if " " in bearer else key
        for i in range(0, 12, 3):
            h.event({"choices": [{"index": 0, "delta": {"content": secret[i : i + 3]}}]})
        h.close_connection = True
        h.connection.shutdown(socket.SHUT_RDWR)
        return
    elif prompt == "finishdrop":  # the reply ended as the server said, then it dropped the stream without [DONE]
        h.event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        h.close_connection = True
        h.connection.shutdown(socket.SHUT_RDWR)
        return
    elif prompt == "leakytext":  # the reply itself repeats them, three characters a chunk
        for i in range(0, len(leak), 3):
            h.event({"choices": [{"index": 0, "delta": {"content": leak[i : i + 3]}}]})
        h.event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    elif prompt == "drop":
        h.close_connection = True
        h.connection.shutdown(socket.SHUT_RDWR)
        return
    else:
        h.event({"choices": [{"index": 0, "delta": {"content": " fine"}, "finish_reason": "stop"}]})
    h.sse_end()


def yi(args, stdin, home: Path, env_key: str | None):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env.update(YI_CHAT_HOME=str(home / "yi"), HOME=str(home), NO_COLOR="1")
    if env_key:
        env["OPENAI_API_KEY"] = env_key
    return subprocess.run(
        [sys.executable, "-m", "yi_cli", *args],
        input=stdin.encode(),
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )


def everything_written(home: Path, procs) -> bytes:
    out = b"".join(p.stdout + p.stderr for p in procs)
    files = [f for f in home.rglob("*") if f.is_file() and "cache" not in f.relative_to(home).parts]
    return out + b"".join(f.read_bytes() for f in files)


@pytest.mark.parametrize("key_from", ["env", "flag", "userinfo"])
def test_no_credential_in_any_byte_written(tmp_path, key_from):
    home = tmp_path / "home"
    home.mkdir()
    save = home / "saved.json"
    with Server(echoing) as srv:
        endpoint = f"http://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{srv.port}/v1?api-version=1&token={TOKEN}"
        flags = ["--endpoint", endpoint] + (["--api-key", KEY] if key_from == "flag" else [])
        env_key = KEY if key_from == "env" else None
        script = (
            "\n".join(
                [
                    "ok",
                    "unauthorized",
                    "crash",
                    "midstream",
                    "badchunk",
                    "elsewhere",
                    "drop",
                    "leakytext",
                    "longerror",
                    "longbadchunk",
                    "cutsecret",
                    "finishdrop",
                    "/model",
                    f"/save {save}",
                    "/history",
                ]
            )
            + "\n"
        )
        chat = yi(flags + ["--stats"], script, home, env_key)
        as_json = yi(flags + ["--json"], "ok\nmidstream\nunauthorized\n", home, env_key)
        one_shot = yi(flags + ["-p", "crash"], "", home, env_key)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    refused = yi(
        ["--endpoint", f"http://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{closed}/v1?token={TOKEN}"],
        "hi\n",
        home,
        env_key,
    )
    procs = [chat, as_json, one_shot, refused]

    err = chat.stderr.decode()
    assert chat.returncode == 1, err
    # each failure is there, with the server's words, and the credentials as ***
    auth = "Basic ***" if key_from == "userinfo" else "Bearer ***"
    assert f"HTTP 401 Unauthorized: Incorrect API key provided: auth={auth}" in err
    assert f"HTTP 500 Internal Server Error: Traceback: auth={auth}" in err
    assert f"server error mid-stream: worker died: auth={auth}" in err
    assert "(another host); not followed" in err and "token=***" in err
    assert "dropped mid-stream" in err and "skipped 1 bad chunk" in err
    # a credential cut by a message's length: its first characters as *** (16 and 11 of them were shown)
    assert err.count(f"auth={auth}…") == 2 and "x" * 20 in err and "y" * 20 in err, err
    assert f"http://***@127.0.0.1:{srv.port}/v1?api-version=1&token=***" in chat.stdout.decode()  # /model
    assert one_shot.returncode == 1 and "HTTP 500" in one_shot.stderr.decode()
    assert (
        refused.returncode == 3
        and f"http://***@127.0.0.1:{closed}/v1/models?token=***: cannot connect" in refused.stderr.decode()
    )
    saved = json.loads(save.read_text())
    assert [t["content"] for t in saved["turns"] if t["role"] == "assistant"] == [
        "partial fine",
        "partial",
        "partial done",
        "partial",  # the cut replies are kept, marked interrupted
        (
            f"partialauth={auth} api-key={'***' if key_from != 'userinfo' else None} "
            f"url=/v1/chat/completions?api-version=1&token=*** key64={'***' if key_from != 'userinfo' else ''} "
            "token64=***"
        ),
        "partial done",
        "partial***",  # the credential's first characters, held back, then cut: 12 of them were kept
        "partial",  # whole: the server said it ended, then dropped the stream (it was interrupted, exit 1)
    ]
    assert [t["finish_reason"] for t in saved["turns"] if t["role"] == "assistant"] == [
        "stop",
        "interrupted",
        "stop",
        "interrupted",
        "stop",
        "stop",
        "interrupted",
        "stop",
    ]
    # and the server did receive the credentials: the test would catch a leak
    sent = [r["headers"].get("Authorization", "") for r in srv.requests]
    assert all((KEY in a) if key_from != "userinfo" else (BASIC in a) for a in sent)
    written = everything_written(home, procs)
    assert b"***" in written
    for secret in SECRETS:
        assert secret.encode() not in written, f"{secret!r} was written"
        assert secret[:10].encode() not in written, f"{secret!r}'s first characters were written"

"""A small OpenAI-compatible chat-completions server for tests: standard library only, loopback only.

It serves /v1/models and /v1/chat/completions (SSE streaming with chunked transfer encoding, as uvicorn-based
servers such as vLLM and SGLang do, and plain JSON) from any object with the engine protocol
(stream(messages, settings, cancel) yielding Text then Finish): the real demo model through LocalEngine,
or a scripted fake. Faults to inject, as attributes a test may change between requests:
  drop_after=N     close the connection without ending the chunked body after N content chunks
  corrupt_after=N  send a chunk that is not JSON after N content chunks, then go on
  error=(status, message)  answer every chat request with that HTTP error
  api_key="..."    require `Authorization: Bearer ...`, else 401
  models_gate=threading.Event()  answer /v1/models only once it is set (models_asked is set when one waits)

    with OpenAIServer(engine) as srv:
        RemoteEngine(srv.url, None)

Run by hand to serve a local model: python tests/openai_server.py demo-fp32 --port 8000
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from yi_cli.engines.events import FINISH_LENGTH, Finish, Text
from yi_cli.engines.settings import GenSettings
from yi_cli.errors import YiError

MAX_BODY = 1 << 20  # bytes; a test never sends more, and the server stays bounded


def prompt_of(engine, messages):
    """The served engine's prompt for `messages`, as a server applies its model's chat template."""
    from yi_cli.engines.template import Prompt

    return engine.template.build(messages) if engine.template is not None else Prompt(messages)


class OpenAIServer:
    def __init__(
        self,
        engine,
        model: str = "demo",
        api_key: str | None = None,
        drop_after: int | None = None,
        corrupt_after: int | None = None,
        error: tuple[int, str] | None = None,
        port: int = 0,
    ):
        self.engine = engine
        self.model = model
        self.api_key = api_key
        self.drop_after = drop_after
        self.corrupt_after = corrupt_after
        self.error = error
        self.port = port  # 0: an ephemeral port, read back after start
        self.requests: list[dict] = []  # bodies of the chat requests, for tests to inspect
        self.models_gate: threading.Event | None = None
        self.models_asked = threading.Event()
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> OpenAIServer:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.app = self
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="openai-server", daemon=True
        )
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def settings_of(body: dict) -> GenSettings:
    """Request fields -> GenSettings; absent fields keep the project's defaults. Raises UsageError (-> 400)."""
    names = {
        "temperature": "temperature",
        "top_p": "top_p",
        "top_k": "top_k",
        "seed": "seed",
        "repetition_penalty": "repetition_penalty",
        "max_tokens": "max_new_tokens",
        "max_completion_tokens": "max_new_tokens",
    }
    return GenSettings.from_dict({ours: body[theirs] for theirs, ours in names.items() if body.get(theirs) is not None})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked bodies, like the servers this stands in for
    timeout = 10  # seconds an idle connection may hold a thread

    def log_message(self, *args) -> None:  # quiet: pytest shows failures, not access logs
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):  # a client gone mid keep-alive (cancel, timeout) is normal
            pass

    @property
    def app(self) -> OpenAIServer:
        return self.server.app

    def do_GET(self) -> None:
        if not self._authorized():
            return
        if self.path.split("?")[0].rstrip("/") != "/v1/models":
            return self._error(404, f"no route {self.path}")
        self.app.models_asked.set()
        if self.app.models_gate is not None:
            self.app.models_gate.wait(60)
        self._json(200, {"object": "list", "data": [{"id": self.app.model, "object": "model", "owned_by": "tests"}]})

    def do_POST(self) -> None:
        if not self._authorized():
            return
        if self.path.split("?")[0].rstrip("/") != "/v1/chat/completions":
            return self._error(404, f"no route {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True  # the body stays unread
            return self._error(413, f"request body over {MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(length))
            messages = body["messages"]
            settings = settings_of(body)
        except (ValueError, KeyError, TypeError, YiError) as e:
            return self._error(400, f"bad request: {e}")
        self.app.requests.append(body)
        if self.app.error:
            return self._error(*self.app.error)
        if body.get("stream"):
            self._stream(messages, settings, bool((body.get("stream_options") or {}).get("include_usage")))
        else:
            self._complete(messages, settings)

    def _authorized(self) -> bool:
        if self.app.api_key is None or self.headers.get("Authorization") == f"Bearer {self.app.api_key}":
            return True
        self._error(401, "Incorrect API key provided", "invalid_api_key")
        return False

    def _complete(self, messages, settings) -> None:
        text, stats = [], None
        for ev in self.app.engine.stream(prompt_of(self.app.engine, messages), settings, threading.Event()):
            if isinstance(ev, Text):
                text.append(ev.text)
            elif isinstance(ev, Finish):
                stats = ev.stats
        self._json(
            200,
            {
                **self._head("chat.completion"),
                "usage": usage(stats),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(text)},
                        "finish_reason": reason(stats),
                    }
                ],
            },
        )

    def _stream(self, messages, settings, include_usage: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        cancel = threading.Event()
        events = self.app.engine.stream(prompt_of(self.app.engine, messages), settings, cancel)
        head = self._head("chat.completion.chunk")
        sent, stats = 0, None
        try:
            self._send(
                json.dumps(
                    {
                        **head,
                        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
                    }
                )
            )
            for ev in events:
                if isinstance(ev, Finish):
                    stats = ev.stats
                    continue
                if self.app.drop_after is not None and sent >= self.app.drop_after:
                    return self._drop(cancel)
                if self.app.corrupt_after is not None and sent == self.app.corrupt_after:
                    self._send('{"choices": [{"delta": {"content": "unterminated')
                self._send(
                    json.dumps(
                        {**head, "choices": [{"index": 0, "delta": {"content": ev.text}, "finish_reason": None}]}
                    )
                )
                sent += 1
        except YiError as e:  # the engine failed after the 200: vLLM's way is an error chunk
            self._send(json.dumps({"error": {"message": str(e), "type": "server_error", "code": 500}}))
        except (BrokenPipeError, ConnectionResetError):  # the client went away (cancel): stop generating
            cancel.set()
            self.close_connection = True
            return
        finally:
            events.close()  # runs the engine's cleanup (joins LocalEngine's generate thread)
        if stats is not None:
            self._send(json.dumps({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": reason(stats)}]}))
            if include_usage:
                self._send(json.dumps({**head, "choices": [], "usage": usage(stats)}))
        self._send("[DONE]")
        self.wfile.write(b"0\r\n\r\n")  # the chunked body's end

    def _send(self, data: str) -> None:
        """One SSE event as one HTTP chunk."""
        event = f"data: {data}\n\n".encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))

    def _drop(self, cancel: threading.Event) -> None:
        cancel.set()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)  # no terminating chunk: the client sees a broken body

    def _head(self, kind: str) -> dict:
        return {
            "id": f"chatcmpl-{len(self.app.requests)}",
            "object": kind,
            "created": int(time.time()),
            "model": self.app.model,
        }

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        self._json(
            status,
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error" if status < 500 else "server_error",
                    "code": code or status,
                }
            },
        )

    def _json(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def reason(stats) -> str:
    return "length" if stats is not None and stats.finish_reason == FINISH_LENGTH else "stop"


def usage(stats) -> dict:
    p, n = (stats.prompt_tokens, stats.new_tokens) if stats is not None else (0, 0)
    return {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}


if __name__ == "__main__":
    import argparse

    from yi_cli.checkpoint.loader import open_checkpoint
    from yi_cli.engines.local import LocalEngine

    ap = argparse.ArgumentParser(description="serve a local model over the OpenAI chat API on 127.0.0.1")
    ap.add_argument("model", nargs="?", default="demo-fp32")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args()
    with OpenAIServer(LocalEngine(open_checkpoint(args.model, device="cpu")), model=args.model, port=args.port) as srv:
        print(f"serving {args.model} at {srv.url}", flush=True)
        srv.thread.join()

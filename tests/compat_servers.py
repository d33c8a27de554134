"""Loopback HTTP servers that answer the way real OpenAI-style servers do, byte for byte where it matters, and the
hostile ones: each request is handed to a test's function, which writes the answer with the helpers below.

Shapes follow each server's documented (and observed) answers:
  vLLM       first chunk role + "" content, `logprobs`/`stop_reason` fields, finish chunk, a usage chunk with
             `choices: []`, `data: [DONE]`; errors {"object": "error", "message", "type", "code"}
  llama.cpp  first chunk role + null content, `usage` and `timings` inside the finish chunk, [DONE];
             errors {"error": {"code", "message", "type"}}; /v1/models has both "models" and "data"
  ollama     role in every delta, system_fingerprint "fp_ollama", usage chunk, [DONE];
             errors {"error": {"message", "type": "api_error", ...}}
  Azure      /openai/deployments/NAME/chat/completions?api-version=..., key in the `api-key` header, a first chunk
             with `choices: []` and prompt_filter_results, content_filter_results on every choice, [DONE];
             errors {"error": {"code": "404", "message": "Resource not found"}}
Every loop that could run forever is bounded in count, so a server stops by itself.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class Server:
    """`with Server(answer) as srv:` serves on 127.0.0.1 (srv.port); answer(h) handles each request."""

    def __init__(self, answer, tls: tuple[str, str] | None = None, host: str = "127.0.0.1"):
        self.answer = answer
        self.tls = tls  # (certfile, keyfile)
        self.host = host
        self.requests: list[dict] = []  # method, path, headers, body of each request

    @property
    def root(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def __enter__(self) -> Self:
        self.httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self.httpd.app = self
        self.httpd.daemon_threads = True
        if self.tls:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10

    def log_message(self, *args) -> None:
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, OSError):  # the client went away (a bound tripped, a cancel): normal here
            pass

    def do_GET(self) -> None:
        self._serve(None)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._serve(json.loads(body) if body else None)

    def _serve(self, body) -> None:
        app = self.server.app
        self.body = body
        app.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
        app.answer(self)

    # --- answers ---
    def json(self, status: int, obj, headers: dict | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def raw(self, status: int, content_type: str, data: bytes, headers: dict | None = None) -> None:
        """An answer of `data` as it is (an error page, a body that is no JSON)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def redirect(self, location: str, status: int = 301) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def sse_start(self, content_type: str = "text/event-stream") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data: bytes) -> None:
        """One HTTP chunk of the body."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def event(self, obj) -> None:
        self.chunk(
            b"data: " + (obj if isinstance(obj, str) else json.dumps(obj)).encode("utf-8", "surrogatepass") + b"\n\n"
        )

    def sse_end(self) -> None:
        self.event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def wait_for_close(self, limit: float = 10.0) -> bool:
        """Block until the client closes the connection (True) or `limit` seconds pass (False)."""
        self.connection.settimeout(limit)
        try:
            return self.connection.recv(1) == b""
        except TimeoutError:
            return False
        except OSError:
            return True


# --- the flavours: (models answer, stream writer, error answer) -------------------------------------------------


def usage(p: int, n: int) -> dict:
    return {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}


def vllm(h: Handler, words: list[str], reason: str = "stop") -> None:
    head = {
        "id": "chatcmpl-7f3a",
        "object": "chat.completion.chunk",
        "created": 1764500000,
        "model": "Qwen/Qwen2.5-7B-Instruct",
    }
    h.sse_start("text/event-stream; charset=utf-8")
    h.event(
        {
            **head,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
            ],
        }
    )
    for w in words:
        h.event({**head, "choices": [{"index": 0, "delta": {"content": w}, "logprobs": None, "finish_reason": None}]})
    h.event(
        {
            **head,
            "choices": [
                {"index": 0, "delta": {"content": ""}, "logprobs": None, "finish_reason": reason, "stop_reason": None}
            ],
        }
    )
    if (h.body.get("stream_options") or {}).get("include_usage"):
        h.event({**head, "choices": [], "usage": usage(11, len(words))})
    h.sse_end()


def vllm_models(h: Handler) -> None:
    h.json(
        200,
        {
            "object": "list",
            "data": [
                {
                    "id": "Qwen/Qwen2.5-7B-Instruct",
                    "object": "model",
                    "created": 1764500000,
                    "owned_by": "vllm",
                    "root": "/models/qwen",
                    "parent": None,
                    "max_model_len": 32768,
                    "permission": [],
                }
            ],
        },
    )


def vllm_error(h: Handler) -> None:
    h.json(
        400,
        {
            "object": "error",
            "message": "This model's maximum context length is 32768 tokens. However, you "
            "requested 40000 tokens in the messages. Please reduce the length of the messages.",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
    )


def llamacpp(h: Handler, words: list[str], reason: str = "stop") -> None:
    head = {
        "created": 1764500000,
        "id": "chatcmpl-Xq2",
        "model": "gpt-3.5-turbo",
        "system_fingerprint": "b5000-7b3c6e1",
        "object": "chat.completion.chunk",
    }
    h.sse_start()
    h.event({"choices": [{"finish_reason": None, "index": 0, "delta": {"role": "assistant", "content": None}}], **head})
    for w in words:
        h.event({"choices": [{"finish_reason": None, "index": 0, "delta": {"content": w}}], **head})
    h.event(
        {
            "choices": [{"finish_reason": reason, "index": 0, "delta": {}}],
            **head,
            "usage": usage(11, len(words)),
            "timings": {"prompt_n": 11, "prompt_ms": 20.1, "predicted_n": len(words), "predicted_ms": 30.2},
        }
    )
    h.sse_end()


def llamacpp_models(h: Handler) -> None:
    h.json(
        200,
        {
            "models": [{"name": "yi-6b-chat.Q4_K_M.gguf", "model": "yi-6b-chat.Q4_K_M.gguf", "type": "model"}],
            "object": "list",
            "data": [
                {
                    "id": "yi-6b-chat.Q4_K_M.gguf",
                    "object": "model",
                    "created": 1764500000,
                    "owned_by": "llamacpp",
                    "meta": {"n_ctx_train": 4096},
                }
            ],
        },
    )


def llamacpp_error(h: Handler) -> None:
    h.json(
        400,
        {
            "error": {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": 5000,
                "n_ctx": 4096,
            }
        },
    )


def ollama(h: Handler, words: list[str], reason: str = "stop") -> None:
    head = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1764500000,
        "model": "yi:6b",
        "system_fingerprint": "fp_ollama",
    }
    h.sse_start()
    for w in words:
        h.event(
            {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": w}, "finish_reason": None}]}
        )
    h.event({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": reason}]})
    if (h.body.get("stream_options") or {}).get("include_usage"):
        h.event({**head, "choices": [], "usage": usage(11, len(words))})
    h.sse_end()


def ollama_models(h: Handler) -> None:
    h.json(
        200,
        {"object": "list", "data": [{"id": "yi:6b", "object": "model", "created": 1764500000, "owned_by": "library"}]},
    )


def ollama_error(h: Handler) -> None:
    h.json(
        404,
        {
            "error": {
                "message": 'model "yi:34b" not found, try pulling it first',
                "type": "api_error",
                "param": None,
                "code": None,
            }
        },
    )


FILTERS = {k: {"filtered": False, "severity": "safe"} for k in ("hate", "self_harm", "sexual", "violence")}


def azure(h: Handler, words: list[str], reason: str = "stop") -> None:
    head = {
        "created": 1764500000,
        "id": "chatcmpl-AzX",
        "model": "gpt-4o-2024-08-06",
        "object": "chat.completion.chunk",
        "system_fingerprint": "fp_04751d0b65",
    }
    h.sse_start()
    h.event(
        {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": FILTERS}],
        }
    )
    h.event(
        {
            "choices": [
                {
                    "content_filter_results": {},
                    "delta": {"content": "", "refusal": None, "role": "assistant"},
                    "finish_reason": None,
                    "index": 0,
                    "logprobs": None,
                }
            ],
            **head,
        }
    )
    for w in words:
        h.event(
            {
                "choices": [
                    {
                        "content_filter_results": FILTERS,
                        "delta": {"content": w},
                        "finish_reason": None,
                        "index": 0,
                        "logprobs": None,
                    }
                ],
                **head,
            }
        )
    h.event(
        {
            "choices": [
                {"content_filter_results": {}, "delta": {}, "finish_reason": reason, "index": 0, "logprobs": None}
            ],
            **head,
        }
    )
    if (h.body.get("stream_options") or {}).get("include_usage"):
        h.event({"choices": [], **head, "usage": usage(11, len(words))})
    h.sse_end()


def azure_error(h: Handler) -> None:
    h.json(
        400,
        {
            "error": {
                "message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
                "management policy.",
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
            }
        },
    )


def self_signed(tmp_path) -> tuple[str, str] | None:
    """A certificate for 127.0.0.1 made by the openssl tool, or None where there is none."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return str(cert), str(key)


def forever(limit_s: float = 20.0):
    """range() for a server loop that 'never ends': bounded in time so a server always stops by itself."""
    end = time.monotonic() + limit_s
    i = 0
    while time.monotonic() < end:
        yield i
        i += 1

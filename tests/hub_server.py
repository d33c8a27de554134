"""A loopback fake of the Hugging Face Hub: the requests huggingface_hub makes to fetch a model repo.

    GET  /api/models/{repo}/revision/{rev}       model info (sha = the repo's commit)
    GET  /api/models/{repo}/tree/{rev}           recursive file listing with sizes, blob ids, LFS sha256
    HEAD /{repo}/resolve/{rev}/{path}            X-Repo-Commit, ETag (sha256 for LFS files), Content-Length
    GET  /{repo}/resolve/{rev}/{path}            the bytes; `Range: bytes=N-` (or N-M) answers 206 from N (to M)

{rev} is main, another branch or tag of the Repo's `branches`, or one of their commits; any other revision answers
404 RevisionNotFound. A missing repo answers 404 with X-Error-Code RepoNotFound; a gated repo's files answer 401
GatedRepo unless the request carries `Authorization: Bearer <token>` with a token the server knows (model info and
listing stay public, as on the real hub). Faults for tests: `drop[path] = n` sends n bytes of the next GET of `path`
and closes the connection (`reset[path] = n`: resets it); `hold[path] = n` sends n bytes, sets `held` and waits
for `release` (then closes); `loop`
holds paths whose GETs redirect to themselves; `corrupt[path] = data` serves data in place of the file's bytes to
its GETs (its HEAD and listing unchanged: what the hub claims); `trickle[path] = s` sends its bytes one each s
seconds; `endless` holds "revision", "tree" or file names whose GETs answer a body without end, `tree_next` a next
page for every listing answer ("self": its own), `head_size[path]` the size a HEAD claims, `moved[path]` where
its GETs redirect, `gzip_api` its API's answers gzip-compressed, `silent` "revision" or "tree" GETs it never
answers (until `release`). Every request is
recorded in `log` as (method, path, Range header, has-auth).

    python tests/hub_server.py --port 8765 acme/tiny-chat=/path/to/checkpoint   # serve by hand
"""

from __future__ import annotations

import gzip
import hashlib
import json
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin")


class Repo:
    def __init__(self, files: dict[str, bytes], gated: bool = False, branches: dict[str, Repo] | None = None):
        self.files = files
        self.gated = gated
        self.branches = branches or {}  # another branch or tag -> its content (main is this Repo's)
        self.commit = hashlib.sha1(
            b"".join(hashlib.sha1(k.encode() + v).digest() for k, v in sorted(files.items()))
        ).hexdigest()

    def entry(self, path: str) -> dict:
        data = self.files[path]
        e = {
            "type": "file",
            "path": path,
            "size": len(data),
            "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(),
        }
        if path.endswith(LFS_SUFFIXES):
            e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return e

    def at(self, revision: str) -> Repo | None:
        """The content at a branch, tag or full commit id; None where the repo has no such revision."""
        for name, r in {"main": self, **self.branches}.items():
            if revision in (name, r.commit):
                return r
        return None

    def etag(self, path: str) -> str:
        e = self.entry(path)
        return e["lfs"]["oid"] if "lfs" in e else e["oid"]

    @classmethod
    def from_dir(cls, path: Path, gated: bool = False) -> Repo:
        return cls({f.name: f.read_bytes() for f in sorted(Path(path).iterdir()) if f.is_file()}, gated)


class FakeHub:
    def __init__(self, port: int = 0):
        self.repos: dict[str, Repo] = {}
        self.tokens: set[str] = set()
        self.drop: dict[str, int] = {}
        self.hold: dict[str, int] = {}
        self.drop_always: dict[str, int] = {}  # as drop, for every GET of the path until removed
        self.reset: dict[str, int] = {}  # as drop, the connection reset (RST: "Connection reset by peer"), once
        self.fail_head_once: dict[str, int] = {}  # file name -> an HTTP status its next HEAD answers
        self.refuse: dict[str, int] = {}  # repo -> an HTTP status (401 / 403) for all its calls, no gated code
        self.fail: dict[str, int] = {}  # file name -> an HTTP status its GETs answer (a 500 on the weights)
        self.fail_once: dict[str, int] = {}  # as fail, for the next GET of the file (or "revision", "tree") only
        self.retry_after: str | None = None  # a Retry-After header on the `fail` / `fail_once` answers
        self.loop: set[str] = set()  # file names whose GETs redirect to themselves
        self.corrupt: dict[str, bytes] = {}  # file name -> bytes its GETs send instead of the listed ones
        self.trickle: dict[str, float] = {}  # file name, "revision" or "tree" -> seconds between the bytes its GETs
        # send, one at a time
        self.ranges = True  # False: GETs ignore a Range header and send the whole file (200), as some servers do
        self.not_a_hub = False  # True: every URL answers 200 with a web page (HF_ENDPOINT at some other server)
        self.etags = True  # False: files are served without an ETag (a mirror or proxy that drops it)
        # a hostile stand-in hub: model info answers this `sha` (served as main), files these ETags, the listing
        # these blob ids (file name -> id: its LFS oid, or its git oid)
        self.sha: str | None = None
        self.etag_of: dict[str, str] = {}
        self.oid_of: dict[str, str] = {}
        self.path_of: dict[str, object] = {}  # file name -> what the listing gives as its path (5, None, a list)
        self.size_of: dict[str, int] = {}  # file name -> the size the listing gives it (its bytes unchanged)
        # a Link header's next page on every listing answer ("self": its own URL, a loop; a whole URL: another host)
        self.tree_next: str | None = None
        self.endless: set[str] = set()  # "revision", "tree" or file names whose GET bodies never end (chunked)
        self.head_size: dict[str, int] = {}  # file name -> the Content-Length its HEAD claims
        self.moved: dict[str, str] = {}  # file name -> the Location its GETs redirect to
        self.gzip_api = False  # True: the model info and listing answer gzip-compressed, whatever was asked
        self.repeat = 1  # the listing gives each file this many times
        self.extra: list[dict] = []  # entries the listing gives after the repo's own
        self.silent: set[str] = set()  # "revision", "tree" or a file name: its GET is read and never answered
        self.held = threading.Event()
        self.release = threading.Event()
        self.log: list[tuple[str, str, str | None, bool]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet: tests read hub.log
                pass

            def do_HEAD(self):
                hub._serve(self, head=True)

            def do_GET(self):
                hub._serve(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def requests(self, method: str, suffix: str) -> list[tuple[str, str, str | None, bool]]:
        return [r for r in self.log if r[0] == method and r[1].endswith(suffix)]

    def _serve(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        raw = urlparse(h.path).path
        path = unquote(raw)
        auth = h.headers.get("Authorization", "")
        self.log.append(("HEAD" if head else "GET", path, h.headers.get("Range"), bool(auth)))
        if self.not_a_hub:
            return self._send(h, 200, b"<html><body>Welcome</body></html>", {"Content-Type": "text/html"}, head)
        parts = [unquote(p) for p in raw.strip("/").split("/")]  # a revision's quoted / stays in its part
        for name, status in self.refuse.items():
            if f"/{name}/" in f"{path}/":
                return self._error(h, status, None, "Invalid credentials in Authorization header")
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            if parts[4] in self.endless and not head:
                return self._endless(h, b"[", json.dumps({"path": "x" * 200, "type": "file"}).encode() + b",")
            if parts[4] in self.silent and not head:
                self.release.wait(120)
                return
            if (status := None if head else self.fail_once.pop(parts[4], None)) is not None:  # a rate limit, once
                extra = {"Retry-After": self.retry_after} if self.retry_after is not None else None
                return self._error(h, status, None, "Too Many Requests", extra)
            repo = self.repos.get(f"{parts[2]}/{parts[3]}")
            if repo is None:
                return self._error(h, 404, "RepoNotFound", "Repository not found")
            repo = repo if parts[5] == self.sha else repo.at(parts[5])
            if repo is None:
                return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {parts[5]}")
            if parts[4] == "revision":
                body = {
                    "id": f"{parts[2]}/{parts[3]}",
                    "sha": self.sha or repo.commit,
                    "gated": "auto" if repo.gated else False,
                    "private": False,
                    "siblings": [{"rfilename": p} for p in sorted(repo.files)],
                }
            else:
                body = [repo.entry(p) for p in sorted(repo.files)]
                for e in body:  # (each entry a fresh dict)
                    if e["path"] in self.oid_of:
                        (e["lfs"] if "lfs" in e else e)["oid"] = self.oid_of[e["path"]]
                    if e["path"] in self.size_of:
                        e["size"] = self.size_of[e["path"]]
                        if "lfs" in e:
                            e["lfs"]["size"] = self.size_of[e["path"]]
                    if e["path"] in self.path_of:
                        e["path"] = self.path_of[e["path"]]
            if parts[4] == "tree":
                body = body * self.repeat + self.extra
            headers = {"Content-Type": "application/json"}
            if parts[4] == "tree" and self.tree_next is not None:
                nxt = h.path if self.tree_next == "self" else self.tree_next
                headers["Link"] = f'<{nxt if nxt.startswith("http") else self.url + nxt}>; rel="next"'
            data = json.dumps(body).encode()
            if self.gzip_api:
                data, headers["Content-Encoding"] = gzip.compress(data), "gzip"
            if parts[4] in self.trickle and not head:
                return self._trickle(h, 200, data, headers, self.trickle[parts[4]])
            return self._send(h, 200, data, headers, head)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self.repos.get(f"{parts[0]}/{parts[1]}")
            name = "/".join(parts[4:])
            if repo is None:
                return self._error(h, 404, "RepoNotFound", "Repository not found")
            repo = repo if parts[3] == self.sha else repo.at(parts[3])
            if repo is None:
                return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {parts[3]}")
            if repo.gated and auth.removeprefix("Bearer ") not in self.tokens:
                return self._error(
                    h,
                    401,
                    "GatedRepo",
                    f"Access to model {parts[0]}/{parts[1]} is restricted. "
                    "You must have access to it and be authenticated to access it. Please log in.",
                    {"X-Repo-Commit": repo.commit},
                )
            if name not in repo.files:
                return self._error(h, 404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": repo.commit})
            if name in self.loop and not head:
                return self._send(h, 302, b"", {"Location": raw}, head)
            if name in self.moved and not head:
                return self._send(h, 302, b"", {"Location": self.moved[name]}, head)
            if name in self.silent and not head:  # read, never answered
                self.release.wait(120)
                return
            status = self.fail_head_once.pop(name, None) if head else self.fail_once.pop(name, self.fail.get(name))
            if status is not None:
                extra = {"Retry-After": self.retry_after} if self.retry_after is not None else None
                return self._error(h, status, None, "Internal Error", extra)
            return self._file(h, repo, name, head)
        return self._error(h, 404, None, "Not found")

    def _file(self, h, repo: Repo, name: str, head: bool) -> None:
        data = repo.files[name]
        headers = {
            "X-Repo-Commit": repo.commit,
            "ETag": f'"{self.etag_of.get(name, repo.etag(name))}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if not self.etags:
            del headers["ETag"]
        if name in self.endless and not head:
            return self._endless(h, data, data, headers)
        if head and name in self.head_size:
            return self._send(h, 200, b"", headers, head, length=self.head_size[name])
        rng = h.headers.get("Range") if self.ranges else None
        first, _, last = rng.split("=")[1].partition("-") if rng and not head else ("0", "", "")
        served = data if head else self.corrupt.get(name, data)
        start, stop = int(first), min(int(last) + 1, len(served)) if last else len(served)
        partial = bool(start or last)
        if partial:
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(served)}"
        body = served[start:stop]
        status = 206 if partial else 200
        if name in self.trickle and not head:
            return self._trickle(h, status, body, headers, self.trickle[name])
        reset = None if head else self.reset.pop(name, None)
        dropped = None if head else self.drop.pop(name, self.drop_always.get(name))
        held = None if head else self.hold.pop(name, None)
        cut = next((n for n in (reset, dropped, held) if n is not None), None)
        if cut is None:
            return self._send(h, status, body, headers, head, length=len(body))
        # A fault: the full length is announced, part of it sent, then the connection dies.
        h.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body[:cut])
        h.wfile.flush()
        if held is not None:
            self.held.set()
            self.release.wait(timeout=120)
        h.close_connection = True
        if reset is not None:  # closed with SO_LINGER 0: the peer's next read fails with ECONNRESET
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()  # no FIN first (the server's own shutdown would send one): closed once its files are
            return
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _endless(self, h, first: bytes, more: bytes, headers: dict | None = None) -> None:
        """A 200 whose chunked body never ends: `first`, then `more` (64 kB at a time) until the client leaves."""
        h.send_response(200)
        for k, v in {"Content-Type": "application/json", **(headers or {}), "Transfer-Encoding": "chunked"}.items():
            h.send_header(k, v)
        h.end_headers()
        h.close_connection = True
        chunk, more = first, more * max(1, (64 << 10) // len(more))
        try:
            while not self.release.is_set():
                h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                chunk = more
        except OSError:  # the client gave up
            pass

    def _trickle(self, h, status: int, body: bytes, headers: dict, every: float) -> None:
        """The full length announced, then a byte each `every` seconds until the client leaves (or release)."""
        h.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            h.send_header(k, v)
        h.end_headers()
        h.close_connection = True
        try:
            for i in range(len(body)):
                h.wfile.write(body[i : i + 1])
                h.wfile.flush()
                if self.release.wait(every):
                    return
        except OSError:  # the client gave up
            pass

    def _error(self, h, status: int, code: str | None, message: str, extra: dict | None = None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(h, status, json.dumps({"error": message}).encode(), headers, h.command == "HEAD")

    @staticmethod
    def _send(h, status: int, body: bytes, headers: dict, head: bool, length: int | None = None) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body) if length is None else length))
        h.end_headers()
        if not head:
            try:
                h.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # a client that read what it wanted and hung up
                h.close_connection = True


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="a loopback fake Hugging Face Hub")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("repos", nargs="+", metavar="ORG/NAME=DIR")
    a = ap.parse_args(argv)
    hub = FakeHub(a.port)
    for spec in a.repos:
        repo, _, d = spec.partition("=")
        hub.repos[repo] = Repo.from_dir(Path(d))
    print(f"HF_ENDPOINT={hub.url}", flush=True)
    hub.server.serve_forever()


if __name__ == "__main__":
    main()

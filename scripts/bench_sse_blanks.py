"""CPU time the remote engine spends on an event stream of blank lines (a hostile or broken server's keep-alive
flood): MiB of `\\n` in 64 KiB chunks, then one word, from a stand-in server on 127.0.0.1 in this process.

    python3 scripts/bench_sse_blanks.py [--mib 32]

Prints one JSON line: the process's CPU seconds and the wall seconds of the whole reply (server thread included).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.compat_servers import Server  # noqa: E402
from yi_cli.engines.remote import RemoteEngine  # noqa: E402
from yi_cli.engines.settings import GenSettings  # noqa: E402
from yi_cli.engines.template import Prompt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=32, help="MiB of blank lines before the word (the stream limit is 64)")
    mib = ap.parse_args().mib

    def answer(h):
        h.sse_start()
        for _ in range(mib * 16):
            h.chunk(b"\n" * 65536)
        h.event({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]})
        h.sse_end()

    with Server(answer) as srv:
        cpu, wall = time.process_time(), time.perf_counter()
        prompt = Prompt([{"role": "user", "content": "hello"}])
        events = list(RemoteEngine(srv.root, None, model="m").stream(prompt, GenSettings(), threading.Event()))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    text = "".join(getattr(e, "text", "") for e in events)
    print(
        json.dumps(
            {
                "script": "bench_sse_blanks",
                "mib": mib,
                "cpu_s": round(cpu, 2),
                "wall_s": round(wall, 2),
                "reply": text,
                "finish_reason": events[-1].stats.finish_reason,
            }
        )
    )


if __name__ == "__main__":
    main()

"""A first start on an empty Triton cache, in this process (GPU): what FastDecoder's compile-ahead reports, and the
time to the first token.

    python scripts/bench_ahead.py --model /tmp/yi-bench/yi-6b-awq
    PYTHONPATH=<other tree> python scripts/bench_ahead.py --model /tmp/yi-bench/yi-6b-awq --tree base

One JSON line: compiled (kernels.precompile.ahead's {"kernels", "workers", "dry_s", "s"}), import_to_ready_s
(imports, load, compile-ahead and the decode graphs captured at load), first_token_after_ready_s (a 17-token prompt
to its first token: what was not compiled or built ahead, C launchers included, is done there) and total_s. Each
run makes its own empty TRITON_CACHE_DIR (under TMPDIR). yi_cli comes from PYTHONPATH where that names a tree (an
A/B of two revisions with this one script), else from this checkout. scripts/bench_start.py times the real entry
(`yi-chat` in a fresh process to the first byte of its reply) instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tree", default="this", help="a label for the line (e.g. the revision on PYTHONPATH)")
    a = ap.parse_args(argv)
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="yi-bench-ahead-")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    t0 = time.perf_counter()
    from yi_cli.checkpoint.loader import open_checkpoint
    from yi_cli.engines.settings import GenSettings
    from yi_cli.runtime.decoder import FastDecoder

    dec = FastDecoder(open_checkpoint(a.model, device="cuda", dtype="auto"))
    ready = time.perf_counter() - t0
    t1 = time.perf_counter()
    settings = GenSettings(max_new_tokens=2, seed=0)
    next(iter(dec.generate(list(range(100, 117)), settings, threading.Event(), set())))
    first = time.perf_counter() - t1
    row = {"tree": a.tree, "compiled": dec.compiled, "import_to_ready_s": round(ready, 2)}
    print(json.dumps(row | {"first_token_after_ready_s": round(first, 2), "total_s": round(ready + first, 2)}))
    return 0


if __name__ == "__main__":
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # after PYTHONPATH's trees
    sys.exit(main())

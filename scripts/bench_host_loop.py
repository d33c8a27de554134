"""What a token costs the decode loop beyond its graphed step (CUDA): FastDecoder.generate's wall time a token
against the step's graph replayed back to back, and the same loop with each step's token copied out to the host
after its replay (how the loop read it before the sampler posted it into pinned memory itself).

    python3 scripts/bench_host_loop.py --path /tmp/yi-bench/yi-6b-awq [--rounds 3]

256 tokens after a 512-token prompt (scripts/bench.py's decode run), rounds interleaved; prints a JSON line a round
and one with the medians (µs a token).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from yi_cli.checkpoint.loader import open_checkpoint  # noqa: E402
from yi_cli.engines.settings import GenSettings  # noqa: E402
from yi_cli.runtime.decoder import FastDecoder  # noqa: E402

PROMPT, NEW = 512, 256


def generate_us(dec: FastDecoder, ids: list[int], copy: bool) -> float:
    """Wall µs a token between the first token and the last (bench.py's rates), the shipped loop or the copying
    one (the sampler's host ring left out: decoder._launch then copies each token)."""
    host = dec.sampler.host
    if copy:
        dec.sampler.host = None
    try:
        dec.cached = []
        times = []
        s = GenSettings(seed=0, speculate="off", max_new_tokens=NEW)
        for _ in dec.generate(ids, s, threading.Event(), set()):
            times.append(time.perf_counter())
    finally:
        dec.sampler.host = host
    return (times[-1] - times[0]) * 1e6 / (len(times) - 1)


def replay_us(dec: FastDecoder, length: int, reps: int = 200) -> float:
    """µs a step of the same bucket's graph replayed back to back (no host read between steps)."""
    with torch.inference_mode():
        dec.pos.fill_(PROMPT)
    for _ in range(10):
        dec.graphs.replay(length)
    with torch.inference_mode():
        dec.pos.fill_(PROMPT)
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        dec.graphs.replay(length)
    b.record()
    b.synchronize()
    return a.elapsed_time(b) * 1e3 / reps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", required=True, help="a checkpoint (scripts/make_checkpoint.py)")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    dec = FastDecoder(open_checkpoint(a.path, device="cuda", dtype="auto"))
    ids = torch.randint(10, 60000, (PROMPT,), generator=torch.Generator().manual_seed(7)).tolist()
    generate_us(dec, ids, False)  # warm: the bucket's graph, clocks
    res: dict[str, list[float]] = {}
    for rnd in range(a.rounds):
        row = {
            "generate_us": generate_us(dec, ids, False),
            "generate_copy_us": generate_us(dec, ids, True),
            "replay_us": replay_us(dec, PROMPT + NEW),
        }
        row = {k: round(v, 1) for k, v in row.items()}
        print(json.dumps({"round": rnd, **row}), flush=True)
        for k, v in row.items():
            res.setdefault(k, []).append(v)
    med = {k: statistics.median(v) for k, v in res.items()}
    print(json.dumps({"device": torch.cuda.get_device_name(), "model": a.path, "medians_us": med}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

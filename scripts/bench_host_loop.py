"""What a token costs the decode loop beyond its graphed step (CUDA): FastDecoder.generate's wall time a token
against the step's graph replayed back to back, and the same loop copying each step's token out to the host after
its replay (what the loop did before the sampler posted the token into pinned memory itself: the graph here still
posts it too, a store that costs the step nothing measurable).

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
from bench import rates  # noqa: E402
from bench_attention import replay_us  # noqa: E402

from yi_cli.checkpoint.loader import open_checkpoint  # noqa: E402
from yi_cli.engines.settings import GenSettings  # noqa: E402
from yi_cli.runtime.decoder import FastDecoder  # noqa: E402

PROMPT, NEW = 512, 256


def generate_us(dec: FastDecoder, ids: list[int], copy: bool) -> float:
    """Wall µs a token between the first token and the last (bench.py's rates), the shipped loop or one copying
    each token out (the sampler's host ring left out: decoder._launch then queues the copy)."""
    ring = dec.sampler.host
    dec.sampler.host = None if copy else ring
    try:
        dec.cached = []
        s = GenSettings(seed=0, speculate="off", max_new_tokens=NEW)
        times = [time.perf_counter()]
        for _ in dec.generate(ids, s, threading.Event(), set()):
            times.append(time.perf_counter())
    finally:
        dec.sampler.host = ring
    return 1e6 / rates(times)[1]


@torch.inference_mode()
def step_us(dec: FastDecoder) -> float:
    """µs a step of the bucket's graph replayed back to back from the prompt's end (no host read between)."""
    dec.pos.fill_(PROMPT)
    return replay_us(lambda: dec.graphs.replay(PROMPT + NEW), 200)


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
            "replay_us": step_us(dec),
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

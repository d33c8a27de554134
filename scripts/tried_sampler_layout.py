"""Tried and dropped (BENCHMARKS.md, twenty-ninth session): nucleus._sample's layout swept on CUDA. For each (ids a
program, cap on programs, warps), µs a call of `nucleus.sample` (bench_parts.graph_time_us) at three settings over
Yi's vocabulary (64000), and how many of 200 steps of the noise pick the token the first (shipped) layout picks.

    python3 scripts/tried_sampler_layout.py

One JSON line a layout: "SETTING/LOGITS": [µs, same picks of 200].
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_parts import graph_time_us  # noqa: E402
from bench_sampler import VOCAB, case  # noqa: E402

from yi_cli.engines.settings import GenSettings  # noqa: E402
from yi_cli.kernels import nucleus  # noqa: E402

LAYOUTS = [  # (BLOCK, CTAS, WARPS); the first is the shipped one
    (4096, 32, 16),
    (4096, 32, 8),
    (2048, 32, 16),
    (2048, 32, 8),
    (2048, 32, 4),
    (1024, 64, 8),
    (1024, 64, 4),
    (1024, 64, 2),
    (8192, 32, 16),
    (512, 128, 4),
    (512, 128, 2),
]
SETTINGS = {"default": (0.6, 0.8, 0, 1.2), "top_p 0.05": (1.0, 0.05, 0, 1.0), "top_k 40": (0.9, 0.95, 40, 1.1)}
KINDS = {"lm": 3.0, "flat": 0.5}  # standard deviation of the logits


def picks_and_time(work, settings, scale: float, steps: int = 200) -> tuple[list[int], float]:
    sm, logits, out = case(settings, scale)
    seen, rng = sm.seen.clone(), sm.rng.clone()

    def call():
        nucleus.sample(logits, sm.seen, sm.params, sm.rng, out, work)

    picks = []
    for step in range(steps):
        sm.seen.copy_(seen)
        sm.rng.copy_(rng)
        sm.rng[1] = step
        call()
        picks.append(int(out))
    return picks, graph_time_us(call)


def main() -> int:
    if not torch.cuda.is_available():
        print("tried_sampler_layout: needs CUDA", file=sys.stderr)
        return 2
    first: dict[str, list[int]] = {}
    for block, cap, warps in LAYOUTS:
        nucleus.BLOCK, nucleus.CTAS, nucleus.WARPS = block, cap, warps  # read by layout() and Work.launch
        work = nucleus.Work(VOCAB, "cuda")
        row = {"block": block, "cap": cap, "warps": warps, "ctas": work.ctas}
        for name, (t, p, k, pen) in SETTINGS.items():
            settings = GenSettings(temperature=t, top_p=p, top_k=k, repetition_penalty=pen, seed=5)
            for kind, scale in KINDS.items():
                picks, us = picks_and_time(work, settings, scale)
                key = f"{name}/{kind}"
                same = sum(a == b for a, b in zip(picks, first.setdefault(key, picks), strict=True))
                row[key] = [round(us, 2), same]
        print(json.dumps(row), flush=True)
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "vocab": VOCAB}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

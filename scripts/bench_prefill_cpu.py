"""A long prompt's time to first token on the CPU (the demo model by default): FastDecoder.generate's first token
after prompts of N random ids from a cold cache, with each int4 projection dequantized once for all the prompt's
prefill chunks (`kept`, llama.KEEP_DENSE_BYTES as shipped) and once per chunk (`per_chunk`, KEEP_DENSE_BYTES = 0),
alternating; also whether both gave the same first token.

    OMP_WAIT_POLICY=PASSIVE python scripts/bench_prefill_cpu.py [--model demo] [--lengths 256 1024 2048]
Prints one JSON line per length.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from yi_cli.checkpoint.loader import open_checkpoint, resolve  # noqa: E402
from yi_cli.engines.settings import GenSettings  # noqa: E402
from yi_cli.runtime import llama  # noqa: E402
from yi_cli.runtime.decoder import PREFILL_CHUNK, FastDecoder  # noqa: E402

SHIPPED = llama.KEEP_DENSE_BYTES


def first_token(dec, ids: list[int]) -> tuple[float, int]:
    dec.cached, dec.last_prefill = [], (0, [])
    t0 = time.perf_counter()
    tok = next(dec.generate(ids, GenSettings(temperature=0, max_new_tokens=1), threading.Event(), set()))
    return time.perf_counter() - t0, tok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 2048])
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args(argv)
    dec = FastDecoder(open_checkpoint(str(resolve(a.model)), device="cpu", dtype="fp32"))
    base = {"device": f"cpu ({os.cpu_count()} cores)", "model": a.model, "torch": torch.__version__}
    base["chunk"] = PREFILL_CHUNK["cpu"]
    vocab = dec.model.embed.shape[0]
    for n in a.lengths:
        ids = torch.randint(100, vocab, (n,), generator=torch.Generator().manual_seed(n)).tolist()
        first_token(dec, ids[:64])  # warm-up
        times, toks = {"kept": [], "per_chunk": []}, set()
        for _ in range(a.rounds):
            for mode, limit in (("per_chunk", 0), ("kept", SHIPPED)):
                llama.KEEP_DENSE_BYTES = limit
                t, tok = first_token(dec, ids)
                times[mode].append(round(t, 3))
                toks.add(tok)
        llama.KEEP_DENSE_BYTES = SHIPPED
        row = {**base, "prompt_tokens": n, "ttft_s": times, "same_token": len(toks) == 1}
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

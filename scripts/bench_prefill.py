"""Where a prompt's time to first token goes on CUDA (issue 16's TTFT(2k)): generate's first token for 2048-token
prompts, each 1024-token prefill chunk, one 2048-token chunk and its extra peak memory, the dequantization of every
projection (mma_layout.dequant by chunks a program, and the element-gather kernel it replaced), prompt attention for
all heads in one flash call against one call per head group, short prompt tails in chunks of 8 through the
tensor-core GEMV against one dense chunk, the dense GEMMs, and a profile of one first token.

    python scripts/bench_prefill.py --path /tmp/yi-bench/yi-6b-awq
Prints one JSON object.
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
from yi_cli.kernels import gemv_mma, glue, mma_layout, tinygemm  # noqa: E402
from yi_cli.runtime import causal, llama  # noqa: E402
from yi_cli.runtime.decoder import FastDecoder  # noqa: E402


def timed(fn, reps: int = 5) -> tuple[float, float]:
    """(min, median) ms of fn() with the GPU synchronized around it."""
    ts = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e3)
    return round(min(ts), 2), round(statistics.median(ts), 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--path", required=True)
    a = ap.parse_args(argv)
    dec = FastDecoder(open_checkpoint(a.path, device="cuda", dtype="bf16"))
    settings = GenSettings(max_new_tokens=2, seed=0, speculate="off")
    g = torch.Generator().manual_seed(0)

    def prompt(n):
        return torch.randint(100, 60000, (n,), generator=g).tolist()

    def first(ids):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        it = dec.generate(ids, settings, threading.Event(), set())
        next(it)
        t = time.perf_counter() - t0
        list(it)
        return t

    first(prompt(2048))
    first(prompt(2048))
    out = {"device": torch.cuda.get_device_name()}
    out["ttft_2k_ms"] = [round(first(prompt(2048)) * 1e3, 2) for _ in range(5)]
    ids = torch.tensor(prompt(2048), device="cuda")
    m = dec.model
    with torch.inference_mode():
        out["chunk0_1024_ms"] = timed(lambda: m.prefill(ids[:1024], 0))
        out["chunk1_1024_ms"] = timed(lambda: m.prefill(ids[1024:], 1024))
        base = torch.cuda.memory_allocated()
        for label, fn in (("one_2048", lambda: m.prefill(ids, 0)), ("chunk_1024", lambda: m.prefill(ids[:1024], 0))):
            torch.cuda.reset_peak_memory_stats()
            out[f"{label}_ms"] = timed(fn)
            out[f"{label}_extra_peak_MiB"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
        projs = [p for layer in m.layers for p in (layer.qkv, layer.o, layer.gate_up, layer.down)]
        if all(getattr(p, "mma", False) for p in projs):
            default = mma_layout.DEQUANT_CHUNKS
            for nc in (1, 2, 4, 8):
                mma_layout.DEQUANT_CHUNKS = nc
                out[f"dequant_all_ms_chunks{nc}"] = timed(lambda: [p.dense(torch.bfloat16) for p in projs])
            mma_layout.DEQUANT_CHUNKS = default
            inv = torch.argsort(tinygemm.element_pos(mma_layout.pack, 16, 64, "cuda")).to(torch.int32)

            def gather(p):  # each element's word found through the tile's index map (the kernel before)
                w = torch.empty(p.n, p.k, dtype=torch.bfloat16, device="cuda")
                for i, (packed, sz) in enumerate(p.planes):
                    glue.dequant_int4(packed, inv, sz, w, p.group, (16, 64), i > 0)
                return w

            out["dequant_all_ms_gather"] = timed(lambda: [gather(p) for p in projs])
            out["dequant_same_bits"] = all(torch.equal(gather(p), p.dense(torch.bfloat16)) for p in projs[:4])
        hd, kv, groups = m.hd, m.n_kv, m.n_heads // m.n_kv
        for t, length in ((1024, 1024), (1024, 2048)):
            qg = torch.randn(1, kv, groups * t, hd, device="cuda", dtype=m.dtype)
            kc, vc = (torch.randn(1, kv, length, hd, device="cuda", dtype=m.dtype) for _ in "kv")
            layers = len(m.layers)
            out[f"attention_{t}_{length}_one_call_ms"] = timed(
                lambda: [llama.attention(qg, kc, vc, t, None) for _ in range(layers)]
            )
            real, causal.grouped = causal.grouped, lambda *_: None
            try:
                out[f"attention_{t}_{length}_per_group_ms"] = timed(
                    lambda: [llama.attention(qg, kc, vc, t, None) for _ in range(layers)]
                )
            finally:
                causal.grouped = real
        if m.exact_rows:  # short prompts: chunks of 8 tokens through gemv_mma (eager) against one dense chunk
            rows = gemv_mma.MAX_X
            for n in (8, 16, 24, 32, 48, 64):
                tail = ids[:n]
                out[f"short_{n}_rows_ms"] = timed(lambda: [m.prefill(tail[s : s + rows], s) for s in range(0, n, rows)])
                out[f"short_{n}_dense_ms"] = timed(lambda: m.prefill(tail, 0, dense=True))
        layer = m.layers[0]
        for name in ("qkv", "o", "gate_up", "down"):
            w = getattr(layer, name).dense(m.dtype)
            x = torch.randn(1024, w.shape[1], device="cuda", dtype=m.dtype)
            ms = timed(lambda: [torch.nn.functional.linear(x, w) for _ in range(10)])[0] / 10
            out[f"gemm1024_{name}_TFLOPS"] = round(2 * 1024 * w.numel() / ms / 1e9, 1)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            first(prompt(2048))
        ev = sorted(prof.key_averages(), key=lambda e: -(e.device_time_total or 0))
        out["kernels_ms"] = [(e.key[:60], round((e.device_time_total or 0) / 1e3, 2), e.count) for e in ev[:12]]
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where a FastDecoder step's time goes on the GPU: kernel time by kind vs wall time per replayed step, the int4
matmuls alone (bandwidth), and prefill through the int4 kernel vs dequantize + GEMM by prompt length.

    python scripts/bench_parts.py --path /tmp/yi-bench/yi-6b-awq
    python scripts/bench_parts.py --path /tmp/yi-bench/yi-6b-awq --timeline [--length 768]
Prints JSON lines; the last one is a short summary. --timeline instead: the step's exposed time per kernel, i.e.
how much later each kernel ends than every kernel before it (with programmatic dependent launch a kernel starts
while the one before drains, so its duration overstates its share; the exposed times add up to the step), summed
by kernel name and, for one layer in the middle of the step, in launch order.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from yi_cli.checkpoint.loader import open_checkpoint  # noqa: E402
from yi_cli.engines.settings import GenSettings  # noqa: E402
from yi_cli.runtime.decoder import FastDecoder  # noqa: E402


def graph_time_us(fn, reps: int = 20, iters: int = 20) -> float:
    """Median time of one fn() call, from a CUDA graph holding `reps` calls (launch gaps mostly removed)."""
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1e3 / reps)
    return statistics.median(ts)


def kind(name: str) -> str:
    n = name.lower()
    for key, label in (
        ("_gemv_mma", "gemv"),  # the decode step's GEMVs: int4 / int8 codes or dense weights, with their epilogues
        ("nvjet", "dense_gemm"),  # cuBLAS (the lm_head)
        ("tinygemm", "int4_mm"),
        ("int4", "int4_mm"),
        ("fmha", "attention"),
        ("attention", "attention"),
        ("_attn", "attention"),
        ("flash", "attention"),
        ("gemm", "dense_gemm"),
        ("gemv", "dense_gemm"),
        ("_sample", "sampling"),  # nucleus.sample: the whole choice in one launch
        ("sort", "sampling"),
        ("scan", "sampling"),
    ):
        if key in n:
            return label
    return "other"


def step_breakdown(dec, length: int, steps: int = 20) -> dict:
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        dec.graphs.replay(length)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        dec.graphs.replay(length)
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / steps * 1e6
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            dec.graphs.replay(length)
        torch.cuda.synchronize()
    by, count = defaultdict(float), defaultdict(int)
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if e.device_type == torch.autograd.DeviceType.CUDA or "cuda" in str(e.device_type).lower():
            by[kind(e.key)] += t / steps
            count[kind(e.key)] += e.count // steps
    top = sorted(
        (
            (e.key[:60], round((getattr(e, "device_time_total", 0) or 0) / steps, 1), e.count // steps)
            for e in prof.key_averages()
        ),
        key=lambda x: -x[1],
    )[:24]
    return {
        "bucket": dec.graphs.bucket(length),
        "wall_us_per_step": round(wall, 1),
        "kernel_us": {k: round(v, 1) for k, v in by.items()},
        "kernels_per_step": dict(count),
        "kernel_total_us": round(sum(by.values()), 1),
        "top_kernels": top,
    }


def exposed(spans: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """(name, start, end) of one step's kernels in launch order -> (name, how much later it ends than every kernel
    before it, at least 0; its start against that end, negative where it launched early); the first kernel counts
    from its own start. The exposed times add up to the step's span."""
    out = []
    edge = spans[0][1] if spans else 0.0
    for name, start, end in spans:
        out.append((name, max(0.0, end - edge), start - edge))
        edge = max(edge, end)
    return out


def by_name(steps: list[list[tuple[str, float, float]]]) -> list[dict]:
    """Exposed time per kernel name, per step (averaged over steps), largest first."""
    total, count = defaultdict(float), defaultdict(int)
    for step in steps:
        for name, us, _ in step:
            total[name] += us
            count[name] += 1
    n = len(steps)
    rows = [
        {"kernel": k[:60], "launches": count[k] // n, "exposed_us": round(total[k] / n, 1), "kind": kind(k)}
        for k in total
    ]
    return sorted(rows, key=lambda r: -r["exposed_us"])


def step_timeline(dec, length: int, steps: int = 10) -> dict:
    """The graphed step attending to `length` slots under the profiler: exposed time by kernel and kind, and one
    layer in the middle's kernels in order, from its [q; k; v] GEMV (name, exposed µs, start relative to the end of
    everything before it: negative where it launched early)."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(5):
        dec.graphs.replay(length)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            dec.graphs.replay(length)
        torch.cuda.synchronize()
    ev = sorted(
        ((e.name, e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type.name == "CUDA"),
        key=lambda e: e[1],
    )
    per, rest = divmod(len(ev), steps)
    if rest:
        raise SystemExit(f"{len(ev)} kernels do not split into {steps} equal steps")
    spans = [ev[i * per : (i + 1) * per] for i in range(steps)]
    steps_exposed = [exposed(s) for s in spans]
    kinds = defaultdict(float)
    for row in by_name(steps_exposed):
        kinds[row["kind"]] += row["exposed_us"]
    mid = steps_exposed[steps // 2]
    # from the kernel before the first attention launch past the middle (the [q; k; v] GEMV)
    first = next((i - 1 for i, e in enumerate(mid) if i > per // 2 and kind(e[0]) == "attention"), per // 2)
    layer = [
        {"kernel": name[:40], "exposed_us": round(us, 2), "start_us": round(start, 2)}
        for name, us, start in mid[first : first + per // len(dec.model.layers)]
    ]
    return {
        "bucket": dec.graphs.bucket(length),
        "step_us": round(statistics.median(max(e[2] for e in s) - s[0][1] for s in spans), 1),
        "kernels_per_step": per,
        "exposed_by_kind_us": {k: round(v, 1) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
        "exposed_by_kernel": by_name(steps_exposed),
        "one_layer": layer,
    }


def matmuls(dec) -> dict:
    m = dec.model
    layer = m.layers[0]
    x = torch.randn(1, m.embed.shape[1], device="cuda", dtype=m.dtype)
    xi = torch.randn(1, m.inter, device="cuda", dtype=m.dtype)
    out = {}
    for name, lin, inp in (
        ("qkv", layer.qkv, x),
        ("o", layer.o, x),
        ("gate_up", layer.gate_up, x),
        ("down", layer.down, xi),
    ):
        us = graph_time_us(lambda: lin.mm(inp))
        nbytes = (
            sum(p.numel() * p.element_size() + sz.numel() * sz.element_size() for p, sz in lin.planes)
            if hasattr(lin, "planes")
            else lin.w.numel() * lin.w.element_size()
        )
        out[name] = {"us": round(us, 1), "TB_s": round(nbytes / us / 1e6, 2)}
    # the lm_head as the decode step runs it: the tensor-core GEMV (FastLlama.head_gemv; its norm aside), or cuBLAS
    us = graph_time_us(
        (lambda: m.head_proj.mm(x)) if m.head_gemv else (lambda: torch.nn.functional.linear(x, m.lm_head))
    )
    out["lm_head"] = {"us": round(us, 1), "TB_s": round(m.lm_head.numel() * 2 / us / 1e6, 2)}
    per_tok = sum(v["us"] for k, v in out.items() if k != "lm_head") * len(m.layers) + out["lm_head"]["us"]
    out["all_matmuls_ms_per_token"] = round(per_tok / 1e3, 3)
    return out


def prefill_sweep(dec) -> list[dict]:
    rows = []
    for t in (16, 32, 64, 128, 256, 512, 1024, 2048):
        ids = torch.randint(10, 60000, (t,), device="cuda")
        r = {"tokens": t}
        for label, dense in (("int4_ms", False), ("dequant_gemm_ms", True)):
            ts = []
            for _ in range(3):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                with torch.inference_mode():
                    dec.model.prefill(ids, 0, dense=dense)
                torch.cuda.synchronize()
                ts.append((time.perf_counter() - t0) * 1e3)
            r[label] = round(min(ts), 2)
        rows.append(r)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--path", required=True)
    ap.add_argument("--dtype", default="auto", help="as yi-chat's --dtype (auto: the dtype yi-chat picks)")
    ap.add_argument("--timeline", action="store_true", help="only the step's exposed time per kernel")
    ap.add_argument("--length", type=int, default=768, help="slots attended in --timeline")
    a = ap.parse_args(argv)
    dec = FastDecoder(open_checkpoint(a.path, device="cuda", dtype=a.dtype))
    list(
        dec.generate(
            list(range(100, 612)), GenSettings(max_new_tokens=4, seed=0), __import__("threading").Event(), set()
        )
    )
    if a.timeline:
        info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "model": a.path}
        print(json.dumps(info | {"dtype": str(dec.model.dtype), "timeline": step_timeline(dec, a.length)}), flush=True)
        return 0
    summary = {}
    for length in (600, 4096):
        b = step_breakdown(dec, length)
        print(json.dumps({"step": b}), flush=True)
        summary[f"step_us_L{b['bucket']}"] = (b["wall_us_per_step"], b["kernel_total_us"])
    mm = matmuls(dec)
    print(json.dumps({"matmuls": mm}), flush=True)
    sweep = prefill_sweep(dec)
    print(json.dumps({"prefill": sweep}), flush=True)
    summary["matmul_ms_per_token"] = mm["all_matmuls_ms_per_token"]
    summary["prefill_2k_ms"] = (sweep[-1]["int4_ms"], sweep[-1]["dequant_gemm_ms"])
    print(json.dumps({"summary": summary}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

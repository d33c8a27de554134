"""What each glue fold costs the tensor-core GEMV (gemv_mma): per-launch µs of a model shape's four decode matmuls
plain and with the epilogue the chained decode step runs (runtime/llama.py): qkv with the norm's 1 / rms, rope and
the cache write; o and down with the residual add, the next norm's input and its partial sums; gate_up with the
norm's 1 / rms before silu·up. One weight set per matmul, in a CUDA graph of 20 launches (bench_parts.graph_time_us).

    python scripts/bench_folds.py [--shape yi-6b|yi-34b] [--down-configs]
--down-configs: the down projection plain and with its residual epilogue at several (tiles, warps, ahead, x ahead)
(the residual epilogue's registers change how ptxas schedules the loop: Yi-34B's down at x ahead 0 lost 6 µs).
Prints JSON lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from yi_cli.kernels import gemv_mma  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gemv import SHAPES, plane  # noqa: E402
from bench_parts import graph_time_us  # noqa: E402

# (tiles, warps, units ahead, x units ahead, chunks a unit): one chunk a unit, and pairs (Yi-34B ships 1, 8, 3, 1, 2)
DOWN_CONFIGS = [(2, 8, 3, 0, 1), (2, 8, 3, 1, 1), (2, 8, 3, 3, 1), (1, 8, 3, 0, 1), (2, 8, 2, 2, 1), (1, 8, 4, 2, 1)]
DOWN_CONFIGS += [(1, 8, 3, 1, 2), (2, 8, 1, 1, 2)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="yi-6b", choices=["yi-6b", "yi-34b"])
    ap.add_argument("--down-configs", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    d, inter, heads, kv, hd = SHAPES[a.shape]
    nq = (heads + 2 * kv) * hd
    x, xi = torch.randn(1, d, device="cuda").bfloat16(), torch.randn(1, inter, device="cuda").bfloat16()
    programs = d // (16 * gemv_mma.config(d, d)[0])  # o's launch: its residual epilogue writes a partial each
    part = torch.rand(gemv_mma.MAX_X, programs, device="cuda")
    xr, wn = torch.randn(1, d, device="cuda").bfloat16(), torch.randn(d, device="cuda").bfloat16()
    slots = 4096
    kc = torch.zeros(1, kv, slots, hd, device="cuda").bfloat16()
    vc = kc.clone()
    cos = torch.randn(slots, hd, device="cuda").bfloat16()
    sin = cos.clone()
    rope = (cos, sin, torch.tensor([600], device="cuda"), kc, vc, heads, kv, hd)
    norm = (part, 1e-6)
    dn = plane(d, inter)
    if a.down_configs:
        out = {}
        for rt, warps, ahead, xahead, pair in DOWN_CONFIGS:
            kw = dict(rt=rt, warps=warps, ahead=ahead, xahead=xahead, pair=pair)
            out[str((rt, warps, ahead, xahead, pair))] = [
                round(graph_time_us(lambda kw=kw: gemv_mma.gemv_mma(xi, *dn, d, inter, 128, **kw)), 2),
                round(
                    graph_time_us(lambda kw=kw: gemv_mma.gemv_mma(xi, *dn, d, inter, 128, residual=(xr, wn), **kw)),
                    2,
                ),
            ]
        print(json.dumps({"shape": a.shape, "down_plain_and_residual_us": out}))
        return
    qkv, o, gu = plane(nq, d), plane(d, d), plane(2 * inter, d)
    cases = {
        "qkv": lambda: gemv_mma.gemv_mma(x, *qkv, nq, d, 128),
        "qkv_halves": lambda: gemv_mma.gemv_mma(x, *qkv, nq, d, 128, halves=hd),
        "qkv_rope": lambda: gemv_mma.gemv_mma(x, *qkv, nq, d, 128, halves=hd, rope=rope),
        "qkv_rope_norm": lambda: gemv_mma.gemv_mma(x, *qkv, nq, d, 128, halves=hd, rope=rope, norm=norm),
        "o": lambda: gemv_mma.gemv_mma(x, *o, d, d, 128),
        "o_residual": lambda: gemv_mma.gemv_mma(x, *o, d, d, 128, residual=(xr, wn)),
        "gate_up": lambda: gemv_mma.gemv_mma(x, *gu, 2 * inter, d, 128, silu=True),
        "gate_up_norm": lambda: gemv_mma.gemv_mma(x, *gu, 2 * inter, d, 128, silu=True, norm=norm),
        "down": lambda: gemv_mma.gemv_mma(xi, *dn, d, inter, 128),
        "down_residual": lambda: gemv_mma.gemv_mma(xi, *dn, d, inter, 128, residual=(xr, wn)),
    }
    for _ in range(2):
        print(json.dumps({"shape": a.shape, **{k: round(graph_time_us(f), 2) for k, f in cases.items()}}), flush=True)


if __name__ == "__main__":
    main()

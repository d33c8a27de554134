"""The int4 GEMV at batch 1 on the GPU: yi-chat's Gluon kernel (gemv.gemv_int4) against tinygemm
(torch's _weight_int4pack_mm) on the same packed weights, for a model shape's four decode matmuls.

    python scripts/bench_gemv.py [--shape yi-6b] [--sweep]
    python scripts/bench_gemv.py --x-rows 2 4 8   # a verify's rows: gemv_int4_rows vs tinygemm vs one-row GEMV
    python scripts/bench_gemv.py --mma [--sweep]  # the tensor-core GEMV (gemv_mma) beside the CUDA-core one
    python scripts/bench_gemv.py --x-rows 2 4 8 --mma  # and gemv_mma on those rows
    python scripts/bench_gemv.py --dense [--sweep] [--dtype fp16]  # gemv_mma on dense weights against cuBLAS
    python scripts/bench_gemv.py --int8 [--sweep] [--dtype fp16]  # gemv_mma on int8 codes (GPTQ 8-bit)
    python scripts/bench_gemv.py --floor  # a launch's floor: gemv_mma on 1-2 chunks of K, with and without PDL
Each matmul is timed over COPIES different weight sets in one CUDA graph, so weights come from HBM, not L2.
Prints one JSON line per (matmul, kernel config); the last line is a summary.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from yi_cli.kernels import gemv, gemv_mma, mma_layout, tinygemm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_parts import graph_time_us  # noqa: E402

SHAPES = {
    "yi-6b": (4096, 11008, 32, 4, 128),
    "yi-34b": (7168, 20480, 56, 8, 128),  # hidden, inter, heads, kv, hd
    "demo": (576, 1536, 9, 3, 64),
}
COPIES = 8
# gemv_mma's (chunks of weights, chunks of x) loaded ahead that --mma --sweep tries
MMA_AHEAD = [(2, 2), (3, 3), (2, 1), (3, 1), (4, 1), (2, 0), (3, 0), (4, 0), (5, 0), (4, 2), (4, 4)]


def mma_kw(cfg, n: int, k: int, group: int, bits: int) -> tuple[dict, list]:
    """gemv_mma's keyword arguments for a swept configuration (rt, warps, ahead, xahead, pair[, unroll]; pairs only
    where gemv_mma.pairs allows them: not with --group 64 or YI_CHAT_MMA_PAIR=0) or, cfg None, none (the launcher's own
    configuration, with its fallback where pairs do not fit); and the configuration as printed."""
    if cfg is None:
        return {}, list(gemv_mma.config(n, k, bits))
    rt, warps, ahead, xahead, pair, *unroll = cfg
    pair = pair if gemv_mma.pairs(k, group, bits) else 1
    unroll = unroll[0] if unroll and pair == cfg[4] else ahead  # a unit of one chunk where pairs were refused
    kw = dict(rt=rt, warps=warps, ahead=ahead, xahead=xahead, pair=pair, unroll=unroll)
    return kw, [rt, warps, ahead, xahead, pair, unroll]


def graph_us(fns) -> float:
    """Median time of one call, the calls in `fns` (one per weight copy) captured together in a CUDA graph."""
    return graph_time_us(lambda: [f() for f in fns]) / len(fns)


def x_rows(n, k, group, wpr, sets, counts, pdl, nbytes, mma=False) -> dict:
    """gemv_int4_rows on T rows of x (each R of gemv.X_ROWS_R's choices and the default) against tinygemm on the
    same T rows and the one-row GEMV on one row: one JSON line per T."""
    out = {}
    mma_sets = [(mma_layout.pack(q), sz) for _, sz, q in sets] if mma else []
    for t in counts:
        x = torch.randn(t, k, device="cuda", dtype=torch.bfloat16)
        ref = torch.ops.aten._weight_int4pack_mm(x, sets[0][0], group, sets[0][1]).float()
        row = {
            "n": n,
            "k": k,
            "x_rows": t,
            "tinygemm_us": round(
                graph_us([lambda p=p, s=s: torch.ops.aten._weight_int4pack_mm(x, p, group, s) for p, s, _ in sets]), 2
            ),
            "one_row_gemv_us": round(
                graph_us([lambda p=p, s=s: gemv.gemv_int4(x[:1], p, s, n, k, group, wpr, pdl=pdl) for p, s, _ in sets]),
                2,
            ),
        }
        for r in sorted({2, 4, 8, gemv.X_ROWS_R[1 << (t - 1).bit_length()]}) if t > 1 else ():
            try:
                y = gemv.gemv_int4_rows(x, sets[0][0], sets[0][1], n, k, group, wpr, rows=r, pdl=pdl)
                err = float((y.float() - ref).norm() / ref.norm())
                us = graph_us(
                    [
                        lambda p=p, s=s: gemv.gemv_int4_rows(x, p, s, n, k, group, wpr, rows=r, pdl=pdl)
                        for p, s, _ in sets
                    ]
                )
            except Exception as e:  # registers, shared memory
                row[f"rows_{r}_error"] = str(e)[-300:]
                continue
            row[f"rows_{r}_us"] = round(us, 2)
            row[f"rows_{r}_TB_s"] = round(nbytes / us / 1e6, 2)
            row[f"rows_{r}_rel_err_vs_tinygemm"] = round(err, 5)
        if mma:  # the tensor-core GEMV on the same t rows and on one (its default configuration)
            y = gemv_mma.gemv_mma(x, *mma_sets[0], n, k, group, pdl=pdl)
            row["mma_rel_err_vs_tinygemm"] = round(float((y.float() - ref).norm() / ref.norm()), 5)
            for m, xm in (("mma_us", x), ("mma_one_row_us", x[:1])):
                row[m] = round(
                    graph_us([lambda p=p, s=s: gemv_mma.gemv_mma(xm, p, s, n, k, group, pdl=pdl) for p, s in mma_sets]),
                    2,
                )
        print(json.dumps(row), flush=True)
        out[t] = row
    return out


# gemv_mma's (row tiles, warps, chunks ahead, x chunks ahead) that --dense --sweep tries on dense weights
DENSE_SWEEP = [(1, w, ah, xah) for w in (4, 8) for ah, xah in ((1, 0), (2, 0), (2, 1), (3, 1), (4, 1))]
DENSE_SWEEP += [(2, w, ah, xah) for w in (4, 8) for ah, xah in ((1, 0), (2, 1))]


def dense(mats: dict, dtype: torch.dtype, sweep: bool, pdl) -> dict:
    """gemv_mma on dense weights (its default configuration, or DENSE_SWEEP's) against cuBLAS (F.linear) at one row,
    COPIES weight copies a matmul; gate_up also with its silu epilogue. One JSON line each; the best per matmul
    (gate_up's with silu, as a decode step runs it)."""
    import torch.nn.functional as F

    out = {}
    for name, (n, k) in mats.items():
        ws = [torch.randn(n, k, device="cuda").mul_(k**-0.5).to(dtype) for _ in range(COPIES)]
        x = torch.randn(1, k, device="cuda", dtype=dtype)
        ref = (x.float() @ ws[0].float().t()).flatten()
        nbytes = n * k * 2
        t_ref = graph_us([lambda w=w: F.linear(x, w) for w in ws])
        row = {"matmul": name, "n": n, "k": k, "dtype": str(dtype), "cublas_us": round(t_ref, 2)}
        row["cublas_TB_s"] = round(nbytes / t_ref / 1e6, 2)
        best = None
        for cfg, silu in itertools.product(DENSE_SWEEP if sweep else [gemv_mma.config(n, k, 16)], (False, True)):
            rt, warps, ahead, xahead = cfg[:4]
            if (silu and (name != "gate_up" or rt < 2)) or n % (16 * rt):
                continue
            kw = dict(rt=rt, warps=warps, pdl=pdl, silu=silu, ahead=ahead, xahead=xahead)
            try:
                y = gemv_mma.gemv_mma(x, ws[0], None, n, k, 0, **{**kw, "silu": False})
                err = float((y.float().flatten() - ref).norm() / ref.norm())
                t = graph_us([lambda w=w: gemv_mma.gemv_mma(x, w, None, n, k, 0, **kw) for w in ws])
            except Exception as e:  # registers
                print(json.dumps({"matmul": name, "dense": cfg, "error": str(e)[-400:]}), flush=True)
                continue
            line = {**row, "dense": cfg, "silu": silu, "us": round(t, 2), "TB_s": round(nbytes / t / 1e6, 2)}
            print(json.dumps(line | {"rel_err": round(err, 5)}), flush=True)
            if err < 1e-2 and silu == (name == "gate_up") and (best is None or t < best[0]):  # as the step runs
                best = (t, cfg)
        if best:
            out[name] = {"cublas_us": row["cublas_us"], "best_us": round(best[0], 2), "best": best[1]}
            out[name]["TB_s"] = round(nbytes / best[0] / 1e6, 2)
    return out


# gemv_mma's (row tiles, warps, units ahead, x units ahead, chunks a unit) that --int8 --sweep tries
INT8_SWEEP = [(rt, w, ah, xah, 2) for rt in (1, 2) for w in (4, 8) for ah, xah in ((1, 1), (2, 1), (2, 2), (3, 1))]
INT8_SWEEP += [(4, 4, 2, 1, 2), (1, 8, 2, 1, 1), (1, 8, 3, 1, 1), (1, 8, 4, 2, 1), (2, 4, 4, 1, 1)]


def int8(mats: dict, group: int, sweep: bool, pdl, dtype: torch.dtype) -> dict:
    """gemv_mma on int8 codes as stored (its default configuration, or INT8_SWEEP's), COPIES weight copies a matmul,
    one row of x in `dtype` (fp16: an fp16 model's, bf16: converted in the kernel), against x @ W.T in fp32; gate_up
    with its silu epilogue. One JSON line each; the best per matmul. (Until 3140fa1 the same lines carried the
    two-int4-plane path GPTQ 8-bit took before, timed beside it.)"""
    out = {}
    for name, (n, k) in mats.items():
        silu = name == "gate_up"
        sets = []
        for _ in range(COPIES):
            q = torch.randint(0, 256, (n, k), dtype=torch.uint8, device="cuda")
            s = (torch.rand(k // group, n, device="cuda") * 0.002 + 0.0005).to(dtype)
            sets.append((q, torch.stack([s, -128 * s], -1).contiguous()))
        x = torch.randn(1, k, device="cuda", dtype=dtype)
        q, sz = sets[0]
        w = (q.float().view(n, -1, group) - 128) * sz[..., 0].float().t()[:, :, None]
        ref = x.float() @ w.view(n, k).t()
        nbytes = n * k + n * (k // group) * 4
        best = None
        for cfg in INT8_SWEEP if sweep else [None]:
            if cfg is not None and (n % (16 * cfg[0]) or (silu and cfg[0] < 2)):
                continue
            kw, label = mma_kw(cfg, n, k, group, 8)
            kw["pdl"] = pdl
            try:
                y = gemv_mma.gemv_mma(x, q, sz, n, k, group, **kw)
                err = float((y.float() - ref).norm() / ref.norm())
                t = graph_us([lambda t=t: gemv_mma.gemv_mma(x, *t, n, k, group, silu=silu, **kw) for t in sets])
            except Exception as e:  # registers
                print(json.dumps({"matmul": name, "int8": label, "error": str(e)[-400:]}), flush=True)
                continue
            line = {"matmul": name, "n": n, "k": k, "int8": label, "silu": silu, "dtype": str(dtype), "us": round(t, 2)}
            print(json.dumps(line | {"TB_s": round(nbytes / t / 1e6, 2), "rel_err": round(err, 5)}), flush=True)
            if err < 1e-2 and (best is None or t < best[0]):
                best = (t, label)
        if best:
            out[name] = {"best_us": round(best[0], 2), "best": best[1], "TB_s": round(nbytes / best[0] / 1e6, 2)}
    return out


def plane(n: int, k: int, group: int = 128):
    """Random int4 codes in gemv_mma's packed layout and their (s, zf) scales: one weight set."""
    q = torch.randint(0, 16, (n, k), dtype=torch.uint8, device="cuda")
    sz = (torch.rand(k // group, n, 2, device="cuda") * 0.01).bfloat16().contiguous()
    return mma_layout.pack(q), sz


# (n, k, silu) that --floor times: one or two chunks of K (next to nothing to stream) at Yi-6B's row counts, and two
# whole Yi-6B matmuls for scale
FLOOR = [
    (4096, 128, False),
    (4096, 256, False),
    (5120, 128, False),
    (22016, 128, True),
    (4096, 4096, False),
    (5120, 4096, False),
]


def floor() -> None:
    """What a launch costs with next to nothing to stream: gemv_mma on random int4 codes, COPIES launches in a CUDA
    graph, with and without programmatic dependent launch; one JSON line a shape (µs a launch)."""
    for n, k, silu in FLOOR:
        sets = [plane(n, k) for _ in range(COPIES)]
        x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
        row = {"n": n, "k": k, "silu": silu}
        for pdl in (True, False):
            us = graph_us([lambda p=p, z=z: gemv_mma.gemv_mma(x, p, z, n, k, 128, silu=silu, pdl=pdl) for p, z in sets])
            row["pdl_us" if pdl else "no_pdl_us"] = round(us, 2)
        print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="yi-6b", choices=SHAPES)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--no-pdl", action="store_true", help="plain launches (default: glue.pdl)")
    ap.add_argument("--sweep", action="store_true", help="try several rows/warps configurations")
    ap.add_argument("--x-rows", type=int, nargs="*", help="time gemv_int4_rows for these rows of x instead")
    ap.add_argument(
        "--mma", action="store_true", help="also time gemv_mma (its (rt, warps, ahead, xahead) swept with --sweep)"
    )
    ap.add_argument("--dense", action="store_true", help="gemv_mma on dense weights against cuBLAS instead")
    ap.add_argument(
        "--dtype", choices=["bf16", "fp16"], default="bf16", help="--dense: the weights' dtype; --int8: x's, scales'"
    )
    ap.add_argument("--int8", action="store_true", help="gemv_mma on int8 codes (GPTQ 8-bit) instead")
    ap.add_argument("--pair", type=int, choices=[1, 2], default=1, help="--mma --sweep: chunks a unit")
    ap.add_argument("--floor", action="store_true", help="a launch's floor (gemv_mma on 1-2 chunks of K) instead")
    a = ap.parse_args()
    if a.floor:
        floor()
        return
    d, inter, heads, kv, hd = SHAPES[a.shape]
    mats = {"qkv": ((heads + 2 * kv) * hd, d), "o": (d, heads * hd), "gate_up": (2 * inter, d), "down": (d, inter)}
    if a.dense or a.int8:
        dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[a.dtype]
        pdl = False if a.no_pdl else None
        summary = dense(mats, dt, a.sweep, pdl) if a.dense else int8(mats, a.group, a.sweep, pdl, dt)
        print(json.dumps({"summary": summary, "device": torch.cuda.get_device_name()}))
        return
    configs = [(gemv.ROWS, gemv.WARPS)]
    if a.sweep:
        configs = [c for c in itertools.product((8, 16), (1, 2, 4, 8))]
    dev = torch.device("cuda")
    pdl = False if a.no_pdl else None
    print(json.dumps({"gemv_layout": {ikt: tinygemm.gemv_layout(ikt, dev) for ikt in (2, 4, 8)}}))
    summary = {}
    for name, (n, k) in mats.items():
        ikt = tinygemm.inner_k_tiles(k)
        sets = []
        for _ in range(COPIES):
            q = torch.randint(0, 16, (n, k), dtype=torch.uint8, device=dev)
            packed = tinygemm.pack(q)
            s = torch.rand(k // a.group, n, device=dev) * 0.01 + 0.001
            zf = torch.randn(k // a.group, n, device=dev) * 0.02
            sets.append((packed, torch.stack([s, zf], -1).to(torch.bfloat16).contiguous(), q))
        x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
        nbytes = n * k // 2 + n * (k // a.group) * 4
        if a.x_rows:
            summary[name] = x_rows(n, k, a.group, 2 * ikt, sets, a.x_rows, pdl, nbytes, a.mma)
            continue
        ref = torch.ops.aten._weight_int4pack_mm(x, sets[0][0], a.group, sets[0][1]).float()
        t_ref = graph_us(
            [lambda p=p, sz=sz: torch.ops.aten._weight_int4pack_mm(x, p, a.group, sz) for p, sz, _ in sets]
        )
        row = {
            "matmul": name,
            "n": n,
            "k": k,
            "tinygemm_us": round(t_ref, 2),
            "tinygemm_TB_s": round(nbytes / t_ref / 1e6, 2),
        }
        best = None
        for rows, warps in configs:
            try:
                y = gemv.gemv_int4(x, sets[0][0], sets[0][1], n, k, a.group, 2 * ikt, rows, warps, pdl)
                err = float((y.float() - ref).norm() / ref.norm())
                t = graph_us(
                    [
                        lambda p=p, sz=sz: gemv.gemv_int4(x, p, sz, n, k, a.group, 2 * ikt, rows, warps, pdl)
                        for p, sz, _ in sets
                    ]
                )
            except Exception as e:  # a config Triton cannot build (registers, shared memory)
                print(json.dumps({"matmul": name, "config": [rows, warps], "error": str(e)[-600:]}))
                continue
            print(
                json.dumps(
                    {
                        **row,
                        "config": [rows, warps],
                        "us": round(t, 2),
                        "TB_s": round(nbytes / t / 1e6, 2),
                        "rel_err_vs_tinygemm": round(err, 5),
                    }
                ),
                flush=True,
            )
            if err < 1e-2 and (best is None or t < best[0]):
                best = (t, (rows, warps))
        if a.mma:
            mma_sets = [(mma_layout.pack(q), sz) for _, sz, q in sets]
            mma_configs = (
                [(rt, w, *ax, a.pair) for rt, w, ax in itertools.product((1, 2, 4), (4, 8, 16), MMA_AHEAD)]
                if a.sweep
                else [None]
            )
            silus = (False, True) if name == "gate_up" else (False,)
            for cfg, silu in itertools.product(mma_configs, silus):
                kw, label = mma_kw(cfg, n, k, a.group, 4)
                if n % (16 * label[0]) or (silu and label[0] == 1):
                    continue
                kw["pdl"] = pdl
                try:  # silu: gate_up with its epilogue (the plain launch plus glue.silu_mul's is the alternative)
                    y = gemv_mma.gemv_mma(x, *mma_sets[0], n, k, a.group, **kw)
                    err = float((y.float() - ref).norm() / ref.norm())
                    t = graph_us(
                        [
                            lambda p=p, sz=sz: gemv_mma.gemv_mma(x, p, sz, n, k, a.group, silu=silu, **kw)
                            for p, sz in mma_sets
                        ]
                    )
                except Exception as e:
                    print(json.dumps({"matmul": name, "mma": label, "error": str(e)[-600:]}))
                    continue
                print(
                    json.dumps(
                        {
                            **row,
                            "mma": label,
                            "silu": silu,
                            "us": round(t, 2),
                            "TB_s": round(nbytes / t / 1e6, 2),
                            "rel_err_vs_tinygemm": round(err, 5),
                        }
                    ),
                    flush=True,
                )
                if err < 1e-2 and (best is None or t < best[0]):
                    best = (t, ("mma", *label, silu))
        if best:
            summary[name] = {
                "tinygemm_us": round(t_ref, 2),
                "best_us": round(best[0], 2),
                "best": best[1],
                "TB_s": round(nbytes / best[0] / 1e6, 2),
            }
    print(json.dumps({"summary": summary, "device": torch.cuda.get_device_name()}))


if __name__ == "__main__":
    main()

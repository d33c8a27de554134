"""A Yi-6B layer's four int4 GEMVs (qkv, o, gate_up + SiLU, down) for 32 layers as phases of one persistent launch
against the same GEMVs as 128 launches chained by PDL in a CUDA graph (issue 16; the twenty-third session's
bench_floor.py measured this for a kernel that only reads the bytes, this does it with the real GEMV bodies).

The persistent launch runs gemv_mma's own tile body (`mma_tile._gemv_tile`, the kernel `gemv_mma` launches one
program a tile group of) on every tile group of a phase, its programs all resident (2 an SM, 8 warps, at most 128
registers), a grid barrier between phases: an arrival counter each program adds to after its tiles (released at GPU
scope after a CTA barrier) and that a program's first tile of the next phase waits on (acquired) after loading its
first weights, where the chained launch waits for the kernel before (griddepcontrol.wait). No attention and no
epilogue folds (norm, residual, rope) in either: x -> qkv -> o -> gate_up + SiLU -> down -> x, layer after layer,
in fixed buffers. Both run the same tile configurations (gate_up at 8 warps in both, as a persistent launch has one
warp count; the chain also at its shipped 4), so their outputs must match bit for bit; the script checks that.

    python3 scripts/bench_persistent.py [--layers 32] [--rounds 3] [--cfg qkv=2,3,1,1,3 ...]

(--cfg NAME=RT,AHEAD,XAHEAD,PAIR,UNROLL: another tile configuration for that matmul, in both variants.)

Prints one JSON line: µs of each variant (median of CUDA-graph replays), the bits check, the kernel's registers.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from bench_parts import graph_time_us  # noqa: E402
from triton.experimental import gluon  # noqa: E402
from triton.experimental.gluon import language as gl  # noqa: E402

from yi_cli.kernels import gemv_mma  # noqa: E402
from yi_cli.kernels.mma_tile import _gemv_tile  # noqa: E402

HIDDEN, INTER, QKV = 4096, 11008, 5120
GROUP = 128
WARPS = 8
# (n, k, (RT, AHEAD, XAHEAD, PAIR, UNROLL), silu): the shipped configurations at 8 warps (gate_up's shipped is 4)
MATS = {
    "qkv": (QKV, HIDDEN, (1, 3, 1, 1, 3), False),
    "o": (HIDDEN, HIDDEN, (1, 3, 3, 1, 3), False),
    "gate_up": (2 * INTER, HIDDEN, (2, 1, 1, 2, 1), True),
    "down": (HIDDEN, INTER, (1, 2, 2, 2, 2), False),
}


@gluon.jit
def _phase(
    p,
    progs,
    wait_at,
    CNT,
    X,
    P,
    SZ,
    Y,
    N: gl.constexpr,
    K: gl.constexpr,
    RT: gl.constexpr,
    AHEAD: gl.constexpr,
    XAHEAD: gl.constexpr,
    PAIR: gl.constexpr,
    UNROLL: gl.constexpr,
    SILU: gl.constexpr,
):
    """This program's tile groups of one GEMV (p, p + progs, ...), the first waiting for wait_at arrivals; then its
    arrival."""
    groups: gl.constexpr = N // (16 * RT)
    for t in range(p, groups, progs):
        w = (t == p).to(gl.int32) * wait_at
        _gemv_tile(
            t, w, CNT, X, P, SZ, Y, N, 1, X, X, X, X, 0.0, X, X, X, X, X, 0,
            K // 64, 128, RT, 8, False, SILU, 4, AHEAD, XAHEAD, 0, False, 0, 0, 0, PAIR, UNROLL, 0, True, True,
        )  # fmt: skip
    gl.thread_barrier()
    gl.atomic_add(CNT, 1, sem="release", scope="gpu")


@gluon.jit
def _layers(X, Y1, Y2, Y3, PQ, SQ, PO, SO, PG, SG, PD, SD, CNT, layers, CFG: gl.constexpr):
    """`layers` layers of x -> qkv -> o -> gate_up + SiLU -> down -> x, each matmul a phase (CFG: the four
    (n, k, RT, AHEAD, XAHEAD, PAIR, UNROLL, SILU)); weights stacked a layer after another."""
    p = gl.program_id(0)
    progs = gl.num_programs(0)
    q: gl.constexpr = CFG[0]
    o: gl.constexpr = CFG[1]
    g: gl.constexpr = CFG[2]
    d: gl.constexpr = CFG[3]
    for layer in range(layers):
        at = layer * 4 * progs
        PQl = PQ + layer * (q[0] * q[1] // 8)
        SQl = SQ + layer * (q[1] // 128 * q[0] * 2)
        _phase(p, progs, at, CNT, X, PQl, SQl, Y1, q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7])
        POl = PO + layer * (o[0] * o[1] // 8)
        SOl = SO + layer * (o[1] // 128 * o[0] * 2)
        _phase(p, progs, at + progs, CNT, Y1, POl, SOl, Y2, o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7])
        PGl = PG + layer * (g[0] * g[1] // 8)
        SGl = SG + layer * (g[1] // 128 * g[0] * 2)
        _phase(p, progs, at + 2 * progs, CNT, Y2, PGl, SGl, Y3, g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7])
        PDl = PD + layer * (d[0] * d[1] // 8)
        SDl = SD + layer * (d[1] // 128 * d[0] * 2)
        _phase(p, progs, at + 3 * progs, CNT, Y3, PDl, SDl, X, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7])


def weights(n: int, k: int, layers: int, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """Random codes (as packed words) and (scale, zero) pairs centring them, `layers` stacked."""
    words = torch.randint(-(2**31), 2**31, (layers, n // 16, k // 64, 32, 4), dtype=torch.int32, device=dev)
    s = 2.0 / (math.sqrt(k) * 8)
    sz = torch.empty(layers, k // GROUP, n, 2, device=dev)
    sz[..., 0] = s * (0.5 + torch.rand(layers, k // GROUP, n, device=dev))
    sz[..., 1] = -7.5 * sz[..., 0]
    return words, sz.bfloat16().contiguous()


def buffers(x0: torch.Tensor, y3: int) -> dict:
    """x (a copy of x0) and the outputs of a layer's qkv, o and gate_up (y3 wide: SiLU's or gate and up both)."""
    out = dict(X=x0.clone())
    for name, n in (("Y1", QKV), ("Y2", HIDDEN), ("Y3", y3)):
        out[name] = torch.empty(1, n, dtype=torch.bfloat16, device=x0.device)
    return out


def cfg_spec(text: str) -> tuple[str, tuple[int, ...]]:
    """--cfg NAME=RT,AHEAD,XAHEAD,PAIR,UNROLL for one of MATS (else a usage error)."""
    name, _, nums = text.partition("=")
    if name not in MATS:
        raise argparse.ArgumentTypeError(f"unknown matmul {name!r} in {text!r} (one of {', '.join(MATS)})")
    try:
        cfg = tuple(int(v) for v in nums.split(","))
    except ValueError:
        cfg = ()
    if len(cfg) != len(MATS[name][2]):
        raise argparse.ArgumentTypeError(f"{text!r}: five numbers RT,AHEAD,XAHEAD,PAIR,UNROLL")
    return name, cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-sm", type=int, default=2)
    ap.add_argument("--cfg", type=cfg_spec, action="append", default=[], help="NAME=RT,AHEAD,XAHEAD,PAIR,UNROLL")
    args = ap.parse_args()
    for name, cfg in args.cfg:
        n, k, _, silu = MATS[name]
        MATS[name] = (n, k, cfg, silu)
    dev = torch.device("cuda")
    torch.manual_seed(0)
    L = args.layers
    W = {name: weights(n, k, L, dev) for name, (n, k, _, _) in MATS.items()}
    x0 = (torch.randn(1, HIDDEN, device=dev) * 0.5).bfloat16()
    sms = torch.cuda.get_device_properties(dev).multi_processor_count

    def chain(gate_up_warps: int):
        def run(x):
            for layer in range(L):
                h = x
                for name, (n, k, (rt, ahead, xahead, pair, unroll), silu) in MATS.items():
                    words, sz = W[name]
                    kw = dict(rt=rt, warps=WARPS, ahead=ahead, xahead=xahead, pair=pair, unroll=unroll)
                    if name == "gate_up" and gate_up_warps != WARPS:
                        kw = {}  # the shipped configuration (4 warps)
                    h = gemv_mma.gemv_mma(h, words[layer], sz[layer], n, k, GROUP, silu=silu, **kw)
                x = h
            return x

        return run

    bufs = buffers(x0, INTER)
    cnt = torch.zeros(1, dtype=torch.int32, device=dev)
    cfg = tuple((n, k, *c, silu) for n, k, c, silu in MATS.values())
    kargs = (
        bufs["X"], bufs["Y1"], bufs["Y2"], bufs["Y3"],
        *W["qkv"], *W["o"], *W["gate_up"], *W["down"], cnt, L,
    )  # fmt: skip
    progs = args.per_sm * sms
    k = _layers.warmup(*kargs, CFG=cfg, grid=(progs,), num_warps=WARPS, maxnreg=128)
    k._init_handles()
    fits = min(65536 // max(k.n_regs * 32 * WARPS, 1), 2048 // (32 * WARPS))
    out = {"device": torch.cuda.get_device_name(dev), "layers": L, "programs": progs, "registers": k.n_regs}
    out["configs"] = {name: list(c) for name, (_, _, c, _) in MATS.items()}
    out["spill_bytes"] = getattr(k, "n_spills", None)
    if fits < args.per_sm:
        out["error"] = f"not resident: {fits} programs an SM"
        print(json.dumps(out))
        return

    def persistent():
        cnt.zero_()
        _layers[(progs,)](*kargs, CFG=cfg, num_warps=WARPS, maxnreg=128)

    ref = chain(WARPS)(x0)
    bufs["X"].copy_(x0)
    persistent()
    torch.cuda.synchronize()
    out["same_bits"] = bool(torch.equal(ref.view(torch.int16), bufs["X"].view(torch.int16)))
    out["finite"] = bool(torch.isfinite(ref.float()).all())
    times = {"chain_8warp_gate_up": [], "chain_shipped": [], "persistent": []}
    for _ in range(args.rounds):
        times["chain_8warp_gate_up"].append(graph_time_us(lambda: chain(WARPS)(x0), reps=3, iters=10))
        times["chain_shipped"].append(graph_time_us(lambda: chain(4)(x0), reps=3, iters=10))
        times["persistent"].append(graph_time_us(persistent, reps=3, iters=10))
    out["us"] = {name: [round(t, 1) for t in ts] for name, ts in times.items()}
    out["median_us"] = {name: round(statistics.median(ts), 1) for name, ts in times.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()

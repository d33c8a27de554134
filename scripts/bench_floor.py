"""The floor of a decode step made of chained launches: the Yi-6B step's launch sequence (per layer qkv, attention
split and merge, o, gate_up, down; the first norm, the lm_head and the sampler) where every launch only streams the
bytes its real kernel reads (codes and scales, the KV cache's slots, the partials, the logits) through a plain
read kernel, chained by programmatic dependent launch in one CUDA graph as the real step is. No mma, no epilogue,
no data dependence: what the launch boundaries and the bytes alone cost, against the real step (scripts/bench_parts.py
--timeline) and against one launch streaming all of it (the read kernel's own bandwidth).

    python3 scripts/bench_floor.py [--shape yi-6b] [--slots 768] [--rounds 2] [--sweep] [--only VARIANT ...]
        [--ahead N ...] [--per-sm N ...] [--block N ...]

Prints one JSON line a variant (µs a step, and the tok/s that would be): `chain` the step's launches in order,
`gemvs` its 129 weight launches alone (no attention, norm or sampler launches), `layers` one launch a layer for its
four weights plus the lm_head, `one` everything in one launch; each with a program's first block read before its PDL
wait (ahead=1, as the GEMVs load their weights before they wait for x) and after it (ahead=0), and the chain also
without PDL. --sweep: the chain with 1, 2 or 4 blocks read before the wait, 1, 2 or 4 programs an SM, 8 or 16 KB
blocks, and the one launch with those programs and blocks; `persistent`: the chain's launches as phases of one
launch of resident programs, a grid barrier (an arrival counter) between phases, a program's first 0-4 blocks of a
phase read before the barrier that ends the one before (1 or 2 programs an SM); `mlp`, `mlp_red`, `mlp_red4` (Yi-6B):
the chain with each layer's gate_up and down as one launch, as a split-K fusion of the MLP would make it, each program
adding nothing, or a partial of down's 4096 outputs in fp32 by scalar atomics or by 4-float vector reductions;
`mlp_red4_c4`, `mlp_red4_c8`: a quarter or an eighth of them a program, as a cluster of 4 or 8 programs sharing one
K slice's intermediate through distributed shared memory would add; `mlp_redi_c4` the quarter as int32 atomics (a
fixed-point sum: the same bits in any order); `mlp_red4_c4x`, `mlp_redi_c4x` those launched as clusters of 4
programs that meet at the cluster's hardware barrier after 2/3 of their bytes (where they would share gate_up's
output).
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch
import triton
import triton.language as tl
from bench_parts import graph_time_us  # scripts/ is sys.path[0] when this runs as a script

SHAPES = {"yi-6b": (4096, 11008, 32, 4, 128, 32, 64000), "yi-34b": (7168, 20480, 56, 8, 128, 60, 64000)}
# The `mlp` variants: each layer's gate_up and down as one launch, a program adding its partial of down's output
# (hidden floats) into it: (floats a program adds, how: 0 fp32 atomics, 1 sm_90's 4-float vector reductions, 2 int32
# atomics (a fixed-point sum, the same bits in any order), cluster size: 0 none, else clusters of that many programs
# meeting at their hardware barrier after 2/3 of their bytes, as programs sharing a K slice's intermediate would).
# `_c4`, `_c8`: a quarter or an eighth of the 4096 a program, at its own offset.
SHAPES_RED = {
    "mlp": (0, 0, 0),
    "mlp_red": (4096, 0, 0),
    "mlp_red4": (4096, 1, 0),
    "mlp_red4_c4": (1024, 1, 0),
    "mlp_red4_c8": (512, 1, 0),
    "mlp_redi_c4": (1024, 2, 0),
    "mlp_red4_c4x": (1024, 1, 4),
    "mlp_redi_c4x": (1024, 2, 4),
}
HIDDEN_RED = 4096  # down's outputs (Yi-6B's hidden size)
GROUP = 128
BLOCK = 4096  # int32 words a program reads an iteration (16 KB)
WARPS = 8


@triton.jit
def _red4(ptr, a, b, c, d):
    """One vector reduction of four fp32 into global memory (sm_90's red.global.add.v4.f32) a thread."""
    return tl.inline_asm_elementwise(
        "red.relaxed.gpu.global.add.v4.f32 [$1], {$2, $3, $4, $5};\n\tmov.u32 $0, 0;",
        "=r,l,f,f,f,f",
        [ptr, a, b, c, d],
        dtype=tl.int32,
        is_pure=False,
        pack=1,
    )


@triton.jit
def _cluster_sync(x):
    """Every program of the launch's thread-block cluster waits here for the others (barrier.cluster's release /
    acquire). Returns x through the barrier."""
    return tl.inline_asm_elementwise(
        "barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\nmov.b32 $0, $1;",
        "=r,r",
        [x],
        dtype=tl.int32,
        is_pure=False,
        pack=1,
    )


@triton.jit
def _stream(
    W, OUT, n, iters, ACC, PDL: tl.constexpr, AHEAD: tl.constexpr, BLOCK: tl.constexpr, RED: tl.constexpr,
    HOW: tl.constexpr, CLUSTER: tl.constexpr,
):  # fmt: skip
    """Program p reads blocks p, p + P, p + 2P, ... of W's n words (a grid stride) and stores their xor, so nothing is
    optimised away: its first AHEAD blocks before the PDL wait (PDL), the rest after it. RED > 0: then adds RED
    values into ACC (a split-K GEMV's partial output): one fp32 atomic a float (HOW 0), one vector reduction of four
    (1), one int32 atomic a value (2). CLUSTER: a cluster's programs meet at its barrier after 2/3 of the blocks."""
    pid = tl.program_id(0)
    step = tl.num_programs(0)
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    for i in tl.static_range(AHEAD):
        at = (pid + i * step) * BLOCK + offs
        acc ^= tl.load(W + at, mask=(at < n) & (i < iters), other=0)
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    mid = iters
    if CLUSTER > 0:
        mid = tl.maximum(iters * 2 // 3, AHEAD)
    for i in range(AHEAD, mid):
        at = (pid + i * step) * BLOCK + offs
        acc ^= tl.load(W + at, mask=at < n, other=0)
    if CLUSTER > 0:
        acc ^= _cluster_sync(tl.sum(acc, 0))
        for i in range(mid, iters):
            at = (pid + i * step) * BLOCK + offs
            acc ^= tl.load(W + at, mask=at < n, other=0)
    if RED > 0:
        base = ACC + (pid * RED) % 4096
        if HOW == 2:
            part = tl.zeros([RED], dtype=tl.int32) + (tl.sum(acc, 0) & 1)
            tl.atomic_add(base.to(tl.pointer_type(tl.int32)) + tl.arange(0, RED), part, sem="relaxed", scope="gpu")
        else:
            part = tl.zeros([RED], dtype=tl.float32) + tl.sum(acc, 0).to(tl.float32) * 1e-30
            if HOW == 1:
                even, odd = tl.split(tl.reshape(part, [RED // 4, 2, 2]))  # floats 4j + 2h and 4j + 2h + 1
                w0, w2 = tl.split(even)
                w1, w3 = tl.split(odd)
                at = (base + 4 * tl.arange(0, RED // 4)).to(tl.int64, bitcast=True)
                acc ^= tl.sum(_red4(at, w0, w1, w2, w3), 0)
            else:
                tl.atomic_add(base + tl.arange(0, RED), part, sem="relaxed", scope="gpu")
    tl.store(OUT + pid * BLOCK + offs, acc)


@triton.jit
def _persistent(W, OUT, OFFS, NW, CNT, phases, AHEAD: tl.constexpr, BLOCK: tl.constexpr):
    """The chain's launches as phases of one launch whose programs are all resident: phase f reads words
    OFFS[f] .. OFFS[f] + NW[f] of W in _stream's grid stride, its first AHEAD blocks before the grid barrier that
    ends phase f - 1 (an arrival counter CNT, released and acquired at GPU scope: zeroed before the launch)."""
    pid = tl.program_id(0)
    step = tl.num_programs(0)
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    for f in range(phases):
        base = tl.load(OFFS + f)
        n = tl.load(NW + f)
        iters = tl.cdiv(tl.cdiv(n, BLOCK), step).to(tl.int32)
        for i in tl.static_range(AHEAD):
            at = (pid + i * step) * BLOCK + offs
            acc ^= tl.load(W + base + at, mask=(at < n) & (i < iters), other=0)
        if f > 0:  # phase f - 1 done by every program
            seen = tl.atomic_add(CNT, 0, sem="acquire", scope="gpu")
            while seen < f * step:
                seen = tl.atomic_add(CNT, 0, sem="acquire", scope="gpu")
        for i in range(AHEAD, iters):
            at = (pid + i * step) * BLOCK + offs
            acc ^= tl.load(W + base + at, mask=at < n, other=0)
        tl.atomic_add(CNT, 1, sem="release", scope="gpu")
    tl.store(OUT + pid * BLOCK + offs, acc)


def persistent(shape_plan, cfg: dict, sms: int, device):
    """The plan's launches as phases of one persistent launch (with the counter's zeroing before it)."""
    block = cfg["block"]
    sizes = [max(nbytes // 4, block) for nbytes, _ in shape_plan]
    offs = torch.tensor([0] + sizes[:-1], dtype=torch.int64).cumsum(0)
    w = torch.empty(sum(sizes), dtype=torch.int32, device=device)
    offs, nw = offs.to(device), torch.tensor(sizes, dtype=torch.int64, device=device)
    progs = cfg["per_sm"] * sms
    out = torch.empty(progs * block, dtype=torch.int32, device=device)
    cnt = torch.zeros(1, dtype=torch.int32, device=device)

    args = (w, out, offs, nw, cnt, len(sizes))
    kw = dict(AHEAD=cfg["ahead"], BLOCK=block, num_warps=WARPS)
    k = _persistent.warmup(*args, grid=(progs,), **kw)
    k._init_handles()
    smem = getattr(torch.cuda.get_device_properties(device), "shared_memory_per_multiprocessor", 228 << 10)
    fits = min(65536 // max(k.n_regs * 32 * WARPS, 1), 2048 // (32 * WARPS), smem // max(k.metadata.shared, 1))
    if fits < cfg["per_sm"]:  # its grid barrier would wait forever on programs that never start
        raise NotResident(f"{k.n_regs} registers a thread: {fits} programs an SM, not {cfg['per_sm']}")

    def call():
        cnt.zero_()
        _persistent[(progs,)](*args, **kw)

    return [call]


class NotResident(Exception):
    """A persistent configuration whose programs cannot all be resident at once."""


def launches(shape: str, slots: int) -> list[tuple[str, int, int | None]]:
    """(name, bytes, programs) of each launch of one decode step, in order (programs None: a weight's launch, as
    many programs as the variant gives each SM)."""
    hidden, inter, heads, kv, hd, layers, vocab = SHAPES[shape]

    def int4(n, k):  # codes and (scale, zero) bf16 pairs a group and row
        return n * k // 2 + (k // GROUP) * n * 4

    qkv, o = int4((heads + 2 * kv) * hd, hidden), int4(hidden, hidden)
    gate_up, down = int4(2 * inter, hidden), int4(hidden, inter)
    tiles = max(slots // 64, 1)
    split = slots * kv * hd * 2 * 2  # the cached K and V of every slot, bf16
    merge = tiles * heads * (hd + 2) * 4  # the partials, fp32
    out = [("norm", hidden * 2, 1)]
    for _ in range(layers):
        out += [("qkv", qkv, None), ("split", split, tiles * kv), ("merge", merge, heads)]
        out += [("o", o, None), ("gate_up", gate_up, None), ("down", down, None)]
    return out + [("head", vocab * hidden * 2, None), ("sample", vocab * 2, 8)]


def plan(variant: str, step: list) -> list[tuple[int, int]]:
    """(bytes, programs) of each launch a variant makes (`persistent`: each phase of its one launch)."""
    weights = ("qkv", "o", "gate_up", "down", "head")
    if variant in ("chain", "persistent"):
        return [(b, p) for _, b, p in step]
    if variant.startswith("mlp"):  # the chain with each layer's gate_up and down in one launch (split-K over down)
        red = SHAPES_RED[variant]
        out, held = [], 0
        for name, b, p in step:
            if name == "gate_up":
                held = b
            elif name == "down":
                out.append((held + b, p, *red))
            else:
                out.append((b, p))
        return out
    if variant == "gemvs":
        return [(b, p) for name, b, p in step if name in weights]
    if variant == "layers":  # a layer's four weights in one launch, then the lm_head
        out, acc = [], 0
        for name, b, p in step:
            if name in ("qkv", "o", "gate_up"):
                acc += b
            elif name == "down":
                out.append((acc + b, p))
                acc = 0
            elif name == "head":
                out.append((b, p))
        return out
    total = sum(b for name, b, _ in step if name in weights)
    return [(total, None)]


def build(shape_plan, cfg: dict, sms: int, device):
    """The launches as callables on buffers of their own (so that no launch finds its bytes in L2); a launch with
    more entries adds that many values a program into an accumulator (SHAPES_RED's how), in clusters or not."""
    calls, block = [], cfg["block"]
    for nbytes, progs, red, how, cluster in (tuple(e) + (0, 0, 0) if len(e) == 2 else e for e in shape_plan):
        n = max(nbytes // 4, block)
        w = torch.empty(n, dtype=torch.int32, device=device)  # what it holds does not matter
        progs = min(progs or cfg["per_sm"] * sms, triton.cdiv(n, block))
        if cluster:
            progs -= progs % cluster
        iters = triton.cdiv(triton.cdiv(n, block), progs)
        out = torch.empty(progs * block, dtype=torch.int32, device=device)
        acc = torch.zeros(HIDDEN_RED, dtype=torch.float32, device=device)
        pdl = cfg["pdl"]
        kw = dict(PDL=pdl, AHEAD=cfg["ahead"], BLOCK=block, RED=red, HOW=how, CLUSTER=cluster, num_warps=WARPS)
        grid = (progs // cluster,) if cluster else (progs,)
        if cluster:  # compiled as plain programs, launched as clusters (Triton's launcher reads the size from here)
            kernel = _stream.warmup(w, out, n, iters, acc, grid=grid, launch_pdl=pdl, **kw)
            kernel = kernel.result() if hasattr(kernel, "result") else kernel
            warps, _, shared = kernel.packed_metadata
            kernel.packed_metadata = (warps, cluster, shared)

        def call(w=w, out=out, n=n, iters=iters, acc=acc, kw=kw, grid=grid, pdl=pdl):
            _stream[grid](w, out, n, iters, acc, launch_pdl=pdl, **kw)

        calls.append(call)
    return calls


def step_us(calls) -> float:
    """µs a step: the calls in order, five steps captured in one CUDA graph (bench_parts.graph_time_us)."""
    return graph_time_us(lambda: [c() for c in calls], reps=5)


def configs(sweep: bool) -> list[dict]:
    """The variants measured: each of `plan`'s with the first block read before the PDL wait and after it, and the
    chain without PDL (2 programs an SM, 16 KB blocks); --sweep: the chain under other blocks, programs an SM and
    blocks read before the wait."""
    base = {"pdl": True, "ahead": 1, "per_sm": 2, "block": BLOCK}
    if sweep:
        grid = itertools.product((1, 2, 4), (1, 2, 4), (2048, 4096))
        out = [base | {"variant": "chain", "ahead": a, "per_sm": p, "block": b} for a, p, b in grid]
        grid = itertools.product((0, 1, 2, 4), (1, 2), (2048, 4096))
        out += [base | {"variant": "persistent", "ahead": a, "per_sm": p, "block": b} for a, p, b in grid]
        grid = itertools.product(SHAPES_RED, (1, 4), (2, 4), (2048, 4096))
        out += [base | {"variant": v, "ahead": a, "per_sm": p, "block": b} for v, a, p, b in grid]
        return out + [base | {"variant": "one", "per_sm": p, "block": b} for p in (1, 2, 4) for b in (2048, 4096)]
    out = [base | {"variant": "chain", "pdl": False, "ahead": 0}]
    for variant in ("chain", "gemvs", "layers", "one"):
        out += [base | {"variant": variant}, base | {"variant": variant, "ahead": 0}]
    return out


def setup(shape: str, slots: int, count: str):
    """(device, SMs, the step's launches, their weight bytes, the versions) for a run on the GPU, with its first JSON
    line printed (`count`: what the launches are called there)."""
    dev = torch.device("cuda")
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    step = launches(shape, slots)
    weights = sum(b for name, b, _ in step if name in ("qkv", "o", "gate_up", "down", "head"))
    head = {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__, "triton": triton.__version__}
    print(json.dumps({**head, "shape": shape, "slots": slots, count: len(step), "weight_bytes": weights}))
    return dev, sms, step, weights, head


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="yi-6b")
    ap.add_argument("--slots", type=int, default=768, help="KV slots the attention launches read (the bench's 768)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sweep", action="store_true", help="the chain under other launch configurations")
    known = sorted({c["variant"] for c in configs(False) + configs(True)})
    ap.add_argument(
        "--only", nargs="+", metavar="VARIANT", choices=known, help=f"only these variants ({', '.join(known)})"
    )
    for key in ("ahead", "per_sm", "block"):
        ap.add_argument(f"--{key.replace('_', '-')}", nargs="+", type=int, help=f"only configurations with these {key}")
    a = ap.parse_args()
    dev, sms, step, weights, head = setup(a.shape, a.slots, "launches")
    results: dict[str, list[float]] = {}
    for r in range(a.rounds):
        picked = [c for c in configs(a.sweep) if not a.only or c["variant"] in a.only]
        for key in ("ahead", "per_sm", "block"):
            picked = [c for c in picked if getattr(a, key) is None or c[key] in getattr(a, key)]
        for cfg in picked:
            p = plan(cfg["variant"], step)
            try:
                us = step_us((persistent if cfg["variant"] == "persistent" else build)(p, cfg, sms, dev))
            except NotResident as e:
                print(json.dumps({"round": r, **cfg, "skipped": str(e)}), flush=True)
                continue
            name = "{variant}/pdl={pdl}/ahead={ahead}/per_sm={per_sm}/block={block}".format(**cfg)
            results.setdefault(name, []).append(round(us, 1))
            line = {"round": r, **cfg, "launches": len(p), "step_us": round(us, 1), "tok_s": round(1e6 / us, 1)}
            print(json.dumps(line | {"weights_TBps": round(weights / us / 1e6, 2)}), flush=True)
            torch.cuda.empty_cache()
    print(json.dumps({**head, "shape": a.shape, "step_us": results}))


if __name__ == "__main__":
    main()

"""The floor of a persistent decode step whose weights stream through a ring of shared memory across the phases'
grid barriers (issue 16): the twenty-third session's `persistent` floor (scripts/bench_floor.py) read a phase's
first blocks into registers before the barrier that ends the phase before, as far ahead as registers allow (32 KB
an SM: 1040 µs a Yi-6B step against 765 for one launch of the same bytes). Here a program keeps S blocks of BR rows
of 512 bytes in flight by TMA into shared memory (up to ~200 KB an SM), the loads issued in the order the program
consumes them, whatever phase they belong to: a load waits only for its slot to be consumed, never for a barrier,
so the weights of the phases after a barrier are already on their way while a program waits at it.

Each phase is one of the step's launches (bench_floor.launches: per layer qkv, attention split and merge, o,
gate_up, down; the first norm, the lm_head, the sampler), its bytes split into blocks a grid stride over the
programs. With --dep, each phase also has the data dependence of the real step on its critical path: after the
barrier a program reads the previous phase's output (x: 16 KB, from L2), and before it arrives it writes its slice
of this phase's output, so the barrier's release / acquire, x's latency and the write are all in each phase.

    python3 scripts/bench_ring.py [--shape yi-6b] [--slots 768] [--rounds 2] [--ring S,BR,WARPS,PER_SM ...] [--dep]

Prints one JSON line a configuration (µs a step, tok/s it would be, weights' TB/s) and the `one` and `persistent`
floors of bench_floor.py in the same process for comparison.
"""

from __future__ import annotations

import argparse
import json

import torch
import triton
from bench_floor import NotResident, persistent, plan, setup, step_us  # scripts/ is sys.path[0]
from bench_floor import build as build_chain
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

ROW = 128  # int32 words of a row (512 bytes): a (tile, chunk) of gemv_mma's packed int4 codes
XN = 4096  # int32 words of the dependent x a phase reads (16 KB)


@gluon.jit
def _mine(NB, f, pid, progs):
    """Blocks of phase f that program pid reads (blocks pid, pid + progs, ...)."""
    nb = gl.load(NB + f)
    return gl.maximum(nb - pid + progs - 1, 0) // progs


@gluon.jit
def _next(NB, lf, li, lnb, phases, pid, progs):
    """The load cursor past phases where this program has no block left."""
    while (li >= lnb) & (lf < phases):
        lf += 1
        li = 0
        lnb = _mine(NB, lf, pid, progs)
    return lf, li, lnb


@gluon.jit
def _ring(
    W, R0, NB, CNT, XB, OUT, phases, S: gl.constexpr, BR: gl.constexpr, WARPS: gl.constexpr, DEP: gl.constexpr,
    XN: gl.constexpr,
):  # fmt: skip
    """Phase f's blocks (rows R0[f] + b·BR .. + BR - 1 of W for b = pid, pid + progs, ...) xor-reduced, a grid
    barrier (arrival counter CNT, zeroed before the launch) between phases; loads S blocks ahead of consumption."""
    pid = gl.program_id(0)
    progs = gl.num_programs(0)
    LS: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [WARPS, 1], [1, 0])
    LX: gl.constexpr = gl.BlockedLayout([4], [32], [WARPS], [0])
    smem = gl.allocate_shared_memory(gl.int32, [S, BR, 128], W.layout)
    bars = gl.allocate_shared_memory(gl.int64, [S, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(S):
        mbarrier.init(bars.index(s), count=1)
    fence_async_shared()
    zero = pid * 0  # the cursor's scalars as tensors (a literal 0 would be a constexpr)
    lf, li, lnb = _next(NB, zero, zero, _mine(NB, zero, pid, progs), phases, pid, progs)
    for s in gl.static_range(S):
        if lf < phases:
            mbarrier.expect(bars.index(s), BR * 512)
            row = gl.load(R0 + lf) + (pid + li * progs) * BR
            tma.async_copy_global_to_shared(W, [row, 0], bars.index(s), smem.index(s))
            lf, li, lnb = _next(NB, lf, li + 1, lnb, phases, pid, progs)
    acc = gl.zeros([BR, 128], gl.int32, LS)
    xo = gl.arange(0, XN, layout=LX)
    xacc = gl.zeros([XN], gl.int32, LX)
    c = zero
    for f in range(phases):
        if f > 0:  # phase f - 1 done by every program
            seen = gl.atomic_add(CNT, 0, sem="acquire", scope="gpu")
            while seen < f * progs:
                seen = gl.atomic_add(CNT, 0, sem="acquire", scope="gpu")
        if DEP:  # the previous phase's output, on the critical path
            xacc ^= gl.load(XB + (f % 2) * XN + xo)
        for _i in range(_mine(NB, f, pid, progs)):
            slot = c % S
            mbarrier.wait(bars.index(slot), (c // S) & 1)
            acc ^= smem.index(slot).load(LS)
            gl.thread_barrier()
            fence_async_shared()
            if lf < phases:
                mbarrier.expect(bars.index(slot), BR * 512)
                row = gl.load(R0 + lf) + (pid + li * progs) * BR
                tma.async_copy_global_to_shared(W, [row, 0], bars.index(slot), smem.index(slot))
                lf, li, lnb = _next(NB, lf, li + 1, lnb, phases, pid, progs)
            c += 1
        if DEP:  # this program's slice of the phase's output
            at = (pid * 32) % XN
            mask = (xo >= at) & (xo < at + 32)
            gl.store(XB + ((f + 1) % 2) * XN + xo, xacc + gl.sum(gl.sum(acc, 1), 0), mask=mask)
        gl.thread_barrier()
        gl.atomic_add(CNT, 1, sem="release", scope="gpu")
    red = gl.sum(acc, 0)
    gl.store(OUT + pid * 128 + gl.arange(0, 128, layout=gl.SliceLayout(0, LS)), red)
    gl.store(OUT + progs * 128 + pid * XN + xo, xacc)


LAYOUT = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=2)


def ring(shape_plan, cfg: dict, sms: int, device):
    """The plan's phases as one persistent launch streaming through a shared-memory ring (cnt zeroed before it)."""
    s, br, warps, per_sm = cfg["ring"]
    rows = [triton.cdiv(max(nbytes, 512), 512) for nbytes, _ in shape_plan]
    nb = [triton.cdiv(r, br) for r in rows]
    r0 = torch.tensor([0] + [n * br for n in nb[:-1]], dtype=torch.int64).cumsum(0).to(torch.int32)
    w = torch.empty(sum(nb) * br, ROW, dtype=torch.int32, device=device)
    desc = TensorDescriptor.from_tensor(w, [br, ROW], LAYOUT)
    progs = per_sm * sms
    r0 = r0.to(device)
    nbt = torch.tensor(nb + [0], dtype=torch.int32, device=device)
    cnt = torch.zeros(1, dtype=torch.int32, device=device)
    xb = torch.zeros(2 * XN, dtype=torch.int32, device=device)
    out = torch.empty(progs * (128 + XN), dtype=torch.int32, device=device)
    args = (desc, r0, nbt, cnt, xb, out, len(nb))
    kw = dict(S=s, BR=br, WARPS=warps, DEP=cfg["dep"], XN=XN, num_warps=warps)
    k = _ring.warmup(*args, grid=(progs,), **kw)
    k._init_handles()
    props = torch.cuda.get_device_properties(device)
    smem = getattr(props, "shared_memory_per_multiprocessor", 228 << 10)
    fits = min(65536 // max(k.n_regs * 32 * warps, 1), 2048 // (32 * warps), smem // max(k.metadata.shared, 1))
    if fits < per_sm:
        raise NotResident(f"{k.n_regs} registers, {k.metadata.shared} bytes shared: {fits} programs an SM")

    def call():
        cnt.zero_()
        _ring[(progs,)](*args, **kw)

    return [call]


def ring_spec(text: str) -> tuple[int, int, int, int]:
    try:
        out = tuple(int(v) for v in text.split(","))
    except ValueError:
        out = ()
    if len(out) != 4 or min(out) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: four positive numbers S,BR,WARPS,PER_SM")
    return out


RINGS = [(12, 32, 8, 1), (24, 16, 8, 1), (6, 32, 8, 2), (12, 16, 4, 2), (8, 16, 8, 1), (4, 32, 8, 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=("yi-6b", "yi-34b"), default="yi-6b")
    ap.add_argument("--slots", type=int, default=768)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ring", type=ring_spec, action="append", help="S,BR,WARPS,PER_SM (default: a sweep)")
    ap.add_argument("--dep", action="store_true", help="x read after each barrier, a slice written before it")
    ap.add_argument("--no-floors", action="store_true", help="skip bench_floor's one and persistent")
    a = ap.parse_args()
    dev, sms, step, weights, _ = setup(a.shape, a.slots, "phases")
    cfgs = [{"variant": "ring", "ring": r, "dep": a.dep} for r in a.ring or RINGS]
    if not a.no_floors:
        base = {"pdl": True, "ahead": 1, "per_sm": 2, "block": 4096}
        cfgs += [base | {"variant": "one", "per_sm": 4}, base | {"variant": "persistent"}]
    for r in range(a.rounds):
        for cfg in cfgs:
            p = plan(cfg["variant"], step)
            make = {"ring": ring, "persistent": persistent}.get(cfg["variant"], build_chain)
            try:
                us = step_us(make(p, cfg, sms, dev))
            except NotResident as e:
                print(json.dumps({"round": r, **cfg, "skipped": str(e)}), flush=True)
                continue
            line = {"round": r, **cfg, "step_us": round(us, 1), "tok_s": round(1e6 / us, 1)}
            print(json.dumps(line | {"weights_TBps": round(weights / us / 1e6, 2)}), flush=True)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

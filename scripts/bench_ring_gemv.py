"""A Yi-6B layer's four int4 GEMVs (qkv, o, gate_up, down) for 32 layers as phases of one persistent launch whose
weights stream through a ring of shared memory across the phases' grid barriers (issue 16): scripts/bench_ring.py's
floor with gemv_mma's own arithmetic (its mma on the packed codes, its scaling, its epilogue's store), against the
same GEMVs as 128 launches of gemv_mma chained by PDL in a CUDA graph.

Each program (8 warps; --per-sm of them an SM, all resident) takes the row tiles t = pid, pid + P, ... of each
phase; a tile's K is read in units of --unit chunks of 64 columns (codes by one TMA copy, the (s, zf) words of their
groups by another), warp w taking the chunk pairs w, w + 8, ... of a unit (a pair lies in one group: its mma sums
scaled once, as gemv_mma's pairs). A program keeps --slots units in flight, issued in the order it consumes them
whatever phase they belong to, so the weights of the phases after a barrier are on their way while it waits there:
by one of its 8 warps between units (the warps meet at a barrier and the cursor's arithmetic is on their path), or
with --ws by a warp of its own (gl.warp_specialize: it waits for a slot the 8 warps released, copies, moves on).
With --pipe (and a producer warp) each unit
is read into registers before the one before is computed. With --split (and a producer warp) each program takes a
contiguous range of a phase's units instead of whole tiles, every program the same count to within one; a tile two
programs share is added up by the one that finishes it last (BENCHMARKS.md: slower, its units no longer unrolled).
After a barrier, x (the previous phase's output, from L2) is copied once into shared memory, with each chunk's sum
of x (which gemv_mma computes by 4 more mma a chunk and tile), and each unit's B fragments are read there. No
attention, no norm / residual / rope folds, and gate_up's output goes to down as it is (no SiLU: down reads its
first 11008 rows), in both variants.

    python3 scripts/bench_ring_gemv.py [--layers 32] [--rounds 3] [--slots 4] [--unit 32] [--per-sm 2]
        [--ws | --pipe | --split]

Prints one JSON line: µs of each variant (median of CUDA-graph replays), the largest error of the ring's result
against the chain's after one layer and after two relative to the chain's largest value (the warps' sums are
ordered as gemv_mma's only where its configuration takes pairs, as down's), the kernel's registers and shared memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from bench_parts import graph_time_us  # noqa: E402
from bench_persistent import GROUP, buffers, weights  # noqa: E402
from triton.experimental import gluon  # noqa: E402
from triton.experimental.gluon import language as gl  # noqa: E402
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma  # noqa: E402
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor  # noqa: E402

from yi_cli.kernels import gemv_mma  # noqa: E402
from yi_cli.kernels.gemv_mma import _chunk, _dim, _epilogue, _frag_words, _gathered, _gathered2, _scale  # noqa: E402

HIDDEN, INTER, QKV = 4096, 11008, 5120
# (N, K) of each phase of a layer, in order
MATS = {"qkv": (QKV, HIDDEN), "o": (HIDDEN, HIDDEN), "gate_up": (2 * INTER, HIDDEN), "down": (HIDDEN, INTER)}
SH_ = gl.constexpr(tuple(MATS.values()))  # the kernel's shapes (a global: tuples of them lose constexpr)
NVMMA = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=2)
PLAIN2 = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])  # of each [WARPS, 32] of x's [rows, WARPS, 32]
PLAIN1 = gl.SwizzledSharedLayout(1, 1, 1, [0])


@gluon.jit
def _work(kind, SH: gl.constexpr, UC: gl.constexpr):
    """(tiles, units a tile, units) of a phase of this kind (0..3)."""
    t = (
        (kind == 0).to(gl.int32) * (SH[0][0] // 16)
        + (kind == 1).to(gl.int32) * (SH[1][0] // 16)
        + (kind == 2).to(gl.int32) * (SH[2][0] // 16)
        + (kind == 3).to(gl.int32) * (SH[3][0] // 16)
    )
    u0: gl.constexpr = (SH[0][1] // 64 + UC - 1) // UC  # kinds 0..2 share K
    u3: gl.constexpr = (SH[3][1] // 64 + UC - 1) // UC
    u = u0 + (kind == 3).to(gl.int32) * (u3 - u0)
    return t, u, t * u


@gluon.jit
def _items(kind, pid, progs, SH: gl.constexpr, UC: gl.constexpr):
    """Tiles of a phase of this kind (0..3) that program pid takes."""
    n, _, _ = _work(kind, SH, UC)
    return gl.maximum(n - pid + progs - 1, 0) // progs


@gluon.jit
def _advance(lf, li, lu, phases, pid, progs, SH: gl.constexpr, UC: gl.constexpr):
    """The load cursor (phase, this program's tile of it, unit of the tile) one unit on."""
    _, per, _ = _work(lf % 4, SH, UC)
    lu += 1
    if lu >= per:
        lu = lu * 0
        li += 1
    while (li >= _items(lf % 4, pid, progs, SH, UC)) & (lf < phases):
        lf += 1
        li = li * 0
    return lf, li, lu


@gluon.jit
def _issue(D, lf, t, lu, slot, ring, sring, bars, SH: gl.constexpr, UC: gl.constexpr):
    """TMA copies of unit lu of tile t of phase lf (codes and scales) into ring slot `slot`, on its barrier. Down's
    last unit of a tile copies only its last 12 chunks where 172 % UC is 12 (D[8..11]: boxes of 8 and 4 chunks, of
    4 and 2 groups, as TMA boxes are powers of 2; the rest of the slot keeps what it held, which x's zeros past K
    leave out of the sums)."""
    kind = lf % 4
    layer = lf // 4
    bar = bars.index(slot)
    dst = ring.index(slot)
    sdst = sring.index(slot)
    KD: gl.constexpr = SH[3][1] // 64
    TAIL: gl.constexpr = KD % UC
    if kind < 3:
        mbarrier.expect(bar, UC * 512 + UC * 32)
        if kind == 0:
            tma.async_copy_global_to_shared(D[0], [(layer * (SH[0][0] // 16) + t) * 64 + UC * lu, 0], bar, dst)
            tma.async_copy_global_to_shared(D[4], [layer * 32 + (UC // 2) * lu, t * 16], bar, sdst)
        elif kind == 1:
            tma.async_copy_global_to_shared(D[1], [(layer * (SH[1][0] // 16) + t) * 64 + UC * lu, 0], bar, dst)
            tma.async_copy_global_to_shared(D[5], [layer * 32 + (UC // 2) * lu, t * 16], bar, sdst)
        else:
            tma.async_copy_global_to_shared(D[2], [(layer * (SH[2][0] // 16) + t) * 64 + UC * lu, 0], bar, dst)
            tma.async_copy_global_to_shared(D[6], [layer * 32 + (UC // 2) * lu, t * 16], bar, sdst)
    elif (lu == KD // UC) & (TAIL == 12):  # 12 = 8 + 4 chunks (UC 16 or 32; 64 copies whole units)
        mbarrier.expect(bar, TAIL * 512 + TAIL * 32)
        row = (layer * (SH[3][0] // 16) + t) * KD + UC * lu
        group = layer * (KD // 2) + (UC // 2) * lu
        tma.async_copy_global_to_shared(D[8], [row, 0], bar, dst.slice(0, 8))
        tma.async_copy_global_to_shared(D[9], [row + 8, 0], bar, dst.slice(8, 4))
        tma.async_copy_global_to_shared(D[10], [group, t * 16], bar, sdst.slice(0, 4))
        tma.async_copy_global_to_shared(D[11], [group + 4, t * 16], bar, sdst.slice(4, 2))
    else:
        mbarrier.expect(bar, UC * 512 + UC * 32)
        tma.async_copy_global_to_shared(D[3], [(layer * (SH[3][0] // 16) + t) * KD + UC * lu, 0], bar, dst)
        tma.async_copy_global_to_shared(D[7], [layer * (KD // 2) + (UC // 2) * lu, t * 16], bar, sdst)


@gluon.jit
def _stage_x(X, xs, xsum, KC: gl.constexpr, ROWS: gl.constexpr, WARPS: gl.constexpr):
    """x's KC chunks (as int32 words, 0 past them) into shared memory [rows, WARPS, 32]: row 2b + h, warp w holds
    chunk 2·WARPS·b + 2w + h (block b: one pair a warp), and each chunk's sum of x (fp32) into xsum [rows, WARPS].
    (One store of all rows instead, the sums of a pair added here: 1009.6 µs against 981.0 for the 32 layers.)"""
    LXS: gl.constexpr = gl.BlockedLayout([1, 1], [1, 32], [WARPS, 1], [1, 0])
    w = gl.expand_dims(gl.arange(0, WARPS, layout=gl.SliceLayout(1, LXS)), 1)
    j = gl.expand_dims(gl.arange(0, 32, layout=gl.SliceLayout(0, LXS)), 0)
    X32 = X.to(gl.pointer_type(gl.int32))
    vs = ()
    for r in gl.static_range(ROWS):
        c = (r // 2) * (2 * WARPS) + 2 * w + r % 2
        vs = vs + (gl.load(X32 + c * 32 + j, mask=c < KC, other=0),)
    for r in gl.static_range(ROWS):
        v = vs[r]
        xs.index(r).store(v)
        lo = (v << 16).to(gl.float32, bitcast=True)
        hi = (v & -65536).to(gl.float32, bitcast=True)
        xsum.index(r).store(gl.sum(lo + hi, axis=1))


@gluon.jit
def _pieces(v, K4: gl.constexpr):
    """[W, X, K4, 2] -> the K4·2 tensors [W, X] of (k, h) in order (splits of the registers' last dimensions)."""
    a, b = gl.split(v)
    if K4 == 1:
        out = (gl.reshape(a, [a.shape[0], a.shape[1]]), gl.reshape(b, [b.shape[0], b.shape[1]]))
    elif K4 == 2:
        a0, a1 = gl.split(a)
        b0, b1 = gl.split(b)
        out = (a0, b0, a1, b1)
    else:  # k = 2·k1 + k0: the first split takes k0
        ae, ao = gl.split(gl.reshape(a, [a.shape[0], a.shape[1], 2, 2]))
        be, bo = gl.split(gl.reshape(b, [b.shape[0], b.shape[1], 2, 2]))
        a0, a2 = gl.split(ae)
        a1, a3 = gl.split(ao)
        b0, b2 = gl.split(be)
        b1, b3 = gl.split(bo)
        out = (a0, b0, a1, b1, a2, b2, a3, b3)
    return out


@gluon.jit
def _xfrags(xs, r, xz, LXB: gl.constexpr, LX: gl.constexpr, LW: gl.constexpr, WARPS: gl.constexpr):
    """x's B fragments of row r of the staged x (a warp's chunk; lane (g, t): words 8t .. 8t + 7, every g the
    same): 8 tensors [1, WARPS, 8, 4] of bf16 pairs, as gemv_mma._xfrag's."""
    v = xs.index(r).load(gl.SliceLayout(1, LXB))  # [WARPS, 32]
    return _frag_words(gl.convert_layout(gl.reshape(gl.expand_dims(v, 1) + xz, [WARPS, 8, 4, 8]), LX), LW)


@gluon.constexpr_function
def _codes_layout(warps):
    """gemv_mma's [RT = 1, WARPS, 8, 4, 4]: a lane's 4 words of a chunk (lane 4g + t), a warp's own chunk."""
    return gl.BlockedLayout([1, 1, 1, 1, 4], [1, 1, 8, 4, 1], [1, warps, 1, 1, 1], [4, 3, 2, 1, 0])


@gluon.constexpr_function
def _acc_layout(warps):
    """The accumulators' [1, WARPS, 8, 4] (D rows g / g + 8, columns 2t / 2t + 1)."""
    return gl.SliceLayout(4, _codes_layout(warps))


@gluon.jit
def _fetch(ring, sring, bars, slot, parity, K4: gl.constexpr, WARPS: gl.constexpr):
    """The unit in ring slot `slot` into registers once its copies land (parity: of the slot's barrier): its codes
    (warp w rows 2p and 2p + 1 for its pairs p = w + 8k, lane l words 4l .. 4l + 3) and its scales (group p, rows g
    and g + 8), as [UC, 128] and [UC / 2, 16]."""
    LC: gl.constexpr = gl.BlockedLayout([2, 4], [1, 32], [WARPS, 1], [1, 0])
    LSP: gl.constexpr = gl.BlockedLayout([1, 1, 1], [1, 8, 4], [WARPS, 1, 1], [2, 1, 0])  # [group, row, t]
    mbarrier.wait(bars.index(slot), parity)
    return ring.index(slot).load(LC), sring.index(slot).load(gl.SliceLayout(2, LSP))


@gluon.jit
def _release(empty, slot):
    """Ring slot `slot` read by every warp: the producer warp may refill it."""
    gl.thread_barrier()
    fence_async_shared()
    mbarrier.arrive(empty.index(slot), count=1)


@gluon.jit
def _compute(acc, v, sv, xs, xsum, uu, xz, K4: gl.constexpr, WARPS: gl.constexpr):
    """The accumulators after a unit (_fetch's v, sv; unit uu of its tile: x's staged rows 2·K4·uu ..)."""
    L5: gl.constexpr = _codes_layout(WARPS)
    LA: gl.constexpr = gl.SliceLayout(4, L5)
    LX: gl.constexpr = gl.BlockedLayout([1, 1, 1, 8], [1, 8, 4, 1], [WARPS, 1, 1, 1], [3, 2, 1, 0])
    LW: gl.constexpr = gl.SliceLayout(0, LA)
    LXB: gl.constexpr = gl.BlockedLayout([1, 1, 8], [1, 8, 4], [WARPS, 1, 1], [2, 1, 0])  # [w, g, word]
    LS2: gl.constexpr = gl.SliceLayout(0, gl.SliceLayout(3, LA))  # [WARPS, 8]
    L1W: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(0, LA)))  # [WARPS]
    words = _pieces(gl.permute(gl.reshape(v, [K4, WARPS, 2, 128]), [1, 3, 0, 2]), K4)  # [(k, h)]: [W, 128]
    scs = _pieces(gl.permute(gl.reshape(sv, [K4, WARPS, 2, 8]), [1, 3, 0, 2]), K4)  # [(k, hi)]: [W, 8]
    for k in gl.static_range(K4):
        r = 2 * (uu * K4 + k)
        bs = (_xfrags(xs, r, xz, LXB, LX, LW, WARPS), _xfrags(xs, r + 1, xz, LXB, LX, LW, WARPS))
        w0 = gl.convert_layout(gl.reshape(words[2 * k], [1, WARPS, 8, 4, 4]), L5)
        w1 = gl.convert_layout(gl.reshape(words[2 * k + 1], [1, WARPS, 8, 4, 4]), L5)
        s_lo = gl.expand_dims(gl.expand_dims(gl.convert_layout(scs[2 * k], LS2), 0), 3)  # [1, WARPS, 8, 1]
        s_hi = gl.expand_dims(gl.expand_dims(gl.convert_layout(scs[2 * k + 1], LS2), 0), 3)
        xsm = xsum.index(r).load(L1W) + xsum.index(r + 1).load(L1W)  # the pair's sum of x
        xsm = gl.expand_dims(gl.expand_dims(gl.expand_dims(xsm, 1), 2), 0)  # [1, WARPS, 1, 1]
        d = _chunk(w0, bs[0], LA, ())
        d = _chunk(w1, bs[1], LA, d)
        acc = _scale(acc, d, xsm, xsm, (s_lo, s_hi), 136.0, False)
    return acc


@gluon.jit
def _unit(acc, ring, sring, xs, xsum, bars, empty, slot, parity, uu, xz, WS: gl.constexpr, K4: gl.constexpr,
          WARPS: gl.constexpr):  # fmt: skip
    """The accumulators after the unit in ring slot `slot` (_fetch, _compute); with WS the slot is released as soon
    as it is read."""
    v, sv = _fetch(ring, sring, bars, slot, parity, K4, WARPS)
    if WS:
        _release(empty, slot)
    return _compute(acc, v, sv, xs, xsum, uu, xz, K4, WARPS)


@gluon.jit
def _enter(f, X, xs, xsum, CNT, progs, KC: gl.constexpr, UC: gl.constexpr, WARPS: gl.constexpr):
    """The start of phase f: every program's arrival at the end of phase f - 1, then its output x staged."""
    if f > 0:
        seen = gl.atomic_add(CNT, 0, sem="acquire", scope="gpu")
        while seen < f * progs:
            seen = gl.atomic_add(CNT, 0, sem="acquire", scope="gpu")
    _stage_x(X, xs, xsum, KC, 2 * ((KC + UC - 1) // UC) * (UC // (2 * WARPS)), WARPS)
    gl.thread_barrier()


@gluon.jit
def _phase(
    f, st, X, Y, D, ring, sring, xs, xsum, bars, empty, CNT, pid, progs, phases,
    N: gl.constexpr, KC: gl.constexpr, S: gl.constexpr, WARPS: gl.constexpr, SH: gl.constexpr, UC: gl.constexpr,
    WS: gl.constexpr, PIPE: gl.constexpr,
):  # fmt: skip
    """This program's tiles of phase f (Y = W·x over X's K), units from the ring, refilled with the cursor's units;
    then its arrival."""
    lf, li, lu, c = st
    LA: gl.constexpr = _acc_layout(WARPS)
    LXB: gl.constexpr = gl.BlockedLayout([1, 1, 8], [1, 8, 4], [WARPS, 1, 1], [2, 1, 0])  # [w, g, word]
    LY: gl.constexpr = gl.SliceLayout(1, _gathered(1, WARPS))
    _enter(f, X, xs, xsum, CNT, progs, KC, UC, WARPS)
    UI: gl.constexpr = (KC + UC - 1) // UC
    K4: gl.constexpr = UC // (2 * WARPS)  # pairs a warp takes a unit: w, w + WARPS, ...
    gy = gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=_dim(LY, 3, 1)), 0), 2)
    c4 = 2 * gl.arange(0, 4, layout=_dim(LY, 3, 2))
    zero3 = gl.expand_dims(gl.expand_dims(c4, 0), 1) * 0 + gy * 0
    xz = gl.zeros([WARPS, 8, 32], gl.int32, LXB)
    fold = (Y, 0.0, Y, Y, Y, Y, Y, Y, Y, Y, 0)
    if PIPE:  # the next unit read before this one is computed: its shared loads' latency under this one's math
        LC: gl.constexpr = gl.BlockedLayout([2, 4], [1, 32], [WARPS, 1], [1, 0])
        LSP: gl.constexpr = gl.BlockedLayout([1, 1, 1], [1, 8, 4], [WARPS, 1, 1], [2, 1, 0])
        cur = (gl.zeros([UC, 128], gl.int32, LC), gl.zeros([UC // 2, 16], gl.int32, gl.SliceLayout(2, LSP)))
        if pid < N // 16:
            cur = _fetch(ring, sring, bars, c % S, (c // S) & 1, K4, WARPS)
    for t in range(pid, N // 16, progs):
        zero = gl.zeros([1, WARPS, 8, 4], gl.float32, LA)
        acc = (zero, zero, zero, zero)
        for u in gl.static_range(UI):
            slot = c % S
            if PIPE:
                _release(empty, slot)  # cur is in registers
                nxt = cur
                if u + 1 < UI:
                    nxt = _fetch(ring, sring, bars, (c + 1) % S, ((c + 1) // S) & 1, K4, WARPS)
                elif t + progs < N // 16:  # the next tile's first unit
                    nxt = _fetch(ring, sring, bars, (c + 1) % S, ((c + 1) // S) & 1, K4, WARPS)
                acc = _compute(acc, cur[0], cur[1], xs, xsum, u, xz, K4, WARPS)
                cur = nxt
            else:
                acc = _unit(acc, ring, sring, xs, xsum, bars, empty, slot, (c // S) & 1, u, xz, WS, K4, WARPS)
            if not WS:  # the slot refilled by this program's warps, one thread issuing
                gl.thread_barrier()
                fence_async_shared()
                if lf < phases:
                    _issue(D, lf, pid + li * progs, lu, slot, ring, sring, bars, SH, UC)
                    lf, li, lu = _advance(lf, li, lu, phases, pid, progs, SH, UC)
            c += 1
        row = t * 16 + gy + zero3
        _epilogue(Y, acc[0], acc[2], row, c4, 1, N, fold, 1, WARPS, KC * 64, False, 0, False, 0, 0, 0,
                  (0, 0, 0, 0), 0, True)  # fmt: skip
    gl.thread_barrier()
    gl.atomic_add(CNT, 1, sem="release", scope="gpu")
    return lf, li, lu, c


@gluon.jit
def _consumers(
    X, Y1, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, layers, WS: gl.constexpr, PIPE: gl.constexpr,
):  # fmt: skip
    """The phases: `layers` layers of x -> qkv -> o -> gate_up -> down -> x. Without WS, these warps also issue the
    ring's copies (the first S here). The sizes come from the buffers' shapes (constexprs passed in warp_specialize's
    argument tuple arrive as values on Triton 3.6)."""
    S: gl.constexpr = ring.shape[0]
    UC: gl.constexpr = ring.shape[1]
    WARPS: gl.constexpr = xs.shape[1]
    pid = gl.program_id(0)
    progs = gl.num_programs(0)
    phases = layers * 4
    SH: gl.constexpr = SH_
    zero = pid * 0
    lf, li, lu = zero, zero, zero
    if not WS:
        for s in gl.static_range(S):
            if lf < phases:
                _issue(D, lf, pid + li * progs, lu, s, ring, sring, bars, SH, UC)
                lf, li, lu = _advance(lf, li, lu, phases, pid, progs, SH, UC)
    st = (lf, li, lu, zero)
    for layer in range(layers):
        f = layer * 4
        st = _phase(f, st, X, Y1, D, ring, sring, xs, xsum, bars, empty, CNT, pid, progs, phases,
                    SH[0][0], SH[0][1] // 64, S, WARPS, SH, UC, WS, PIPE)  # fmt: skip
        st = _phase(f + 1, st, Y1, Y2, D, ring, sring, xs, xsum, bars, empty, CNT, pid, progs, phases,
                    SH[1][0], SH[1][1] // 64, S, WARPS, SH, UC, WS, PIPE)  # fmt: skip
        st = _phase(f + 2, st, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, pid, progs, phases,
                    SH[2][0], SH[2][1] // 64, S, WARPS, SH, UC, WS, PIPE)  # fmt: skip
        st = _phase(f + 3, st, Y3, X, D, ring, sring, xs, xsum, bars, empty, CNT, pid, progs, phases,
                    SH[3][0], SH[3][1] // 64, S, WARPS, SH, UC, WS, PIPE)  # fmt: skip


@gluon.jit
def _consumers_ws(X, Y1, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, layers):
    """_consumers beside a producer warp (its WS a literal: a constexpr)."""
    _consumers(X, Y1, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, layers, True, False)


@gluon.jit
def _consumers_pipe(X, Y1, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, layers):
    """_consumers beside a producer warp, each unit read before the one before is computed (--pipe)."""
    _consumers(X, Y1, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, layers, True, True)


@gluon.jit
def _owner(unit, w, progs):
    """The program whose range [floor(p·w / progs), floor((p + 1)·w / progs)) holds `unit`."""
    return ((unit + 1) * progs - 1) // w


@gluon.jit
def _advance_split(lf, lu, phases, pid, progs, SH: gl.constexpr, UC: gl.constexpr):
    """The load cursor (phase, unit of the phase) one unit on: a program's units of a phase are a contiguous
    range of the phase's units (tile-major), the same count to within one for every program."""
    _, _, w = _work(lf % 4, SH, UC)
    lu += 1
    while (lu >= ((pid + 1) * w) // progs) & (lf < phases):
        lf += 1
        _, _, w = _work(lf % 4, SH, UC)
        lu = (pid * w) // progs
    return lf, lu


@gluon.jit
def _produce(D, ring, sring, bars, empty, layers, SPLIT: gl.constexpr):
    """One warp issuing the ring's copies in the order the consumers take them, each into a slot they released:
    a program's tiles of each phase (SPLIT: its range of units of each phase)."""
    S: gl.constexpr = ring.shape[0]
    UC: gl.constexpr = ring.shape[1]
    SH: gl.constexpr = SH_
    pid = gl.program_id(0)
    progs = gl.num_programs(0)
    phases = layers * 4
    zero = pid * 0
    lf, li, lu, k = zero, zero, zero, zero
    if SPLIT:
        _, _, w = _work(zero, SH, UC)
        lu = (pid * w) // progs
    while lf < phases:
        slot = k % S
        mbarrier.wait(empty.index(slot), ((k // S) & 1) ^ 1)
        if SPLIT:
            _, per, _ = _work(lf % 4, SH, UC)
            _issue(D, lf, lu // per, lu % per, slot, ring, sring, bars, SH, UC)
            lf, lu = _advance_split(lf, lu, phases, pid, progs, SH, UC)
        else:
            _issue(D, lf, pid + li * progs, lu, slot, ring, sring, bars, SH, UC)
            lf, li, lu = _advance(lf, li, lu, phases, pid, progs, SH, UC)
        k += 1


@gluon.jit
def _producer(DQ, DO, DG, DD, SQ, SO, SG, SD, DT8, DT4, ST4, ST2, ring, sring, bars, empty, layers):
    """_produce of a program's tiles (its SPLIT a literal: a constexpr)."""
    _produce((DQ, DO, DG, DD, SQ, SO, SG, SD, DT8, DT4, ST4, ST2), ring, sring, bars, empty, layers, False)


@gluon.jit
def _producer_split(DQ, DO, DG, DD, SQ, SO, SG, SD, DT8, DT4, ST4, ST2, ring, sring, bars, empty, layers):
    """_produce of a program's ranges of units (--split)."""
    _produce((DQ, DO, DG, DD, SQ, SO, SG, SD, DT8, DT4, ST4, ST2), ring, sring, bars, empty, layers, True)


@gluon.jit
def _phase_split(
    f, c, X, Y, PART, TCNT, ring, sring, xs, xsum, bars, empty, CNT, pid, progs,
    N: gl.constexpr, KC: gl.constexpr, S: gl.constexpr, WARPS: gl.constexpr, UC: gl.constexpr,
):  # fmt: skip
    """This program's range of units of phase f (tile-major; the producer warp copies them): a tile whose units all
    fall in the range is stored as _phase stores it; a part of a tile (two programs share it) leaves its fp32 sums in
    PART [4, 1376, 2, 16] and counts itself at TCNT[kind, tile], and the part that counts last adds both parts in
    order (the same bits whichever finishes first), rounds and stores the rows."""
    LA: gl.constexpr = _acc_layout(WARPS)
    LXB: gl.constexpr = gl.BlockedLayout([1, 1, 8], [1, 8, 4], [WARPS, 1, 1], [2, 1, 0])  # [w, g, word]
    LG: gl.constexpr = _gathered(1, WARPS)
    LY: gl.constexpr = gl.SliceLayout(1, LG)
    kind = f % 4
    _enter(f, X, xs, xsum, CNT, progs, KC, UC, WARPS)
    U: gl.constexpr = (KC + UC - 1) // UC
    W: gl.constexpr = (N // 16) * U
    K4: gl.constexpr = UC // (2 * WARPS)
    gy = gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=_dim(LY, 3, 1)), 0), 2)
    c4 = 2 * gl.arange(0, 4, layout=_dim(LY, 3, 2))
    zero3 = gl.expand_dims(gl.expand_dims(c4, 0), 1) * 0 + gy * 0
    col0 = (gl.expand_dims(gl.expand_dims(c4, 0), 1) + gy * 0) == 0  # x's row 0 (the D columns of t = 0)
    xz = gl.zeros([WARPS, 8, 32], gl.int32, LXB)
    zero = gl.zeros([1, WARPS, 8, 4], gl.float32, LA)
    acc = (zero, zero, zero, zero)
    start = (pid * W) // progs
    end = ((pid + 1) * W) // progs
    for u in range(start, end):
        t = u // U
        uu = u % U
        keep = ((uu != 0) & (u != start)).to(gl.float32)  # a part starts from zero
        acc = (acc[0] * keep, acc[1] * keep, acc[2] * keep, acc[3] * keep)
        acc = _unit(acc, ring, sring, xs, xsum, bars, empty, c % S, (c // S) & 1, uu, xz, True, K4, WARPS)
        c += 1
        if (uu == U - 1) | (u == end - 1):  # the end of this program's part of tile t
            both = gl.convert_layout(gl.join(acc[0], acc[2]), _gathered2(1, WARPS))
            y0, y2 = gl.split(gl.sum(both, axis=1))
            y0 = gl.convert_layout(y0, LY)
            y2 = gl.convert_layout(y2, LY)
            row = t * 16 + gy + zero3
            if (t * U >= start) & (uu == U - 1):  # the whole tile here
                gl.store(Y + row, y0.to(Y.dtype.element_ty), mask=col0)
                gl.store(Y + row + 8, y2.to(Y.dtype.element_ty), mask=col0)
            else:
                first = _owner(t * U, W, progs)
                at = PART + ((kind * 1376 + t) * 2 + (pid - first)) * 16 + gy + zero3
                gl.store(at, y0, mask=col0)
                gl.store(at + 8, y2, mask=col0)
                gl.thread_barrier()
                done = gl.atomic_add(TCNT + kind * 1376 + t, 1, sem="acq_rel", scope="gpu")
                if done % 2 == 1:  # the other part is in PART: both, in order
                    at = PART + (kind * 1376 + t) * 32 + gy + zero3
                    p0 = gl.load(at, mask=col0, other=0.0, cache_modifier=".cg")
                    q0 = gl.load(at + 8, mask=col0, other=0.0, cache_modifier=".cg")
                    p1 = gl.load(at + 16, mask=col0, other=0.0, cache_modifier=".cg")
                    q1 = gl.load(at + 24, mask=col0, other=0.0, cache_modifier=".cg")
                    gl.store(Y + row, (p0 + p1).to(Y.dtype.element_ty), mask=col0)
                    gl.store(Y + row + 8, (q0 + q1).to(Y.dtype.element_ty), mask=col0)
    gl.thread_barrier()
    gl.atomic_add(CNT, 1, sem="release", scope="gpu")
    return c


@gluon.jit
def _consumers_split(X, Y1, Y2, Y3, PART, TCNT, ring, sring, xs, xsum, bars, empty, CNT, layers):
    """_consumers for --split (beside _producer_split)."""
    S: gl.constexpr = ring.shape[0]
    UC: gl.constexpr = ring.shape[1]
    WARPS: gl.constexpr = xs.shape[1]
    SH: gl.constexpr = SH_
    pid = gl.program_id(0)
    progs = gl.num_programs(0)
    c = pid * 0
    for layer in range(layers):
        f = layer * 4
        c = _phase_split(f, c, X, Y1, PART, TCNT, ring, sring, xs, xsum, bars, empty, CNT, pid, progs,
                         SH[0][0], SH[0][1] // 64, S, WARPS, UC)  # fmt: skip
        c = _phase_split(f + 1, c, Y1, Y2, PART, TCNT, ring, sring, xs, xsum, bars, empty, CNT, pid, progs,
                         SH[1][0], SH[1][1] // 64, S, WARPS, UC)  # fmt: skip
        c = _phase_split(f + 2, c, Y2, Y3, PART, TCNT, ring, sring, xs, xsum, bars, empty, CNT, pid, progs,
                         SH[2][0], SH[2][1] // 64, S, WARPS, UC)  # fmt: skip
        c = _phase_split(f + 3, c, Y3, X, PART, TCNT, ring, sring, xs, xsum, bars, empty, CNT, pid, progs,
                         SH[3][0], SH[3][1] // 64, S, WARPS, UC)  # fmt: skip


@gluon.jit
def _layers(
    X, Y1, Y2, Y3, DQ, DO, DG, DD, SQ, SO, SG, SD, DT8, DT4, ST4, ST2, CNT, PART, TCNT, layers,
    S: gl.constexpr, WARPS: gl.constexpr, UC: gl.constexpr, WS: gl.constexpr, SPLIT: gl.constexpr,
    PIPE: gl.constexpr,
):  # fmt: skip
    """`layers` layers of x -> qkv -> o -> gate_up -> down -> x, each matmul a phase (the descriptors: the four
    matmuls' codes, then their scales; a tuple of them as an argument is not launched by Triton 3.6). WS: one more
    warp issues the ring's copies (gl.warp_specialize)."""
    D = (DQ, DO, DG, DD, SQ, SO, SG, SD, DT8, DT4, ST4, ST2)
    ring = gl.allocate_shared_memory(gl.int32, [S, UC, 128], NVMMA)
    sring = gl.allocate_shared_memory(gl.int32, [S, UC // 2, 16], NVMMA)
    xs = gl.allocate_shared_memory(gl.int32, [192 // WARPS, WARPS, 32], PLAIN2)  # 192 chunks: down's 172 in units
    xsum = gl.allocate_shared_memory(gl.float32, [192 // WARPS, WARPS], PLAIN1)
    bars = gl.allocate_shared_memory(gl.int64, [S, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [S, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(S):
        mbarrier.init(bars.index(s), count=1)
        mbarrier.init(empty.index(s), count=1)
    fence_async_shared()
    if SPLIT:  # ranges of units, a producer warp
        cargs = (X, Y1, Y2, Y3, PART, TCNT, ring, sring, xs, xsum, bars, empty, CNT, layers)
        pargs = (DQ, DO, DG, DD, SQ, SO, SG, SD, DT8, DT4, ST4, ST2, ring, sring, bars, empty, layers)
        gl.warp_specialize([(_consumers_split, cargs), (_producer_split, pargs)], [1], [48])
    elif WS:
        cargs = (X, Y1, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, layers)
        pargs = (DQ, DO, DG, DD, SQ, SO, SG, SD, DT8, DT4, ST4, ST2, ring, sring, bars, empty, layers)
        if PIPE:
            gl.warp_specialize([(_consumers_pipe, cargs), (_producer, pargs)], [1], [48])
        else:
            gl.warp_specialize([(_consumers_ws, cargs), (_producer, pargs)], [1], [48])
    else:
        _consumers(X, Y1, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, layers, False, False)


def descriptors(W: dict, layers: int, uc: int) -> tuple:
    """The four codes' descriptors (rows of 512 bytes, units of uc), the four scales' ((s, zf) words [groups, N],
    units of uc / 2 groups x 16 rows), then down's for the last unit of its tiles (8 + 4 chunks, 4 + 2 groups)."""
    codes, scales = [], []
    for name, (n, k) in MATS.items():
        words, sz = W[name]
        codes.append(TensorDescriptor.from_tensor(words.view(-1, 128), [uc, 128], NVMMA))
        scales.append(
            TensorDescriptor.from_tensor(sz.view(torch.int32).view(layers * (k // GROUP), n), [uc // 2, 16], NVMMA)
        )
    n, k = MATS["down"]
    words, sz = W["down"]
    groups = sz.view(torch.int32).view(layers * (k // GROUP), n)
    tail = [TensorDescriptor.from_tensor(words.view(-1, 128), [rows, 128], NVMMA) for rows in (8, 4)]
    tail += [TensorDescriptor.from_tensor(groups, [rows, 16], NVMMA) for rows in (4, 2)]
    return tuple(codes + scales + tail)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slots", type=int, default=4, help="units a program keeps in flight")
    ap.add_argument("--unit", type=int, choices=(16, 32, 64), default=32, help="chunks of 64 columns a unit")
    ap.add_argument("--per-sm", type=int, choices=(1, 2), default=2, help="programs an SM (all resident)")
    ap.add_argument("--ws", action="store_true", help="one more warp issues the copies (warp specialization)")
    ap.add_argument("--pipe", action="store_true", help="--ws with each unit read before the one before is computed")
    ap.add_argument("--split", action="store_true", help="--ws with each phase's units split evenly (tiles shared)")
    ap.add_argument("--warps", type=int, choices=(8, 16), default=8, help="warps a program (a unit: pairs of each)")
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    L = args.layers
    W = {name: weights(n, k, L, dev) for name, (n, k) in MATS.items()}
    x0 = (torch.randn(1, HIDDEN, device=dev) * 0.5).bfloat16()
    sms = torch.cuda.get_device_properties(dev).multi_processor_count

    def chain(layers):
        def run(x):
            for layer in range(layers):
                h = x
                for name, (n, k) in MATS.items():
                    words, sz = W[name]
                    h = gemv_mma.gemv_mma(h[:, :k].contiguous() if h.shape[1] != k else h, words[layer], sz[layer],
                                          n, k, GROUP)  # fmt: skip
                x = h
            return x

        return run

    bufs = buffers(x0, 2 * INTER)  # gate_up's output as it is: gate and up
    cnt = torch.zeros(1, dtype=torch.int32, device=dev)
    part = torch.zeros(4 * 1376 * 2 * 16, dtype=torch.float32, device=dev)  # --split: a shared tile's two parts
    tcnt = torch.zeros(4 * 1376, dtype=torch.int32, device=dev)  # and how many of them are done
    D = descriptors(W, L, args.unit)
    args.ws = args.ws or args.split or args.pipe
    progs = args.per_sm * sms
    out = {
        "device": torch.cuda.get_device_name(dev),
        "layers": L,
        "programs": progs,
        "slots": args.slots,
        "unit": args.unit,
        "warps": args.warps,
        "ws": args.ws,
        "split": args.split,
        "pipe": args.pipe,
    }

    meta = dict(S=args.slots, UC=args.unit, WARPS=args.warps, WS=args.ws, SPLIT=args.split, PIPE=args.pipe)
    meta["num_warps"] = args.warps
    if args.ws:  # the kernel holds 4 more warps (a warpgroup for the producer): registers for 1 or 2 an SM
        meta["maxnreg"] = min(128, 65536 // (args.per_sm * (args.warps + 4) * 32) // 8 * 8)
    kargs = (bufs["X"], bufs["Y1"], bufs["Y2"], bufs["Y3"], *D, cnt, part, tcnt)

    def ring(layers):
        cnt.zero_()
        tcnt.zero_()
        _layers[(progs,)](*kargs, layers, **meta)

    k = _layers.warmup(*kargs, L, grid=(progs,), **meta)
    k._init_handles()
    smem = getattr(torch.cuda.get_device_properties(dev), "shared_memory_per_multiprocessor", 228 << 10)
    warps = args.warps + (4 if args.ws else 0)
    fits = min(65536 // max(k.n_regs * 32 * warps, 1), smem // max(k.metadata.shared + 1024, 1))
    if fits < args.per_sm:  # a grid barrier would wait forever on programs that never start
        print(json.dumps(out | {"error": f"not resident: {fits} programs an SM", "shared": k.metadata.shared}))
        return
    out |= {"registers": k.n_regs, "spill_bytes": getattr(k, "n_spills", None), "shared": k.metadata.shared}
    for layers in (1, 2):  # (random weights overflow bf16 over many layers without the model's norms)
        ref = chain(layers)(x0)
        bufs["X"].copy_(x0)
        ring(layers)
        torch.cuda.synchronize()
        got = bufs["X"].float()
        err = ((got - ref.float()).abs().max() / ref.float().abs().max()).item()
        out[f"max_rel_err_{layers}_layers"] = round(err, 5)
        out[f"finite_{layers}_layers"] = bool(torch.isfinite(got).all() and torch.isfinite(ref).all())
    times = {"chain": [], "ring": []}
    for _ in range(args.rounds):
        times["chain"].append(graph_time_us(lambda: chain(L)(x0), reps=3, iters=10))
        times["ring"].append(graph_time_us(lambda: ring(L), reps=3, iters=10))
    out["us"] = {name: [round(t, 1) for t in ts] for name, ts in times.items()}
    out["median_us"] = {name: round(statistics.median(ts), 1) for name, ts in times.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()

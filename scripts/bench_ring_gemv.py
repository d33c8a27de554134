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
With --pipe (and a producer warp) each unit is read into registers before the one before is computed. After
a barrier, x (the previous phase's output, from L2) is copied once into shared memory, with each chunk's sum of x
(which gemv_mma computes by 4 more mma a chunk and tile), and each unit's B fragments are read there. With --ll
there is no grid barrier: each output word carries its phase's flag beside a bf16 pair (written whole, as NCCL's
LL protocol does), and a program reads x again until every word carries the flag. No attention, no norm / residual
/ rope folds, and gate_up's output goes to down as it is (no SiLU: down reads its first 11008 rows), in both
variants. --probe times a part alone: the consumers computing whatever the ring holds (nowait), the phases with no
unit (nounits: barriers, x's staging, stores), or (trace) where each phase's time goes, from the SM clock at its
start, past its barrier, after x's staging and after its tiles.

    python3 scripts/bench_ring_gemv.py [--layers 32] [--rounds 3] [--slots 4] [--unit 32] [--per-sm 2]
        [--ws | --pipe | --ll] [--probe nowait | nounits | trace]

Prints one JSON line: µs of each variant (median of CUDA-graph replays), the largest error of the ring's result
against the chain's after one layer and after two relative to the chain's largest value (the warps' sums are
ordered as gemv_mma's only where its configuration takes pairs, as down's), the kernel's registers and shared memory,
and with --probe trace µs of the launch in each part of the phases (averaged over the programs).
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
from yi_cli.kernels.mma_epilogue import _epilogue, _gathered, _gathered2  # noqa: E402
from yi_cli.kernels.mma_units import _chunk, _dim, _frag_words, _scale  # noqa: E402

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


@gluon.constexpr_function
def _pow2(n):
    """The least power of 2 >= n."""
    return 1 << (int(n) - 1).bit_length()


@gluon.jit
def _x_at(KC: gl.constexpr, ROWS: gl.constexpr, WARPS: gl.constexpr):
    """The chunks c and words j of x's staged rows as one [R·WARPS, 32] tensor (R: ROWS to a power of 2; row q is
    staged row q // WARPS of warp q % WARPS, _stage_x's order; rows past ROWS at chunk KC, which is past x)."""
    R: gl.constexpr = _pow2(ROWS)
    LQ: gl.constexpr = gl.BlockedLayout([1, 1], [1, 32], [WARPS, 1], [1, 0])
    q = gl.expand_dims(gl.arange(0, R * WARPS, layout=gl.SliceLayout(1, LQ)), 1)
    j = gl.expand_dims(gl.arange(0, 32, layout=gl.SliceLayout(0, LQ)), 0)
    r = q // WARPS
    c = gl.where(r < ROWS, (r // 2) * (2 * WARPS) + 2 * (q % WARPS) + r % 2, KC)
    return c + j * 0, j + c * 0


@gluon.jit
def _store_x(v, xs, xsum):
    """x's staged rows (v: [R·WARPS, 32] words, _x_at's rows) into xs [rows, WARPS, 32] in one store, and each
    chunk's sum of x (fp32) into xsum [rows, WARPS] in another (a store a row took a barrier a row; this is as
    fast, with one: 969.5 / 970.5 µs against 971.9 / 972.7 for the 32 layers)."""
    RW: gl.constexpr = v.shape[0]
    xs._reinterpret(gl.int32, [xs.shape[0] * xs.shape[1], 32], PLAIN2).slice(0, RW).store(v)
    lo = (v << 16).to(gl.float32, bitcast=True)
    hi = (v & -65536).to(gl.float32, bitcast=True)
    xsum._reinterpret(gl.float32, [xsum.shape[0] * xsum.shape[1]], PLAIN1).slice(0, RW).store(gl.sum(lo + hi, axis=1))


@gluon.jit
def _stage_x(X, xs, xsum, KC: gl.constexpr, ROWS: gl.constexpr, WARPS: gl.constexpr):
    """x's KC chunks (as int32 words, 0 past them) into shared memory [rows, WARPS, 32]: row 2b + h, warp w holds
    chunk 2·WARPS·b + 2w + h (block b: one pair a warp), and each chunk's sum of x (fp32) into xsum [rows, WARPS]."""
    c, j = _x_at(KC, ROWS, WARPS)
    _store_x(gl.load(X.to(gl.pointer_type(gl.int32)) + c * 32 + j, mask=c < KC, other=0), xs, xsum)


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
    same): 8 tensors [1, WARPS, 8, 4] of bf16 pairs, as mma_units._xfrag's."""
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
def _fetch(ring, sring, bars, slot, parity, K4: gl.constexpr, WARPS: gl.constexpr, WAIT: gl.constexpr = True):
    """The unit in ring slot `slot` into registers once its copies land (parity: of the slot's barrier): its codes
    (warp w rows 2p and 2p + 1 for its pairs p = w + 8k, lane l words 4l .. 4l + 3) and its scales (group p, rows g
    and g + 8), as [UC, 128] and [UC / 2, 16]. WAIT False (--probe nowait): whatever the slot holds now."""
    LC: gl.constexpr = gl.BlockedLayout([2, 4], [1, 32], [WARPS, 1], [1, 0])
    LSP: gl.constexpr = gl.BlockedLayout([1, 1, 1], [1, 8, 4], [WARPS, 1, 1], [2, 1, 0])  # [group, row, t]
    if WAIT:
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
          WARPS: gl.constexpr, WAIT: gl.constexpr = True):  # fmt: skip
    """The accumulators after the unit in ring slot `slot` (_fetch, _compute); with WS the slot is released as soon
    as it is read."""
    v, sv = _fetch(ring, sring, bars, slot, parity, K4, WARPS, WAIT)
    if WS and WAIT:
        _release(empty, slot)
    return _compute(acc, v, sv, xs, xsum, uu, xz, K4, WARPS)


@gluon.jit
def _clock():
    """This SM's clock (cycles), for --probe trace."""
    return gl.inline_asm_elementwise("mov.u64 $0, %clock64;", "=l", [], dtype=gl.int64, is_pure=False, pack=1)


@gluon.jit
def _enter(f, X, xs, xsum, CNT, progs, KC: gl.constexpr, UC: gl.constexpr, WARPS: gl.constexpr,
           PROBE: gl.constexpr = 0, TR=None):  # fmt: skip
    """The start of phase f: every program's arrival at the end of phase f - 1, then its output x staged."""
    if f > 0:
        seen = gl.atomic_add(CNT, 0, sem="acquire", scope="gpu")
        while seen < f * progs:
            seen = gl.atomic_add(CNT, 0, sem="acquire", scope="gpu")
    if PROBE == 3:
        gl.store(TR + 1, _clock())
    rows: gl.constexpr = 2 * ((KC + UC - 1) // UC) * (UC // (2 * WARPS))
    _stage_x(X, xs, xsum, KC, rows, WARPS)
    gl.thread_barrier()


@gluon.jit
def _phase(
    f, st, X, Y, D, ring, sring, xs, xsum, bars, empty, CNT, pid, progs, phases,
    N: gl.constexpr, KC: gl.constexpr, S: gl.constexpr, WARPS: gl.constexpr, SH: gl.constexpr, UC: gl.constexpr,
    WS: gl.constexpr, PIPE: gl.constexpr, PROBE: gl.constexpr,
):  # fmt: skip
    """This program's tiles of phase f (Y = W·x over X's K), units from the ring, refilled with the cursor's units;
    then its arrival."""
    lf, li, lu, c = st
    LA: gl.constexpr = _acc_layout(WARPS)
    LXB: gl.constexpr = gl.BlockedLayout([1, 1, 8], [1, 8, 4], [WARPS, 1, 1], [2, 1, 0])  # [w, g, word]
    LY: gl.constexpr = gl.SliceLayout(1, _gathered(1, WARPS))
    TR = (CNT + 64).to(gl.pointer_type(gl.int64)) + (pid * phases + f) * 4  # --probe trace: this phase's 4 clocks
    if PROBE == 3:
        gl.store(TR, _clock())
    _enter(f, X, xs, xsum, CNT, progs, KC, UC, WARPS, PROBE=PROBE, TR=TR)
    if PROBE == 3:
        gl.store(TR + 2, _clock())
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
            elif PROBE != 2:  # (--probe nounits: no unit at all)
                acc = _unit(acc, ring, sring, xs, xsum, bars, empty, slot, (c // S) & 1, u, xz, WS, K4, WARPS,
                            PROBE != 1)  # fmt: skip
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
    if PROBE == 3:
        gl.store(TR + 3, _clock())
    gl.thread_barrier()
    gl.atomic_add(CNT, 1, sem="release", scope="gpu")
    return lf, li, lu, c


@gluon.jit
def _consumers(
    X, Y1, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, layers, WS: gl.constexpr, PIPE: gl.constexpr,
    PROBE: gl.constexpr = 0,
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
                    SH[0][0], SH[0][1] // 64, S, WARPS, SH, UC, WS, PIPE, PROBE)  # fmt: skip
        st = _phase(f + 1, st, Y1, Y2, D, ring, sring, xs, xsum, bars, empty, CNT, pid, progs, phases,
                    SH[1][0], SH[1][1] // 64, S, WARPS, SH, UC, WS, PIPE, PROBE)  # fmt: skip
        st = _phase(f + 2, st, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, pid, progs, phases,
                    SH[2][0], SH[2][1] // 64, S, WARPS, SH, UC, WS, PIPE, PROBE)  # fmt: skip
        st = _phase(f + 3, st, Y3, X, D, ring, sring, xs, xsum, bars, empty, CNT, pid, progs, phases,
                    SH[3][0], SH[3][1] // 64, S, WARPS, SH, UC, WS, PIPE, PROBE)  # fmt: skip


@gluon.jit
def _consumers_ws(X, Y1, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, layers):
    """_consumers beside a producer warp (its WS a literal: a constexpr)."""
    _consumers(X, Y1, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, layers, True, False)


@gluon.jit
def _consumers_nowait(X, Y1, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, layers):
    """_consumers computing whatever the ring holds (--probe nowait: the producer copies nothing, the consumers
    neither wait nor release: their own speed)."""
    _consumers(X, Y1, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, layers, True, False, 1)


@gluon.jit
def _consumers_nounits(X, Y1, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, layers):
    """_consumers with no unit (--probe nounits: the phases' barriers, x's staging and the stores alone)."""
    _consumers(X, Y1, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, layers, True, False, 2)


@gluon.jit
def _consumers_trace(X, Y1, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, layers):
    """_consumers beside a producer warp, each phase's clocks at its start, after the grid barrier, after x's
    staging and after its tiles into CNT[64:] (--probe trace)."""
    _consumers(X, Y1, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, layers, True, False, 3)


@gluon.jit
def _consumers_pipe(X, Y1, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, layers):
    """_consumers beside a producer warp, each unit read before the one before is computed (--pipe)."""
    _consumers(X, Y1, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, layers, True, True)


@gluon.jit
def _ll_words(IN, expect, KC: gl.constexpr, ROWS: gl.constexpr, WARPS: gl.constexpr):
    """--ll: x's words of _stage_x's rows from IN (int64 words: a bf16 pair, then its phase's flag), and how many
    of them carry another flag than `expect` (not written yet: 0 once every program's output has landed)."""
    c, j = _x_at(KC, ROWS, WARPS)
    v = gl.load(IN + c * 32 + j, mask=c < KC, other=expect.to(gl.int64) << 32, volatile=True)
    late = ((v >> 32).to(gl.int32) != expect).to(gl.int32)
    return v.to(gl.int32), gl.sum(gl.sum(late, axis=1), axis=0)


@gluon.jit
def _stage_ll(IN, xs, xsum, expect, KC: gl.constexpr, ROWS: gl.constexpr, WARPS: gl.constexpr):
    """_stage_x from --ll words: read again until every word carries phase f - 1's flag (no grid barrier: the
    flags are the data's own, each word written and read whole)."""
    v, late = _ll_words(IN, expect, KC, ROWS, WARPS)
    while late > 0:
        v, late = _ll_words(IN, expect, KC, ROWS, WARPS)
    _store_x(v, xs, xsum)


@gluon.jit
def _pairs(v, WARPS: gl.constexpr):
    """[1, 8, 4, 2] (tile, g, t, h: row g + 8h) -> the even and odd rows [1, 4, 8] (t, word: rows 2·word, + 1)."""
    L4: gl.constexpr = gl.BlockedLayout([1, 1, 1, 2], [1, 4, 8, 1], [WARPS, 1, 1, 1], [3, 2, 1, 0])
    v = gl.reshape(gl.permute(v, [0, 2, 3, 1]), [1, 4, 8, 2])
    return gl.split(gl.convert_layout(v, L4))


@gluon.jit
def _store_ll(OUT, acc, t, flag, WARPS: gl.constexpr):
    """--ll: tile t's 16 rows (the warps' sums of x row 0's column) as 8 words of OUT: a bf16 pair of rows 2i and
    2i + 1, then `flag`, each word written whole (relaxed 64-bit exchange), so that a reader that sees the flag
    sees its pair."""
    LS: gl.constexpr = gl.SliceLayout(1, _gathered2(1, WARPS))  # [1, 8, 4, 2]: tile, g, t, h
    both = gl.convert_layout(gl.join(acc[0], acc[2]), _gathered2(1, WARPS))
    y = gl.sum(both, axis=1)
    g = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=_dim(LS, 4, 1)), 0), 2), 3)
    tt = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, 4, layout=_dim(LS, 4, 2)), 0), 1), 3)
    h = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, 2, layout=_dim(LS, 4, 3)), 0), 1), 2)
    word = (g + 8 * h) // 2 + tt * 16  # word, and (t > 0: a column of x's other rows) 16 past the tile's 8
    ylo, yhi = _pairs(y, WARPS)
    wlo, _ = _pairs(word + y.to(gl.int32) * 0, WARPS)
    lo = ylo.to(gl.bfloat16).to(gl.int16, bitcast=True).to(gl.int32) & 65535
    hi = yhi.to(gl.bfloat16).to(gl.int16, bitcast=True).to(gl.int32)
    val = ((lo | (hi << 16)).to(gl.int64) & 4294967295) | (flag.to(gl.int64) << 32)
    gl.atomic_xchg(OUT + t * 8 + wlo, val, mask=wlo < 8, sem="relaxed", scope="gpu")


@gluon.jit
def _phase_ll(
    f, st, IN, OUT, ep, EPOCH, phases, ring, sring, xs, xsum, bars, empty,
    N: gl.constexpr, KC: gl.constexpr, S: gl.constexpr, WARPS: gl.constexpr, UC: gl.constexpr,
    FIRST: gl.constexpr, PROBE: gl.constexpr,
):  # fmt: skip
    """_phase (a producer warp) with --ll words in and out instead of a grid barrier: x staged once every word of
    phase f - 1 carries its flag (FIRST: x0 as it is, bf16), this program's tiles computed as _phase computes them,
    each stored with phase f's flag."""
    LA: gl.constexpr = _acc_layout(WARPS)
    LXB: gl.constexpr = gl.BlockedLayout([1, 1, 8], [1, 8, 4], [WARPS, 1, 1], [2, 1, 0])  # [w, g, word]
    pid = gl.program_id(0)
    progs = gl.num_programs(0)
    c = st
    UI: gl.constexpr = (KC + UC - 1) // UC
    K4: gl.constexpr = UC // (2 * WARPS)
    ROWS: gl.constexpr = 2 * UI * K4
    TR = (EPOCH + 64).to(gl.pointer_type(gl.int64)) + (pid * phases + f) * 4  # --probe trace
    if PROBE == 3:
        gl.store(TR, _clock())
        gl.store(TR + 1, _clock())  # (no grid barrier: the wait for x is in its staging)
    if pid < N // 16:  # (a program without a tile reads no x)
        if FIRST:
            _stage_x(IN, xs, xsum, KC, ROWS, WARPS)
        else:
            _stage_ll(IN, xs, xsum, ep + f, KC, ROWS, WARPS)
        gl.thread_barrier()
    if PROBE == 3:
        gl.store(TR + 2, _clock())
    xz = gl.zeros([WARPS, 8, 32], gl.int32, LXB)
    for t in range(pid, N // 16, progs):
        zero = gl.zeros([1, WARPS, 8, 4], gl.float32, LA)
        acc = (zero, zero, zero, zero)
        for u in gl.static_range(UI):
            if PROBE != 2:
                acc = _unit(acc, ring, sring, xs, xsum, bars, empty, c % S, (c // S) & 1, u, xz, True, K4, WARPS)
            c += 1
        _store_ll(OUT, acc, t, ep + f + 1, WARPS)
    if PROBE == 3:
        gl.store(TR + 3, _clock())
    gl.thread_barrier()  # x's shared memory read by every warp before the next phase stages its own
    return c


@gluon.jit
def _layer_ll(f, c, IN, LQ, LO, LG, LD, ep, EPOCH, phases, ring, sring, xs, xsum, bars, empty, FIRST: gl.constexpr,
              PROBE: gl.constexpr):  # fmt: skip
    """A layer's four phases with --ll words (FIRST: IN is x0, bf16; else the layer before's down, LD)."""
    S: gl.constexpr = ring.shape[0]
    UC: gl.constexpr = ring.shape[1]
    WARPS: gl.constexpr = xs.shape[1]
    SH: gl.constexpr = SH_
    at = (ep, EPOCH, phases, ring, sring, xs, xsum, bars, empty)
    c = _phase_ll(f, c, IN, LQ, *at, SH[0][0], SH[0][1] // 64, S, WARPS, UC, FIRST, PROBE)
    c = _phase_ll(f + 1, c, LQ, LO, *at, SH[1][0], SH[1][1] // 64, S, WARPS, UC, False, PROBE)
    c = _phase_ll(f + 2, c, LO, LG, *at, SH[2][0], SH[2][1] // 64, S, WARPS, UC, False, PROBE)
    c = _phase_ll(f + 3, c, LG, LD, *at, SH[3][0], SH[3][1] // 64, S, WARPS, UC, False, PROBE)
    return c


@gluon.jit
def _consumers_llp(X, LQ, LO, LG, LD, EPOCH, ring, sring, xs, xsum, bars, empty, layers, PROBE: gl.constexpr):
    """The phases with --ll words: x0 (bf16) -> qkv -> o -> gate_up -> down (LQ .. LD), `layers` times; the flags
    are this launch's EPOCH (a counter the host adds 1 to before each launch) times 4096 plus the phase's number."""
    ep = gl.load(EPOCH) * 4096
    at = (ep, EPOCH, layers * 4, ring, sring, xs, xsum, bars, empty)
    c = _layer_ll(0, ep * 0, X, LQ, LO, LG, LD, *at, True, PROBE)
    for layer in range(1, layers):
        c = _layer_ll(layer * 4, c, LD, LQ, LO, LG, LD, *at, False, PROBE)


@gluon.jit
def _consumers_ll(X, LQ, LO, LG, LD, EPOCH, ring, sring, xs, xsum, bars, empty, layers):
    """_consumers_llp (its PROBE a literal)."""
    _consumers_llp(X, LQ, LO, LG, LD, EPOCH, ring, sring, xs, xsum, bars, empty, layers, 0)


@gluon.jit
def _consumers_ll_trace(X, LQ, LO, LG, LD, EPOCH, ring, sring, xs, xsum, bars, empty, layers):
    """_consumers_llp with each phase's clocks into EPOCH[64:] (--ll --probe trace)."""
    _consumers_llp(X, LQ, LO, LG, LD, EPOCH, ring, sring, xs, xsum, bars, empty, layers, 3)


@gluon.jit
def _consumers_ll_nounits(X, LQ, LO, LG, LD, EPOCH, ring, sring, xs, xsum, bars, empty, layers):
    """_consumers_llp with no unit (--ll --probe nounits)."""
    _consumers_llp(X, LQ, LO, LG, LD, EPOCH, ring, sring, xs, xsum, bars, empty, layers, 2)


@gluon.jit
def _produce(D, ring, sring, bars, empty, layers):
    """One warp issuing the ring's copies in the order the consumers take them (a program's tiles of each phase),
    each into a slot they released."""
    S: gl.constexpr = ring.shape[0]
    UC: gl.constexpr = ring.shape[1]
    SH: gl.constexpr = SH_
    pid = gl.program_id(0)
    progs = gl.num_programs(0)
    phases = layers * 4
    zero = pid * 0
    lf, li, lu, k = zero, zero, zero, zero
    while lf < phases:
        slot = k % S
        mbarrier.wait(empty.index(slot), ((k // S) & 1) ^ 1)
        _issue(D, lf, pid + li * progs, lu, slot, ring, sring, bars, SH, UC)
        lf, li, lu = _advance(lf, li, lu, phases, pid, progs, SH, UC)
        k += 1


@gluon.jit
def _producer(DQ, DO, DG, DD, SQ, SO, SG, SD, DT8, DT4, ST4, ST2, ring, sring, bars, empty, layers):
    """_produce with the descriptors as arguments of their own (a tuple of them is not launched)."""
    _produce((DQ, DO, DG, DD, SQ, SO, SG, SD, DT8, DT4, ST4, ST2), ring, sring, bars, empty, layers)


@gluon.jit
def _layers(
    X, Y1, Y2, Y3, DQ, DO, DG, DD, SQ, SO, SG, SD, DT8, DT4, ST4, ST2, CNT, LD, EPOCH, layers,
    S: gl.constexpr, WARPS: gl.constexpr, UC: gl.constexpr, WS: gl.constexpr,
    PIPE: gl.constexpr, PROBE: gl.constexpr, LL: gl.constexpr,
):  # fmt: skip
    """`layers` layers of x -> qkv -> o -> gate_up -> down -> x, each matmul a phase (the descriptors: the four
    matmuls' codes, then their scales; a tuple of them as an argument is not launched by Triton 3.6). WS: one more
    warp issues the ring's copies (gl.warp_specialize)."""
    D = (DQ, DO, DG, DD, SQ, SO, SG, SD, DT8, DT4, ST4, ST2)
    ring = gl.allocate_shared_memory(gl.int32, [S, UC, 128], NVMMA)
    sring = gl.allocate_shared_memory(gl.int32, [S, UC // 2, 16], NVMMA)
    xs = gl.allocate_shared_memory(gl.int32, [256 // WARPS, WARPS, 32], PLAIN2)  # down's 172 chunks in rows to 2^n
    xsum = gl.allocate_shared_memory(gl.float32, [256 // WARPS, WARPS], PLAIN1)
    bars = gl.allocate_shared_memory(gl.int64, [S, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [S, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(S):
        mbarrier.init(bars.index(s), count=1)
        mbarrier.init(empty.index(s), count=1)
    fence_async_shared()
    if LL:  # --ll: Y1, Y2, Y3 and LD hold words with flags (no grid barrier), a producer warp
        cargs = (X, Y1, Y2, Y3, LD, EPOCH, ring, sring, xs, xsum, bars, empty, layers)
        pargs = (DQ, DO, DG, DD, SQ, SO, SG, SD, DT8, DT4, ST4, ST2, ring, sring, bars, empty, layers)
        if PROBE == 2:
            pargs = (DQ, DO, DG, DD, SQ, SO, SG, SD, DT8, DT4, ST4, ST2, ring, sring, bars, empty, layers * 0)
            gl.warp_specialize([(_consumers_ll_nounits, cargs), (_producer, pargs)], [1], [48])
        elif PROBE == 3:
            gl.warp_specialize([(_consumers_ll_trace, cargs), (_producer, pargs)], [1], [48])
        else:
            gl.warp_specialize([(_consumers_ll, cargs), (_producer, pargs)], [1], [48])
    elif WS:
        cargs = (X, Y1, Y2, Y3, D, ring, sring, xs, xsum, bars, empty, CNT, layers)
        pargs = (DQ, DO, DG, DD, SQ, SO, SG, SD, DT8, DT4, ST4, ST2, ring, sring, bars, empty, layers)
        if PIPE:
            gl.warp_specialize([(_consumers_pipe, cargs), (_producer, pargs)], [1], [48])
        elif PROBE == 3:
            gl.warp_specialize([(_consumers_trace, cargs), (_producer, pargs)], [1], [48])
        elif PROBE:  # the producer copies nothing
            pargs = (DQ, DO, DG, DD, SQ, SO, SG, SD, DT8, DT4, ST4, ST2, ring, sring, bars, empty, layers * 0)
            if PROBE == 1:
                gl.warp_specialize([(_consumers_nowait, cargs), (_producer, pargs)], [1], [48])
            else:
                gl.warp_specialize([(_consumers_nounits, cargs), (_producer, pargs)], [1], [48])
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


def trace(tr: torch.Tensor, ring_us: float) -> dict:
    """Where a program's time goes, from --probe trace's clocks [programs, phases, 4] (start, past the grid
    barrier, x staged, tiles done): µs of the launch (cycles scaled by the measured time) in each part, summed over
    the phases of each kind and averaged over the programs; `arrive` is from a phase's tiles to the next's start."""
    tr = tr.double()
    total = (tr[:, -1, 3] - tr[:, 0, 0]).mean().item()
    us = ring_us / total
    parts = {"wait": tr[:, :, 1] - tr[:, :, 0], "stage": tr[:, :, 2] - tr[:, :, 1], "tiles": tr[:, :, 3] - tr[:, :, 2]}
    parts["arrive"] = torch.cat([tr[:, 1:, 0] - tr[:, :-1, 3], torch.zeros(tr.shape[0], 1, dtype=tr.dtype)], 1)
    out = {"cycles_per_us": round(1 / us, 1)}
    for name, v in parts.items():
        out[name] = {kind: round(v[:, k::4].sum(1).mean().item() * us, 1) for k, kind in enumerate(MATS)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slots", type=int, default=4, help="units a program keeps in flight")
    ap.add_argument("--unit", type=int, choices=(16, 32, 64), default=32, help="chunks of 64 columns a unit")
    ap.add_argument("--per-sm", type=int, choices=(1, 2), default=2, help="programs an SM (all resident)")
    ap.add_argument("--ws", action="store_true", help="one more warp issues the copies (warp specialization)")
    ap.add_argument("--pipe", action="store_true", help="--ws with each unit read before the one before is computed")
    ap.add_argument(
        "--ll",
        action="store_true",
        help="--ws with no grid barrier: each output word carries its phase's flag, and x is read until all do",
    )
    ap.add_argument(
        "--probe",
        choices=("nowait", "nounits", "trace"),
        help="--ws timing a part alone (no copies; results not checked): the consumers computing whatever the ring "
        "holds, or the phases with no unit (barriers, x's staging, stores); or (trace) where each phase's time goes",
    )
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
    D = descriptors(W, L, args.unit)
    args.ws = args.ws or args.pipe or bool(args.probe) or args.ll
    progs = args.per_sm * sms
    # the grid barrier's count, then (--probe trace) 4 clocks of each program's phases, as int64 from CNT[64]
    cnt = torch.zeros(64 + (8 * progs * 4 * L if args.probe == "trace" else 0), dtype=torch.int32, device=dev)
    out = {
        "device": torch.cuda.get_device_name(dev),
        "layers": L,
        "programs": progs,
        "slots": args.slots,
        "unit": args.unit,
        "warps": args.warps,
        "ws": args.ws,
        "pipe": args.pipe,
        "probe": args.probe,
        "ll": args.ll,
    }

    meta = dict(S=args.slots, UC=args.unit, WARPS=args.warps, WS=args.ws, PIPE=args.pipe)
    meta["PROBE"] = (None, "nowait", "nounits", "trace").index(args.probe)
    meta["LL"] = args.ll
    meta["num_warps"] = args.warps
    if args.ws:  # the kernel holds 4 more warps (a warpgroup for the producer): registers for 1 or 2 an SM
        meta["maxnreg"] = min(128, 65536 // (args.per_sm * (args.warps + 4) * 32) // 8 * 8)
    ys = (bufs["Y1"], bufs["Y2"], bufs["Y3"])
    epoch = torch.zeros(cnt.numel(), dtype=torch.int32, device=dev)  # --ll: the launch's count, then as cnt
    if args.ll:  # words of a bf16 pair and a flag; x0 stays as it is
        ys = tuple(torch.zeros(n // 2, dtype=torch.int64, device=dev) for n in (QKV, HIDDEN, 2 * INTER))
    lld = torch.zeros(HIDDEN // 2, dtype=torch.int64, device=dev)  # --ll: down's output
    kargs = (bufs["X"], *ys, *D, cnt, lld, epoch)

    def ring(layers):
        if args.ll:
            epoch.add_(1)
        else:
            cnt.zero_()
        _layers[(progs,)](*kargs, layers, **meta)

    def result():
        return lld.to(torch.int32).view(torch.bfloat16).view(1, HIDDEN) if args.ll else bufs["X"]

    k = _layers.warmup(*kargs, L, grid=(progs,), **meta)
    k._init_handles()
    smem = getattr(torch.cuda.get_device_properties(dev), "shared_memory_per_multiprocessor", 228 << 10)
    warps = args.warps + (4 if args.ws else 0)
    fits = min(65536 // max(k.n_regs * 32 * warps, 1), smem // max(k.metadata.shared + 1024, 1))
    if fits < args.per_sm:  # a grid barrier would wait forever on programs that never start
        print(json.dumps(out | {"error": f"not resident: {fits} programs an SM", "shared": k.metadata.shared}))
        return
    out |= {"registers": k.n_regs, "spill_bytes": getattr(k, "n_spills", None), "shared": k.metadata.shared}
    for layers in (1, 2) if not args.probe else ():  # (random weights overflow bf16 without the model's norms)
        ref = chain(layers)(x0)
        bufs["X"].copy_(x0)
        ring(layers)
        torch.cuda.synchronize()
        got = result().float()
        err = ((got - ref.float()).abs().max() / ref.float().abs().max()).item()
        out[f"max_rel_err_{layers}_layers"] = round(err, 5)
        out[f"finite_{layers}_layers"] = bool(torch.isfinite(got).all() and torch.isfinite(ref).all())
    times = {"chain": [], "ring": []}
    for _ in range(args.rounds):
        times["chain"].append(graph_time_us(lambda: chain(L)(x0), reps=3, iters=10))
        times["ring"].append(graph_time_us(lambda: ring(L), reps=3, iters=10))
    out["us"] = {name: [round(t, 1) for t in ts] for name, ts in times.items()}
    out["median_us"] = {name: round(statistics.median(ts), 1) for name, ts in times.items()}
    if args.probe == "trace":
        ring(L)
        torch.cuda.synchronize()
        clocks = (epoch if args.ll else cnt)[64:].view(torch.int64).view(progs, 4 * L, 4).cpu()
        out["trace"] = trace(clocks, out["median_us"]["ring"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()

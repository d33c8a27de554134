"""Tried and dropped (seventeenth session; BENCHMARKS.md): gemv_mma for int4 codes at one tile a program and one
chunk a unit, with each program's whole weight slice copied into shared memory by TMA before the PDL wait (the
weights do not depend on the previous kernel), the loop reading its words from shared memory and its scales and x
from register rings as gemv_mma does. Same math order as gemv_mma at (1, WARPS, *, *, 1): the same bits. Kept so
that its numbers can be rerun; it imports gemv_mma's private helpers and may need the commit it was written at.

    python3 scripts/tried_gemv_tma.py check                 # bits, and a launch alone: Yi-6B's and Yi-34B's shapes
    python3 scripts/tried_gemv_tma.py step /tmp/yi-bench/yi-6b-awq   # the graphed step with it on qkv / o / down
"""

import argparse
import json
import statistics
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import torch  # noqa: E402
from triton.experimental import gluon  # noqa: E402
from triton.experimental.gluon import language as gl  # noqa: E402
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma  # noqa: E402
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor  # noqa: E402

from yi_cli.kernels import gemv, gemv_mma, glue, mma_layout  # noqa: E402
from yi_cli.kernels.mma_epilogue import _epilogue  # noqa: E402
from yi_cli.kernels.mma_ptx import XSUM, _unpack_asm  # noqa: E402
from yi_cli.kernels.mma_units import _chunk, _codes, _dim, _put, _sc, _scale, _unit_x  # noqa: E402

LAYOUT = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=2)


def _mma2_asm() -> str:
    """gemv_mma's chunk asm with two accumulator chains: k-steps 0 and 2 into D, 1 and 3 into E, then D + E (the
    HMMAs of a chunk two deep instead of four; a different order of fp32 sums, the same for every row of x)."""
    out = "{\n.reg .b32 a0, a1, a2, a3, t;\n.reg .f32 z, e0, e1, e2, e3;\nmov.f32 z, 0f00000000;\n"
    for s in range(4):
        out += _unpack_asm(f"${4 + s}")
        d = "$0, $1, $2, $3" if s % 2 == 0 else "e0, e1, e2, e3"
        c = "z, z, z, z" if s < 2 else d
        out += (
            f"mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {{{d}}}, {{a0, a1, a2, a3}}, "
            f"{{${8 + 2 * s}, ${9 + 2 * s}}}, {{{c}}};\n"
        )
    for i in range(4):
        out += f"add.f32 ${i}, ${i}, e{i};\n"
    return out + "}"


MMA2 = gl.constexpr(_mma2_asm())


@gluon.jit
def _chunk2(words, bs, LA: gl.constexpr):
    """mma_units._chunk from C = 0 with MMA2."""
    w02, w13 = gl.split(gl.reshape(words, [words.shape[0], words.shape[1], 8, 4, 2, 2]))
    w0, w2 = gl.split(w02)
    w1, w3 = gl.split(w13)
    a = (gl.convert_layout(w0, LA), gl.convert_layout(w1, LA), gl.convert_layout(w2, LA), gl.convert_layout(w3, LA))
    return gl.inline_asm_elementwise(
        MMA2,
        "=f,=f,=f,=f" + ",r" * 12,
        a + bs,
        dtype=(gl.float32, gl.float32, gl.float32, gl.float32),
        is_pure=True,
        pack=1,
    )


@gluon.jit
def _tstep(
    rings,
    at,
    c,
    j: gl.constexpr,
    LA: gl.constexpr,
    L5: gl.constexpr,
    LS: gl.constexpr,
    G: gl.constexpr,
    KC: gl.constexpr,
    WARPS: gl.constexpr,
    AHEAD: gl.constexpr,
    XAHEAD: gl.constexpr,
    LOAD: gl.constexpr,
    LOADX: gl.constexpr,
    F16: gl.constexpr,
    PER: gl.constexpr,
    STRIP: gl.constexpr,
    NOXSUM: gl.constexpr,
):
    """mma_units._step at one chunk a unit, the words from shared memory (chunks c .. c + WARPS - 1)."""
    acc, scs, bss = rings
    SZ32, X32, w4, w5, row0, xw, xoff, N, smem, bars = at
    LW: gl.constexpr = gl.SliceLayout(0, LA)
    if LOAD and STRIP < 3:
        snext = _sc(SZ32, w4, c + AHEAD * WARPS, row0, N, G, KC, 1)
    bs = bss[j % XAHEAD]
    if LOADX and STRIP < 2:
        bss = _put(bss, j % XAHEAD, _unit_x(X32, xw, xoff, c + XAHEAD * WARPS, KC, LW, 1))
    i = c // WARPS
    if STRIP == 0:
        mbarrier.wait(bars.index(i // PER), 0)
    v = smem.index(i).load(LS)  # [WARPS, 128]
    words = gl.convert_layout(gl.reshape(v, [1, WARPS, 8, 4, 4]), L5)
    if (KC % WARPS) != 0:
        words = gl.where(c + w5 < KC, words, 0)
    if NOXSUM == 2:  # two accumulator chains a chunk (a different order of sums; x's sums as shipped)
        d = _chunk2(words, bs[0], LA)
        xs0, xs1 = gl.inline_asm_elementwise(
            XSUM, "=f,=f" + ",r" * 8, bs[0], dtype=(gl.float32, gl.float32), is_pure=True, pack=1
        )
    elif NOXSUM:  # timing only: x's chunk sums left out (as if computed once a launch), the result wrong
        d = _chunk(words, bs[0], LA, ())
        xs0 = gl.zeros([1, WARPS, 8, 4], gl.float32, LA)
        xs1 = xs0
    else:
        d, xs0, xs1 = _codes(words, bs[0], LA, 4, F16, ())
    acc = _scale(acc, d, xs0, xs1, scs[j], 136.0, F16)
    if LOAD and STRIP < 3:
        scs = _put(scs, j, snext)
    return acc, scs, bss


@gluon.jit(do_not_specialize=["MX", "S"])
def _gemv_tma(
    X,
    PD,
    SZ,
    Y,
    N,
    MX,
    NORM_IN,
    XR,
    WN,
    NORM_OUT,
    eps,
    POS,
    COS,
    SIN,
    KCACHE,
    VCACHE,
    S,
    KC: gl.constexpr,
    G: gl.constexpr,
    WARPS: gl.constexpr,
    PDL: gl.constexpr,
    ITERS: gl.constexpr,
    NB: gl.constexpr,
    NP: gl.constexpr,
    RESIDUAL: gl.constexpr,
    HALVES: gl.constexpr,
    NH: gl.constexpr,
    NKV: gl.constexpr,
    STRIP: gl.constexpr,
    NOXSUM: gl.constexpr,
    AHEAD: gl.constexpr,
    XAHEAD: gl.constexpr,
):
    RT: gl.constexpr = 1
    L5: gl.constexpr = gl.BlockedLayout([RT, 1, 1, 1, 4], [1, 1, 8, 4, 1], [1, WARPS, 1, 1, 1], [4, 3, 2, 1, 0])
    LA: gl.constexpr = gl.SliceLayout(4, L5)
    LS: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [WARPS, 1], [1, 0])  # [WARPS, 128]: lane l words 4l..4l+3
    pid = gl.program_id(0)
    # the whole slice of this program's tile: ITERS copies of [WARPS, 128] words (chunks i·WARPS .. + WARPS - 1)
    PER: gl.constexpr = ITERS // NB  # copies a barrier (NB divides ITERS)
    smem = gl.allocate_shared_memory(gl.int32, [ITERS, WARPS, 128], PD.layout)
    bars = gl.allocate_shared_memory(gl.int64, [NB, 1], mbarrier.MBarrierLayout())
    if STRIP == 0:
        for b in gl.static_range(NB):
            mbarrier.init(bars.index(b), count=1)
        fence_async_shared()
        for b in gl.static_range(NB):
            mbarrier.expect(bars.index(b), PER * WARPS * 512)
            for j in gl.static_range(PER):
                tma.async_copy_global_to_shared(
                    PD, [pid * KC + (b * PER + j) * WARPS, 0], bars.index(b), smem.index(b * PER + j)
                )
    rt = gl.arange(0, RT, layout=_dim(LA, 4, 0))
    tile4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(pid * RT + rt, 1), 2), 3)
    w4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, WARPS, layout=_dim(LA, 4, 1)), 0), 2), 3)
    g4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=_dim(LA, 4, 2)), 0), 1), 3)
    w5 = gl.expand_dims(w4, 4)
    row0 = tile4 * 16 + g4
    LW: gl.constexpr = gl.SliceLayout(0, LA)
    LX: gl.constexpr = gl.BlockedLayout([1, 1, 1, 8], [1, 8, 4, 1], [WARPS, 1, 1, 1], [3, 2, 1, 0])
    xw = gl.arange(0, WARPS, layout=_dim(LX, 4, 0))
    xw = gl.expand_dims(gl.expand_dims(gl.expand_dims(xw, 1), 2), 3)
    xg = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=_dim(LX, 4, 1)), 0), 2), 3)
    xt = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, 4, layout=_dim(LX, 4, 2)), 0), 1), 3)
    xi = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=_dim(LX, 4, 3)), 0), 1), 2)
    xoff = 8 * xt + xi + gl.minimum(xg, MX - 1) * (KC * 32)
    X32 = X.to(gl.pointer_type(gl.int32))
    SZ32 = SZ.to(gl.pointer_type(gl.int32))
    F16: gl.constexpr = X.dtype.element_ty == gl.float16
    zero = gl.zeros([RT, WARPS, 8, 4], gl.float32, LA)
    acc = (zero, zero, zero, zero)
    scs = ()
    for j in gl.static_range(AHEAD):
        scs = scs + (_sc(SZ32, w4, j * WARPS, row0, N, G, KC, 1),)
    if PDL:
        gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1)
        gl.inline_asm_elementwise(
            "griddepcontrol.launch_dependents; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1
        )
    bss = ()
    for j in gl.static_range(XAHEAD):
        bss = bss + (_unit_x(X32, xw, xoff, j * WARPS, KC, LW, 1),)
    rings = (acc, scs, bss)
    at = (SZ32, X32, w4, w5, row0, xw, xoff, N, smem, bars)
    for c0 in range(0, (ITERS // AHEAD) * AHEAD * WARPS, AHEAD * WARPS):
        for j in gl.static_range(AHEAD):
            rings = _tstep(
                rings,
                at,
                c0 + j * WARPS,
                j,
                LA,
                L5,
                LS,
                G,
                KC,
                WARPS,
                AHEAD,
                XAHEAD,
                True,
                True,
                F16,
                PER,
                STRIP,
                NOXSUM,
            )
    for j in gl.static_range(ITERS % AHEAD):
        c = ((ITERS // AHEAD) * AHEAD + j) * WARPS
        rings = _tstep(
            rings,
            at,
            c,
            j,
            LA,
            L5,
            LS,
            G,
            KC,
            WARPS,
            AHEAD,
            XAHEAD,
            False,
            j + XAHEAD < ITERS % AHEAD,
            F16,
            PER,
            STRIP,
            NOXSUM,
        )
    acc = rings[0]
    LY: gl.constexpr = gl.SliceLayout(1, LA)
    ry = gl.expand_dims(gl.expand_dims(gl.arange(0, RT, layout=_dim(LY, 3, 0)), 1), 2)
    gy = gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=_dim(LY, 3, 1)), 0), 2)
    c4 = 2 * gl.arange(0, 4, layout=_dim(LY, 3, 2))
    zero3 = gl.expand_dims(gl.expand_dims(c4, 0), 1) * 0 + ry * 0 + gy * 0
    row = (pid * RT + ry) * 16 + gy + zero3
    fold = (NORM_IN, eps, XR, WN, NORM_OUT, POS, COS, SIN, KCACHE, VCACHE, S)
    K: gl.constexpr = KC * 64
    _epilogue(Y, acc[0], acc[2], row, c4, MX, N, fold, RT, WARPS, K, False, NP, RESIDUAL, HALVES, NH, NKV)
    if MX > 1:
        _epilogue(Y, acc[1], acc[3], row, c4 + 1, MX, N, fold, RT, WARPS, K, False, NP, RESIDUAL, HALVES, NH, NKV)


_DESC = {}
INFO = {}


def desc(packed, rows):
    key = (packed.data_ptr(), rows)
    if key not in _DESC:
        flat = packed.view(-1, 128)  # [N/16 * KC, 128] words: chunk c of tile i is row i * KC + c
        _DESC[key] = (TensorDescriptor.from_tensor(flat, [rows, 128], LAYOUT), packed)
    return _DESC[key][0]


# STRIP: 0 as designed; 1 the loop on shared memory never written (no weight bytes move); 2 also x's fragments
# loaded once before the loop and reused (no x loads in it); 3 also the scales (no global loads in the loop at all)
MODE = {"strip": 0, "ahead": None, "xahead": None, "noxsum": False}  # NOXSUM: timing only (a wrong result)


def gemv_tma(x, packed, sz, n, k, group, warps=8, pdl=None, halves=0, norm=None, residual=None, rope=None):
    t = x.shape[0]
    kc = k // 64
    if rope is not None:
        nh, nkv, hd = rope[5:]
        y = torch.empty(1, nkv, nh // nkv * t, hd, dtype=x.dtype, device=x.device)
    else:
        y = torch.empty(t, n, dtype=x.dtype, device=x.device)
        nh = nkv = 0
    out = torch.empty(gemv_mma.MAX_X, n // 16, dtype=torch.float32, device=x.device) if residual is not None else y
    pdl = glue.pdl(x) if pdl is None else pdl
    iters = (kc + warps - 1) // warps
    nb = next(b for b in (4, 3, 2, 1) if iters % b == 0)  # barriers, each for iters / nb copies
    cfg = gemv_mma.config(n, k, 4)
    k_ = _gemv_tma[(n // 16,)](
        x,
        desc(packed, warps),
        sz,
        y,
        n,
        t,
        *gemv.fold_args(y, norm, residual, rope, out),
        KC=kc,
        G=group,
        WARPS=warps,
        PDL=pdl,
        ITERS=iters,
        NB=nb,
        STRIP=MODE["strip"],
        NOXSUM=MODE["noxsum"],
        AHEAD=MODE["ahead"] or max(2, cfg[2]),
        XAHEAD=MODE["xahead"] or cfg[3],
        NP=0 if norm is None else norm[0].shape[1],
        RESIDUAL=residual is not None,
        HALVES=halves,
        NH=nh,
        NKV=nkv,
        num_warps=warps,
        launch_pdl=pdl,
    )
    INFO[(n, k, tuple(MODE.values()))] = (k_.n_regs, k_.n_spills, k_.metadata.shared)
    return (y, out) if residual is not None else y


ORIG = gemv_mma.gemv_mma
USE = set()  # (n, k) routed here


def routed(
    x,
    packed,
    sz,
    n,
    k,
    group,
    rt=None,
    warps=None,
    pdl=None,
    silu=False,
    ahead=None,
    xahead=None,
    halves=0,
    norm=None,
    residual=None,
    rope=None,
    pair=None,
):
    if (n, k) in USE and not silu and sz is not None and packed.dtype == torch.int32:
        return gemv_tma(
            x, packed, sz, n, k, group, warps=8, pdl=pdl, halves=halves, norm=norm, residual=residual, rope=rope
        )
    return ORIG(
        x,
        packed,
        sz,
        n,
        k,
        group,
        rt=rt,
        warps=warps,
        pdl=pdl,
        silu=silu,
        ahead=ahead,
        xahead=xahead,
        halves=halves,
        norm=norm,
        residual=residual,
        rope=rope,
        pair=pair,
    )


def check():
    from bench_parts import graph_time_us

    copies = 8
    for name, (n, k) in {
        "qkv": (5120, 4096),
        "o": (4096, 4096),
        "down": (4096, 11008),
        "o34": (7168, 7168),
        "qkv34": (9216, 7168),
    }.items():
        sets = []
        for _ in range(copies):
            q = torch.randint(0, 16, (n, k), dtype=torch.uint8, device="cuda")
            sz = (torch.randn(k // 128, n, 2, device="cuda") * 0.01).to(torch.bfloat16)
            sets.append((mma_layout.pack(q), sz))
        for rows in (1, 3):
            x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
            ref = ORIG(x, *sets[0], n, k, 128, rt=1, warps=8, pair=1)
            got = gemv_tma(x, *sets[0], n, k, 128)
            print(
                json.dumps(
                    {
                        "m": name,
                        "rows": rows,
                        "same_bits": bool(torch.equal(ref, got)),
                        "max_diff": float((ref.float() - got.float()).abs().max()),
                    }
                ),
                flush=True,
            )
        x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
        t_ship = graph_time_us(lambda: [ORIG(x, p, z, n, k, 128) for p, z in sets]) / copies  # noqa: B023
        t_r1 = (
            graph_time_us(
                lambda: [ORIG(x, p, z, n, k, 128, rt=1, warps=8, pair=1) for p, z in sets]  # noqa: B023
            )
            / copies
        )
        small = [(p[:, :2].contiguous(), z[:1].contiguous()) for p, z in sets]  # K = 128: next to no bytes
        xs = x[:, :128].contiguous()
        t_floor = graph_time_us(lambda: [ORIG(xs, p, z, n, 128, 128) for p, z in small]) / copies  # noqa: B023
        row = {"m": name, "cfg": list(gemv_mma.config(n, k, 4)), "ship_us": round(t_ship, 2)}
        row["ship_k128_us"] = round(t_floor, 2)
        row["rt1_pair1_us"] = round(t_r1, 2)
        modes = (
            ("tma", {}),
            ("notma", {"strip": 1}),
            ("notma_nox", {"strip": 2}),
            ("notma_nox_nosc", {"strip": 3}),
            ("noxsum", {"noxsum": True}),
            ("notma_nox_nosc_noxsum", {"strip": 3, "noxsum": True}),
            ("two_chains", {"noxsum": 2}),
            ("notma_nox_nosc_two_chains", {"strip": 3, "noxsum": 2}),
            ("a4x4", {"ahead": 4, "xahead": 4}),
            ("a6x3", {"ahead": 6, "xahead": 3}),
            ("a4x4_notma", {"ahead": 4, "xahead": 4, "strip": 1}),
        )
        for key, mode in modes:
            MODE.update({"strip": 0, "ahead": None, "xahead": None, "noxsum": False})
            MODE.update(mode)
            t_tma = graph_time_us(lambda: [gemv_tma(x, p, z, n, k, 128) for p, z in sets]) / copies  # noqa: B023
            row[key + "_us"] = round(t_tma, 2)
            row[key + "_regs_spills_smem"] = INFO[(n, k, tuple(MODE.values()))]
        MODE.update({"strip": 0, "ahead": None, "xahead": None, "noxsum": 2})
        ref = ORIG(x, *sets[0], n, k, 128, rt=1, warps=8, pair=1).float()
        two = gemv_tma(x, *sets[0], n, k, 128).float()
        row["two_chains_max_rel_diff"] = float((two - ref).abs().max() / ref.abs().max())
        MODE.update({"strip": 0, "ahead": None, "xahead": None, "noxsum": False})
        print(json.dumps(row), flush=True)


def step(path, rounds=2):
    from yi_cli.checkpoint.loader import open_checkpoint
    from yi_cli.engines.settings import GenSettings
    from yi_cli.runtime.decoder import FastDecoder

    gemv_mma.gemv_mma = routed
    dec = FastDecoder(open_checkpoint(path, device="cuda", dtype="auto"))
    layer = dec.model.layers[0]
    sh = {m: (getattr(layer, m).n, getattr(layer, m).k) for m in ("qkv", "o", "down")}
    prompt = list(range(100, 612))
    s = GenSettings(max_new_tokens=16, temperature=0)
    ref = [e for e in dec.generate(prompt, s, threading.Event(), set())]
    variants = {"ship": set(), "o": {sh["o"]}, "qkv": {sh["qkv"]}, "qkv_o": {sh["qkv"], sh["o"]}}
    if sh["down"][1] <= 12288:  # its slice fits shared memory twice an SM
        variants.update({"down": {sh["down"]}, "all3": set(sh.values())})
    res = {}
    for r in range(rounds):
        for name, use in variants.items():
            USE.clear()
            USE.update(use)
            dec.graphs = None
            try:
                dec.graphs = dec._graphed()
            except Exception as e:
                print(json.dumps({"variant": name, "error": str(e)[-400:]}), flush=True)
                continue
            if r == 0:
                got = [e for e in dec.generate(prompt, s, threading.Event(), set())]
                print(json.dumps({"variant": name, "same_tokens": str(got) == str(ref)}), flush=True)
                dec.graphs = None
                dec.graphs = dec._graphed()
            with torch.inference_mode():
                dec.pos.fill_(368)
            for _ in range(20):
                dec.graphs.replay(768)
            torch.cuda.synchronize()
            ts = []
            for _ in range(15):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                for _ in range(20):
                    dec.graphs.replay(768)
                b.record()
                b.synchronize()
                ts.append(a.elapsed_time(b) * 1e3 / 20)
            res.setdefault(name, []).append(round(statistics.median(ts), 1))
            print(json.dumps({"model": path, "variant": name, "step_us": res[name][-1], "round": r}), flush=True)
    print(json.dumps({"summary": res}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="bits, and a launch alone: Yi-6B's and Yi-34B's shapes")
    sub.add_parser("step", help="the graphed step with it on qkv / o / down").add_argument("path")
    a = ap.parse_args(argv)
    if a.command == "check":
        check()
    else:
        step(a.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

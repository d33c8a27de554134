"""The tensor-core GEMV's kernel (gemv_mma): `_gemv_tile`, a program's tiles from its rings' first loads through
its units to its epilogue, as a function of its tile group (persistent launches call it, scripts/
bench_persistent.py), and `_gemv_mma`, the kernel gemv_mma launches: _gemv_tile at its program's tiles."""

from __future__ import annotations

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
except ImportError:
    gluon = None

if gluon is not None:
    from .mma_epilogue import EARLY_AT_END, _early, _epilogue, _gathered, _out_rows
    from .mma_layout import _orig
    from .mma_units import _dim, _sc, _step, _unit_words, _unit_x

    @gluon.jit
    def _gemv_tile(
        pid,
        wait_at,
        CNT,
        X,
        P,
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
        RT: gl.constexpr,
        WARPS: gl.constexpr,
        PDL: gl.constexpr,
        SILU: gl.constexpr,
        BITS: gl.constexpr,
        AHEAD: gl.constexpr,
        XAHEAD: gl.constexpr,
        NP: gl.constexpr,
        RESIDUAL: gl.constexpr,
        HALVES: gl.constexpr,
        NH: gl.constexpr,
        NKV: gl.constexpr,
        PAIR: gl.constexpr,
        UNROLL: gl.constexpr,
        EARLY: gl.constexpr,
        GATHER: gl.constexpr,
        BARRIER: gl.constexpr,
    ):
        """Y[m] = W·x[m] for the MX <= 8 rows of x [MX, K] and the 16·RT rows of this program's tiles (SILU: RT/2
        tiles of gate and the same of up, Y[m] = silu(gate)·up). BITS: P holds int4 codes in pack's layout (4), int8
        codes [N, K] as stored (8) or W itself (16, no SZ). PAIR: chunks of 64 columns a warp takes at a time (a
        unit; 2: codes whose groups span whole pairs, their mma sums scaled once a pair). AHEAD, XAHEAD: units of
        weights and of x each warp loads ahead (config). HALVES: W's rows are packed in halves_order of that head
        dim.
        The decode step's glue, as gemv._gemv_int4 folds it for one row (each row of x alone, so a verify's rows
        stay decode steps bit for bit): NP > 0: x is RMSNorm's input times its weight and NORM_IN [8, NP] the
        partial sums of squares of that input (a RESIDUAL launch's NORM_OUT), the sums scaled by the norm's 1 / rms
        before rounding. RESIDUAL: XR [MX, N] += Y, Y = XR·WN and this program's sums of squares of XR into
        NORM_OUT [8, programs]. NH > 0 (W = [q; k; v] of NH, NKV, NKV heads, HALVES their head dim): q and k roped,
        q into Y as glue.rope_cache folds it, k and v into KCACHE / VCACHE [NKV, S, HALVES] at slots POS[m]."""
        VEC: gl.constexpr = 8 if BITS == 16 else 4  # words a lane loads per tile (int8 / dense: of each of 2 rows)
        L5: gl.constexpr = gl.BlockedLayout([RT, 1, 1, 1, VEC], [1, 1, 8, 4, 1], [1, WARPS, 1, 1, 1], [4, 3, 2, 1, 0])
        LA: gl.constexpr = gl.SliceLayout(4, L5)  # [RT, WARPS, 8, 4]: tile, warp, g, t
        rt = gl.arange(0, RT, layout=_dim(LA, 4, 0))
        if SILU:  # even tiles from gate, odd ones the matching tiles of up
            tile = pid * (RT // 2) + rt // 2 + (rt % 2) * (N // 32)
        else:
            tile = pid * RT + rt
        tile4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(tile, 1), 2), 3)  # [RT, 1, 1, 1]
        w4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, WARPS, layout=_dim(LA, 4, 1)), 0), 2), 3)
        g4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=_dim(LA, 4, 2)), 0), 1), 3)
        t4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, 4, layout=_dim(LA, 4, 3)), 0), 1), 2)
        s5 = gl.arange(0, VEC, layout=_dim(L5, 5, 4))
        s5 = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.expand_dims(s5, 0), 1), 2), 3)  # [1, 1, 1, 1, VEC]
        F16: gl.constexpr = X.dtype.element_ty == gl.float16
        if BITS > 4:  # W [N, K] itself or its int8 codes (CW·KC words a row): lane (g, t) reads columns 16t .. 16t + 15
            CW: gl.constexpr = BITS * 2  # of a chunk
            wbase = (
                gl.expand_dims(_orig(tile4 * 16 + g4, HALVES) * (KC * CW) + (CW // 4) * t4, 4) + s5,
                gl.expand_dims(_orig(tile4 * 16 + g4 + 8, HALVES) * (KC * CW) + (CW // 4) * t4, 4) + s5,
            )  # [RT, 1, 8, 4, VEC] each: rows g and g + 8 of each tile (packed rows: where halves_order stored them)
        else:
            wbase = gl.expand_dims((tile4 * (KC * 32) + 4 * g4 + t4) * 4, 4) + s5  # [RT, 1, 8, 4, 4]
        w5 = gl.expand_dims(w4, 4)  # [1, WARPS, 1, 1, 1]
        row0 = tile4 * 16 + g4  # [RT, 1, 8, 1]: D row g; g + 8 is row0 + 8
        # x side: lane group g holds row g of x, lane t its words 8t .. 8t + 7 of a chunk (the B fragments of the four
        # k-steps, pack's column order); past the MX rows, the last row again (every load valid: one row of x is the
        # one-row GEMV's broadcast load, and a column's sums use its own column of B alone)
        LW: gl.constexpr = gl.SliceLayout(0, LA)  # [WARPS, 8, 4]: the B fragments' layout
        LX: gl.constexpr = gl.BlockedLayout([1, 1, 1, 8], [1, 8, 4, 1], [WARPS, 1, 1, 1], [3, 2, 1, 0])
        xw = gl.arange(0, WARPS, layout=_dim(LX, 4, 0))
        xw = gl.expand_dims(gl.expand_dims(gl.expand_dims(xw, 1), 2), 3)  # [WARPS, 1, 1, 1]
        xg = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=_dim(LX, 4, 1)), 0), 2), 3)
        xt = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, 4, layout=_dim(LX, 4, 2)), 0), 1), 3)
        xi = gl.expand_dims(gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=_dim(LX, 4, 3)), 0), 1), 2)
        xoff = 8 * xt + xi + gl.minimum(xg, MX - 1) * (KC * 32)  # [1, 8, 4, 8] words
        X32 = X.to(gl.pointer_type(gl.int32))
        SZ32 = SZ.to(gl.pointer_type(gl.int32))  # (s, zf) bf16 pairs as one word
        zero = gl.zeros([RT, WARPS, 8, 4], gl.float32, LA)
        acc = (zero, zero, zero, zero)
        # Words and scales are loaded AHEAD iterations ahead, x's B fragments XAHEAD (0: as they are used), each in a
        # ring of tuples whose slot j the unrolled loop's j-th step consumes and refills: ptxas schedules a load whose
        # value the iteration does not use after the iteration's mma chain, so each iteration would otherwise wait on
        # memory; and a program's registers decide how many programs share an SM, so x, read from L2 with a short
        # latency, need not take as many as the weights, whose bytes in flight set the GEMV's speed. The words and
        # scales do not depend on the previous kernel: with programmatic dependent launch they stream in before the
        # wait.
        ws, scs, bss = (), (), ()
        if BITS > 4:
            P = P.to(gl.pointer_type(gl.int32))
        for i in gl.static_range(AHEAD):
            ws = ws + (_unit_words(P, wbase, w5, i * WARPS, KC, WARPS, BITS, PAIR),)
        if BITS < 16:
            for i in gl.static_range(AHEAD):
                scs = scs + (_sc(SZ32, w4, i * WARPS, row0, N, G, KC, PAIR),)
        if PDL:
            gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1)
            gl.inline_asm_elementwise(
                "griddepcontrol.launch_dependents; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1
            )
        if BARRIER:  # a phase of a persistent launch: the arrivals of every program at CNT reach wait_at first
            if wait_at > 0:
                seen = gl.atomic_add(CNT, 0, sem="acquire", scope="gpu")
                while seen < wait_at:
                    seen = gl.atomic_add(CNT, 0, sem="acquire", scope="gpu")
        for i in gl.static_range(XAHEAD):
            bss = bss + (_unit_x(X32, xw, xoff, i * WARPS, KC, LW, PAIR),)
        # the epilogue's reads of what the kernels before wrote (early), in flight during the loop
        LY: gl.constexpr = gl.SliceLayout(1, _gathered(RT, WARPS) if GATHER else LA)
        fold = (NORM_IN, eps, XR, WN, NORM_OUT, POS, COS, SIN, KCACHE, VCACHE, S)
        K: gl.constexpr = KC * 64
        pre = (0, 0, 0, 0)
        if EARLY != 0 and (EARLY & EARLY_AT_END) == 0:
            erow, ec4, eny = _out_rows(N, RT, SILU, LY)
            pre = _early(fold, erow, ec4, MX, eny, WARPS, K, NP, RESIDUAL, HALVES, NH, EARLY)
        # The loop is unrolled UNROLL times (a multiple of AHEAD) so that every ring slot is a fixed register (a
        # rotating ring cost ~25 moves a chunk); the last ITERS % UNROLL units of each warp after it (UNROLL >= ITERS:
        # no loop at all).
        ITERS: gl.constexpr = (KC // PAIR + WARPS - 1) // WARPS
        MAIN: gl.constexpr = 0 if UNROLL >= ITERS else (ITERS // UNROLL) * UNROLL
        TAIL: gl.constexpr = ITERS - MAIN
        at = (P, SZ32, X32, wbase, w5, w4, row0, xw, xoff, N)
        rings = (acc, ws, scs, bss)
        for c0 in range(0, MAIN * WARPS, UNROLL * WARPS):
            for j in gl.static_range(UNROLL):
                rings = _step(
                    rings, at, c0 + j * WARPS, j % AHEAD, LA, G, KC, WARPS, BITS, AHEAD, XAHEAD, True, True, F16, PAIR
                )
        for j in gl.static_range(TAIL):
            rings = _step(
                rings,
                at,
                (MAIN + j) * WARPS,
                j % AHEAD,
                LA,
                G,
                KC,
                WARPS,
                BITS,
                AHEAD,
                XAHEAD,
                j + AHEAD < TAIL,
                j + XAHEAD < TAIL,
                F16,
                PAIR,
            )
        acc = rings[0]
        # the warps' partial sums added: [RT, 8, 4] for D rows g / g + 8, columns (rows of x) 2t / 2t + 1; the odd
        # columns only where x has a second row (a decode step skips half the cross-warp sums; each column's own
        # sum is the same code either way)
        row, c4, NY = _out_rows(N, RT, SILU, LY)
        if EARLY & EARLY_AT_END:  # the reads issued before the warps' sums instead
            pre = _early(fold, row, c4, MX, NY, WARPS, K, NP, RESIDUAL, HALVES, NH, EARLY)
        for h in gl.static_range(2):  # the even columns, then the odd ones where x has them (a verify's rows)
            if h == 0 or MX > 1:  # the odd ones' reads after the loop
                a0, a2, ch = acc[h], acc[h + 2], c4 + h
                _epilogue(
                    Y,
                    a0,
                    a2,
                    row,
                    ch,
                    MX,
                    NY,
                    fold,
                    RT,
                    WARPS,
                    K,
                    SILU,
                    NP,
                    RESIDUAL,
                    HALVES,
                    NH,
                    NKV,
                    pre,
                    EARLY * (1 - h),
                    GATHER,
                )

    @gluon.jit(do_not_specialize=["MX", "S"])
    def _gemv_mma(
        X,
        P,
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
        RT: gl.constexpr,
        WARPS: gl.constexpr,
        PDL: gl.constexpr,
        SILU: gl.constexpr,
        BITS: gl.constexpr,
        AHEAD: gl.constexpr,
        XAHEAD: gl.constexpr,
        NP: gl.constexpr,
        RESIDUAL: gl.constexpr,
        HALVES: gl.constexpr,
        NH: gl.constexpr,
        NKV: gl.constexpr,
        PAIR: gl.constexpr,
        UNROLL: gl.constexpr,
        EARLY: gl.constexpr,
        GATHER: gl.constexpr,
    ):
        """One program of the GEMV: _gemv_tile at this program's tiles (its doc)."""
        _gemv_tile(
            gl.program_id(0),
            0,
            0,
            X,
            P,
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
            KC,
            G,
            RT,
            WARPS,
            PDL,
            SILU,
            BITS,
            AHEAD,
            XAHEAD,
            NP,
            RESIDUAL,
            HALVES,
            NH,
            NKV,
            PAIR,
            UNROLL,
            EARLY,
            GATHER,
            False,
        )

"""The tensor-core GEMV's epilogues (gemv_mma): a program's warps' sums added, scaled by the norm's 1 / rms and
rounded, then stored as they are, as silu(gate)·up, added to the residual stream (with the next norm's input and
sums of squares) or roped into q and the KV caches; and the reads of what the kernels before wrote, issued early."""

from __future__ import annotations

# Which of an epilogue's reads a launch issues before its loop (early: bits of these), so that their latency hides
# behind the loop instead of following it: the norm's partial sums (qkv, gate_up), the residual stream and the next
# norm's weight (o, down), the positions (qkv). AT_END: those reads issued after the loop instead, before the warps'
# partial sums are added (their latency then hides behind that exchange through shared memory).
NORM, RESIDUAL, POS, AT_END = 1, 2, 4, 16

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
except ImportError:
    gluon = None

if gluon is not None:
    from .gemv import _silu_gate_up
    from .mma_layout import _orig
    from .mma_units import _dim

    EARLY_NORM, EARLY_RESIDUAL, EARLY_POS, EARLY_AT_END = (gl.constexpr(v) for v in (NORM, RESIDUAL, POS, AT_END))

    @gluon.constexpr_function
    def _norm_layout(np2, warps):
        """[4 rows of x, np2 partial sums]: lane t takes row 2t (+ 1), the other lanes and the warps the partials."""
        return gl.BlockedLayout([1, max(1, np2 // (8 * warps))], [4, 8], [1, warps], [1, 0])

    @gluon.constexpr_function
    def _pow2(n):
        return 1 << (n - 1).bit_length()

    @gluon.jit
    def _rstd(NORM_IN, c4, MX, eps, NP: gl.constexpr, K: gl.constexpr, WARPS: gl.constexpr):
        """RMSNorm's 1 / sqrt(mean(x^2) + eps) for the rows c4 [4] of x, from the NP partial sums of squares a
        row the producing GEMV wrote (NORM_IN [MAX_X, NP]), summed in the same order for any row count:
        [1, 1, 4], c4's layout."""
        NPP: gl.constexpr = _pow2(NP)
        LN: gl.constexpr = _norm_layout(NPP, WARPS)
        c = gl.expand_dims(gl.convert_layout(c4, gl.SliceLayout(1, LN)), 1)
        j = gl.expand_dims(gl.arange(0, NPP, layout=gl.SliceLayout(0, LN)), 0)
        v = gl.load(NORM_IN + c * NP + j, mask=(c < MX) & (j < NP), other=0.0)
        r = 1.0 / gl.sqrt(gl.sum(v, axis=1) / K + eps)
        return gl.expand_dims(gl.expand_dims(gl.convert_layout(r, c4.type.layout), 0), 1)

    @gluon.jit
    def _store(Y, y, row, col, MX, NY):
        """y [RT, 8, 4] of rows `row` and x rows `col` (< MX) into Y [MX, NY]."""
        gl.store(Y + col * NY + row, y, mask=col < MX)

    @gluon.jit
    def _silu_store(Y, y, row, col, MX, NY, RT: gl.constexpr):
        """y of [gate; up] tiles (even / odd): silu(gate)·up at the gate rows, rounded as gemv._gemv_int4."""
        g, u = gl.split(gl.permute(gl.reshape(y.to(gl.float32), [RT // 2, 2, 8, 4]), (0, 2, 3, 1)))
        out, _ = gl.split(gl.permute(gl.reshape(row, [RT // 2, 2, 8, 4]), (0, 2, 3, 1)))
        cc, _ = gl.split(gl.permute(gl.reshape(col, [RT // 2, 2, 8, 4]), (0, 2, 3, 1)))
        gl.store(Y + cc * NY + out, _silu_gate_up(g, u, Y.dtype.element_ty), mask=cc < MX)

    @gluon.jit
    def _residual_in(XR, WN, row, col, MX, NY):
        """What _residual reads, in fp32: the residual stream XR at (col, row) (0 past MX) and the norm's weight at
        row."""
        xr = gl.load(XR + col * NY + row, mask=col < MX, other=0.0).to(gl.float32)
        return xr, gl.load(WN + row).to(gl.float32)

    @gluon.jit
    def _residual(Y, XR, WN, y, row, col, MX, NY, xin, EARLY: gl.constexpr):
        """The residual stream XR [MX, NY] += y (rounded as a bf16 add) and Y = XR·WN (the next RMSNorm's input
        times its weight); returns XR's new values in fp32 (0 past MX). EARLY: xin is _residual_in's (loaded before
        the loop), else it is read here."""
        ok = col < MX
        at = col * NY + row
        if EARLY:
            xr0, wn = xin
        else:
            xr0, wn = _residual_in(XR, WN, row, col, MX, NY)
        xr = (xr0 + y.to(gl.float32)).to(Y.dtype.element_ty)
        gl.store(XR + at, xr, mask=ok)
        xf = xr.to(gl.float32)
        gl.store(Y + at, (xf * wn).to(Y.dtype.element_ty), mask=ok)
        return gl.where(ok, xf, 0.0)

    @gluon.jit
    def _rope_store(
        Y, a, b, row, col, MX, rope, HD: gl.constexpr, NH: gl.constexpr, NKV: gl.constexpr, pin, EARLY: gl.constexpr
    ):
        """Rows d (a) and d + HD/2 (b) of the heads of [q; k; v] packed in halves order, rounded as the GEMV's
        output: q and k rotated as glue._rope_cache rounds it (x·cos + rotate_half(x)·sin, each product rounded);
        q into Y folded as rope_cache folds it (row head·MX + x row of [heads·MX, HD]), k and v into the caches
        [NKV, S, HD] at slot POS[x row]. EARLY: p holds the positions, read early (int32).
        The rotary tables are read here: read early, LLVM fused other products into fma.rn.bf16 than glue.rope_cache's
        (the products are rounded as bf16 ops, and NVPTX fuses a bf16 mul with the add), giving other bits."""
        POS, COS, SIN, KC, VC, S = rope
        dt = Y.dtype.element_ty
        head = row // HD
        d = ((row % HD) // 16) * 8 + row % 8  # row 16·tile + g: dimension 8·(tile of the head) + g
        ok = col < MX
        if EARLY:
            p = pin.to(gl.int64)
        else:
            p = gl.load(POS + col, mask=ok, other=0)
        cs = p * HD + d
        c1 = gl.load(COS + cs, mask=ok, other=0.0).to(gl.float32)
        s1 = gl.load(SIN + cs, mask=ok, other=0.0).to(gl.float32)
        c2 = gl.load(COS + cs + HD // 2, mask=ok, other=0.0).to(gl.float32)
        s2 = gl.load(SIN + cs + HD // 2, mask=ok, other=0.0).to(gl.float32)
        af = a.to(gl.float32)
        bf = b.to(gl.float32)
        rot = head < NH + NKV
        a2 = gl.where(rot, ((af * c1).to(dt).to(gl.float32) + (-bf * s1).to(dt).to(gl.float32)).to(dt), a)
        b2 = gl.where(rot, ((bf * c2).to(dt).to(gl.float32) + (af * s2).to(dt).to(gl.float32)).to(dt), b)
        isq = ok & (head < NH)
        qat = (head * MX + col) * HD + d
        gl.store(Y + qat, a2, mask=isq)
        gl.store(Y + qat + HD // 2, b2, mask=isq)
        isk = ok & (head >= NH) & rot
        kat = ((head - NH) * S + p) * HD + d
        gl.store(KC + kat, a2, mask=isk)
        gl.store(KC + kat + HD // 2, b2, mask=isk)
        isv = ok & (head >= NH + NKV)
        vat = ((head - NH - NKV) * S + p) * HD + d
        gl.store(VC + vat, a2, mask=isv)
        gl.store(VC + vat + HD // 2, b2, mask=isv)

    @gluon.jit
    def _epilogue(
        Y,
        a0,
        a2,
        row,
        c4,
        MX,
        NY,
        fold,
        RT: gl.constexpr,
        WARPS: gl.constexpr,
        K: gl.constexpr,
        SILU: gl.constexpr,
        NP: gl.constexpr,
        RESIDUAL: gl.constexpr,
        HALVES: gl.constexpr,
        NH: gl.constexpr,
        NKV: gl.constexpr,
        pre,
        EARLY: gl.constexpr,
        GATHER: gl.constexpr,
    ):
        """One column of each lane's D pair (rows g and g + 8; x rows c4 [4]): the warps' sums (NP: times the
        norm's 1 / rms), rounded, stored (SILU: as silu(gate)·up; RESIDUAL: added to the residual stream, the next
        norm's input times its weight and this program's sums of squares; NH: roped into q and the caches).
        EARLY: which of the epilogue's reads `pre` holds (_early's, loaded before the loop). GATHER: the warps' sums
        added in each lane after one exchange of a0 and a2 into _gathered's layout (else gl.sum across the warps)."""
        NORM_IN, eps, XR, WN, NORM_OUT, POS, COS, SIN, KCACHE, VCACHE, S = fold
        dt = Y.dtype.element_ty
        col = gl.expand_dims(gl.expand_dims(c4, 0), 1) + row * 0  # [RT, 8, 4]
        if GATHER:  # each lane's sums of all warps in its own registers: one exchange through shared memory
            LG: gl.constexpr = _gathered(RT, WARPS)
            both = gl.convert_layout(gl.join(a0, a2), _gathered2(RT, WARPS))
            y0, y2 = gl.split(gl.sum(both, axis=1))
            y0 = gl.convert_layout(y0, gl.SliceLayout(1, LG))
            y2 = gl.convert_layout(y2, gl.SliceLayout(1, LG))
        else:
            y0 = gl.sum(a0, axis=1)
            y2 = gl.sum(a2, axis=1)
        if NP > 0:
            if EARLY & EARLY_NORM:
                rstd = pre[0]
            else:
                rstd = _rstd(NORM_IN, c4, MX, eps, NP, K, WARPS)
            y0 = y0 * rstd
            y2 = y2 * rstd
        y0 = y0.to(dt)
        y2 = y2.to(dt)
        if SILU:
            _silu_store(Y, y0, row, col, MX, NY, RT)
            _silu_store(Y, y2, row + 8, col, MX, NY, RT)
        elif RESIDUAL:
            x0 = _residual(Y, XR, WN, y0, row, col, MX, NY, pre[1], EARLY & EARLY_RESIDUAL)
            x2 = _residual(Y, XR, WN, y2, row + 8, col, MX, NY, pre[2], EARLY & EARLY_RESIDUAL)
            sq = gl.sum(gl.sum(x0 * x0 + x2 * x2, axis=1), axis=0)  # [4]: this program's share of each row's sum
            gl.store(NORM_OUT + c4 * gl.num_programs(0) + gl.program_id(0), sq, mask=c4 < MX)
        elif NH > 0:
            rope = (POS, COS, SIN, KCACHE, VCACHE, S)
            _rope_store(Y, y0, y2, row, col, MX, rope, HALVES, NH, NKV, pre[3], EARLY & EARLY_POS)
        else:
            _store(Y, y0, _orig(row, HALVES), col, MX, NY)
            _store(Y, y2, _orig(row + 8, HALVES), col, MX, NY)

    @gluon.jit
    def _early(
        fold,
        row,
        c4,
        MX,
        NY,
        WARPS: gl.constexpr,
        K: gl.constexpr,
        NP: gl.constexpr,
        RESIDUAL: gl.constexpr,
        HALVES: gl.constexpr,
        NH: gl.constexpr,
        EARLY: gl.constexpr,
    ):
        """The first epilogue's reads that do not depend on the loop, issued before it or before the warps' sums
        (EARLY's bits) so that their latency hides behind them: (the norm's 1 / rms, _residual_in of rows g and g + 8,
        the positions), 0 where not."""
        NORM_IN, eps, XR, WN, NORM_OUT, POS, COS, SIN, KCACHE, VCACHE, S = fold
        col = gl.expand_dims(gl.expand_dims(c4, 0), 1) + row * 0
        rstd = 0
        x0 = 0
        x2 = 0
        pin = 0
        if NP > 0 and (EARLY & EARLY_NORM):
            rstd = _rstd(NORM_IN, c4, MX, eps, NP, K, WARPS)
        if RESIDUAL and (EARLY & EARLY_RESIDUAL):
            x0 = _residual_in(XR, WN, row, col, MX, NY)
            x2 = _residual_in(XR, WN, row + 8, col, MX, NY)
        if NH > 0 and (EARLY & EARLY_POS):
            pin = gl.load(POS + col, mask=col < MX, other=0).to(gl.int32)
        return rstd, x0, x2, pin

    @gluon.constexpr_function
    def _gathered(rt, warps):
        """[RT, WARPS, 8, 4] with a lane's WARPS partial sums in its own registers (every warp holding them all)."""
        return gl.BlockedLayout([rt, warps, 1, 1], [1, 1, 8, 4], [warps, 1, 1, 1], [3, 2, 1, 0])

    @gluon.constexpr_function
    def _gathered2(rt, warps):
        """_gathered's with a last dimension of 2 (a0 and a2 joined) in each lane."""
        return gl.BlockedLayout([rt, warps, 1, 1, 2], [1, 1, 8, 4, 1], [warps, 1, 1, 1, 1], [4, 3, 2, 1, 0])

    @gluon.jit
    def _out_rows(N, RT: gl.constexpr, SILU: gl.constexpr, LY: gl.constexpr):
        """The output rows of each lane's D fragment (row g; g + 8 is row + 8) [RT, 8, 4], the x rows of its even
        column c4 [4], and the output's row count."""
        pid = gl.program_id(0)
        ry = gl.expand_dims(gl.expand_dims(gl.arange(0, RT, layout=_dim(LY, 3, 0)), 1), 2)
        gy = gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=_dim(LY, 3, 1)), 0), 2)
        c4 = 2 * gl.arange(0, 4, layout=_dim(LY, 3, 2))
        zero3 = gl.expand_dims(gl.expand_dims(c4, 0), 1) * 0 + ry * 0 + gy * 0
        if SILU:  # even tiles gate, odd ones up: out rows are the gate rows
            return (pid * (RT // 2) + ry // 2) * 16 + gy + zero3, c4, N // 2
        return (pid * RT + ry) * 16 + gy + zero3, c4, N

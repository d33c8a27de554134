"""The tensor-core GEMV's unit of work (gemv_mma): a warp's chunks of 64 columns of its program's row tiles, their
weights' words, scales and x's B fragments loaded into rings ahead of their use, multiplied on the tensor cores
and scaled per group into the accumulators (`_step`)."""

from __future__ import annotations

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
except ImportError:
    gluon = None

if gluon is not None:
    from .mma_ptx import DENSE_BF16, DENSE_F16, INT8, INT8_ACC, MMA, MMA_ACC, TO_F16, UNPACK_F16, XSUM, XSUM_F16

    @gluon.constexpr_function
    def _dim(layout, rank, d):
        """The 1-D layout of dimension d of a rank-dimensional layout."""
        for k in range(rank - 1, -1, -1):
            if k != d:
                layout = gl.SliceLayout(k, layout)
        return layout

    @gluon.jit
    def _unpack(b, F16: gl.constexpr):
        """bf16x2 words (F16: fp16x2) -> (low, high) as fp32."""
        if F16:
            return gl.inline_asm_elementwise(
                UNPACK_F16, "=f,=f,r", [b], dtype=(gl.float32, gl.float32), is_pure=True, pack=1
            )
        return (b << 16).to(gl.float32, bitcast=True), (b & -65536).to(gl.float32, bitcast=True)

    @gluon.jit
    def _at(c0, w, PAIR: gl.constexpr, H: gl.constexpr):
        """Chunk H of the units c0 + warp (w: the warp index tensor): units of PAIR chunks."""
        if PAIR == 1:
            return c0 + w
        return (c0 + w) * PAIR + H

    @gluon.jit
    def _words(P, wbase, w5, c0, KC: gl.constexpr, WARPS: gl.constexpr, PAIR: gl.constexpr, H: gl.constexpr):
        """The words of chunk H of units c0 + warp for the program's tiles: [RT, WARPS, 8, 4, 4], one 16-byte load a
        tile."""
        c = _at(c0, w5, PAIR, H)
        if (KC // PAIR) % WARPS == 0:
            return gl.load(P + wbase + c * 128, mask=c < KC)
        return gl.load(P + wbase + c * 128, mask=c < KC, other=0)

    @gluon.jit
    def _chunk(words, bs, LA: gl.constexpr, d):
        """MMA over a chunk's 4 words of each tile: D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1], each
        [RT, WARPS, 8, 4]; added to d (the previous chunk's D of the same group) unless d is ()."""
        w02, w13 = gl.split(gl.reshape(words, [words.shape[0], words.shape[1], 8, 4, 2, 2]))  # s = 2a + b
        w0, w2 = gl.split(w02)
        w1, w3 = gl.split(w13)
        a = (gl.convert_layout(w0, LA), gl.convert_layout(w1, LA), gl.convert_layout(w2, LA), gl.convert_layout(w3, LA))
        if len(d) == 0:
            return _mma4(MMA, "=f,=f,=f,=f" + ",r" * 12, a + bs)
        return _mma4(MMA_ACC, "=f,=f,=f,=f" + ",r" * 12 + ",f" * 4, a + bs + d)

    @gluon.jit
    def _mma4(ASM: gl.constexpr, CONSTRAINTS: gl.constexpr, args):
        """An mma block's four fp32 outputs (D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1]) from its operands."""
        return gl.inline_asm_elementwise(
            ASM, CONSTRAINTS, args, dtype=(gl.float32, gl.float32, gl.float32, gl.float32), is_pure=True, pack=1
        )

    @gluon.jit
    def _eight(v):
        """[RT, WARPS, 8, 4, 8] -> its 8 words along the last dimension, in order, each [RT, WARPS, 8, 4]."""
        e, o = gl.split(gl.reshape(v, [v.shape[0], v.shape[1], 8, 4, 2, 2, 2]))  # word 4·i2 + 2·i1 + i0: i0 = 0/1
        e0, e1 = gl.split(e)  # i1
        o0, o1 = gl.split(o)
        w0, w4 = gl.split(e0)  # i2
        w2, w6 = gl.split(e1)
        w1, w5 = gl.split(o0)
        w3, w7 = gl.split(o1)
        return w0, w1, w2, w3, w4, w5, w6, w7

    @gluon.jit
    def _dense_words(W32, dlo, dhi, w5, c0, KC: gl.constexpr, CW: gl.constexpr, PAIR: gl.constexpr, H: gl.constexpr):
        """Chunk H of units c0 + warp of a dense W (or int8 codes) for the program's tiles: lane (g, t)'s words of
        columns 16t .. 16t + 15 of the chunk (CW words a row's chunk: 32 of bf16, 8 words each; 16 of bytes, 4 each)
        of rows g and g + 8, two [RT, WARPS, 8, 4, CW / 4] (two or one 16-byte loads each)."""
        c = _at(c0, w5, PAIR, H)
        ok = c < KC
        return gl.load(W32 + dlo + c * CW, mask=ok, other=0), gl.load(W32 + dhi + c * CW, mask=ok, other=0)

    @gluon.jit
    def _dense_chunk(acc, words, bs, LA: gl.constexpr, F16: gl.constexpr):
        """The accumulators after one chunk of a dense W: k-step s takes columns 16t + 4s .. 16t + 4s + 3 of rows
        g / g + 8 (words 2s, 2s + 1 of each row), the columns of x's B fragments (x's words 8t + 2s, 8t + 2s + 1)."""
        lo = _eight(words[0])
        hi = _eight(words[1])
        a = ()
        for s in gl.static_range(4):
            a = a + (gl.convert_layout(lo[2 * s], LA), gl.convert_layout(hi[2 * s], LA))
            a = a + (gl.convert_layout(lo[2 * s + 1], LA), gl.convert_layout(hi[2 * s + 1], LA))
        return _mma4(DENSE_F16 if F16 else DENSE_BF16, "=f,=f,=f,=f,f,f,f,f" + ",r" * 24, acc + a + bs)

    @gluon.jit
    def _int8_chunk(words, bs, LA: gl.constexpr, d):
        """MMA over a chunk of int8 codes (words: rows g and g + 8, [RT, WARPS, 8, 4, 4] each; bs: x's B fragments in
        fp16): D of (1024 + q)·x as _chunk's, each [RT, WARPS, 8, 4], added to d unless d is ()."""
        lo = _four(words[0])
        hi = _four(words[1])
        a = ()
        for i in gl.static_range(8):
            a = a + (gl.convert_layout((lo + hi)[i], LA),)
        if len(d) == 0:
            return _mma4(INT8, "=f,=f,=f,=f" + ",r" * 16, a + bs)
        return _mma4(INT8_ACC, "=f,=f,=f,=f" + ",r" * 16 + ",f" * 4, a + bs + d)

    @gluon.jit
    def _four(v):
        """[RT, WARPS, 8, 4, 4] -> its 4 words along the last dimension, in order."""
        e, o = gl.split(gl.reshape(v, [v.shape[0], v.shape[1], 8, 4, 2, 2]))  # word 2·i1 + i0: i0 = 0 / 1
        w0, w2 = gl.split(e)
        w1, w3 = gl.split(o)
        return w0, w1, w2, w3

    @gluon.jit
    def _f16(bs):
        """x's 8 B-fragment words as fp16 pairs."""
        out = ()
        for i in gl.static_range(8):
            out = out + (gl.inline_asm_elementwise(TO_F16, "=r,r", [bs[i]], dtype=gl.int32, is_pure=True, pack=1),)
        return out

    @gluon.jit
    def _xfrag(X32, xw, xoff, c0, KC: gl.constexpr, LW: gl.constexpr, PAIR: gl.constexpr, H: gl.constexpr):
        """b0, b1 of k-steps 0..3 of chunk H of units c0 + warp: 8 tensors [1, WARPS, 8, 4] of bf16 pairs. Lane
        (g, t) reads words 8t .. 8t + 7 of its chunk of row min(g, MX - 1) of x (xoff [1, 8, 4, 8]; two 16-byte
        loads): b0 of k-step s is word 8t + 2s, b1 the next (the columns past MX are computed and never stored)."""
        c = _at(c0, xw, PAIR, H)
        v = gl.load(X32 + c * 32 + xoff, mask=c < KC, other=0)  # [WARPS, 8, 4, 8]
        return _frag_words(v, LW)

    @gluon.jit
    def _frag_words(v, LW: gl.constexpr):
        """A lane's 8 words of x [WARPS, 8, 4, 8] -> the B fragments of a chunk's four k-steps (b0 of k-step s is
        word 2s, b1 the next): 8 tensors [1, WARPS, 8, 4] in LW expanded."""
        lo, hi = gl.split(gl.reshape(v, [v.shape[0], 8, 4, 2, 2, 2]))  # word 4·i2 + 2·i1 + i0: i0 = 0 / 1
        lo0, lo1 = gl.split(lo)  # i1 = 0 / 1
        hi0, hi1 = gl.split(hi)
        w0, w4 = gl.split(lo0)  # i2 = 0 / 1
        w1, w5 = gl.split(hi0)
        w2, w6 = gl.split(lo1)
        w3, w7 = gl.split(hi1)
        return (
            gl.expand_dims(gl.convert_layout(w0, LW), 0),
            gl.expand_dims(gl.convert_layout(w1, LW), 0),
            gl.expand_dims(gl.convert_layout(w2, LW), 0),
            gl.expand_dims(gl.convert_layout(w3, LW), 0),
            gl.expand_dims(gl.convert_layout(w4, LW), 0),
            gl.expand_dims(gl.convert_layout(w5, LW), 0),
            gl.expand_dims(gl.convert_layout(w6, LW), 0),
            gl.expand_dims(gl.convert_layout(w7, LW), 0),
        )

    @gluon.jit
    def _sc(SZ32, w4, c0, row0, N, G: gl.constexpr, KC: gl.constexpr, PAIR: gl.constexpr):
        """The (s, zf) words of rows g and g + 8 for units c0 + warp (a unit lies in one group): 2 x [RT, WARPS, 8,
        1]."""
        c4 = _at(c0, w4, PAIR, 0)
        at = SZ32 + ((c4 * 64) // G) * N + row0
        return gl.load(at, mask=c4 < KC, other=0), gl.load(at + 8, mask=c4 < KC, other=0)

    @gluon.jit
    def _scale(acc, d, xs0, xs1, sc, OFF: gl.constexpr, F16: gl.constexpr):
        """The accumulators (rows g / g + 8 x columns 2t / 2t + 1) after one chunk of codes: its mma sums d
        scaled per row by the chunk's group (sc: its (s, zf) words, bf16 pairs or F16 fp16 ones): s·D + (zf -
        OFF·s)·X (OFF: 136 for int4 codes, whose D sums (128 + q)·x with W = (q - 8)·s + zf; 1024 for int8,
        (1024 + q)·x with W = q·s + zf)."""
        s0, z0 = _unpack(sc[0], F16)
        s2, z2 = _unpack(sc[1], F16)
        c0 = z0 - OFF * s0
        c2 = z2 - OFF * s2
        return (
            (acc[0] + d[0] * s0) + c0 * xs0,  # two FFMA each
            (acc[1] + d[1] * s0) + c0 * xs1,
            (acc[2] + d[2] * s2) + c2 * xs0,
            (acc[3] + d[3] * s2) + c2 * xs1,
        )

    @gluon.jit
    def _put(t, j: gl.constexpr, new):
        """t with element j replaced: a ring slot refilled (j static, so no registers move)."""
        out = ()
        for i in gl.static_range(len(t)):
            if i == j:
                out = out + (new,)
            else:
                out = out + (t[i],)
        return out

    @gluon.jit
    def _unit_words(P, wbase, w5, c0, KC: gl.constexpr, WARPS: gl.constexpr, BITS: gl.constexpr, PAIR: gl.constexpr):
        """The weights' words of units c0 + warp: a tuple of PAIR chunks' (_words or _dense_words)."""
        out = ()
        for h in gl.static_range(PAIR):
            if BITS == 4:
                out = out + (_words(P, wbase, w5, c0, KC, WARPS, PAIR, h),)
            else:
                out = out + (_dense_words(P, wbase[0], wbase[1], w5, c0, KC, BITS * 2, PAIR, h),)
        return out

    @gluon.jit
    def _unit_x(X32, xw, xoff, c0, KC: gl.constexpr, LW: gl.constexpr, PAIR: gl.constexpr):
        """x's B fragments of units c0 + warp: a tuple of PAIR chunks' (_xfrag)."""
        out = ()
        for h in gl.static_range(PAIR):
            out = out + (_xfrag(X32, xw, xoff, c0, KC, LW, PAIR, h),)
        return out

    @gluon.jit
    def _codes(words, bs, LA: gl.constexpr, BITS: gl.constexpr, F16: gl.constexpr, d):
        """One chunk of codes: (its mma sums added to d unless d is (), x's chunk sums per column of x)."""
        if BITS == 8 and not F16:  # int8 codes meet x in fp16
            bs = _f16(bs)
        xs0, xs1 = gl.inline_asm_elementwise(
            XSUM_F16 if BITS == 8 else XSUM,
            "=f,=f" + ",r" * 8,
            bs,
            dtype=(gl.float32, gl.float32),
            is_pure=True,
            pack=1,
        )
        if BITS == 8:
            out = _int8_chunk(words, bs, LA, d)
        else:
            out = _chunk(words, bs, LA, d)
        return out, xs0, xs1

    @gluon.jit
    def _step(
        rings,
        at,
        c,
        j: gl.constexpr,
        LA: gl.constexpr,
        G: gl.constexpr,
        KC: gl.constexpr,
        WARPS: gl.constexpr,
        BITS: gl.constexpr,
        AHEAD: gl.constexpr,
        XAHEAD: gl.constexpr,
        LOAD: gl.constexpr,
        LOADX: gl.constexpr,
        F16: gl.constexpr,
        PAIR: gl.constexpr,
    ):
        """One unit of PAIR chunks per warp (unit c + warp): its words, scales and x from ring slot j (x's slot j %
        XAHEAD), the slots refilled with unit c + AHEAD·WARPS when LOAD (x's with c + XAHEAD·WARPS when LOADX).
        BITS 8 / 16: int8 codes' / a dense W's words (wbase: the offsets of rows g and g + 8); a dense W has no
        scales. Codes: a unit's chunks lie in one group, so their mma sums accumulate on the tensor cores and are
        scaled once."""
        acc, ws, scs, bss = rings  # the accumulators and the rings of loads in flight
        P, SZ32, X32, wbase, w5, w4, row0, xw, xoff, N = at  # where they come from
        LW: gl.constexpr = gl.SliceLayout(0, LA)
        if LOAD:
            c2 = c + AHEAD * WARPS
            wnext = _unit_words(P, wbase, w5, c2, KC, WARPS, BITS, PAIR)
            if BITS < 16:
                snext = _sc(SZ32, w4, c2, row0, N, G, KC, PAIR)
        if XAHEAD == 0:
            bs = _unit_x(X32, xw, xoff, c, KC, LW, PAIR)
        else:
            bs = bss[j % XAHEAD]
            if LOADX:
                bss = _put(bss, j % XAHEAD, _unit_x(X32, xw, xoff, c + XAHEAD * WARPS, KC, LW, PAIR))
        if BITS == 16:
            for h in gl.static_range(PAIR):
                acc = _dense_chunk(acc, ws[j][h], bs[h], LA, F16)
        else:  # codes: the unit's mma sums scaled by its group, with x's sums over the unit
            d, xs0, xs1 = _codes(ws[j][0], bs[0], LA, BITS, F16, ())
            if PAIR == 2:
                d, ys0, ys1 = _codes(ws[j][1], bs[1], LA, BITS, F16, d)
                xs0 = xs0 + ys0
                xs1 = xs1 + ys1
            acc = _scale(acc, d, xs0, xs1, scs[j], 1024.0 if BITS == 8 else 136.0, F16)
        if LOAD:
            ws = _put(ws, j, wnext)
            if BITS < 16:
                scs = _put(scs, j, snext)
        return acc, ws, scs, bss

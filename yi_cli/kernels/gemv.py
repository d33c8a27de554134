"""One token through int4 codes at memory speed: a GEMV over the tinygemm CUDA layout, written in Gluon (Triton
with explicit layouts), for the decode step.

tinygemm's own kernel reads 1.2-1.8 TB/s at batch 1 on an H100 (scripts/bench_gemv.py); a GEMV this size has
~2.5 instructions of issue per weight to spare at 3 TB/s, so the inner loop is counted:
- layout: each thread holds R rows x 4 consecutive words (one 16-byte load per row) and reuses each activation
  it loads across those R rows;
- nibble -> float without a conversion instruction: a word is rotated so that a nibble sits in bits 12-15 or
  16-19, and (rotated & 0xF << 12|16) | 0x4B000000 is the float 2^23 + q·2^12 (or 2^16): one LOP3 per weight,
  then one FFMA with x (x/16 for the 2^16 slots). The 2^23 and the zero point 8 come off once per word, as a
  start value computed from the word's activations alone (the same for every row);
- scales: per (row, tile) when a group spans a tile (AWQ / GPTQ g128), else per word.
tinygemm keeps codes for a tile of 8 rows x TK columns in 8·WPR words (WPR = TK/8), row r's in words
[r·WPR, (r+1)·WPR); nibbles m and m + 4 of word w hold the column pair c, c + 1 with
c = 32·(w % (WPR/4)) + 2·(w // (WPR/4)) + 8·m (weights._gemv_layout checks this on the running build).
"""

from __future__ import annotations

import torch

from .. import env
from . import glue

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
except ImportError:  # no Triton, or one without Gluon: the decode step keeps tinygemm
    gluon = None

ROWS = 8  # output rows per program: a multiple of tinygemm's row block of 8
# Two planes (GPTQ int8) hold twice the words per row in flight: 8 rows take 176 registers for Yi-6B's down
# projection, 4 rows 128 (scripts/sass.py: ptxas for sm_90)
ROWS_TWO_PLANES = 4
WARPS = 4  # best on the H100 for all four Yi-6B matmuls (scripts/bench_gemv.py --sweep)
# With YI_CHAT_GEMV_ROWS=N (at most 8), 2 to N rows of x (a speculative verify's k + 1 tokens, a short prefill) go
# through one GEMV that reads each weight word once for all of them (gemv_int4_rows), each row bit for bit the
# one-row GEMV's; by default (0) they go to tinygemm, which is faster there: on the H200 a Yi-6B verify of 2 / 4 / 8
# rows costs 1.27 / 1.56 / 2.32 decode steps through tinygemm and 1.70 / 2.94 / 8.10 through this kernel, whose
# decode arithmetic is paid once per row of x (BENCHMARKS.md, issue 17).
MAX_X = env.number("YI_CHAT_GEMV_ROWS", 0, int, 0, 8)  # another value: the default
# W rows per program by rows of x (padded to a power of 2): each thread holds 4 words x R rows and 32 activations
# per row of x. These are the largest R with no spills for sm_90 (ptxas: 168-215 / 216-254 / 213-251 registers).
# Cost (SASS of the Yi-6B shapes): ~27-34 instructions per word per row of x against the one-row kernel's ~35 per
# word: each row of x costs about the ALU work of a one-row GEMV (the words are read once; the activations are
# unpacked, scaled and summed per row, amortized over only R rows), so where the one-row GEMV is issue-bound this
# kernel's time grows with the rows. Its gain is exactness: every row is the one-row GEMV's bits.
X_ROWS_R = {2: 4, 4: 4, 8: 2}

# Per word: rotate so each nibble lands in bits 12-15 (j=3) or 16-19 (j=4), OR in the exponent of 2^23, FMA with
# its activation. $1 = word, $2..$9 = activations of nibbles 0..7 (the j=4 ones pre-divided by 16), $10 = start.
# Three rotations serve all 8 nibbles: rotl 8 brings nibbles 1, 2 to j=3, 4; rotl 16 nibbles 7, 0; rotl 24
# nibbles 5, 6; nibbles 3, 4 sit there already.
_SLOTS = [
    ("r16", 0x000F0000),
    ("r8", 0x0000F000),
    ("r8", 0x000F0000),
    ("$1", 0x0000F000),
    ("$1", 0x000F0000),
    ("r24", 0x0000F000),
    ("r24", 0x000F0000),
    ("r16", 0x0000F000),
]  # (rotated word, mask) of nibbles 0..7
WORD_DOT = (
    "{\n.reg .b32 r8, r16, r24, t;\n"
    + "".join(f"shf.l.wrap.b32 r{k}, $1, $1, {k};\n" for k in (8, 16, 24))
    + "".join(
        f"lop3.b32 t, {src}, {mask:#010x}, 0x4B000000, 0xEA;\nfma.rn.f32 $0, t, ${2 + n}, "
        f"{'$10' if n == 0 else '$0'};\n"
        for n, (src, mask) in enumerate(_SLOTS)
    )
    + "}"
)
# Over a word, (2^23 + q·2^12)·x (j=3) and (2^23 + q·2^16)·x/16 (j=4) sum to 2^12·sum (q - 8)·x + C3·X3 + C4·X4,
# X3 / X4 the sums of the word's j=3 / j=4 activations: the start value is -(C3·X3 + C4·X4).
C3 = 8421376.0  # 2^23 + 8·2^12
C4 = 557056.0  # (2^23 + 8·2^16) / 16


def available(x: torch.Tensor) -> bool:
    return gluon is not None and x.is_cuda


def rows_for(planes: int) -> int:
    """gemv_int4's W rows per program for a weight of `planes` 4-bit planes."""
    return ROWS if planes == 1 else ROWS_TWO_PLANES


def fold_args(y: torch.Tensor, norm, residual, rope, out: torch.Tensor) -> tuple:
    """The arguments both int4 GEMV kernels (this module's and gemv_mma's) take for their epilogue folds, in their
    order: NORM_IN, XR, WN, NORM_OUT, eps, POS, COS, SIN, the K and V caches, S (y stands in for what is absent;
    norm, residual, rope and out as gemv_int4 takes and makes them)."""
    cos, sin, pos, kc, vc = rope[:5] if rope is not None else (y,) * 5
    part, eps = norm if norm is not None else (y, 0.0)
    xr, wn = residual if residual is not None else (y, y)
    return part, xr, wn, out, eps, pos, cos, sin, kc, vc, kc.shape[2] if rope is not None else 0


def rope_fits(head_dim: int, planes: int) -> bool:
    """gemv_int4's rope can serve this head dim: a program's rows are whole (d, d + head_dim/2) pairs."""
    return head_dim % 2 == 0 and (head_dim // 2) % (rows_for(planes) // 2) == 0


if gluon is not None:
    C3, C4, WORD_DOT = gl.constexpr(C3), gl.constexpr(C4), gl.constexpr(WORD_DOT)

    @gluon.jit
    def _pair(X32, col, mask):
        """Activations at columns col, col + 1 (col even): one 32-bit load, split into two floats."""
        xp = gl.load(X32 + col // 2, mask=mask, other=0)
        return (xp << 16).to(gl.float32, bitcast=True), (xp & -65536).to(gl.float32, bitcast=True)

    @gluon.jit
    def _codes(P, r4, t, w3, KT: gl.constexpr, TK: gl.constexpr):
        """Words of tiles t (those < KT) for the R rows at word offsets r4: [R, TB, TPW_W, 4]."""
        t3 = gl.expand_dims(gl.expand_dims(t, 1), 2)
        return gl.load(P + r4 + gl.expand_dims(t3 * TK + w3, 0), mask=gl.expand_dims(t3 < KT, 0), other=0)

    @gluon.jit
    def _bc(v, like, AXIS: gl.constexpr):
        """Activations broadcast over the W rows (axis AXIS of the words' shape)."""
        return gl.broadcast(gl.expand_dims(v, AXIS), like)[0]

    @gluon.jit
    def _dot(words, l0, h0, l1, h1, l2, h2, l3, h3, start, AXIS: gl.constexpr):
        """2^12 · sum over each word of (q - 8)·x: WORD_DOT on the words ([R, TB, TPW_W, 4], or [M, R, ...] for M
        rows of x) against their activations, which lack the W-row axis AXIS."""
        return gl.inline_asm_elementwise(
            WORD_DOT,
            "=f,r,f,f,f,f,f,f,f,f,f",
            [
                words,
                _bc(l0 * 0.0625, words, AXIS),
                _bc(l1, words, AXIS),
                _bc(l2 * 0.0625, words, AXIS),
                _bc(l3, words, AXIS),
                _bc(h0 * 0.0625, words, AXIS),
                _bc(h1, words, AXIS),
                _bc(h2 * 0.0625, words, AXIS),
                _bc(h3, words, AXIS),
                _bc(start, words, AXIS),
            ],
            dtype=gl.float32,
            is_pure=True,
            pack=1,
        )

    @gluon.jit
    def _scaled(u, xs, SZ, t, t3, pair, rs, N, KT: gl.constexpr, G: gl.constexpr, TK: gl.constexpr, LRTL: gl.constexpr):
        """The word sums u of tiles t scaled by their groups' (s, zf) from SZ: the [R, TB, TPW_W] accumulator
        update. xs: the words' activation sums (for zf)."""
        if G >= TK:  # one group per tile: scale each thread's sum over its 4 words
            ts = gl.convert_layout(t, gl.SliceLayout(0, gl.SliceLayout(2, LRTL)))
            sp = SZ + (gl.expand_dims(gl.expand_dims((ts * TK) // G, 0), 2) * N + rs) * 2
            sm = gl.expand_dims(gl.expand_dims(ts < KT, 0), 2)
            s = gl.load(sp, mask=sm, other=0.0).to(gl.float32)
            zf = gl.load(sp + 1, mask=sm, other=0.0).to(gl.float32)
            xt = gl.convert_layout(gl.sum(xs, axis=2), gl.SliceLayout(0, LRTL))
            return gl.sum(u, axis=3) * (s * (1.0 / 4096)) + zf * gl.expand_dims(xt, 0)
        else:  # several groups per tile: scale each word
            g = gl.expand_dims((t3 * TK + pair) // G, 0)  # [1, TB, TPW_W, 4]
            sp = SZ + (g * N + gl.expand_dims(rs, 3)) * 2
            sm = gl.expand_dims(t3 < KT, 0)
            s = gl.load(sp, mask=sm, other=0.0).to(gl.float32)
            zf = gl.load(sp + 1, mask=sm, other=0.0).to(gl.float32)
            return gl.sum(u * (s * (1.0 / 4096)) + zf * gl.expand_dims(xs, 0), axis=3)

    @gluon.jit
    def _rope_store(
        y, r, Y, POS, COS, SIN, KC, VC, S, R: gl.constexpr, HD: gl.constexpr, NH: gl.constexpr, NKV: gl.constexpr
    ):
        """Rows (d, d + HD/2) of heads of [q; k; v] (y rounded as the GEMV's output): q and k rotated as
        glue._rope_cache rounds it (x·cos + rotate_half(x)·sin, each product rounded), then q to Y and k, v to
        the caches at slot POS[0]."""
        a, b = gl.split(gl.reshape(y.to(gl.float32), [R // 2, 2]))  # rows d, d + HD/2
        at, _ = gl.split(gl.reshape(r, [R // 2, 2]))  # head·HD + d
        head, d = at // HD, at % HD
        p = gl.load(POS + head * 0)
        cs = p * HD + d
        c1 = gl.load(COS + cs).to(gl.float32)
        s1 = gl.load(SIN + cs).to(gl.float32)
        c2 = gl.load(COS + cs + HD // 2).to(gl.float32)
        s2 = gl.load(SIN + cs + HD // 2).to(gl.float32)
        dt = Y.dtype.element_ty
        rot = head < NH + NKV
        a2 = gl.where(rot, ((a * c1).to(dt).to(gl.float32) + (-b * s1).to(dt).to(gl.float32)).to(dt), a.to(dt))
        b2 = gl.where(rot, ((b * c2).to(dt).to(gl.float32) + (a * s2).to(dt).to(gl.float32)).to(dt), b.to(dt))
        isq = head < NH
        gl.store(Y + at, a2, mask=isq)
        gl.store(Y + at + HD // 2, b2, mask=isq)
        isk = (head >= NH) & rot
        kat = ((head - NH) * S + p) * HD + d
        gl.store(KC + kat, a2, mask=isk)
        gl.store(KC + kat + HD // 2, b2, mask=isk)
        isv = head >= NH + NKV
        vat = ((head - NH - NKV) * S + p) * HD + d
        gl.store(VC + vat, a2, mask=isv)
        gl.store(VC + vat + HD // 2, b2, mask=isv)

    @gluon.jit
    def _silu_gate_up(g, u, DT: gl.constexpr):
        """silu(gate)·up as transformers rounds it: from gate and up already rounded to DT (passed as fp32), silu in
        fp32 rounded, the product rounded; returns DT."""
        s = (g / (1.0 + gl.exp(-g))).to(DT).to(gl.float32)
        return (s * u).to(DT)

    @gluon.jit
    def _rstd(PART, NP: gl.constexpr, K: gl.constexpr, eps, WARPS: gl.constexpr):
        """RMSNorm's 1 / sqrt(mean(x^2) + eps) from the NP partial sums of squares the producing GEMV wrote."""
        NPP: gl.constexpr = 1 << (NP - 1).bit_length()
        j = gl.arange(0, NPP, layout=gl.BlockedLayout([1], [32], [WARPS], [0]))
        ss = gl.sum(gl.load(PART + j, mask=j < NP, other=0.0), axis=0)
        return 1.0 / gl.sqrt(ss / K + eps)

    @gluon.jit
    def _gemv_int4(
        X,
        P,
        SZ,
        Y,
        N,
        P2,
        SZ2,
        NORM_IN,
        XR,
        WN,
        NORM_OUT,
        eps,
        POS,
        COS,
        SIN,
        KC,
        VC,
        S,
        KT: gl.constexpr,
        G: gl.constexpr,
        WPR: gl.constexpr,
        R: gl.constexpr,
        WARPS: gl.constexpr,
        PDL: gl.constexpr,
        SILU: gl.constexpr,
        PLANES: gl.constexpr,
        NP: gl.constexpr,
        RESIDUAL: gl.constexpr,
        HD: gl.constexpr,
        NH: gl.constexpr,
        NKV: gl.constexpr,
    ):
        """y[r] = sum_k ((q[r, k] - 8)·s + zf)·x[k] for rows [pid·R, pid·R + R).
        SILU (W = [gate; up], N = 2·I): rows pid·R/2 + i of gate and of up, y[i] = silu(gate_i)·up_i.
        PLANES = 2: W = plane (P, SZ) + plane (P2, SZ2) (GPTQ int8's high and low nibbles), summed in fp32.
        NP > 0: x is RMSNorm's input times its weight and NORM_IN the NP partial sums of squares of the input
        (a RESIDUAL GEMV's NORM_OUT): y is scaled by the norm's 1 / rms before it is rounded.
        RESIDUAL: the residual stream XR [N] += y (in place, rounded as a bf16 add) and Y = XR·WN, the next
        RMSNorm's input times its weight, with the program's sum of squares of XR in NORM_OUT[pid].
        HD > 0 (W = [q; k; v] of NH, NKV, NKV heads of HD): rotary embedding and the cache write of one token in
        the epilogue, as glue._rope_cache: a program's rows are pairs (d, d + HD/2) of one head; q heads are
        roped into Y, k heads roped and v heads as they are into KC / VC [NKV, S, HD] at slot POS[0]."""
        TPW_W: gl.constexpr = WPR // 4  # threads across one row's words of a tile
        TPW_T: gl.constexpr = 32 // TPW_W  # tiles across a warp
        TB: gl.constexpr = TPW_T * WARPS  # tiles per iteration
        TK: gl.constexpr = 8 * WPR  # columns per tile (and words per tile)
        L4: gl.constexpr = gl.BlockedLayout([R, 1, 1, 4], [1, TPW_T, TPW_W, 1], [1, WARPS, 1, 1], [3, 2, 1, 0])
        LTW: gl.constexpr = gl.SliceLayout(0, L4)  # [TB, TPW_W, 4]: a tile's words, shared by the R rows
        LT2: gl.constexpr = gl.SliceLayout(2, LTW)  # [TB, TPW_W]
        LT: gl.constexpr = gl.SliceLayout(1, LT2)  # [TB]
        LL: gl.constexpr = gl.SliceLayout(0, LT2)  # [TPW_W]
        LI: gl.constexpr = gl.SliceLayout(0, gl.SliceLayout(0, LTW))  # [4]
        LRTL: gl.constexpr = gl.SliceLayout(3, L4)  # [R, TB, TPW_W]
        LR: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, LRTL))  # [R]

        i = gl.arange(0, R, layout=LR)
        if SILU:  # even i: gate row, odd i: the up row of the same output
            o = gl.program_id(0) * (R // 2) + i // 2
            r = o + (i % 2) * (N // 2)
        elif HD > 0:  # even i: row d of a head, odd i: row d + HD/2 (rotate_half's partner)
            pp = gl.program_id(0) * (R // 2) + i // 2
            r = (pp // (HD // 2)) * HD + pp % (HD // 2) + (i % 2) * (HD // 2)
        else:
            r = gl.program_id(0) * R + i
        tt = gl.arange(0, TB, layout=LT)
        w3 = gl.expand_dims(gl.expand_dims(gl.arange(0, TPW_W, layout=LL), 0), 2) * 4 + gl.expand_dims(
            gl.expand_dims(gl.arange(0, 4, layout=LI), 0), 0
        )  # [1, TPW_W, 4] word index
        pair = 32 * (w3 % TPW_W) + 2 * (w3 // TPW_W)  # first column of nibbles 0 / 4 in the tile
        rbase = ((r // 8) * (KT * 8) + r % 8) * WPR  # word offset of row r in tile 0
        r4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(rbase, 1), 2), 3)  # [R, 1, 1, 1]
        rs = gl.expand_dims(gl.expand_dims(r, 1), 2)  # [R, 1, 1]
        X32 = X.to(gl.pointer_type(gl.int32))
        acc = gl.zeros([R, TB, TPW_W], gl.float32, LRTL)
        # The first tiles' codes do not depend on the previous kernel: with programmatic dependent launch they
        # stream in while it finishes; the activations are read after the wait.
        words = _codes(P, r4, tt, w3, KT, TK)
        if PLANES == 2:
            words2 = _codes(P2, r4, tt, w3, KT, TK)
        if PDL:
            gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1)
            gl.inline_asm_elementwise(
                "griddepcontrol.launch_dependents; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1
            )
        if NP > 0:
            rstd = _rstd(NORM_IN, NP, KT * TK, eps, WARPS)
        for t0 in range(0, KT, TB):
            t = t0 + tt
            t3 = gl.expand_dims(gl.expand_dims(t, 1), 2)  # [TB, 1, 1]
            m3 = t3 < KT
            xc = t3 * TK + pair  # [TB, TPW_W, 4]
            l0, h0 = _pair(X32, xc, m3)  # columns c, c + 1 (nibbles 0 and 4)
            l1, h1 = _pair(X32, xc + 8, m3)
            l2, h2 = _pair(X32, xc + 16, m3)
            l3, h3 = _pair(X32, xc + 24, m3)
            x3 = (l1 + l3) + (h1 + h3)  # nibbles 1, 3, 5, 7 sit at 2^12
            x4 = (l0 + l2) + (h0 + h2)  # nibbles 0, 2, 4, 6 at 2^16
            u = _dot(words, l0, h0, l1, h1, l2, h2, l3, h3, -(x3 * C3 + x4 * C4), 0)  # 2^12 · sum of (q - 8)·x
            xs = x3 + x4  # [TB, TPW_W, 4]
            acc += _scaled(u, xs, SZ, t, t3, pair, rs, N, KT, G, TK, LRTL)
            words = _codes(P, r4, t + TB, w3, KT, TK)  # the next tiles (all masked after the last)
            if PLANES == 2:
                u2 = _dot(words2, l0, h0, l1, h1, l2, h2, l3, h3, -(x3 * C3 + x4 * C4), 0)
                acc += _scaled(u2, xs, SZ2, t, t3, pair, rs, N, KT, G, TK, LRTL)
                words2 = _codes(P2, r4, t + TB, w3, KT, TK)
        y = gl.sum(gl.sum(acc, axis=2), axis=1)
        if NP > 0:
            y = y * rstd
        y = y.to(Y.dtype.element_ty)
        if SILU:  # as transformers: gate and up rounded, silu in fp32 rounded, the product rounded
            g, u = gl.split(gl.reshape(y.to(gl.float32), [R // 2, 2]))
            oo, _ = gl.split(gl.reshape(o, [R // 2, 2]))
            gl.store(Y + oo, _silu_gate_up(g, u, Y.dtype.element_ty))
        elif HD > 0:
            _rope_store(y, r, Y, POS, COS, SIN, KC, VC, S, R, HD, NH, NKV)
        elif RESIDUAL:  # as transformers' residual add (bf16 + bf16, rounded), then the next norm's first half
            xr = (gl.load(XR + r).to(gl.float32) + y.to(gl.float32)).to(Y.dtype.element_ty)
            gl.store(XR + r, xr)
            xf = xr.to(gl.float32)
            gl.store(Y + r, (xf * gl.load(WN + r).to(gl.float32)).to(Y.dtype.element_ty))
            gl.store(NORM_OUT + gl.program_id(0) + i * 0, gl.sum(xf * xf, axis=0) + xf * 0.0, mask=i == 0)
        else:
            gl.store(Y + r, y)

    @gluon.jit
    def _gemv_int4_rows(
        X,
        P,
        SZ,
        Y,
        N,
        MX,
        KT: gl.constexpr,
        G: gl.constexpr,
        WPR: gl.constexpr,
        R: gl.constexpr,
        M: gl.constexpr,
        WARPS: gl.constexpr,
        PDL: gl.constexpr,
        SILU: gl.constexpr,
    ):
        """_gemv_int4 for the MX <= M rows of x [MX, K] (M a power of 2): each program reads its R weight rows'
        words once and runs WORD_DOT on them against each row of x. Every row's arithmetic is _gemv_int4's (the
        same expressions over the same layout, a leading x-row dimension added), so row m of y is bit for bit
        _gemv_int4 on x[m] alone."""
        TPW_W: gl.constexpr = WPR // 4
        TPW_T: gl.constexpr = 32 // TPW_W
        TB: gl.constexpr = TPW_T * WARPS
        TK: gl.constexpr = 8 * WPR
        K: gl.constexpr = KT * TK
        L5: gl.constexpr = gl.BlockedLayout(
            [M, R, 1, 1, 4], [1, 1, TPW_T, TPW_W, 1], [1, 1, WARPS, 1, 1], [4, 3, 2, 1, 0]
        )  # [x row, W row, tile, thread's word group, word]
        L4: gl.constexpr = gl.SliceLayout(0, L5)  # [R, TB, TPW_W, 4]: the words, shared by the M rows of x
        LTW: gl.constexpr = gl.SliceLayout(0, L4)
        LT2: gl.constexpr = gl.SliceLayout(2, LTW)
        LT: gl.constexpr = gl.SliceLayout(1, LT2)
        LL: gl.constexpr = gl.SliceLayout(0, LT2)
        LI: gl.constexpr = gl.SliceLayout(0, gl.SliceLayout(0, LTW))
        LRTL: gl.constexpr = gl.SliceLayout(3, L4)  # [R, TB, TPW_W]
        LR: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, LRTL))
        LX4: gl.constexpr = gl.SliceLayout(1, L5)  # [M, TB, TPW_W, 4]: activations, shared by the R rows of W
        LXTW: gl.constexpr = gl.SliceLayout(0, LX4)
        LXT2: gl.constexpr = gl.SliceLayout(2, LXTW)
        LXM: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, LX4)))  # [M]
        LA: gl.constexpr = gl.SliceLayout(4, L5)  # [M, R, TB, TPW_W]: the accumulators
        LY: gl.constexpr = gl.SliceLayout(2, gl.SliceLayout(3, LA))  # [M, R]

        i = gl.arange(0, R, layout=LR)
        if SILU:
            o = gl.program_id(0) * (R // 2) + i // 2
            r = o + (i % 2) * (N // 2)
        else:
            r = gl.program_id(0) * R + i
        tt = gl.arange(0, TB, layout=LT)
        w3 = gl.expand_dims(gl.expand_dims(gl.arange(0, TPW_W, layout=LL), 0), 2) * 4 + gl.expand_dims(
            gl.expand_dims(gl.arange(0, 4, layout=LI), 0), 0
        )
        rbase = ((r // 8) * (KT * 8) + r % 8) * WPR
        r4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(rbase, 1), 2), 3)
        rs = gl.expand_dims(gl.expand_dims(r, 1), 2)  # [R, 1, 1]
        # the activation side's own index tensors (the same values, laid out for [M, TB, TPW_W, 4])
        xtt = gl.arange(0, TB, layout=gl.SliceLayout(1, LXT2))
        xw3 = gl.expand_dims(gl.expand_dims(gl.arange(0, TPW_W, layout=gl.SliceLayout(0, LXT2)), 0), 2) * 4 + (
            gl.expand_dims(gl.expand_dims(gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(0, LXTW))), 0), 0)
        )
        xpair = gl.expand_dims(32 * (xw3 % TPW_W) + 2 * (xw3 // TPW_W), 0)  # [1, 1, TPW_W, 4]
        mx = gl.arange(0, M, layout=LXM)
        xrow = gl.expand_dims(gl.expand_dims(gl.expand_dims(mx * (K // 2), 1), 2), 3)  # [M, 1, 1, 1] in words
        xok = gl.expand_dims(gl.expand_dims(gl.expand_dims(mx < MX, 1), 2), 3)
        # the accumulators' own row and tile indices, for the scales: [1, R, 1, 1] and [TB]
        LAR: gl.constexpr = gl.SliceLayout(2, gl.SliceLayout(3, LA))  # [M, R]
        ia = gl.arange(0, R, layout=gl.SliceLayout(0, LAR))
        if SILU:
            ra = gl.program_id(0) * (R // 2) + ia // 2 + (ia % 2) * (N // 2)
        else:
            ra = gl.program_id(0) * R + ia
        ra = gl.expand_dims(gl.expand_dims(gl.expand_dims(ra, 0), 2), 3)
        att = gl.arange(0, TB, layout=gl.SliceLayout(0, gl.SliceLayout(0, gl.SliceLayout(3, LA))))
        X32 = X.to(gl.pointer_type(gl.int32))
        acc = gl.zeros([M, R, TB, TPW_W], gl.float32, LA)
        words = _codes(P, r4, tt, w3, KT, TK)
        if PDL:
            gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1)
            gl.inline_asm_elementwise(
                "griddepcontrol.launch_dependents; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1
            )
        for t0 in range(0, KT, TB):
            t = t0 + tt
            xt4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(t0 + xtt, 1), 2), 0)  # [1, TB, 1, 1]
            m4 = (xt4 < KT) & xok
            xc = xrow * 2 + xt4 * TK + xpair  # [M, TB, TPW_W, 4] columns of the flat x
            l0, h0 = _pair(X32, xc, m4)
            l1, h1 = _pair(X32, xc + 8, m4)
            l2, h2 = _pair(X32, xc + 16, m4)
            l3, h3 = _pair(X32, xc + 24, m4)
            x3 = (l1 + l3) + (h1 + h3)
            x4 = (l0 + l2) + (h0 + h2)
            wb, _ = gl.broadcast(gl.expand_dims(words, 0), gl.expand_dims(l0, 1))  # [M, R, TB, TPW_W, 4]
            u = _dot(wb, l0, h0, l1, h1, l2, h2, l3, h3, -(x3 * C3 + x4 * C4), 1)  # [M, R, TB, TPW_W, 4]
            xs = x3 + x4  # [M, TB, TPW_W, 4]
            if G >= TK:
                ta = gl.expand_dims(gl.expand_dims(gl.expand_dims(t0 + att, 0), 0), 3)  # [1, 1, TB, 1]
                sp = SZ + (((ta * TK) // G) * N + ra) * 2
                sm = ta < KT
                s = gl.load(sp, mask=sm, other=0.0).to(gl.float32)  # [1, R, TB, 1]
                zf = gl.load(sp + 1, mask=sm, other=0.0).to(gl.float32)
                xt = gl.expand_dims(gl.convert_layout(gl.sum(xs, axis=3), gl.SliceLayout(1, LA)), 1)
                acc += gl.sum(u, axis=4) * (s * (1.0 / 4096)) + zf * xt  # xt: [M, 1, TB, TPW_W]
            else:
                t3 = gl.expand_dims(gl.expand_dims(t, 1), 2)
                g = gl.expand_dims((t3 * TK + 32 * (w3 % TPW_W) + 2 * (w3 // TPW_W)) // G, 0)  # [1, TB, TPW_W, 4]
                sp = SZ + (g * N + gl.expand_dims(rs, 3)) * 2
                sm = gl.expand_dims(t3 < KT, 0)
                s = gl.expand_dims(gl.load(sp, mask=sm, other=0.0).to(gl.float32), 0)  # [1, R, TB, TPW_W, 4]
                zf = gl.expand_dims(gl.load(sp + 1, mask=sm, other=0.0).to(gl.float32), 0)
                acc += gl.sum(u * (s * (1.0 / 4096)) + zf * gl.expand_dims(xs, 1), axis=4)
            words = _codes(P, r4, t + TB, w3, KT, TK)
        y = gl.sum(gl.sum(acc, axis=3), axis=2).to(Y.dtype.element_ty)  # [M, R]
        ym = gl.expand_dims(gl.arange(0, M, layout=gl.SliceLayout(1, LY)), 1)  # [M, 1]
        yi = gl.expand_dims(gl.arange(0, R, layout=gl.SliceLayout(0, LY)), 0)  # [1, R]
        if SILU:
            out = ym * (N // 2) + gl.program_id(0) * (R // 2) + yi // 2  # [M, R]: pairs (gate, up) share one
            g, u = gl.split(gl.reshape(y.to(gl.float32), [M, R // 2, 2]))
            oo, _ = gl.split(gl.reshape(out, [M, R // 2, 2]))
            gl.store(Y + oo, _silu_gate_up(g, u, Y.dtype.element_ty), mask=oo < MX * (N // 2))
        else:
            gl.store(Y + ym * N + gl.program_id(0) * R + yi, y, mask=(ym < MX) & (yi < R))


def gemv_int4(
    x: torch.Tensor,
    packed: torch.Tensor,
    sz: torch.Tensor,
    n: int,
    k: int,
    group: int,
    wpr: int,
    rows: int | None = None,
    warps: int = WARPS,
    pdl: bool | None = None,
    silu: bool = False,
    plane2: tuple[torch.Tensor, torch.Tensor] | None = None,
    norm: tuple[torch.Tensor, float] | None = None,
    residual: tuple[torch.Tensor, torch.Tensor] | None = None,
    rope: tuple | None = None,
):
    """x [1, K] bf16 -> [1, N]; packed / sz as for torch's _weight_int4pack_mm (wpr = 2·inner k tiles).
    pdl: launch as a programmatic dependent launch (default: glue.pdl).
    silu: W is [gate; up] and the result silu(gate)·up, [1, N/2] (N/2 a multiple of rows/2).
    plane2: (packed, sz) of a second plane, W the sum of both (GPTQ int8).
    norm: (partial sums of squares, eps): x is an RMSNorm's input times the norm's weight, and the result is
    scaled by 1 / rms of that input (the partials: a residual GEMV's second result).
    residual: (xr [1, N] the residual stream, w [N] the next RMSNorm's weight): xr += y in place, and the result
    is (xr·w [1, N], the N / rows partial sums of squares of xr) for the next GEMV's `norm`.
    rope: (cos, sin, pos, k cache, v cache, heads, kv heads, head dim) with W = [q; k; v]: as
    glue.rope_cache for one token, the result being q roped, [1, heads·head dim].
    rows: W rows per program (default ROWS, ROWS_TWO_PLANES with plane2)."""
    rows = rows or rows_for(1 if plane2 is None else 2)
    width = rope[5] * rope[7] if rope is not None else n // 2 if silu else n  # q's heads · head dim
    y = torch.empty(1, width, dtype=x.dtype, device=x.device)
    nh, nkv, hd = rope[5:] if rope is not None else (0, 0, 0)
    pdl = glue.pdl(x) if pdl is None else pdl
    out = torch.empty(n // rows, dtype=torch.float32, device=x.device) if residual is not None else y
    p2, sz2 = plane2 if plane2 is not None else (packed, sz)
    _gemv_int4[(n // rows,)](
        x,
        packed,
        sz,
        y,
        n,
        p2,
        sz2,
        *fold_args(y, norm, residual, rope, out),
        KT=k // (8 * wpr),
        G=group,
        WPR=wpr,
        R=rows,
        WARPS=warps,
        PDL=pdl,
        SILU=silu,
        PLANES=1 if plane2 is None else 2,
        NP=0 if norm is None else norm[0].numel(),
        RESIDUAL=residual is not None,
        HD=hd,
        NH=nh,
        NKV=nkv,
        num_warps=warps,
        launch_pdl=pdl,
    )
    return (y, out) if residual is not None else y


def gemv_int4_rows(
    x: torch.Tensor,
    packed: torch.Tensor,
    sz: torch.Tensor,
    n: int,
    k: int,
    group: int,
    wpr: int,
    rows: int | None = None,
    warps: int = WARPS,
    pdl: bool | None = None,
    silu: bool = False,
) -> torch.Tensor:
    """gemv_int4 for x [T, K] bf16, 2 <= T <= MAX_X (contiguous): [T, N] (silu: [T, N/2]), each weight word read
    once for all T rows; row t is bit for bit gemv_int4(x[t:t+1]) (the same per-row arithmetic and reduction
    order; only the W rows per program differ). rows: W rows per program (default X_ROWS_R)."""
    t = x.shape[0]
    m = 1 << (t - 1).bit_length()
    rows = rows or X_ROWS_R[m]
    y = torch.empty(t, n // 2 if silu else n, dtype=x.dtype, device=x.device)
    pdl = glue.pdl(x) if pdl is None else pdl
    _gemv_int4_rows[(n // rows,)](
        x,
        packed,
        sz,
        y,
        n,
        t,
        KT=k // (8 * wpr),
        G=group,
        WPR=wpr,
        R=rows,
        M=m,
        WARPS=warps,
        PDL=pdl,
        SILU=silu,
        num_warps=warps,
        launch_pdl=pdl,
    )
    return y

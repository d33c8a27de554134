"""The PTX of the tensor-core GEMV's inner steps (gemv_mma), as Gluon constexprs for inline_asm_elementwise: a
chunk's mma over int4 codes, int8 codes or dense weights, the chunk sums of x, and the conversions they need."""

from __future__ import annotations

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
except ImportError:
    gluon = None

if gluon is not None:
    # A chunk of one row tile: its 4 words (k-steps) -> nibble pairs (j, j + 4) as bf16x2 (128 + q_j, 128 + q_j+4)
    # by (w >> 4j) & 0x000F000F | 0x43004300, one mma per word accumulating in fp32 from C = 0.
    # $0..$3: D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1]; $4..$7 the words; $8..$15 the B fragments (b0, b1)
    # of each k-step.
    def _mma_line(ty, s, b, c0="z, z, z, z", a="a0, a1, a2, a3"):
        """k-step s's mma: D ($0..$3) += A (a) · B ($b + 2s, $b + 1 + 2s), from C = c0 at the first k-step."""
        c = c0 if s == 0 else "$0, $1, $2, $3"
        return (
            f"mma.sync.aligned.m16n8k16.row.col.f32.{ty}.{ty}.f32 {{$0, $1, $2, $3}}, {{{a}}}, "
            f"{{${b + 2 * s}, ${b + 1 + 2 * s}}}, {{{c}}};\n"
        )

    def _unpack_asm(w: str) -> str:
        """Word w's nibble pairs (j, j + 4) into a0..a3 as bf16x2 (128 + q_j, 128 + q_j+4); t: scratch."""
        out = f"lop3.b32 a0, {w}, 0x000F000F, 0x43004300, 0xEA;\n"
        for j in (1, 2, 3):
            out += f"shr.b32 t, {w}, {4 * j};\nlop3.b32 a{j}, t, 0x000F000F, 0x43004300, 0xEA;\n"
        return out

    def _mma_asm(c0="z, z, z, z"):
        """c0: the first k-step's C (MMA_ACC: the previous chunk's D, $16..$19)."""
        out = "{\n.reg .b32 a0, a1, a2, a3, t;\n.reg .f32 z;\nmov.f32 z, 0f00000000;\n"
        for s in range(4):
            out += _unpack_asm(f"${4 + s}") + _mma_line("bf16", s, 8, c0)
        return out + "}"

    MMA = gl.constexpr(_mma_asm())
    MMA_ACC = gl.constexpr(_mma_asm("$16, $17, $18, $19"))

    # The chunk's sum of each row of x: A = ones, so D[m][n] = sum_k x_n[k] (exact products, fp32 sums): 4 mmas.
    # $0, $1: the sums of columns 2t, 2t + 1; $2..$9 as MMA's $8..$15.
    def _xsum_asm(ty, one):
        return (
            f"{{\n.reg .b32 one;\n.reg .f32 e2, e3, z;\nmov.b32 one, {one};\nmov.f32 z, 0f00000000;\n"
            + "".join(
                f"mma.sync.aligned.m16n8k16.row.col.f32.{ty}.{ty}.f32 {{$0, $1, e2, e3}}, {{one, one, one, one}}, "
                f"{{${2 + 2 * s}, ${3 + 2 * s}}}, {{{'z, z, z, z' if s == 0 else '$0, $1, e2, e3'}}};\n"
                for s in range(4)
            )
            + "}"
        )

    XSUM = gl.constexpr(_xsum_asm("bf16", "0x3F803F80"))

    # A dense weight's chunk (16 rows x 64 columns of bf16 or fp16 W, no codes): the accumulators ($0..$3, from C =
    # $4..$7) through the four k-steps, k-step s's A fragment $8 + 4s .. $11 + 4s, its B fragment $24 + 2s, $25 + 2s.
    def _dense_asm(ty):
        a = [", ".join(f"${8 + 4 * s + i}" for i in range(4)) for s in range(4)]
        return "{\n" + "".join(_mma_line(ty, s, 24, "$4, $5, $6, $7", a[s]) for s in range(4)) + "}"

    DENSE_BF16 = gl.constexpr(_dense_asm("bf16"))
    DENSE_F16 = gl.constexpr(_dense_asm("f16"))

    # int8 codes (GPTQ 8-bit, stored [N, K] bytes): k-step s's word of row g ($4 + s) and of row g + 8 ($8 + s) hold
    # columns 16t + 4s .. 16t + 4s + 3, two prmt each give the fp16 pairs 1024 + q (a0 / a2 and a1 / a3), and one mma
    # with x's B fragments in fp16 ($12 + 2s, $13 + 2s) from C = 0: $0..$3 as MMA's.
    def _int8_asm(c0="z, z, z, z"):
        """c0: the first k-step's C (INT8_ACC: the previous chunk's D, $20..$23)."""
        out = "{\n.reg .b32 a0, a1, a2, a3, m;\n.reg .f32 z;\nmov.f32 z, 0f00000000;\nmov.b32 m, 0x64646464;\n"
        for s in range(4):
            out += f"prmt.b32 a0, ${4 + s}, m, 0x4140;\nprmt.b32 a2, ${4 + s}, m, 0x4342;\n"
            out += f"prmt.b32 a1, ${8 + s}, m, 0x4140;\nprmt.b32 a3, ${8 + s}, m, 0x4342;\n"
            out += _mma_line("f16", s, 12, c0)
        return out + "}"

    INT8 = gl.constexpr(_int8_asm())
    INT8_ACC = gl.constexpr(_int8_asm("$20, $21, $22, $23"))
    # x's bf16 pair -> an fp16 pair (round to nearest; past fp16's range, its largest finite value rather than inf,
    # which would make the row's s·D + (c - 1024·s)·X NaN): the B fragments of int8 codes
    TO_F16 = gl.constexpr(
        "{\n.reg .f32 lo, hi;\nshl.b32 lo, $1, 16;\nand.b32 hi, $1, 0xFFFF0000;\n"
        "cvt.rn.satfinite.f16x2.f32 $0, hi, lo;\n}"
    )
    XSUM_F16 = gl.constexpr(_xsum_asm("f16", "0x3C003C00"))  # XSUM of x in fp16
    # an fp16 pair (int8 codes' scales in an fp16 model) -> two fp32
    UNPACK_F16 = gl.constexpr("{\n.reg .b16 l, h;\nmov.b32 {l, h}, $2;\ncvt.f32.f16 $0, l;\ncvt.f32.f16 $1, h;\n}")

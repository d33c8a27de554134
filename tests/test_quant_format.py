"""The reference dequantizer and the kernels against weights packed here, by plain loops, from known integers.

The packers below are written from the format descriptions (the docstring of yi_cli/checkpoint/formats.py),
independently of its code, so a wrong nibble order, shift direction or zero convention in yi_cli makes these tests fail.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from yi_cli.checkpoint import formats as Q
from yi_cli.runtime.qlinear import DequantLinear, Int4Linear, make_linear

AWQ_NIBBLE_COLUMN = [0, 2, 4, 6, 1, 3, 5, 7]  # nibble k of word c holds output column 8c + this


def as_int32(words: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(words.astype(np.uint32).view(np.int32).copy())


def awq_pack(m: np.ndarray) -> torch.Tensor:
    """[rows, out] codes 0..15 -> int32 [rows, out/8], AutoAWQ GEMM interleave."""
    rows, cols = m.shape
    words = np.zeros((rows, cols // 8), dtype=np.uint64)
    for r in range(rows):
        for c in range(cols // 8):
            for k in range(8):
                words[r, c] |= np.uint64(int(m[r, 8 * c + AWQ_NIBBLE_COLUMN[k]]) << (4 * k))
    return as_int32(words)


def gptq_pack_in(q: np.ndarray, bits: int) -> torch.Tensor:
    """[in, out] codes -> int32 [in*bits/32, out], LSB first along IN."""
    per = 32 // bits
    words = np.zeros((q.shape[0] // per, q.shape[1]), dtype=np.uint64)
    for r in range(words.shape[0]):
        for j in range(per):
            words[r] |= q[r * per + j].astype(np.uint64) << np.uint64(bits * j)
    return as_int32(words)


def gptq_pack_out(z: np.ndarray, bits: int) -> torch.Tensor:
    """[G, out] values -> int32 [G, out*bits/32], LSB first along OUT."""
    per = 32 // bits
    words = np.zeros((z.shape[0], z.shape[1] // per), dtype=np.uint64)
    for c in range(words.shape[1]):
        for j in range(per):
            words[:, c] |= z[:, c * per + j].astype(np.uint64) << np.uint64(bits * j)
    return as_int32(words)


def expected_weight(q, z, s, g_idx) -> np.ndarray:
    """W[o, i] = (q[i, o] - z[g_idx[i], o]) * s[g_idx[i], o], in float64 (exact), as [out, in]."""
    return ((q - z[g_idx]) * s.astype(np.float64)[g_idx]).T


def random_case(rng, n_in, n_out, bits, group, sym=False, desc_act=False):
    maxq = 2**bits - 1
    q = rng.integers(0, maxq + 1, (n_in, n_out))
    q[0, :], q[1, :] = 0, maxq  # the extremes, which expose sign and overflow mistakes
    n_groups = n_in // group
    z = np.full((n_groups, n_out), 2 ** (bits - 1)) if sym else rng.integers(1, maxq + 2, (n_groups, n_out))
    s = (rng.random((n_groups, n_out)) * 0.02 + 1e-3).astype(np.float16)
    g_idx = np.arange(n_in) // group
    if desc_act:
        g_idx = g_idx[rng.permutation(n_in)]
    return q, z, s, g_idx


@pytest.mark.parametrize("group", [32, 64])
def test_awq_dequant_bit_exact(group):
    rng = np.random.default_rng(group)
    q, _, s, g_idx = random_case(rng, 128, 64, 4, group)
    z = rng.integers(0, 16, s.shape)  # AWQ stores the zero as is, 0..15
    w = Q.from_awq(awq_pack(q), awq_pack(z), torch.from_numpy(s), group)
    want = expected_weight(q, z, s, g_idx).astype(np.float32)
    assert np.array_equal(Q.dequantize(w).numpy(), want)
    packed = Q.to_awq(w)
    assert torch.equal(packed["qweight"], awq_pack(q)) and torch.equal(packed["qzeros"], awq_pack(z))


def test_awq_nibble_order_is_interleaved():
    q = np.tile(np.arange(8), (8, 1))  # column c holds the value c
    word = int(awq_pack(q)[0, 0]) & 0xFFFFFFFF
    assert [(word >> (4 * k)) & 15 for k in range(8)] == AWQ_NIBBLE_COLUMN
    w = Q.from_awq(awq_pack(q), awq_pack(np.zeros((1, 8), int)), torch.ones(1, 8, dtype=torch.float16), 8)
    assert Q.dequantize(w)[:, 0].tolist() == list(range(8))


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("desc_act", [False, True])
def test_gptq_dequant_bit_exact(bits, sym, desc_act):
    rng = np.random.default_rng(bits * 10 + sym * 2 + desc_act)
    q, z, s, g_idx = random_case(rng, 128, 64, bits, 32, sym, desc_act)
    w = Q.from_gptq(
        gptq_pack_in(q, bits),
        gptq_pack_out(z - 1, bits),
        torch.from_numpy(s),
        torch.from_numpy(g_idx.astype(np.int32)),
        bits,
        32,
    )
    want = expected_weight(q, z, s, g_idx).astype(np.float32)
    assert np.array_equal(Q.dequantize(w).numpy(), want)
    packed = Q.to_gptq(w)
    assert torch.equal(packed["qweight"], gptq_pack_in(q, bits))
    assert torch.equal(packed["qzeros"], gptq_pack_out(z - 1, bits))
    assert packed["bias"].dtype == torch.float16 and not packed["bias"].any()  # AutoGPTQ's zero bias


def test_gptq_zero_minus_one_convention():
    # stored zero 7 means zero 8: code 8 dequantizes to 0, code 9 to one scale step
    q = np.full((8, 8), 8)
    q[0] = 9
    w = Q.from_gptq(
        gptq_pack_in(q, 4),
        gptq_pack_out(np.full((1, 8), 7), 4),
        torch.full((1, 8), 0.5).half(),
        torch.zeros(8, dtype=torch.int32),
        4,
        8,
    )
    d = Q.dequantize(w)
    assert d[:, 0].tolist() == [0.5] * 8 and not d[:, 1:].any()


CASES = [  # (bits, group, sym, desc_act, bias, expected module)
    (4, 64, False, False, False, Int4Linear),
    (4, 32, True, True, True, Int4Linear),
    (4, -1, False, False, False, DequantLinear),  # per-channel: no int4 kernel group size, stays packed
    (8, 32, True, False, True, DequantLinear),
    (8, 64, False, True, False, DequantLinear),
]


@pytest.mark.parametrize("bits,group,sym,desc_act,bias,kind", CASES)
def test_modules_match_reference(bits, group, sym, desc_act, bias, kind):
    rng = np.random.default_rng(7)
    n_in, n_out = 256, 48
    q, z, s, g_idx = random_case(rng, n_in, n_out, bits, n_in if group == -1 else group, sym, desc_act)
    b = torch.from_numpy(rng.standard_normal(n_out).astype(np.float16)) if bias else None
    w = Q.from_gptq(
        gptq_pack_in(q, bits),
        gptq_pack_out(z - 1, bits),
        torch.from_numpy(s),
        torch.from_numpy(g_idx.astype(np.int32)),
        bits,
        group,
        b,
    )
    m = make_linear(w, "cpu", torch.float32)
    assert isinstance(m, kind) and (m.in_features, m.out_features) == (n_in, n_out)
    ref = Q.dequantize(w)
    assert torch.equal(m.dequantize(), ref)  # exact in fp32 on CPU
    x = torch.randn(2, 3, n_in)
    want = torch.nn.functional.linear(x, ref, None if b is None else b.float())
    assert (m(x) - want).abs().max() < 1e-4
    assert (m(x[:1, :1]) - want[:1, :1]).abs().max() < 1e-4  # one token: the int4 op itself on CPU
    if kind is Int4Linear:  # no known CPU layout (or CUDA): codes read back through the op
        m.cpu_layout = None
        assert torch.equal(m.dequantize(), ref) and (m(x) - want).abs().max() < 1e-4


@settings(max_examples=30, deadline=None)
@given(bits=st.sampled_from([4, 8]), rows=st.integers(1, 4), cols=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_pack_unpack_roundtrip(bits, rows, cols, seed):
    per = 32 // bits
    codes = torch.randint(0, 2**bits, (rows * per, cols * per), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(Q.unpack_rows(Q.pack_rows(codes, bits), bits), codes.int())
    assert torch.equal(Q.unpack_cols(Q.pack_cols(codes, bits), bits), codes.int())
    if bits == 4:
        assert torch.equal(Q.unpack_cols(Q.pack_cols(codes, 4, Q.AWQ_ORDER), 4, Q.AWQ_ORDER), codes.int())


def fields(words: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """The codes of packed int32 words as the formats define them, field by field with shifts (no byte views):
    dim 1 packs along columns (field k of word c is column per*c + k), dim 0 along rows."""
    per = 32 // bits
    shifts = torch.arange(per, dtype=torch.int32) * bits
    f = (words.unsqueeze(2 if dim == 1 else 1) >> shifts.view(*(1, 1, per) if dim == 1 else (1, per, 1))) & (
        2**bits - 1
    )
    return f.reshape(words.shape[0], -1) if dim == 1 else f.reshape(-1, words.shape[1])


@settings(max_examples=30, deadline=None)
@given(bits=st.sampled_from([4, 8]), rows=st.integers(1, 9), cols=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_unpacking_by_bytes_reads_every_field_of_any_word(bits, rows, cols, seed):
    """unpack_nibbles and unpack_rows_t read the words' bytes (a Yi-6B load on 2 cores: 82 s to 30 s); every bit
    pattern, sign bit included, gives the codes the shifts give."""
    gen = torch.Generator().manual_seed(seed)
    words = torch.randint(-(2**31), 2**31, (rows, cols), dtype=torch.int32, generator=gen)
    assert torch.equal(Q.unpack_rows_t(words, bits), fields(words, bits, 0).t().to(torch.uint8))
    assert torch.equal(Q.unpack_rows(words, bits), fields(words, bits, 0))
    assert torch.equal(Q.unpack_cols(words, bits), fields(words, bits, 1))
    if bits == 4:
        f = fields(words, 4, 1).view(rows, cols, 8)
        awq = f[:, :, [Q.AWQ_ORDER.index(j) for j in range(8)]].reshape(rows, -1)  # column j in field order.index(j)
        assert torch.equal(Q.unpack_nibbles(words, Q.AWQ_ORDER), awq.to(torch.uint8))
        assert torch.equal(Q.unpack_cols(words, 4, Q.AWQ_ORDER), awq)


@pytest.mark.parametrize("n", [16, 48, 112, 144, 160, 4096, 4112, 11008])
def test_the_cpu_packing_writes_the_ops_bytes(n):
    """tinygemm.pack on CPU writes the op's layout itself (one byte a code, not the op's int32 copy): the same
    bytes as _convert_weight_to_int4pack_for_cpu, full row blocks and a tail, from codes [n, k] as they lie or
    from a transposed view of [k, n] ones (AWQ's on the CPU, from_awq), in every known layout."""
    from yi_cli.kernels import tinygemm

    if tinygemm.cpu_layout() is None:
        pytest.skip("no known CPU layout in this torch build: the op packs")
    k = 256
    q = torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
    want = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), tinygemm.inner_k_tiles(k))
    kn = q.t().contiguous()
    assert not kn.t().is_contiguous()
    assert torch.equal(tinygemm.pack(q), want) and torch.equal(tinygemm.pack(kn.t()), want)
    for layout in tinygemm.CPU_LAYOUTS:
        packed = tinygemm.pack_cpu(kn.t(), *layout)
        assert torch.equal(packed, tinygemm.pack_cpu(q, *layout))
        assert torch.equal(tinygemm.unpack_cpu(packed, n, k, *layout), q)


def test_awq_codes_on_the_cpu_stay_as_stored_and_concatenate():
    """from_awq leaves the CPU's codes [in, out] in memory (q a transposed view); q/k/v concatenated along out stay
    so, with the codes a contiguous concatenation gives; dequantized (shapes the int4 ops refuse), W is [out, in]."""
    rng = np.random.default_rng(3)
    ws, qs = [], []
    for n_out in (64, 32, 32):
        q, _, s, _ = random_case(rng, 128, n_out, 4, 32)
        z = rng.integers(0, 16, s.shape)
        ws.append(Q.from_awq(awq_pack(q), awq_pack(z), torch.from_numpy(s), 32))
        qs.append(torch.from_numpy(q.T.copy()).to(torch.uint8))
    assert all(w.q.t().is_contiguous() and not w.q.is_contiguous() for w in ws)
    both = Q.concat(ws)
    assert both.q.t().is_contiguous() and torch.equal(both.q, torch.cat(qs))
    assert torch.equal(Q.dequantize(both), torch.cat([Q.dequantize(w) for w in ws]))
    assert Q.dequantize(both, torch.bfloat16).is_contiguous()  # a Dense weight: a transposed one was ~30x slower


def test_rtn_quantizer_is_close():
    w = torch.randn(64, 128) * 0.05
    for bits, tol in ((4, 0.02), (8, 1e-3)):
        for sym in (True, False):
            qw = Q.quantize_rtn(w, bits, 32, sym, perm=torch.randperm(128))
            assert (Q.dequantize(qw) - w).abs().max() < tol

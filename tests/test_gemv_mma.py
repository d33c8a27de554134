"""mma_layout.pack (CPU): each lane's word holds exactly the A fragment of mma.m16n8k16 (PTX ISA, "Matrix Fragments
for mma.m16n8k16" with .bf16: a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..],
g = lane / 4, t = lane % 4), the pair a_j in nibbles j (low half) and j + 4 (high half) as the kernel extracts it;
the fragment's column kk of k-step s is column 16t' + 4s + 2·(kk // 8) + kk % 2 of the chunk (kk = 2t' + 8·(kk // 8)
+ kk % 2), the order in which lane t' reads x's B fragments as 8 consecutive words."""

from __future__ import annotations

import torch

from yi_cli.kernels import gemv_mma, mma_layout


def test_pack_puts_each_lanes_fragment_in_its_word():
    n, k = 48, 192
    q = torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    words = mma_layout.pack(q)
    assert words.shape == (n // 16, k // 64, 32, 4) and words.dtype == torch.int32
    w = words.to(torch.int64) & 0xFFFFFFFF
    got = torch.full((n, k), -1, dtype=torch.int64)
    for tile in range(n // 16):
        for chunk in range(k // 64):
            for lane in range(32):
                g, t = divmod(lane, 4)
                for s in range(4):
                    word = int(w[tile, chunk, lane, s])
                    a = [((word >> (4 * j)) & 15, (word >> (4 * j + 16)) & 15) for j in range(4)]  # a_j (lo, hi)
                    r0, k0 = 16 * tile, 64 * chunk + 16 * t + 4 * s  # kk = 2t and 2t + 8: columns +0 and +2
                    for j, (row, col) in enumerate([(g, 0), (g + 8, 0), (g, 2), (g + 8, 2)]):
                        got[r0 + row, k0 + col] = a[j][0]
                        got[r0 + row, k0 + col + 1] = a[j][1]
    assert torch.equal(got, q.to(torch.int64))


def test_supported_shapes():
    assert gemv_mma.supported(5120, 4096, 128) and gemv_mma.supported(96, 576, 64)
    assert not gemv_mma.supported(64, 256, 32)  # a group smaller than a chunk of 64 columns
    assert not gemv_mma.supported(40, 256, 64)


def test_word_nibbles_are_the_fragment_rows_and_columns_dequant_places():
    """The layout mma_layout._dequant reads: nibble j + 4e (j = jr + 2·jc) of word s of lane 4g + t in a chunk holds
    row 8·jr + g, column 16t + 4s + 2·jc + e of its 16 x 64 block; the kernel's permute of the six indices,
    done here with torch, gives back the codes of two tiles x two chunks."""
    q = torch.randint(0, 16, (32, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    words = mma_layout.pack(q).to(torch.int64) & 0xFFFFFFFF  # [tile, chunk, lane, s]
    jc, jr, e = torch.arange(2).view(2, 1, 1), torch.arange(2).view(1, 2, 1), torch.arange(2).view(1, 1, 2)
    shift = (4 * (jr + 2 * jc + 4 * e)).view(1, 1, 1, 2, 2, 2)
    for tile in range(2):
        for chunk in range(2):
            w = words[tile, chunk].view(8, 4, 4, 1, 1, 1)  # [g, t, s, jc, jr, e]
            got = ((w >> shift) & 15).permute(4, 0, 1, 2, 3, 5).reshape(16, 64)
            want = q[16 * tile : 16 * tile + 16, 64 * chunk : 64 * chunk + 64].to(torch.int64)
            assert torch.equal(got, want)


def test_config_fits_every_shape():
    """Each (tiles, warps) choice divides the weight's 16-row tiles, gate_up's with its silu tile pairs, for int4
    codes, int8 codes and bf16 weights; the rings within the kernel's 1 to 5 chunks, int8 and bf16 weights (4 and 8
    words a lane a chunk) at most 2 tiles; x's ring divides the weights' (the loop is unrolled as many times as the
    weights' ring holds chunks)."""
    for n, k in [
        (5120, 4096),
        (4096, 4096),
        (22016, 4096),
        (4096, 11008),
        (9216, 7168),
        (40960, 7168),
        (7168, 20480),
        (960, 576),
        (3072, 576),
        (576, 1536),
        (48, 64),
    ]:
        for bits in (4, 8, 16):
            rt, warps, ahead, xahead, pair, unroll = gemv_mma.config(n, k, bits)
            assert (n // 16) % rt == 0 and warps in (4, 8, 16) and 1 <= ahead <= 5 and 0 <= xahead <= ahead
            assert unroll >= ahead and unroll % ahead == 0
            assert xahead == 0 or ahead % xahead == 0
            assert pair == 1 or (pair == 2 and bits < 16)  # where `pairs` refuses, the launch takes one chunk
            assert bits == 4 or rt <= 2


def test_halves_order_puts_rotary_pairs_in_one_lane():
    """halves_order (qkv packed for the rope epilogue): a permutation of the rows that keeps each head's rows in
    its own tiles, with row g of a tile holding dimension d and row g + 8 its rotate_half partner d + head_dim/2
    (the two D fragment rows of one lane)."""
    for n, hd in [(5120, 128), (576, 64), (96, 16)]:
        assert mma_layout.halves_fit(n, hd)
        rows = mma_layout.halves_order(n, hd)
        assert torch.equal(rows.sort().values, torch.arange(n))
        tile = rows.view(-1, 16)
        assert torch.equal(tile[:, 8:] - tile[:, :8], torch.full_like(tile[:, :8], hd // 2))
        assert torch.equal(tile // hd, (torch.arange(n).view(-1, 16) // hd))  # heads stay together
        assert bool(((tile[:, :8] % hd) < hd // 2).all())
    fit = mma_layout.halves_fit
    assert not fit(5120, 120) and not fit(100, 20) and not fit(64, 0)


def test_gptq8_computes_in_fp16_where_the_tensor_core_gemv_reads_it(monkeypatch):
    """tinygemm.compute_dtype (CUDA's capability stubbed, nothing launched): 8-bit codes in groups of 64 columns or
    more, or one group a row, keep auto's fp16 on the tensor-core GEMV; 4-bit codes, smaller groups (the int4
    ops) and YI_CHAT_MMA=0 compute in bf16; --dtype bf16 stays bf16; plain weights and the CPU keep their dtype."""
    from yi_cli.kernels import tinygemm

    monkeypatch.setattr(gemv_mma, "available_on", lambda device: True)
    fp16, bf16 = torch.float16, torch.bfloat16
    assert tinygemm.compute_dtype("cuda", fp16, 8, 128) == fp16
    assert tinygemm.compute_dtype("cuda:1", fp16, 8, -1) == fp16
    assert tinygemm.compute_dtype("cuda", fp16, 8, 32) == bf16
    assert tinygemm.compute_dtype("cuda", fp16, 4, 128) == bf16
    assert tinygemm.compute_dtype("cuda", bf16, 8, 128) == bf16
    assert tinygemm.compute_dtype("cuda", torch.float32, 8, 128) == bf16
    assert tinygemm.compute_dtype("cuda", fp16, None) == fp16
    assert tinygemm.compute_dtype("cpu", torch.float32, 8, 128) == torch.float32
    monkeypatch.setattr(gemv_mma, "ENABLED", False)
    assert tinygemm.compute_dtype("cuda", fp16, 8, 128) == bf16


def test_early_reads_keep_only_the_folds_a_launch_makes():
    """A launch's EARLY holds the bits of the epilogue reads it makes (AT_END with them), none for a plain one."""
    e = gemv_mma.NORM | gemv_mma.RESIDUAL | gemv_mma.POS | gemv_mma.AT_END
    assert gemv_mma.early_bits(4096, 4096, 4, False, True, False, e) == gemv_mma.RESIDUAL | gemv_mma.AT_END
    assert gemv_mma.early_bits(5120, 4096, 4, True, False, True, e) == gemv_mma.NORM | gemv_mma.POS | gemv_mma.AT_END
    assert gemv_mma.early_bits(4096, 4096, 4, False, False, False, e) == 0  # AT_END alone means nothing
    # shipped: the residual stream's reads before the warps' sums, nothing early for the norm or rope
    assert gemv_mma.early_bits(4096, 11008, 4, False, True, False) == gemv_mma.RESIDUAL | gemv_mma.AT_END
    assert gemv_mma.early_bits(5120, 4096, 4, True, False, True) == 0


def test_gathered_sums_and_the_register_cap_serve_int4_codes():
    assert gemv_mma.gather_sums(4096, 4096, 4) and not gemv_mma.gather_sums(4096, 4096, 8)
    assert not gemv_mma.gather_sums(22016, 4096, 16)
    assert gemv_mma.max_registers(4096, 11008, 4) == 128  # Yi-6B's down: 131 registers uncapped
    assert gemv_mma.max_registers(7168, 20480, 4) == 0  # Yi-34B's down: 95 uncapped, a cap made ptxas spill
    assert gemv_mma.max_registers(5120, 4096, 4) == gemv_mma.max_registers(4096, 11008, 8) == 0

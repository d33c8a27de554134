"""gemv_mma.pack (CPU): each lane's word holds exactly the A fragment of mma.m16n8k16 (PTX ISA, "Matrix Fragments
for mma.m16n8k16" with .bf16: a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..],
g = lane / 4, t = lane % 4), the pair a_j in nibbles j (low half) and j + 4 (high half) as the kernel extracts it."""

from __future__ import annotations

import torch

from yi_cli.kernels import gemv_mma


def test_pack_puts_each_lanes_fragment_in_its_word():
    n, k = 48, 192
    q = torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    words = gemv_mma.pack(q)
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
                    r0, k0 = 16 * tile, 64 * chunk + 16 * s
                    for j, (row, col) in enumerate([(g, 2 * t), (g + 8, 2 * t), (g, 2 * t + 8), (g + 8, 2 * t + 8)]):
                        got[r0 + row, k0 + col] = a[j][0]
                        got[r0 + row, k0 + col + 1] = a[j][1]
    assert torch.equal(got, q.to(torch.int64))


def test_supported_shapes():
    assert gemv_mma.supported(5120, 4096, 128) and gemv_mma.supported(96, 576, 64)
    assert not gemv_mma.supported(64, 256, 32)  # a group smaller than a chunk of 64 columns
    assert not gemv_mma.supported(40, 256, 64)


def test_tile_inv_finds_each_element_of_a_tile():
    """dequant's map (glue.dequant_int4 reads element e of a 16 x 64 tile from nibble tile_inv[e] of its 128
    words): checked against pack on codes that differ in every element of two tiles."""
    q = torch.randint(0, 16, (16, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    words = gemv_mma.pack(q).reshape(2, 128).to(torch.int64) & 0xFFFFFFFF  # tile (0, chunk) = 128 words
    inv = gemv_mma.tile_inv(torch.device("cpu")).long()
    assert sorted(inv.tolist()) == list(range(1024))
    for chunk in range(2):
        nib = (words[chunk].view(-1, 1) >> (4 * torch.arange(8))) & 15  # [128 words, 8 nibbles]
        got = nib.reshape(-1)[inv].view(16, 64)
        assert torch.equal(got, q[:, 64 * chunk : 64 * chunk + 64].to(torch.int64))


def test_config_fits_every_shape():
    """Each (tiles, warps) choice divides the weight's 16-row tiles, gate_up's with its silu tile pairs, and two
    planes stay within 2 tiles and 8 warps (their register limit)."""
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
        for planes in (1, 2):
            rt, warps = gemv_mma.config(n, k, planes)
            assert (n // 16) % rt == 0 and warps in (4, 8, 16)
            assert planes == 1 or (rt <= 2 and warps <= 8)

"""decode_attn.decode_attention for T tokens in one split + one merge launch (a speculative verify) against T one-token
calls: bit for bit per row, on every merge path.

On CUDA (Yi-6B's attention shape), or interpreted on the CPU (tiny shapes): see triton_interpret.py.
"""

from __future__ import annotations

import pytest
import torch
from triton_interpret import CUDA, DEV, DTYPE

from yi_cli.kernels import decode_attn

# (KV heads, query heads per KV head, head dim, cache slots): Yi-6B's attention on CUDA, a small one interpreted
SHAPE = (4, 8, 128, 4096) if CUDA else (2, 4, 16, 320)


@pytest.mark.parametrize("path", ["short", "short_merge_loop", "tile", "merge_loop", "long"])
@pytest.mark.parametrize("t", [1, 2, 3, 8])
def test_rows_in_one_launch_are_one_token_calls(monkeypatch, path, t):
    n_kv, g, hd, slots = SHAPE
    if "merge_loop" in path:  # more partials than one tile: the looping merge kernel
        monkeypatch.setattr(decode_attn, "TILE_MERGE", 2)
    if not path.startswith("short"):  # past SHORT: the looping split kernel
        monkeypatch.setattr(decode_attn, "SHORT", 0)
    else:  # up to SHORT: one tile a program, every token of a verify in one program
        monkeypatch.setattr(decode_attn, "SHORT", slots // 2)
    if path == "long":  # past LONG: longer splits, the long-context tuning
        monkeypatch.setattr(decode_attn, "LONG", slots // 2)
        if not CUDA:  # one LONG_BLOCK a split: the rows below stay inside the small cache
            monkeypatch.setattr(decode_attn, "LONG_SPLIT", decode_attn.LONG_BLOCK)
    gen = torch.Generator().manual_seed(t)
    kc, vc = (torch.randn(1, n_kv, slots, hd, generator=gen).to(DTYPE).to(DEV) for _ in range(2))
    qg = torch.randn(1, n_kv, g * t, hd, generator=gen).to(DTYPE).to(DEV)  # row j·T + i
    length = decode_attn.SHORT if path.startswith("short") else slots
    first = length - 70 if path != "long" else decode_attn.LONG_SPLIT - 3  # the rows cross a split boundary
    pos = torch.arange(first, first + t, device=DEV)
    many = decode_attn.decode_attention(qg, kc, vc, pos, length)
    assert many.shape == qg.shape
    for i in range(t):
        q1 = qg[:, :, i::t].contiguous()  # token i's heads, as a one-token step's query
        one = decode_attn.decode_attention(q1, kc, vc, pos[i : i + 1], length)
        assert torch.equal(many[:, :, i::t], one), f"row {i}: {(many[:, :, i::t] - one).abs().max()}"
        # and it is attention over slots [0, pos[i]]
        n = int(pos[i]) + 1
        ref = torch.softmax((q1.float() @ kc[:, :, :n].float().transpose(2, 3)) * hd**-0.5, -1) @ vc[:, :, :n].float()
        assert (one.float() - ref).abs().max() < 2e-2


@pytest.mark.parametrize("tt", [1, 4, 8])
def test_short_rows_per_program_do_not_change_a_row(monkeypatch, tt):
    """Up to SHORT slots a program serves VERIFY_TT of a verify's tokens (K and V read once for them): however many,
    each token's rows are its one-token call's bits."""
    n_kv, g, hd, slots = SHAPE
    monkeypatch.setattr(decode_attn, "SHORT", slots // 2)
    monkeypatch.setattr(decode_attn, "VERIFY_TT", dict.fromkeys(decode_attn.VERIFY_TT, tt))
    t = 8
    gen = torch.Generator().manual_seed(tt)
    kc, vc = (torch.randn(1, n_kv, slots, hd, generator=gen).to(DTYPE).to(DEV) for _ in range(2))
    qg = torch.randn(1, n_kv, g * t, hd, generator=gen).to(DTYPE).to(DEV)
    length = decode_attn.SHORT
    pos = torch.arange(length - 12, length - 12 + t, device=DEV)
    many = decode_attn.decode_attention(qg, kc, vc, pos, length)
    for i in range(t):
        one = decode_attn.decode_attention(qg[:, :, i::t].contiguous(), kc, vc, pos[i : i + 1], length)
        assert torch.equal(many[:, :, i::t], one), f"row {i}"

"""glue.decode_attention for T tokens in one split + one merge launch (a speculative verify) against T one-token
calls: bit for bit per row, on every merge path.

Runs on CUDA, or on the CPU in Triton's interpreter (TRITON_INTERPRET=1 with a triton importable; tiny shapes):
    TRITON_INTERPRET=1 PYTHONPATH=$PWD:/path/to/triton python -m pytest -q tests/test_attention_rows.py
Skipped otherwise (the CPU suite has no Triton).
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")
CUDA = torch.cuda.is_available()
if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)

from yi_cli.kernels import glue  # noqa: E402

if not CUDA:
    from triton.runtime import interpreter

    _patch = interpreter._patch_lang_tensor

    def _patch_index(tensor, scope):
        """Triton 3.6's interpreter turns a scalar into an int with int(array of shape (1,)), an error since
        numpy 2.4 (range(0, tl.minimum(...), BLOCK) in the split kernel): take its one item instead."""
        _patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    interpreter._patch_lang_tensor = _patch_index

DEV = "cuda" if CUDA else "cpu"
# (KV heads, query heads per KV head, head dim, cache slots): Yi-6B's attention on CUDA, a small one interpreted
SHAPE = (4, 8, 128, 4096) if CUDA else (2, 4, 16, 320)
DTYPE = torch.bfloat16 if CUDA else torch.float16  # Triton 3.6's interpreter mis-converts bf16 (off by ~1e8)


@pytest.mark.parametrize("path", ["tile", "merge_loop", "long"])
@pytest.mark.parametrize("t", [1, 2, 8])
def test_rows_in_one_launch_are_one_token_calls(monkeypatch, path, t):
    n_kv, g, hd, slots = SHAPE
    if path == "merge_loop":  # more partials than one tile: the looping merge kernel
        monkeypatch.setattr(glue, "TILE_MERGE", 2)
    if path == "long":  # past LONG: longer splits, the long-context tuning
        monkeypatch.setattr(glue, "LONG", slots // 2)
    gen = torch.Generator().manual_seed(t)
    kc, vc = (torch.randn(1, n_kv, slots, hd, generator=gen).to(DTYPE).to(DEV) for _ in range(2))
    qg = torch.randn(1, n_kv, g * t, hd, generator=gen).to(DTYPE).to(DEV)  # row j·T + i
    first = slots - 70 if path != "long" else glue.LONG_SPLIT - 3  # the rows cross a split boundary
    pos = torch.arange(first, first + t, device=DEV)
    length = slots
    many = glue.decode_attention(qg, kc, vc, pos, length)
    assert many.shape == qg.shape
    for i in range(t):
        q1 = qg[:, :, i::t].contiguous()  # token i's heads, as a one-token step's query
        one = glue.decode_attention(q1, kc, vc, pos[i : i + 1], length)
        assert torch.equal(many[:, :, i::t], one), f"row {i}: {(many[:, :, i::t] - one).abs().max()}"
        # and it is attention over slots [0, pos[i]]
        n = int(pos[i]) + 1
        ref = torch.softmax((q1.float() @ kc[:, :, :n].float().transpose(2, 3)) * hd**-0.5, -1) @ vc[:, :, :n].float()
        assert (one.float() - ref).abs().max() < 2e-2

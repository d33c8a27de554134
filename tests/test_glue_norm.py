"""glue.embed_rmsnorm (the embedding gathered inside the first RMSNorm's launch) against F.embedding followed by
glue.add_rmsnorm: the same bits for x and for the normed h, one row or several, ids anywhere in the table.

On CUDA (Yi-6B's width and vocabulary), or interpreted on the CPU (a small table): see triton_interpret.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from triton_interpret import CUDA, DEV, DTYPE

from yi_cli.kernels import glue

VOCAB, D = (64000, 4096) if CUDA else (300, 96)  # D not a power of two interpreted: the masked tail


@pytest.mark.parametrize("rows", [1, 3, 8])
def test_embedding_in_the_norm_is_the_embedding_then_the_norm(rows):
    g = torch.Generator().manual_seed(rows)
    embed = (torch.randn(VOCAB, D, generator=g) * 0.05).to(DTYPE).to(DEV)
    w = (1 + torch.randn(D, generator=g) * 0.1).to(DTYPE).to(DEV)
    ids = torch.randint(0, VOCAB, (rows,), generator=g)
    ids[0] = VOCAB - 1  # the table's last row
    ids = ids.to(DEV)
    x, h = glue.embed_rmsnorm(ids, embed, w, 1e-5)
    want_x, want_h = glue.add_rmsnorm(F.embedding(ids, embed), None, w, 1e-5, True)
    assert x.shape == (rows, D) and x.dtype == embed.dtype
    assert torch.equal(x, want_x) and torch.equal(h, want_h)
    assert not torch.equal(h, x)  # the norm ran

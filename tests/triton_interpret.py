"""Triton kernel tests on CUDA, or on the CPU in Triton's interpreter (TRITON_INTERPRET=1 with triton importable;
the CPU suite has no Triton, so they skip there):
    TRITON_INTERPRET=1 PYTHONPATH=$PWD:/path/to/triton python -m pytest -q tests/test_attention_rows.py ...
Import this module before yi_cli's kernels."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")
CUDA = torch.cuda.is_available()
if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)
DEV = "cuda" if CUDA else "cpu"
DTYPE = torch.bfloat16 if CUDA else torch.float16  # Triton 3.6's interpreter mis-converts bf16 (off by ~1e8)

if not CUDA:
    from triton.runtime import interpreter

    _patch = interpreter._patch_lang_tensor

    def _patch_index(tensor, scope):
        """Triton 3.6's interpreter turns a scalar into an int with int(array of shape (1,)), an error since
        numpy 2.4 (e.g. range(0, tl.minimum(...), BLOCK)): take its one item instead."""
        _patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    interpreter._patch_lang_tensor = _patch_index

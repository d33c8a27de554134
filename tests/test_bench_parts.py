"""scripts/bench_parts.py's timeline arithmetic (CPU): exposed time per kernel of a step whose kernels overlap."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")
_spec = importlib.util.spec_from_file_location(
    "bench_parts", Path(__file__).resolve().parents[1] / "scripts" / "bench_parts.py"
)
bench_parts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_parts)


def test_exposed_times_add_up_to_the_span_and_skip_hidden_kernels():
    # a starts at 0 and ends at 10; b starts early (PDL) and ends at 14; c runs inside b; d after a gap
    spans = [("a", 0.0, 10.0), ("b", 4.0, 14.0), ("c", 11.0, 13.0), ("d", 16.0, 17.5)]
    got = bench_parts.exposed(spans)
    assert got == [("a", 10.0, 0.0), ("b", 4.0, -6.0), ("c", 0.0, -3.0), ("d", 3.5, 2.0)]
    assert sum(us for _, us, _ in got) == spans[-1][2] - spans[0][1]


def test_by_name_averages_over_steps_and_classifies_kernels():
    steps = [
        [("_gemv_mma", 9.0, 0.0), ("_attn_merge_tile", 3.0, -1.0), ("_gemv_mma", 5.0, -2.0)],
        [("_gemv_mma", 7.0, 0.0), ("_attn_merge_tile", 1.0, -1.0), ("_gemv_mma", 3.0, -2.0)],
    ]
    rows = bench_parts.by_name(steps)
    assert rows[0] == {"kernel": "_gemv_mma", "launches": 2, "exposed_us": 12.0, "kind": "gemv"}
    assert rows[1] == {"kernel": "_attn_merge_tile", "launches": 1, "exposed_us": 2.0, "kind": "attention"}

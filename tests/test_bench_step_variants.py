"""scripts/bench_step_variants.py's variant specs and configuration override (CPU; the step itself needs CUDA)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
_spec = importlib.util.spec_from_file_location(
    "bench_step_variants", Path(__file__).resolve().parents[1] / "scripts" / "bench_step_variants.py"
)
variants = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(variants)


def test_a_spec_names_matmuls_and_their_five_numbers():
    assert variants.parse("down=1,4,3,1,2+o=2,8,2,1,2,4") == {
        "down": {"config": (1, 4, 3, 1, 2, 3)},
        "o": {"config": (2, 8, 2, 1, 2, 4)},
    }
    with pytest.raises(ValueError, match="unknown matmul 'up'"):
        variants.parse("up=1,4,3,1,2")
    with pytest.raises(ValueError, match="five or six numbers"):
        variants.parse("down=1,4,3")
    with pytest.raises(ValueError, match="unknown knob 'late'"):
        variants.parse("down=late=1")
    assert variants.parse("head=off+down=gather=0") == {"head": {"off": True}, "down": {"gather": 0}}
    assert variants.parse("head=2,4,2,1,1") == {"head": {"config": (2, 4, 2, 1, 1, 2)}}


def test_knobs_join_a_configuration_and_serve_only_their_shape():
    assert variants.parse("qkv=early=5+o=1,8,3,3,1,3+o=gather=0+o=regs=128") == {
        "qkv": {"early": 5},
        "o": {"config": (1, 8, 3, 3, 1, 3), "gather": 0, "regs": 128},
    }
    variants.OVER.update({(5120, 4096, 4): {"early": 5}, (4096, 4096, 4): {"config": (1, 8, 3, 3, 1, 3), "gather": 0}})
    early, gather = variants.KNOB_FNS["early"], variants.KNOB_FNS["gather"]
    try:
        assert variants.config(5120, 4096) == variants.SHIPPED(5120, 4096, 4) and early(5120, 4096) == 5
        assert variants.config(4096, 4096) == (1, 8, 3, 3, 1, 3) and gather(4096, 4096) == 0
        assert early(4096, 4096) == variants.SHIPPED_KNOBS["early"](4096, 4096, 4)
        assert gather(4096, 11008) == variants.SHIPPED_KNOBS["gather"](4096, 11008, 4)
    finally:
        variants.OVER.clear()


def test_the_override_serves_only_its_own_shape_and_bits():
    shipped = variants.SHIPPED(7168, 20480, 4)
    variants.OVER[(7168, 20480, 4)] = {"config": (1, 4, 3, 1, 2)}
    try:
        assert variants.config(7168, 20480, 4) == (1, 4, 3, 1, 2)
        assert variants.config(7168, 20480, 8) == variants.SHIPPED(7168, 20480, 8)
        assert variants.config(7168, 7168) == variants.SHIPPED(7168, 7168, 4)
    finally:
        variants.OVER.clear()
    assert variants.config(7168, 20480, 4) == shipped


def test_shapes_tell_int4_int8_and_dense_weights_apart():
    int4 = SimpleNamespace(n=64, k=128, planes=[(torch.zeros(4, 2, 32, 4, dtype=torch.int32), None)])
    int8 = SimpleNamespace(n=64, k=128, planes=[(torch.zeros(64, 128, dtype=torch.uint8), None)])
    dense = SimpleNamespace(n=32, k=64, w=torch.zeros(32, 64))
    layer = SimpleNamespace(qkv=int4, o=int8, gate_up=dense, down=int4)
    got = variants.shapes(layer)
    assert got == {"qkv": (64, 128, 4), "o": (64, 128, 8), "gate_up": (32, 64, 16), "down": (64, 128, 4)}
    head = SimpleNamespace(n=256, k=64, w=torch.zeros(256, 64))
    assert variants.shapes(layer, head)["head"] == (256, 64, 16)

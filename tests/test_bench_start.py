"""scripts/bench_start.py's A/B of two trees (CPU): the order of the runs, what each tree's line reports (no
process started), and that a tree's process imports that tree's yi_cli."""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "bench_start", Path(__file__).resolve().parents[1] / "scripts" / "bench_start.py"
)
bench_start = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_start)


def test_rounds_alternate_the_trees_and_leave_out_the_warm_ups():
    calls, clock = [], itertools.count(1)

    def time_start(tree, cold):
        calls.append((tree, cold))
        return float(next(clock))

    got = bench_start.rounds({"this": "A", "against": "B"}, 2, 2, True, time_start)
    one = [True, False, False, False]  # a round of one tree: cold, warm-up, two timed runs
    assert calls == [(t, c) for t in ("A", "B", "A", "B") for c in one]
    # times 1-16 in call order; each tree's cold runs and timed runs, never its warm-ups (2, 6, 10, 14)
    assert got["this"] == {"cold": [1, 9], "runs": [3, 4, 11, 12]}
    assert got["against"] == {"cold": [5, 13], "runs": [7, 8, 15, 16]}


def test_against_times_each_tree_with_its_own_yi_cli(tmp_path, monkeypatch, capsys):
    other = tmp_path / "base"
    other.mkdir()
    seen, clock = [], itertools.count(1)

    def first_token(cmd, env, importtime=False, cwd=None):
        tree = env["PYTHONPATH"].split(":")[0]
        assert str(cwd) == tree
        seen.append((tree, "TRITON_CACHE_DIR" in env, importtime))
        return float(next(clock)), ""

    monkeypatch.setattr(bench_start, "first_token", first_token)
    monkeypatch.setattr(bench_start, "device_name", lambda device: "cpu")
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    bench_start.main(["--against", str(other), "--rounds", "2", "--runs", "1", "--cold-triton"])
    this, base = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert this["tree"] == str(bench_start.ROOT) and base["tree"] == str(other.resolve())
    # round 1: this cold 1, warm-up 2, run 3; base 4, 5, 6; round 2: this 7, 8, 9; base 10, 11, 12; importtime 13, 14
    keys = ("start_cold_triton_runs_s", "start_runs_s", "start_importtime_s")
    assert [this[k] for k in keys] == [[1, 7], [3, 9], 13]
    assert [base[k] for k in keys] == [[4, 10], [6, 12], 14]
    assert this["start_cold_triton_s"] == 4 and base["start_s"] == 9
    a, b = str(bench_start.ROOT), str(other.resolve())
    assert [tree for tree, _, _ in seen] == [a] * 3 + [b] * 3 + [a] * 3 + [b] * 3 + [a, b]
    assert [cold for _, cold, _ in seen] == [True, False, False] * 4 + [False, False]  # an empty cache: cold runs only
    assert [imp for _, _, imp in seen] == [False] * 12 + [True, True]


def test_a_trees_process_imports_its_own_yi_cli(tmp_path, monkeypatch):
    """Started from this checkout (as on the GPU machine), `python -m yi_cli` for another tree runs that tree's
    yi_cli, not the one in the working directory."""
    other = tmp_path / "base"
    (other / "yi_cli").mkdir(parents=True)
    (other / "yi_cli" / "__init__.py").write_text("")
    main = "import sys, yi_cli\nsys.stderr.write('ran ' + yi_cli.__file__)\nprint('token')\n"
    (other / "yi_cli" / "__main__.py").write_text(main)
    monkeypatch.chdir(bench_start.ROOT)
    t, err = bench_start.start([sys.executable, "-m", "yi_cli"], other.resolve())
    assert err == f"ran {other.resolve() / 'yi_cli' / '__init__.py'}" and t > 0

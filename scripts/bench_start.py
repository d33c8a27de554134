"""Start-up benchmark: a fresh `yi-chat` process (the real entry, fast engine) from exec to its first token.

    python scripts/bench_start.py                                  # CPU, the demo model
    python scripts/bench_start.py --model DIR --device cuda        # GPU; --cold-triton adds an empty-cache run
    python scripts/bench_start.py --model DIR --device cuda --cold-triton --against ../base --rounds 3
                                   # and another checkout's yi_cli, timed alternately with this one's

Prints one JSON object: device, versions, start_s (median of --runs: exec -> the first byte of the reply on
stdout), start_cold_triton_s (with --cold-triton: TRITON_CACHE_DIR empty, every kernel compiles), imports_s (the
sum of `python -X importtime` self times in one more run), packages_s (that sum per top-level package) and
top_imports (the ten modules with the largest cumulative import time). The parent process imports nothing heavy
before the timed runs, so it does not warm anything the child would not find warm anyway (the page cache aside).
With --against TREE: one object per tree ("tree": this checkout or TREE), their runs alternating round by round
(--rounds: each round a cold run where asked, a warm-up, then --runs timed runs, per tree), so that the two see the
same machine; start_s and start_cold_triton_s are then medians over the rounds, the single runs listed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def command(a) -> list[str]:
    return [
        sys.executable,
        "-m",
        "yi_cli",
        "--model",
        a.model,
        "--device",
        a.device,
        "--engine",
        a.engine,
        "--max-new-tokens",
        "1",
        "--temperature",
        "0",
        "-p",
        a.prompt,
    ]


def first_token(cmd: list[str], env: dict, importtime: bool = False, cwd: Path | None = None) -> tuple[float, str]:
    """(seconds from exec to the first stdout byte, stderr text). The process runs to its end either way."""
    if importtime:
        cmd = [cmd[0], "-X", "importtime", *cmd[1:]]
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        byte = p.stdout.read(1)
        t = time.perf_counter() - t0
        p.stdout.read()
        code = p.wait()
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    if code != 0 or not byte:
        tail = [ln for ln in text.splitlines() if not ln.startswith("import time:")][-5:]
        sys.exit(f"bench_start: {' '.join(cmd)} exited {code} with no reply: {' | '.join(tail)}")
    return t, text


def start(cmd: list[str], tree: Path, cold: bool = False, importtime: bool = False) -> tuple[float, str]:
    """first_token of a fresh process of `tree`'s yi_cli (cold: on an empty Triton cache). It runs in the tree:
    `python -m` puts the working directory ahead of PYTHONPATH, so run from another checkout it would import that
    checkout's yi_cli."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not cold:
        return first_token(cmd, env, importtime, cwd=tree)
    with tempfile.TemporaryDirectory() as cache:
        return first_token(cmd, dict(env, TRITON_CACHE_DIR=cache), importtime, cwd=tree)


def import_table(stderr: str) -> tuple[float, dict, list]:
    """(sum of self times, self time per top-level package, the ten largest cumulative times) in seconds."""
    rows = [(int(m[1]), int(m[2]), m[4]) for m in map(IMPORT_LINE.match, stderr.splitlines()) if m]
    per: dict[str, int] = {}
    for own, _, name in rows:
        per[name.split(".")[0]] = per.get(name.split(".")[0], 0) + own
    top = sorted(rows, key=lambda r: -r[1])[:10]
    packages = {k: round(v / 1e6, 3) for k, v in sorted(per.items(), key=lambda kv: -kv[1])[:12]}
    return (
        round(sum(per.values()) / 1e6, 3),
        packages,
        [{"module": n, "cumulative_s": round(c / 1e6, 3)} for _, c, n in top],
    )


def versions() -> dict:
    v = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "tokenizers", "triton"):
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return v


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, check=True
            )
            return out.stdout.splitlines()[0].strip()
        except (OSError, subprocess.CalledProcessError, IndexError):
            return device
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def rounds(trees: dict, rounds_n: int, runs: int, cold: bool, time_start) -> dict:
    """Each tree's start times, the trees alternating round by round: {name: {"cold": [...], "runs": [...]}}.
    time_start(tree, cold) times one fresh process (cold: on an empty Triton cache); each round gives a tree one
    cold run where asked, one warm-up (untimed: page cache, demo conversion, Triton cache) and `runs` timed ones."""
    out: dict = {name: {"cold": [], "runs": []} for name in trees}
    for _ in range(rounds_n):
        for name, tree in trees.items():
            if cold:
                out[name]["cold"].append(time_start(tree, True))
            time_start(tree, False)
            out[name]["runs"].extend(time_start(tree, False) for _ in range(runs))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--engine", default="fast", choices=["fast", "generate", "auto"])
    ap.add_argument("--prompt", default="hi")
    ap.add_argument("--runs", type=int, default=3, help="timed runs (the median is start_s); one warm-up before")
    ap.add_argument("--cold-triton", action="store_true", help="also one run with an empty TRITON_CACHE_DIR")
    ap.add_argument("--against", metavar="TREE", help="another checkout whose yi_cli is timed alternately")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of (cold, warm-up, runs) per tree, alternating")
    a = ap.parse_args(argv)
    if Path(a.model).exists():  # the processes run in their trees
        a.model = str(Path(a.model).resolve())
    cmd = command(a)
    trees = {"this": ROOT} | ({"against": Path(a.against).resolve()} if a.against else {})
    times = rounds(trees, a.rounds, a.runs, a.cold_triton, lambda tree, cold: start(cmd, tree, cold)[0])
    common = {"device": device_name(a.device), "model": a.model, "engine": a.engine, "versions": versions()}
    for name, tree in trees.items():
        row = dict(common)
        if a.against:
            row["tree"] = str(tree)
        cold, runs = times[name]["cold"], times[name]["runs"]
        if cold:
            row["start_cold_triton_s"] = round(statistics.median(cold), 2)
            if len(cold) > 1:
                row["start_cold_triton_runs_s"] = [round(t, 2) for t in cold]
        row["start_s"] = round(statistics.median(runs), 2)
        row["start_runs_s"] = [round(t, 2) for t in runs]
        t, stderr = start(cmd, tree, importtime=True)
        row["imports_s"], row["packages_s"], row["top_imports"] = import_table(stderr)
        row["start_importtime_s"] = round(t, 2)  # -X importtime itself adds time: not comparable to start_s
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

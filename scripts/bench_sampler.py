"""The graphed sampler alone (yi_cli/kernels/nucleus.py), CUDA: µs a call (bench_parts.graph_time_us: the median
over replays of a CUDA graph of 20 calls), for Yi's vocabulary (64000) at several settings over flat, peaked and
in-between logits; with --against, another revision's nucleus.py beside it (its `sample` without the `work`
argument, as before the one-launch kernel) and how often the two pick the same token over --steps steps of the
noise.

    python scripts/bench_sampler.py [--against c445020 | --against /path/to/nucleus.py] [--steps 200]

One JSON line per setting and kind of logits, then a summary line.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_parts import graph_time_us  # noqa: E402

from yi_cli.engines.settings import GenSettings  # noqa: E402
from yi_cli.kernels import nucleus  # noqa: E402
from yi_cli.runtime.sampling import Sampler  # noqa: E402

VOCAB = 64000
SETTINGS = {  # temperature, top_p, top_k, repetition penalty
    "default": (0.6, 0.8, 0, 1.2),
    "greedy": (0.0, 0.8, 0, 1.2),
    "top_k 40": (0.9, 0.95, 40, 1.1),
    "top_p 0.05": (1.0, 0.05, 0, 1.0),
    "top_k 3000": (1.3, 0.5, 3000, 1.0),
}
KINDS = {"flat": 0.5, "lm": 3.0, "peaked": 8.0}  # standard deviation of the logits


def load_other(spec: str):
    """nucleus.py of a revision (git show REV:...) or of a file path, as a module of its own."""
    path = Path(spec)
    if not path.is_file():
        src = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{spec}:yi_cli/kernels/nucleus.py"], capture_output=True, text=True
        )
        if src.returncode != 0:
            raise SystemExit(f"bench_sampler: cannot read nucleus.py at {spec}: {src.stderr.strip()}")
        path = Path(tempfile.mkdtemp()) / "nucleus_other.py"
        path.write_text(src.stdout)
    spec_ = importlib.util.spec_from_file_location("nucleus_other", path)
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    return mod


def case(settings: GenSettings, scale: float) -> tuple[Sampler, torch.Tensor, torch.Tensor]:
    """A sampler reset for `settings` over a prompt's ids (the penalty applies to them), logits of standard
    deviation `scale` (seeded) and the output slot."""
    sm = Sampler(VOCAB, "cuda")
    sm.reset(settings, list(range(0, 2000, 7)))
    g = torch.Generator(device="cuda").manual_seed(1)
    logits = torch.randn(1, VOCAB, device="cuda", generator=g) * scale
    return sm, logits, torch.zeros(1, dtype=torch.long, device="cuda")


def caller(mod, sm: Sampler, logits, out):
    if len(inspect.signature(mod.sample).parameters) == 5:
        return lambda: mod.sample(logits, sm.seen, sm.params, sm.rng, out)
    return lambda: mod.sample(logits, sm.seen, sm.params, sm.rng, out, sm.work())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", help="a git revision or a nucleus.py file to compare with")
    ap.add_argument("--steps", type=int, default=200, help="noise steps compared with --against")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_sampler: needs CUDA", file=sys.stderr)
        return 2
    other = load_other(a.against) if a.against else None
    rows = []
    for name, (temp, top_p, top_k, pen) in SETTINGS.items():
        settings = GenSettings(temperature=temp, top_p=top_p, top_k=top_k, repetition_penalty=pen, seed=5)
        for kind, scale in KINDS.items():
            sm, logits, out = case(settings, scale)
            seen, rng = sm.seen.clone(), sm.rng.clone()
            fns = {"us": caller(nucleus, sm, logits, out)}
            if other is not None:
                fns["other_us"] = caller(other, sm, logits, out)
            row = {"setting": name, "logits": kind}
            if other is not None:
                same = 0
                for step in range(a.steps):
                    picks = []
                    for fn in fns.values():
                        sm.seen.copy_(seen)
                        sm.rng.copy_(rng)
                        sm.rng[1] = step
                        fn()
                        picks.append(int(out))
                    same += picks[0] == picks[1]
                row["same_picks"] = f"{same}/{a.steps}"
            for key, fn in fns.items():
                row[key] = round(graph_time_us(fn), 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "vocab": VOCAB}
    if other is not None:
        summary["same_picks"] = f"{sum(int(r['same_picks'].split('/')[0]) for r in rows)}/{a.steps * len(rows)}"
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

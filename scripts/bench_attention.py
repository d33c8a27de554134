"""The decode attention's share of a CUDA decode step: graph-replayed step time at several attended lengths, and a
verify's cost in steps, with decode_attn.decode_attention as shipped (`tile`: up to decode_attn.SHORT slots one tile
a program), with every length on the looping kernel (`loop`: decode_attn.SHORT = 0, the path before), and with no
attention at all (`none`: the query passed through, the bound on what attention can still give), with the split
kernel and no merge (`nomerge`: the query passed on to o, the bound on what folding the merge into o's staging of x
could give), with N of a verify's tokens a short-attention program (`ttN`), or with the short attention's launch
knobs (`split=N` slots a program, `sw=N` its warps, `mw=N` the merge's warps, joined by `+`).

    python scripts/bench_attention.py --path /tmp/yi-bench/yi-6b-awq
    python scripts/bench_attention.py --path /tmp/yi-bench/yi-34b-awq --variants tile,split=128,sw=4 --no-verify
Prints one JSON line per (round, variant): step_us by length, verify_ratio "length/rows" (verify graph / step;
left out with --no-verify).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from yi_cli.checkpoint.loader import open_checkpoint  # noqa: E402
from yi_cli.engines.settings import GenSettings  # noqa: E402
from yi_cli.kernels import decode_attn  # noqa: E402
from yi_cli.runtime.decoder import VERIFY_ROWS, FastDecoder  # noqa: E402

NAMES = (  # what a variant sets
    "SHORT",
    "VERIFY_TT",
    "decode_attention",
    "SHORT_SPLIT",
    "SHORT_WARPS",
    "MERGE_WARPS",
    "_attn_merge_tile",
    "_attn_merge",
)
SHIPPED = {n: getattr(decode_attn, n, None) for n in NAMES}  # the kernels are None without Triton
# the short-attention launch knobs a variant may set: split=N slots a program, sw=N its warps, mw=N the merge's warps
KNOBS = {"split": "SHORT_SPLIT", "sw": "SHORT_WARPS", "mw": "MERGE_WARPS"}


class _NoLaunch:
    """A kernel stand-in whose launches do nothing (`nomerge`'s merges)."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def _split_only(qg, kc, vc, pos, length):
    """The shipped split kernel's launch for these tokens (its merge a _NoLaunch), the query passed on to o."""
    SHIPPED["decode_attention"](qg, kc, vc, pos, length)
    return qg


def settings(variant: str) -> dict:
    """decode_attn's attributes a variant sets: tile (as shipped), loop, none, ttN, or knobs as `split=128+sw=4+mw=1`; a
    ValueError for a variant it does not know."""
    if re.fullmatch(r"tt[0-9]+", variant):  # ttN: N of a verify's tokens a short-attention program, every row count
        return {"VERIFY_TT": dict.fromkeys(decode_attn.VERIFY_TT, int(variant[2:]))}
    if variant == "loop":
        return {"SHORT": 0}
    if variant == "none":
        return {"decode_attention": lambda qg, kc, vc, pos, length: qg}
    if variant == "nomerge":
        return {"decode_attention": _split_only, "_attn_merge_tile": _NoLaunch(), "_attn_merge": _NoLaunch()}
    if "=" in variant:
        out = {}
        for part in variant.split("+"):
            key, _, value = part.partition("=")
            if key not in KNOBS or not value.isdigit() or int(value) & (int(value) - 1) or int(value) == 0:
                raise ValueError(f"{part!r}: one of {', '.join(KNOBS)} = a power of two")
            out[KNOBS[key]] = int(value)
        return out
    if variant != "tile":
        raise ValueError(f"unknown variant {variant!r} (tile, loop, none, nomerge, ttN or split=N+sw=N+mw=N)")
    return {}


def use(variant: str) -> None:
    """Set decode_attn up for one variant (`settings`)."""
    for name, value in {**SHIPPED, **settings(variant)}.items():
        setattr(decode_attn, name, value)


def variants(text: str) -> list[str]:
    """--variants: comma-separated, each one `settings` knows (else a usage error, before the model loads)."""
    names = text.split(",")
    for variant in names:
        try:
            settings(variant)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return names


def replay_us(run, n: int) -> float:
    for _ in range(3):
        run()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        run()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) * 1e3 / n


@torch.inference_mode()
def step_us(dec, length: int, n: int = 100) -> float:
    """One decode step attending to `length` slots (its bucket's graph), from position length - n - 50 on."""
    dec.pos.fill_(length - n - 50)
    return replay_us(lambda: dec.graphs.replay(length), n)


@torch.inference_mode()
def verify_us(dec, pos: int, rows: int) -> float:
    dec._verify(100, pos, list(range(200, 200 + rows - 1)), True)  # captures (rows, bucket, greedy)'s graph
    length = dec.graphs.bucket(pos + VERIFY_ROWS[-1])
    g = dec.vgraphs[rows, length, True]
    return replay_us(lambda: g.replay(length), 50)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", required=True)
    ap.add_argument("--variants", type=variants, default="tile,loop,none")
    ap.add_argument("--lengths", type=int, nargs="+", default=[200, 768, 1800, 3000, 4000])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-verify", action="store_true", help="step times only (no verify ratios)")
    a = ap.parse_args(argv)
    dec = FastDecoder(open_checkpoint(a.path, device="cuda", dtype="bf16"))
    warm = GenSettings(max_new_tokens=2, temperature=0)
    list(dec.generate(list(range(100, 612)), warm, threading.Event(), set()))
    for rnd in range(a.rounds):
        for variant in a.variants:
            use(variant)
            dec.graphs = None
            dec.graphs, dec.vgraphs = dec._graphed(), {}  # captured with this variant's kernels
            steps = {n: round(step_us(dec, n), 1) for n in a.lengths}
            ratios = {}
            if variant not in ("none", "nomerge") and not a.no_verify:
                for n in (768, 1800, 3000):
                    for rows in VERIFY_ROWS:
                        ratios[f"{n}/{rows}"] = round(verify_us(dec, n - 150, rows) / step_us(dec, n), 3)
            row = {"device": torch.cuda.get_device_name(), "round": rnd, "variant": variant, "step_us": steps}
            print(json.dumps({**row, "verify_ratio": ratios}), flush=True)
    use("tile")
    return 0


if __name__ == "__main__":
    sys.exit(main())

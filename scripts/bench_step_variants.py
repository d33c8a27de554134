"""The graphed decode step recaptured with other gemv_mma launch configurations for some of a layer's matmuls: µs a
step at one attended length, variants interleaved over rounds (CUDA; the configurations gemv_mma.config ships are
the variant `shipped`).

    python3 scripts/bench_step_variants.py --path /tmp/yi-bench/yi-34b-awq \\
        --variant down=1,4,3,1,2 --variant o=1,4,3,1,2 --variant qkv=1,4,3,1,2+o=1,4,3,1,2,6

A variant is MATMUL=RT,WARPS,AHEAD,XAHEAD,PAIR[,UNROLL] or MATMUL=KNOB=VALUE, joined by '+' (MATMUL: qkv, o, gate_up,
down, head: the lm_head's GEMV where the step has one, `head=off` for cuBLAS after the final norm's launch; the
numbers as gemv_mma.config returns them, UNROLL AHEAD where it is left out; KNOB: early (the epilogue reads issued
early, bits of gemv_mma.NORM, RESIDUAL, POS, AT_END), gather (0 or 1) or regs (ptxas's register cap, 0 for none), in
place of what gemv_mma.early_reads, gather_sums and max_registers return). Prints one JSON line per (round,
variant) and a summary line of each variant's medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from yi_cli.kernels import gemv_mma  # noqa: E402

MATMULS = ("qkv", "o", "gate_up", "down", "head")
KNOBS = {"early": "early_reads", "gather": "gather_sums", "regs": "max_registers"}  # MATMUL=KNOB=VALUE
SHIPPED = gemv_mma.config
SHIPPED_KNOBS = {knob: getattr(gemv_mma, fn) for knob, fn in KNOBS.items()}
OVER: dict[tuple[int, int, int], dict] = {}  # (n, k, bits) -> {"config": (...), "early": 18, ...}


def config(n: int, k: int, bits: int = 4) -> tuple[int, ...]:
    return OVER.get((n, k, bits), {}).get("config") or SHIPPED(n, k, bits)


def _knob(knob: str):
    def value(n: int, k: int, bits: int = 4):
        over = OVER.get((n, k, bits), {})
        return over[knob] if knob in over else SHIPPED_KNOBS[knob](n, k, bits)

    value.__name__ = KNOBS[knob]
    return value


KNOB_FNS = {knob: _knob(knob) for knob in KNOBS}


def parse(spec: str) -> dict[str, dict]:
    """'down=1,4,3,1,2+o=early=18+o=gather=0' -> {'down': {'config': (1, 4, 3, 1, 2, 3)}, 'o': {'early': 18,
    'gather': 0}}."""
    out: dict[str, dict] = {}
    for part in spec.split("+"):
        name, _, nums = part.partition("=")
        if name not in MATMULS:
            raise ValueError(f"unknown matmul {name!r} in {spec!r} (one of {', '.join(MATMULS)})")
        if name == "head" and nums == "off":
            out.setdefault(name, {})["off"] = True
            continue
        knob, eq, value = nums.partition("=")
        if eq:
            if knob not in KNOBS:
                raise ValueError(f"{part!r}: unknown knob {knob!r} (one of {', '.join(KNOBS)})")
            out.setdefault(name, {})[knob] = int(value)
            continue
        cfg = tuple(int(v) for v in nums.split(","))
        if len(cfg) not in (5, 6):
            raise ValueError(f"{part!r}: five or six numbers RT,WARPS,AHEAD,XAHEAD,PAIR[,UNROLL]")
        out.setdefault(name, {})["config"] = cfg if len(cfg) == 6 else cfg + (cfg[2],)
    return out


def variant_spec(text: str) -> str:
    """--variant: a spec `parse` takes (else a usage error, before anything loads)."""
    try:
        parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def shapes(layer, head=None) -> dict[str, tuple[int, int, int]]:
    """(n, k, bits) of each matmul of a layer and of the lm_head's GEMV `head` (projections.Dense, or None), as
    gemv_mma.config sees them (bits 16: dense weights)."""
    out = {}
    for name in MATMULS:
        lin = head if name == "head" else getattr(layer, name)
        if lin is None:
            continue
        if hasattr(lin, "planes"):  # int4 codes in gemv_mma's layout, or int8 codes as stored (uint8), as gemv_mma
            bits = 8 if lin.planes[0][0].dtype.itemsize == 1 else 4
        else:
            bits = 16
        out[name] = (lin.n, lin.k, bits)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", required=True, help="a checkpoint (scripts/make_checkpoint.py)")
    ap.add_argument(
        "--variant",
        type=variant_spec,
        action="append",
        default=[],
        help="MATMUL=RT,WARPS,AHEAD,XAHEAD,PAIR[,UNROLL][+...]",
    )
    ap.add_argument("--length", type=int, default=768, help="slots attended (its bucket's graph)")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args(argv)
    variants = {"shipped": {}}
    for spec in a.variant:
        variants[spec] = parse(spec)

    import torch

    from yi_cli.checkpoint.loader import open_checkpoint
    from yi_cli.engines.settings import GenSettings
    from yi_cli.runtime.decoder import FastDecoder

    gemv_mma.config = config
    for knob, fn in KNOBS.items():
        setattr(gemv_mma, fn, KNOB_FNS[knob])
    dec = FastDecoder(open_checkpoint(a.path, device="cuda", dtype="auto"))
    list(dec.generate(list(range(100, 612)), GenSettings(max_new_tokens=4, seed=0), threading.Event(), set()))
    model = dec.model
    at = shapes(model.layers[0], model.head_proj if model.head_gemv else None)
    for over in variants.values():
        if set(over) - set(at):
            raise SystemExit(f"bench_step_variants.py: this step has no GEMV for {', '.join(set(over) - set(at))}")
    head_gemv = model.head_gemv
    res: dict[str, list[float]] = {}
    for rnd in range(a.rounds):
        for name, over in variants.items():
            OVER.clear()
            OVER.update({at[m]: cfg for m, cfg in over.items()})
            model.head_gemv = head_gemv and not over.get("head", {}).get("off")
            dec.graphs = None
            dec.graphs = dec._graphed()  # captured with this variant's launches
            with torch.inference_mode():
                dec.pos.fill_(a.length - 330)  # 320 steps below follow: they end at the length
            for _ in range(20):
                dec.graphs.replay(a.length)
            torch.cuda.synchronize()
            times = []
            for _ in range(15):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(20):
                    dec.graphs.replay(a.length)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) * 1e3 / 20)
            res.setdefault(name, []).append(round(statistics.median(times), 1))
            row = {"device": torch.cuda.get_device_name(), "model": a.path, "round": rnd, "variant": name}
            print(json.dumps({**row, "step_us": res[name][-1]}), flush=True)
    OVER.clear()
    model.head_gemv = head_gemv
    print(json.dumps({"length": a.length, "shapes": {m: list(s) for m, s in at.items()}, "step_us": res}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

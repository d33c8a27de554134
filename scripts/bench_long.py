"""Long-context benchmark (issue 18): TTFT of long prompts, decode tok/s deep into the context, peak memory, and
the decode-attention kernel alone at 100K per split size. One JSON line per measurement.

    python scripts/make_checkpoint.py --format awq --shape yi-6b --out DIR
    # Yi-6B-200K: set "max_position_embeddings": 200000 in DIR/config.json (rope theta 5e6 is already Yi-200K's)
    python scripts/bench_long.py --model DIR [--ttft 32768 131072] [--decode-at 100000]

Peak memory is torch.cuda.max_memory_allocated (GiB, 2**30 bytes) from the start of that prompt's turn, the weights
included. Prompts are random ids (the speed of a random model is the speed of the real one of its shape).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# scripts/ is sys.path[0] when this runs as a script
import llama_cpp_peer  # noqa: E402

from yi_cli.checkpoint.loader import open_checkpoint  # noqa: E402
from yi_cli.engines.settings import GenSettings  # noqa: E402
from yi_cli.kernels import decode_attn  # noqa: E402
from yi_cli.runtime import kvcache  # noqa: E402
from yi_cli.runtime.decoder import FastDecoder  # noqa: E402

GIB = 2**30
KNOBS = ("LONG_SPLIT", "LONG_BLOCK", "LONG_WARPS", "LONG_STAGES")  # decode_attn's long tuning


def tune(values) -> None:
    """Set attention's long decode-attention knobs (split, block, warps, stages)."""
    for n, v in zip(KNOBS, list(values), strict=True):
        setattr(decode_attn, n, v)


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def turn(dec: FastDecoder, ids: list[int], new: int) -> dict:
    """One reply of `new` greedy tokens: time to first token, decode tok/s after it, peak memory."""
    torch.cuda.reset_peak_memory_stats()
    settings = GenSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=new)
    t0 = time.perf_counter()
    times = [time.perf_counter() for _ in dec.generate(ids, settings, threading.Event(), set())]
    return {
        "prompt_tokens": len(ids),
        "ttft_s": round(times[0] - t0, 3),
        "prefill_tok_s": round(len(ids) / (times[0] - t0)),
        "new_tokens": len(times),
        # from the second step on: the first step of a new cache size captures its CUDA graph
        "decode_tok_s": round((len(times) - 2) / (times[-1] - times[1]), 1),
        "peak_gib": round(torch.cuda.max_memory_allocated() / GIB, 2),
        "cache_slots": dec.model.k_cache[0].shape[2],
    }


def attention_alone(dec: FastDecoder, context: int, sweep: bool) -> None:
    """decode_attn.decode_attention over one layer's cache at `context` slots (CUDA events), per long split size; with
    sweep, per split x slots per iteration x warps x pipeline stages."""
    m = dec.model
    kc, vc = m.k_cache[0], m.v_cache[0]
    q = torch.randn(1, m.n_kv, m.n_heads // m.n_kv, m.hd, device="cuda", dtype=m.dtype)
    pos = torch.tensor([context - 1], device="cuda")
    length = dec.graphs.bucket(context)
    moved = 2 * m.n_kv * context * m.hd * m.dtype.itemsize  # K and V read once
    default = tuple(getattr(decode_attn, n) for n in KNOBS)
    grid = [(s, *default[1:]) for s in (128, 256, 512, 1024)]
    if sweep:
        grid = [(s, b, w, st) for s in (256, 512, 1024, 2048) for b in (64, 128) for w in (4, 8) for st in (2, 3, 4)]
    for config in grid:
        tune(config)
        try:
            for _ in range(3):
                decode_attn.decode_attention(q, kc, vc, pos, length)
        except Exception as e:  # a configuration the compiler refuses (shared memory): skip it
            emit(what="decode_attention_one_layer", config=config, error=str(e).splitlines()[0][:120])
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(100):
            decode_attn.decode_attention(q, kc, vc, pos, length)
        end.record()
        end.synchronize()
        us = start.elapsed_time(end) * 10  # ms per 100 -> us per call
        split, block, warps, stages = config
        emit(
            what="decode_attention_one_layer",
            context=context,
            bucket=length,
            split=split,
            block=block,
            warps=warps,
            stages=stages,
            programs=m.n_kv * -(-length // split),
            us=round(us, 1),
            tb_s=round(moved / us / 1e6, 2),
            default=config == default,
        )
    tune(default)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--ttft", type=int, nargs="*", default=[32768, 131072], help="prompt lengths (tokens)")
    ap.add_argument("--decode-at", type=int, default=100000, help="context length of the decode measurement")
    ap.add_argument("--new", type=int, default=128, help="tokens per reply")
    ap.add_argument(
        "--peer-gguf", type=Path, help="also llama.cpp CUDA on this GGUF (scripts/llama_cpp_peer.py, DEVELOPERS.md)"
    )
    ap.add_argument(
        "--long-config",
        help="SPLIT,BLOCK,WARPS,STAGES: the long decode-attention tuning to use (default: decode_attn's LONG_*)",
    )
    ap.add_argument("--sweep", action="store_true", help="time the decode-attention kernel's tuning grid at 100K")
    a = ap.parse_args(argv)
    if a.long_config:
        tune(int(v) for v in a.long_config.split(","))
    t0 = time.perf_counter()
    ckpt = open_checkpoint(a.model, device="cuda", dtype=torch.bfloat16)
    dec = FastDecoder(ckpt)
    name = Path(a.model).name
    emit(
        what="load",
        model=name,
        load_s=round(time.perf_counter() - t0, 1),
        context=dec.max_seq,
        model_context=ckpt.context_length,
        cache_slots=dec.model.k_cache[0].shape[2],
        kv_bytes_per_token=kvcache.token_bytes(dec.model),
        allocated_gib=round(torch.cuda.memory_allocated() / GIB, 2),
        gpu=torch.cuda.get_device_name(),
        torch=torch.__version__,
    )
    gen = torch.Generator().manual_seed(0)
    for n in (88, 2048):  # compile the kernels of both prefill paths and the decode graph before timing
        turn(dec, torch.randint(10, 64000, (n,), generator=gen).tolist(), 4)
    longest: list[int] = []
    for n in a.ttft:
        ids = torch.randint(10, 64000, (n,), generator=gen).tolist()
        emit(what="ttft", model=name, **turn(dec, ids, a.new))
        longest = max(longest, ids, key=len)
    if len(longest) >= a.decode_at:
        ids = longest[: a.decode_at]  # the cached prefix: a one-token prefill, then decode at this depth
        turn(dec, ids, 4)  # the bucket's graph captured
        emit(what="decode", model=name, context=a.decode_at, **turn(dec, ids, a.new))
        attention_alone(dec, a.decode_at, a.sweep)
    if a.peer_gguf:
        emit(what="llama.cpp", gguf=str(a.peer_gguf), **llama_cpp_peer.long_context(a.peer_gguf, depth=a.decode_at))
    short = longest[:1024]
    turn(dec, short, 4)
    emit(what="decode", model=name, context=1024, **turn(dec, short, a.new))
    return 0


if __name__ == "__main__":
    sys.exit(main())

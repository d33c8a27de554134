"""Decode benchmark: the seed recipe (transformers generate in a thread, TextIteratorStreamer) vs FastDecoder.

GPU (Yi-shaped random checkpoints, built once under --dir by scripts/make_checkpoint.py):
    python scripts/bench.py --device cuda --quant awq gptq8 fp16 [--shape yi-6b]
CPU (the demo model, and llama.cpp on its GGUF when `llama_cpp` is importable):
    python scripts/bench.py --device cpu --model demo
One JSON line per configuration. Peak memory is torch.cuda.max_memory_allocated in GiB (2**30 bytes).
ready_s: load to the first token in a process with its imports and CUDA context up (both engines); with --start
also start_s / start_cold_jit_s: a fresh interpreter to its first token, the Triton cache warm / empty.
The seed recipe here runs on the model yi_cli.load returns: for AWQ/GPTQ that is yi-chat's own quantized
modules (qlinear.py) under plain eager `generate`, since GPTQModel/Marlin cannot be installed on the device.
llama.cpp CUDA in the same run (--peer, on by default when ../shared/peers and a build in $LCPP are there; see
scripts/llama_cpp_peer.py and DEVELOPERS.md): the AWQ row gets llama_cpp_decode_tok_s (Q4_0, tg256 at depth 512),
llama_cpp_pp2048_s, llama_cpp_q4_k_m_decode_tok_s and vs_llama_cpp, or llama_cpp_skipped with the reason. The GGUF
files come from the fp16 checkpoint of the same shape, converted once into <dir>/<shape>-gguf. Its weights are
not the AWQ checkpoint's: make_checkpoint.py draws both from seed 0, but AWQ draws packed codes and fp16 normal
weights, so only the embedding matches. Same shapes and about the same bytes per token (Q4_0 3.48 GB, AWQ 3.5 GB
for Yi-6B): decode speed does not depend on the values.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# scripts/ is sys.path[0] when this runs as a script
import llama_cpp_peer  # noqa: E402

import yi_cli  # noqa: E402
from yi_cli.checkpoint.loader import open_checkpoint, resolve  # noqa: E402
from yi_cli.engines.settings import GenSettings  # noqa: E402
from yi_cli.runtime.decoder import FastDecoder  # noqa: E402

# the seed recipe's sampling defaults (temperature 0.6, top_p 0.8, penalty 1.2); yi-chat's engine decodes one token a
# step (speculation off: its gain depends on the text, which bench_speculate.py measures on real text)
SEED = GenSettings(seed=0, speculate="off")


def versions() -> dict:
    v = {"torch": torch.__version__, "python": platform.python_version()}
    import transformers

    v["transformers"] = transformers.__version__
    if torch.cuda.is_available():
        v["cuda"] = torch.version.cuda
        try:
            import triton

            v["triton"] = triton.__version__
        except ImportError:
            pass
    return v


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def random_ids(n: int, vocab: int, seed: int) -> list[int]:
    return torch.randint(10, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def seed_generate(loaded, ids: list[int], new: int, settings: GenSettings = SEED) -> list[float]:
    """The seed recipe: generate in a worker thread streaming into a TextIteratorStreamer.
    Returns the wall-clock time of each generated token (recorded by a stopping criterion, as engine.py does)."""
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    times: list[float] = []

    class Clock(StoppingCriteria):
        def __call__(self, input_ids, scores, **kw):
            times.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, timeout=600)
    x = torch.tensor([ids], device=loaded.device)
    kw = dict(
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=True,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=0,
        repetition_penalty=settings.repetition_penalty,
        streamer=streamer,
        attention_mask=torch.ones_like(x),
        stopping_criteria=StoppingCriteriaList([Clock()]),
    )
    torch.manual_seed(settings.seed or 0)
    t0 = time.perf_counter()

    def work():
        with torch.inference_mode():
            loaded.model.generate(x, **kw)

    th = threading.Thread(target=work)
    th.start()
    for _ in streamer:
        pass
    th.join()
    return [t0] + times


def fast_generate(dec, ids: list[int], new: int, settings: GenSettings = SEED, cold: bool = True) -> list[float]:
    if cold:
        dec.cached = []
    s = GenSettings(**{**settings.to_dict(), "max_new_tokens": new})
    times = [time.perf_counter()]
    for _ in dec.generate(ids, s, threading.Event(), set()):
        times.append(time.perf_counter())
    return times


def rates(times: list[float]) -> tuple[float, float]:
    """(ttft_s, decode tok/s) from [t_request, t_tok1, t_tok2, ...]."""
    ttft = times[1] - times[0]
    dec = (len(times) - 2) / (times[-1] - times[1]) if len(times) > 2 else 0.0
    return ttft, dec


def measure(run, device: str, vocab: int, new: int, ttft_lengths=(512, 2048), repeats: int = 3) -> dict:
    """TTFT medians for cold prompts of each length, then decode tok/s over `new` tokens after a 512 prompt: the
    median of `repeats` runs (a single run read up to 1% apart from the next on the H200), each run's in
    decode_runs_tok_s where there are several."""
    out = {}
    for n in ttft_lengths:
        ts = []
        for r in range(repeats):
            sync(device)
            ts.append(rates(run(random_ids(n, vocab, 100 + r), 1))[0])
        out[f"ttft_{n // 1024}k_s" if n >= 1024 else f"ttft_{n}_s"] = round(statistics.median(ts), 4)
    runs = [round(rates(run(random_ids(512, vocab, 7), new))[1], 2) for _ in range(repeats)]
    out["decode_tok_s"] = statistics.median(runs)
    if repeats > 1:
        out["decode_runs_tok_s"] = runs
    return out


def turns(dec, vocab: int, n_turns: int = 10, reply: int = 64) -> dict:
    """A conversation at the id level: each prompt = previous prompt + reply + a new 40-token user turn."""
    ids, ttft = random_ids(80, vocab, 1), []
    dec.cached = []
    for k in range(n_turns):
        times, out = [time.perf_counter()], []
        s = GenSettings(**{**SEED.to_dict(), "max_new_tokens": reply})
        for tok in dec.generate(ids, s, threading.Event(), set()):
            times.append(time.perf_counter())
            out.append(tok)
        ttft.append(times[1] - times[0])
        ids = ids + out + random_ids(40, vocab, 200 + k)
    return {
        "ttft_turn1_s": round(ttft[0], 4),
        f"ttft_turn{n_turns}_s": round(ttft[-1], 4),
        "turn10_over_turn1": round(ttft[-1] / ttft[0], 2),
        "turn10_prompt_tokens": len(ids) - 40 - reply,
    }


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def gpu_config(path: Path, quant: str, shape: str, seed_new: int, new: int, skip_seed: bool) -> dict:
    row = {"device": torch.cuda.get_device_name(), "shape": shape, "quant": quant}
    vocab = 64000
    # ready_s (both engines) counts load + warm-up in a process whose imports and CUDA context are already up;
    # start_s (--start) is a fresh process from exec to its first token
    import transformers.generation.utils  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401

    torch.zeros(1, device="cuda")
    if not skip_seed:
        free()
        t0 = time.perf_counter()
        seed = yi_cli.load(str(path), device="cuda", dtype=torch.float16)  # the seed recipe's fp16
        sync("cuda")
        row["seed_recipe_ready_s"] = round(time.perf_counter() - t0, 2)
        m = measure(lambda ids, k: seed_generate(seed, ids, k), "cuda", vocab, seed_new, repeats=1)
        row.update({f"seed_recipe_{k}": v for k, v in m.items()})
        row["seed_recipe_new_tokens"] = seed_new
        row["seed_recipe_peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        del seed
    free()
    t0 = time.perf_counter()
    ckpt = open_checkpoint(str(path), device="cuda")  # the dtype yi-chat picks (fp16; bf16 for 4-bit codes)
    row["load_s"] = round(time.perf_counter() - t0, 2)
    row["dtype"] = str(ckpt.dtype).removeprefix("torch.")
    dec = FastDecoder(ckpt)
    fast_generate(dec, random_ids(16, vocab, 0), 2)  # first call: cuBLAS handles, allocator
    sync("cuda")
    row["ready_s"] = round(time.perf_counter() - t0, 2)
    row.update(measure(lambda ids, k: fast_generate(dec, ids, k), "cuda", vocab, new))
    row.update(turns(dec, vocab))
    row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if "seed_recipe_decode_tok_s" in row:
        row["speedup"] = round(row["decode_tok_s"] / row["seed_recipe_decode_tok_s"], 1)
    row["new_tokens"] = new
    row["versions"] = versions()
    dec = ckpt = None  # frees the GPU memory before the next configuration
    return row


def cpu_demo(model: str, new: int, seed_new: int) -> list[dict]:
    path = resolve(model)
    rows, base = [], {"device": f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)", "model": model}
    t0 = time.perf_counter()
    loaded = yi_cli.load(str(path), device="cpu")
    quant = (loaded.quant or {}).get("method", "fp32")
    base["quant"] = quant
    ids = loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Write a short poem about the sea."}], add_generation_prompt=True, tokenize=True
    )
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    ttft, eager = rates(seed_generate(loaded, ids, seed_new))
    row = dict(base, engine="transformers-eager", ready_s=round(time.perf_counter() - t0, 2))
    rows.append(dict(row, ttft_s=round(ttft, 3), decode_tok_s=round(eager, 2), new_tokens=seed_new))
    t0 = time.perf_counter()
    dec = FastDecoder(loaded.checkpoint)
    init = time.perf_counter() - t0
    fast_generate(dec, ids, 2)
    ttft, tok_s = rates(fast_generate(dec, ids, new))
    rows.append(
        dict(
            base,
            engine="yi-chat-fast",
            init_s=round(init, 2),
            ttft_s=round(ttft, 3),
            decode_tok_s=round(tok_s, 2),
            seed_recipe_decode_tok_s=round(eager, 2),
            new_tokens=new,
        )
    )
    rows.append(llama_cpp_row(base, ids, new))
    for r in rows:
        r["versions"] = versions()
    return rows


def llama_cpp_row(base: dict, ids: list[int], new: int) -> dict:
    try:
        from llama_cpp import Llama
    except ImportError:
        return dict(base, engine="llama.cpp", skipped="llama_cpp is not importable")
    from yi_cli.checkpoint import demo

    llm = Llama(model_path=str(demo.gguf_path()), n_threads=os.cpu_count(), n_ctx=2048, verbose=False)
    times = [time.perf_counter()]
    for _ in llm.generate(ids, temp=SEED.temperature, top_p=SEED.top_p, repeat_penalty=SEED.repetition_penalty):
        times.append(time.perf_counter())
        if len(times) > new:
            break
    ttft, tok_s = rates(times)
    return dict(
        base, quant="gguf Q4_1", engine="llama.cpp", ttft_s=round(ttft, 3), decode_tok_s=round(tok_s, 2), new_tokens=new
    )


def ensure_checkpoint(root: Path, shape: str, fmt: str) -> Path:
    out = root / f"{shape}-{fmt}"
    if not (out / "config.json").is_file():
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "make_checkpoint.py"),
                "--format",
                fmt,
                "--shape",
                shape,
                "--out",
                str(out),
            ],
            check=True,
        )
    return out


START = """
import sys, threading, time, torch
from yi_cli.checkpoint.loader import open_checkpoint
from yi_cli.runtime.decoder import FastDecoder
from yi_cli.engines.settings import GenSettings
print(time.time() - float(sys.argv[2]))
ckpt = open_checkpoint(sys.argv[1], device="cuda")
dec = FastDecoder(ckpt)
next(dec.generate(list(range(100, 116)), GenSettings(max_new_tokens=1), threading.Event(), set()))
"""


def process_start(path: Path, cold_jit: bool) -> tuple[float, float]:
    """Seconds from a fresh interpreter's start to its first token (imports, load, graph capture), and of those
    the imports (torch, transformers); cold_jit: with an empty Triton cache, so every kernel compiles."""
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, PYTHONPATH=str(ROOT), **({"TRITON_CACHE_DIR": cache} if cold_jit else {}))
        t0, w0 = time.perf_counter(), time.time()
        out = subprocess.run(
            [sys.executable, "-c", START, str(path), repr(w0)],
            env=env,
            check=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        ).stdout
        return round(time.perf_counter() - t0, 2), round(float(out.split()[0]), 2)


def peer_fields(a, decode_tok_s: float) -> dict:
    """llama.cpp CUDA on the fp16 checkpoint of the same shape (converted to Q4_0 / Q4_K_M once), for the AWQ row."""
    skip = "--no-peer" if a.peer is False else llama_cpp_peer.available() if a.peer is None else None
    if skip:
        return {"llama_cpp_skipped": skip}
    fp16 = ensure_checkpoint(a.dir, a.shape, "fp16")
    out = llama_cpp_peer.measure(fp16, a.dir / f"{a.shape}-gguf", wait_s=a.peer_wait)
    if "llama_cpp_decode_tok_s" in out:
        out["vs_llama_cpp"] = round(decode_tok_s / out["llama_cpp_decode_tok_s"], 2)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quant", nargs="+", default=["awq", "gptq8", "fp16"], choices=["awq", "gptq8", "gptq4", "fp16"])
    ap.add_argument("--shape", default="yi-6b")
    ap.add_argument("--dir", type=Path, default=Path(os.environ.get("YI_BENCH_DIR", "/tmp/yi-bench")))
    ap.add_argument("--model", default="demo", help="CPU mode: the checkpoint (default: the demo model)")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--seed-new-tokens", type=int, default=32, help="tokens for the (slow) seed recipe's decode")
    ap.add_argument("--skip-seed", action="store_true")
    ap.add_argument(
        "--start",
        action="store_true",
        help="also time fresh processes to their first token, with the Triton cache warm and empty",
    )
    ap.add_argument(
        "--peer",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure llama.cpp CUDA for the AWQ row (default: when its script and a build in $LCPP are there)",
    )
    ap.add_argument("--peer-wait", type=float, default=900, help="seconds to wait for the llama.cpp build")
    a = ap.parse_args(argv)
    if a.device == "cpu":
        for row in cpu_demo(a.model, min(a.new_tokens, 128), a.seed_new_tokens):
            print(json.dumps(row), flush=True)
        return 0
    for q in a.quant:
        path = ensure_checkpoint(a.dir, a.shape, q)
        row = gpu_config(path, q, a.shape, a.seed_new_tokens, a.new_tokens, a.skip_seed)
        if a.start:
            row["start_cold_jit_s"], _ = process_start(path, cold_jit=True)
            row["start_s"], row["start_imports_s"] = process_start(path, cold_jit=False)
        if q == "awq":
            row.update(peer_fields(a, row["decode_tok_s"]))
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""llama.cpp (CUDA) measured in the same run as yi-chat: a thin wrapper around `llama-cpp-cuda.sh`.

That script (not part of the project; ../shared/peers/ beside the checkout) builds llama.cpp from a trimmed source
(`build`), turns an HF fp16 checkpoint into f16 / Q4_0 / Q4_K_M GGUF files (`gguf HF_DIR OUT_DIR`) and runs
llama-bench with `-ngl 99 -fa 1 -r 3 -o jsonl` (`bench GGUF ARGS..`: one JSON line per test). Where things are:

  script     $YI_PEERS (a folder holding llama-cpp-cuda.sh), else <repo>/.carry/peers (the copy DEVELOPERS.md
             brings to the GPU machine), else <repo>/../shared/peers (the developers' machine)
  build      $LCPP (default /tmp/lcpp): llama.cpp/build/bin/llama-bench; $LCPP/build.done holds the build's exit code
  tokenizer  $YI_PEER_TOKENIZER (a folder), else <repo>/.carry/tokenizer, else the demo model's converted folder
             (<yi-chat cache>/demo/demo). convert_hf_to_gguf accepts only tokenizers it recognises; the Yi-shaped
             random checkpoints carry a byte-level one it does not, so the conversion reads the checkpoint's
             weights through symlinks in a staging folder that holds the demo's (SmolLM2) tokenizer instead: the
             checkpoint itself is left as it is. Yi's vocab_size 64000 > 49152 is padded with unused tokens.

Nothing here raises for a missing peer: every step returns a `Skipped` reason (a str) instead, which a benchmark
row records as `llama_cpp_skipped`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "llama-cpp-cuda.sh"
BENCH_BIN = Path("llama.cpp/build/bin/llama-bench")
QUANTIZE_BIN = Path("llama.cpp/build/bin/llama-quantize")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# What the conversion reads from the fp16 checkpoint (linked, not copied: the Yi-6B shape is 12 GB).
WEIGHT_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")
# The AWQ row: Q4_0 pp2048 from an empty cache (yi-chat's ttft_2k_s) and tg256 after 512 tokens (its
# decode_tok_s: 256 tokens after a 512-token prompt). One run, one model load; -d 0,512 also yields pp2048@512
# and tg256@0, unused (about a second on an H200).
DECODE_ARGS = ("-p", "2048", "-n", "256", "-d", "0,512")
Q4_K_M_ARGS = ("-p", "0", "-n", "256", "-d", "512")


class Skipped(str):
    """Why llama.cpp was not measured, in one line; returned, never raised."""


def lcpp() -> Path:
    return Path(os.environ.get("LCPP") or "/tmp/lcpp")


def script() -> Path | Skipped:
    env = os.environ.get("YI_PEERS")
    places = [Path(env)] if env else [ROOT / ".carry" / "peers", ROOT.parent / "shared" / "peers"]
    for d in places:
        if (d / SCRIPT).is_file():
            return d / SCRIPT
    return Skipped(f"no {SCRIPT} in {' or '.join(map(str, places))} (DEVELOPERS.md: bring ../shared/peers along)")


def available() -> Skipped | None:
    """None when the script exists and a build is done or under way in $LCPP (no waiting)."""
    s = script()
    if isinstance(s, Skipped):
        return s
    if not lcpp().is_dir():
        return Skipped(f"no llama.cpp build in {lcpp()} (start one: setsid {s} build &)")
    return None


def wait_build(timeout: float = 900.0, poll: float = 5.0) -> Skipped | None:
    """Wait for the background build (`llama-cpp-cuda.sh build`) to write $LCPP/build.done; None when it built."""
    root, deadline = lcpp(), time.monotonic() + timeout
    done = root / "build.done"
    while True:
        rc = done.read_text().strip() if done.is_file() else ""
        if rc:  # empty: not written yet (or caught mid-write)
            break
        if not root.is_dir():
            return Skipped(f"no llama.cpp build in {root}")
        if time.monotonic() >= deadline:
            return Skipped(f"the llama.cpp build in {root} did not finish within {timeout:.0f} s")
        time.sleep(poll)
    if rc != "0":
        return Skipped(f"the llama.cpp build failed (exit {rc}; see {root / 'build.log'})")
    if not (root / BENCH_BIN).is_file():
        return Skipped(f"the llama.cpp build in {root} has no {BENCH_BIN}")
    return None


def tokenizer_dir(explicit: Path | None = None) -> Path | Skipped:
    env = os.environ.get("YI_PEER_TOKENIZER")
    if explicit or env:
        places = [Path(explicit or env)]
    else:
        places = [ROOT / ".carry" / "tokenizer"]
        try:
            from yi_cli.paths import cache_dir

            places.append(cache_dir() / "demo" / "demo")
        except ImportError:  # yi_cli is not on sys.path (bench.py puts it there)
            pass
    for d in places:
        if (d / "tokenizer.json").is_file():
            return d
    return Skipped(f"no demo tokenizer (tokenizer.json) in {' or '.join(map(str, places))}")


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess | Skipped:
    s = script()
    if isinstance(s, Skipped):
        return s
    # The script calls `python3` for convert_hf_to_gguf: make that the interpreter running this (torch, transformers).
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    try:
        return subprocess.run(
            ["bash", str(s), *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return Skipped(f"{SCRIPT} {args[0]} ran past {timeout:.0f} s")


def gguf(fp16_dir: Path, out_dir: Path, tokenizer: Path | None = None, timeout: float = 1800.0) -> Path | Skipped:
    """out_dir holding q4_0.gguf and q4_k_m.gguf made from the fp16 checkpoint, converted once (the ~12 GB f16.gguf
    between them is deleted); later calls return the cached folder."""
    fp16_dir, out_dir = Path(fp16_dir), Path(out_dir)
    if (out_dir / "q4_0.gguf").is_file() and (out_dir / "q4_k_m.gguf").is_file():
        return out_dir
    tok = tokenizer_dir(tokenizer)
    if isinstance(tok, Skipped):
        return tok
    if not (lcpp() / QUANTIZE_BIN).is_file():
        return Skipped(f"no {QUANTIZE_BIN} in {lcpp()}")
    tmp = out_dir.parent / f".{out_dir.name}.tmp"  # renamed into place only when both files exist
    shutil.rmtree(tmp, ignore_errors=True)
    stage = tmp / "hf"
    stage.mkdir(parents=True)
    for f in fp16_dir.iterdir():
        if f.name in WEIGHT_FILES or f.suffix == ".safetensors":
            (stage / f.name).symlink_to(f.resolve())
    for name in TOKENIZER_FILES:
        if (tok / name).is_file():
            shutil.copyfile(tok / name, stage / name)
    p = _run(["gguf", str(stage), str(tmp / "gguf")], timeout)
    if isinstance(p, Skipped):
        return p
    made = tmp / "gguf"
    if p.returncode != 0 or not (made / "q4_0.gguf").is_file() or not (made / "q4_k_m.gguf").is_file():
        last = (p.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return Skipped(f"GGUF conversion of {fp16_dir} failed (exit {p.returncode}): {last}")
    (made / "f16.gguf").unlink(missing_ok=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    made.rename(out_dir)
    shutil.rmtree(tmp)
    return out_dir


def parse(text: str) -> list[dict]:
    """llama-bench -o jsonl: one JSON object per test, keyed as llama-bench's test::get_fields (n_prompt, n_gen,
    n_depth, avg_ns, avg_ts, build_commit, ...); other lines are ignored."""
    tests = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                tests.append(json.loads(line))
            except ValueError:
                continue
    return tests


def bench(gguf_path: Path, args, timeout: float = 900.0) -> list[dict] | Skipped:
    """llama-bench on gguf_path with `args` (e.g. -p 0 -n 256 -d 512); one dict per test."""
    if not (lcpp() / BENCH_BIN).is_file():
        return Skipped(f"no {BENCH_BIN} in {lcpp()}")
    p = _run(["bench", str(gguf_path), *map(str, args)], timeout)
    if isinstance(p, Skipped):
        return p
    tests = parse(p.stdout)
    if p.returncode != 0 or not tests:
        # the script sends llama-bench's stderr to /dev/null: rerun it by hand to see why
        return Skipped(f"llama-bench {' '.join(map(str, args))} on {gguf_path} exited {p.returncode}")
    return tests


def pick(tests: list[dict], n_prompt: int, n_gen: int, n_depth: int = 0) -> dict | None:
    for t in tests:
        if (t.get("n_prompt"), t.get("n_gen"), t.get("n_depth", 0)) == (n_prompt, n_gen, n_depth):
            return t
    return None


def _build(t: dict) -> str:
    return f"{t.get('build_commit', '?')} ({t.get('build_number', '?')})"


def decode_fields(gguf_dir: Path) -> dict:
    """The AWQ row's llama.cpp fields: Q4_0 decode tok/s (tg256 at depth 512), pp2048 seconds, Q4_K_M decode."""
    tests = bench(Path(gguf_dir) / "q4_0.gguf", DECODE_ARGS)
    if isinstance(tests, Skipped):
        return {"llama_cpp_skipped": tests}
    tg, pp = pick(tests, 0, 256, 512), pick(tests, 2048, 0, 0)
    if tg is None or pp is None:
        return {"llama_cpp_skipped": "llama-bench reported no tg256 at depth 512 or no pp2048"}
    out = {
        "llama_cpp_decode_tok_s": round(tg["avg_ts"], 2),
        "llama_cpp_pp2048_s": round(pp["avg_ns"] / 1e9, 4),
    }
    km = bench(Path(gguf_dir) / "q4_k_m.gguf", Q4_K_M_ARGS)
    t = None if isinstance(km, Skipped) else pick(km, 0, 256, 512)
    if t is not None:
        out["llama_cpp_q4_k_m_decode_tok_s"] = round(t["avg_ts"], 2)
    out["llama_cpp_build"] = _build(tg)
    return out


def measure(fp16_dir: Path, gguf_dir: Path, wait_s: float = 900.0, tokenizer: Path | None = None) -> dict:
    """Wait for the build, convert fp16_dir once into gguf_dir, run the decode benchmarks: decode_fields' dict, or
    {"llama_cpp_skipped": reason}."""
    for step in (lambda: wait_build(wait_s), lambda: gguf(fp16_dir, gguf_dir, tokenizer)):
        r = step()
        if isinstance(r, Skipped):
            return {"llama_cpp_skipped": r}
    return decode_fields(gguf_dir)


def _k(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def long_context(gguf_path: Path, prompt: int = 32768, gen: int = 128, depth: int = 100000) -> dict:
    """Issue 18's comparison: seconds to prefill `prompt` tokens into an empty cache, and decode tok/s of `gen` tokens
    after `depth` tokens of context. Two llama-bench runs (-p P -n 0, then -p 0 -n G -d D): one run of
    `-p P -n G -d D` would prefill the P tokens on top of D, not from an empty cache. With the defaults the keys are
    llama_cpp_pp32k_s and llama_cpp_decode_at_100k_tok_s; or {"llama_cpp_skipped": reason}."""
    out = {}
    for args, key, (p, g, d) in (
        (("-p", prompt, "-n", 0), f"llama_cpp_pp{_k(prompt)}_s", (prompt, 0, 0)),
        (("-p", 0, "-n", gen, "-d", depth), f"llama_cpp_decode_at_{_k(depth)}_tok_s", (0, gen, depth)),
    ):
        tests = bench(gguf_path, args)
        t = None if isinstance(tests, Skipped) else pick(tests, p, g, d)
        if t is None:
            return {"llama_cpp_skipped": tests if isinstance(tests, Skipped) else f"llama-bench reported no {key}"}
        out[key] = round(t["avg_ns"] / 1e9, 3) if g == 0 else round(t["avg_ts"], 2)
        out["llama_cpp_build"] = _build(t)
    return out

"""scripts/llama_cpp_peer.py against fake llama.cpp binaries: llama-bench's JSON lines mapped to the benchmark
fields, the GGUF conversion staged with the demo tokenizer and cached, and a soft skip for everything missing.

The fakes sit where llama-cpp-cuda.sh looks for them ($LCPP/llama.cpp/...); the script itself is the real one when
this checkout has ../shared/peers (or .carry/peers), and a stand-in with the same `gguf` and `bench` lines always.
"""

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
PLACES = (ROOT / ".carry" / "peers", ROOT.parent / "shared" / "peers")
REAL = next((f for d in PLACES if (f := d / "llama-cpp-cuda.sh").is_file()), None)

STAND_IN = """#!/usr/bin/env bash
set -euo pipefail
LCPP=${LCPP:-/tmp/lcpp}
case "$1" in
  gguf) src=$2 out=$3; mkdir -p "$out"; L=$LCPP/llama.cpp
    python3 "$L/convert_hf_to_gguf.py" "$src" --outtype f16 --outfile "$out/f16.gguf" >/dev/null
    "$L/build/bin/llama-quantize" "$out/f16.gguf" "$out/q4_0.gguf" Q4_0 1 >/dev/null 2>&1
    "$L/build/bin/llama-quantize" "$out/f16.gguf" "$out/q4_k_m.gguf" Q4_K_M 1 >/dev/null 2>&1 ;;
  bench) m=$2; shift 2
    "$LCPP/llama.cpp/build/bin/llama-bench" -m "$m" -ngl 99 -fa 1 "$@" -r 3 -o jsonl 2>/dev/null ;;
esac
"""

# llama-bench: one JSON line per test, depth-major then prompt tests then generation tests, as llama-bench.cpp
# builds its instances. Time = 1 ms per prompt/generated token + 1 us per depth token, twice that for Q4_K_M.
FAKE_BENCH = """#!{python}
import json, os, sys
a = sys.argv[1:]
with open(os.path.join(os.environ["LCPP"], "bench.log"), "a") as f:
    f.write(" ".join(a) + "\\n")
if os.environ.get("FAKE_BENCH_FAIL"):
    sys.exit(1)
opt = {{a[i]: a[i + 1] for i in range(0, len(a) - 1) if a[i].startswith("-")}}
ints = lambda k, d: [int(x) for x in opt.get(k, d).split(",")]
slow = 2 if "q4_k_m" in opt["-m"] else 1
for d in ints("-d", "0"):
    for p, n in [(p, 0) for p in ints("-p", "512") if p] + [(0, n) for n in ints("-n", "128") if n]:
        ns = slow * (1_000_000 * (p + n) + 1_000 * d)
        print(json.dumps({{"build_commit": "abc1234", "build_number": 42, "model_filename": opt["-m"],
                          "n_prompt": p, "n_gen": n, "n_depth": d, "avg_ns": ns, "stddev_ns": 0,
                          "avg_ts": (p + n) * 1e9 / ns, "stddev_ts": 0.0, "samples_ns": [ns] * 3}}))
"""
FAKE_CONVERT = """import json, os, sys
src, out = sys.argv[1], sys.argv[sys.argv.index("--outfile") + 1]
seen = {{f: os.path.islink(os.path.join(src, f)) for f in sorted(os.listdir(src))}}
seen["tokenizer.json:text"] = open(os.path.join(src, "tokenizer.json")).read()
with open(os.path.join(os.environ["LCPP"], "convert.log"), "a") as f:
    f.write(json.dumps(seen) + "\\n")
open(out, "w").write("f16")
"""
FAKE_QUANTIZE = """#!{python}
import sys
open(sys.argv[2], "w").write(open(sys.argv[1]).read() + " " + sys.argv[3])
"""


def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def peer_mod():
    return load_module("llama_cpp_peer", SCRIPTS / "llama_cpp_peer.py")


def write_exe(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture(params=["real", "stand-in"])
def peer(request, tmp_path, monkeypatch, peer_mod):
    """A finished fake build in $LCPP, the peers script in $YI_PEERS, a demo tokenizer in $YI_PEER_TOKENIZER and
    an fp16 checkpoint whose own (byte-level) tokenizer the conversion must not see."""
    peers = tmp_path / "peers"
    peers.mkdir()
    if request.param == "real":
        if REAL is None:
            pytest.skip("no ../shared/peers/llama-cpp-cuda.sh beside this checkout")
        shutil.copyfile(REAL, peers / "llama-cpp-cuda.sh")
    else:
        (peers / "llama-cpp-cuda.sh").write_text(STAND_IN)
    lcpp = tmp_path / "lcpp"
    write_exe(lcpp / "llama.cpp/build/bin/llama-bench", FAKE_BENCH.format(python=sys.executable))
    write_exe(lcpp / "llama.cpp/build/bin/llama-quantize", FAKE_QUANTIZE.format(python=sys.executable))
    (lcpp / "llama.cpp/convert_hf_to_gguf.py").write_text(FAKE_CONVERT.format())
    (lcpp / "build.done").write_text("0\n")
    tok = tmp_path / "demo-tokenizer"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("DEMO")
    (tok / "tokenizer_config.json").write_text("{}")
    fp16 = tmp_path / "bench" / "yi-6b-fp16"
    fp16.mkdir(parents=True)
    for name, text in [("config.json", "{}"), ("model.safetensors", "W"), ("tokenizer.json", "BYTE")]:
        (fp16 / name).write_text(text)
    monkeypatch.setenv("YI_PEERS", str(peers))
    monkeypatch.setenv("LCPP", str(lcpp))
    monkeypatch.setenv("YI_PEER_TOKENIZER", str(tok))
    monkeypatch.delenv("FAKE_BENCH_FAIL", raising=False)
    return SimpleNamespace(lcpp=lcpp, fp16=fp16, gguf=tmp_path / "bench" / "yi-6b-gguf", tmp=tmp_path)


def bench_calls(lcpp: Path) -> list[str]:
    return (lcpp / "bench.log").read_text().splitlines()


def test_measure_maps_llama_bench_fields(peer, peer_mod):
    assert peer_mod.available() is None
    out = peer_mod.measure(peer.fp16, peer.gguf, wait_s=0)
    assert out == {
        "llama_cpp_decode_tok_s": round(256e9 / (256e6 + 512e3), 2),  # tg256 at depth 512
        "llama_cpp_pp2048_s": 2.048,  # pp2048 from an empty cache
        "llama_cpp_q4_k_m_decode_tok_s": round(256e9 / (2 * (256e6 + 512e3)), 2),
        "llama_cpp_build": "abc1234 (42)",
    }
    q4_0, q4_k_m = str(peer.gguf / "q4_0.gguf"), str(peer.gguf / "q4_k_m.gguf")
    assert bench_calls(peer.lcpp) == [
        f"-m {q4_0} -ngl 99 -fa 1 -p 2048 -n 256 -d 0,512 -r 3 -o jsonl",
        f"-m {q4_k_m} -ngl 99 -fa 1 -p 0 -n 256 -d 512 -r 3 -o jsonl",
    ]


def test_gguf_stages_the_demo_tokenizer_and_converts_once(peer, peer_mod):
    assert peer_mod.gguf(peer.fp16, peer.gguf) == peer.gguf
    assert sorted(p.name for p in peer.gguf.iterdir()) == ["q4_0.gguf", "q4_k_m.gguf"]  # the f16 one is deleted
    assert (peer.gguf / "q4_k_m.gguf").read_text() == "f16 Q4_K_M"
    [seen] = [json.loads(line) for line in (peer.lcpp / "convert.log").read_text().splitlines()]
    # weights linked from the checkpoint, the demo's tokenizer copied in instead of the checkpoint's own
    assert seen == {
        "config.json": True,
        "model.safetensors": True,
        "tokenizer.json": False,
        "tokenizer_config.json": False,
        "tokenizer.json:text": "DEMO",
    }
    assert (peer.fp16 / "tokenizer.json").read_text() == "BYTE"
    assert sorted(p.name for p in peer.gguf.parent.iterdir()) == ["yi-6b-fp16", "yi-6b-gguf"]  # no staging left
    assert peer_mod.gguf(peer.fp16, peer.gguf) == peer.gguf
    assert len((peer.lcpp / "convert.log").read_text().splitlines()) == 1  # cached


def test_long_context_prefills_from_empty_and_decodes_at_depth(peer, peer_mod):
    out = peer_mod.long_context(peer.tmp / "m.gguf")
    assert out == {
        "llama_cpp_pp32k_s": 32.768,
        "llama_cpp_decode_at_100k_tok_s": round(128e9 / (128e6 + 100e6), 2),
        "llama_cpp_build": "abc1234 (42)",
    }
    m = peer.tmp / "m.gguf"
    assert bench_calls(peer.lcpp) == [
        f"-m {m} -ngl 99 -fa 1 -p 32768 -n 0 -r 3 -o jsonl",
        f"-m {m} -ngl 99 -fa 1 -p 0 -n 128 -d 100000 -r 3 -o jsonl",
    ]


def test_failing_llama_bench_is_a_skip(peer, peer_mod, monkeypatch):
    monkeypatch.setenv("FAKE_BENCH_FAIL", "1")
    r = peer_mod.bench(peer.tmp / "m.gguf", ["-p", "0", "-n", "8"])
    assert isinstance(r, peer_mod.Skipped) and "exited 1" in r
    assert peer_mod.decode_fields(peer.gguf)["llama_cpp_skipped"].startswith("llama-bench -p 2048")
    assert "llama_cpp_skipped" in peer_mod.long_context(peer.tmp / "m.gguf")


def test_missing_pieces_are_skipped_with_a_reason(peer, peer_mod, monkeypatch):
    done = peer.lcpp / "build.done"
    done.write_text("2\n")
    assert "build failed (exit 2" in peer_mod.wait_build(0)
    done.unlink()  # under way: not finished within the (zero) wait
    assert "did not finish within 0 s" in peer_mod.wait_build(0)
    assert "did not finish" in peer_mod.measure(peer.fp16, peer.gguf, wait_s=0)["llama_cpp_skipped"]
    monkeypatch.setenv("YI_PEER_TOKENIZER", str(peer.tmp / "nowhere"))
    assert "no demo tokenizer" in peer_mod.gguf(peer.fp16, peer.gguf)
    assert not peer.gguf.exists()
    monkeypatch.setenv("LCPP", str(peer.tmp / "no-build"))
    assert "no llama.cpp build" in peer_mod.available()
    assert "no llama.cpp build" in peer_mod.wait_build(0)
    assert "no llama.cpp/build/bin/llama-bench" in peer_mod.bench(peer.tmp / "m.gguf", ["-n", "8"])
    monkeypatch.setenv("YI_PEERS", str(peer.tmp / "nowhere"))
    assert "no llama-cpp-cuda.sh" in peer_mod.available()


def test_bench_py_adds_the_ratio_to_the_awq_row(peer, monkeypatch):
    """scripts/bench.py's peer_fields: vs_llama_cpp = yi-chat decode / llama.cpp decode; --no-peer records why."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    bench = load_module("bench_under_test", SCRIPTS / "bench.py")
    a = SimpleNamespace(peer=None, dir=peer.fp16.parent, shape="yi-6b", peer_wait=0)
    out = bench.peer_fields(a, 1996.01)
    assert out["vs_llama_cpp"] == round(1996.01 / out["llama_cpp_decode_tok_s"], 2) == 2.0
    assert out["llama_cpp_pp2048_s"] == 2.048
    assert bench.peer_fields(SimpleNamespace(**{**vars(a), "peer": False}), 1.0) == {"llama_cpp_skipped": "--no-peer"}
    monkeypatch.setenv("LCPP", str(peer.tmp / "no-build"))
    assert "no llama.cpp build" in bench.peer_fields(a, 1.0)["llama_cpp_skipped"]

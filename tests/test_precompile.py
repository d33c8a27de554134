"""kernels.precompile: a start's Triton kernels compiled in worker processes into the on-disk cache.

The worker test needs Triton only (it compiles for sm_90 without a GPU); the start test needs CUDA.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def silu_mul_specialization(target, block: int = 1024) -> str:
    """glue._silu_mul's specialization for a launch on bf16 tensors, as Triton's jit_cache_hook serializes it."""
    from triton.compiler import make_backend
    from triton.runtime.jit import serialize_specialization_data

    from yi_cli.kernels import glue

    signature = {"GU": "*bf16", "O": "*bf16", "inter": "i32", "BLOCK": "constexpr", "PDL": "constexpr"}
    constants = {(3,): block, (4,): True}
    attrs = {(0,): [["tt.divisibility", 16]], (1,): [["tt.divisibility", 16]], (2,): [["tt.divisibility", 16]]}
    options = make_backend(target).parse_options({"num_warps": 4})
    name = f"{glue._silu_mul.fn.__module__}.{glue._silu_mul.fn.__qualname__}"
    return serialize_specialization_data(name, signature, constants, attrs, options, "key")


def test_children_compile_into_the_on_disk_cache(tmp_path, monkeypatch):
    """Forked children (from this multi-threaded process with torch loaded, as the chat's) compile their shares
    into the on-disk cache the parent then finds; a record that cannot compile fails alone."""
    pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget

    from yi_cli.kernels import glue, precompile

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))
    target = GPUTarget("cuda", 90, 32)
    data = silu_mul_specialization(target)
    src, options = precompile.source(glue._silu_mul, data, target)
    assert not precompile.cached(src, target, options)
    found = [("yi_cli.kernels.glue", "_no_such_kernel", data), ("yi_cli.kernels.glue", "_silu_mul", data)]
    assert precompile.in_children(found, target, 4) == 2  # no more children than records
    assert precompile.cached(src, target, options)
    assert list((tmp_path / "cache").rglob("_silu_mul.cubin"))
    assert precompile.compile_all(found, target) == 1  # the missing kernel; the other is a cache hit


def kills(monkeypatch) -> list:
    """The kills this test's process sends from now on (sent all the same); precompile's deadline at 60 s, so that
    children still waiting on their pipe at the end are killed within the test's time."""
    from yi_cli.kernels import precompile

    sent, kill, killpg = [], os.kill, os.killpg
    monkeypatch.setattr(os, "kill", lambda pid, sig: (sent.append(pid), kill(pid, sig)))
    monkeypatch.setattr(os, "killpg", lambda pid, sig: (sent.append(pid), killpg(pid, sig)))
    monkeypatch.setattr(precompile, "TIMEOUT_S", 60)
    return sent


def test_children_take_records_as_they_come(tmp_path, monkeypatch):
    """The children are forked at the first record, not before (a warm start forks none), take records handed over
    while they already compile (a start's dry steps go on finding kernels meanwhile), and end by themselves when
    the records do (none is killed)."""
    pytest.importorskip("triton")
    import time

    from triton.backends.compiler import GPUTarget

    from yi_cli.kernels import glue, precompile

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))
    killed = kills(monkeypatch)
    target = GPUTarget("cuda", 90, 32)
    assert precompile.Children(target, 2).finish() == 0  # nothing handed over: nothing forked
    first, second = silu_mul_specialization(target, 1024), silu_mul_specialization(target, 512)
    srcs = [precompile.source(glue._silu_mul, d, target) for d in (first, second)]
    pool = precompile.Children(target, 2)
    try:
        assert not pool.pids
        pool.submit(("yi_cli.kernels.glue", "_silu_mul", first))
        assert len(pool.pids) == 2
        deadline = time.monotonic() + precompile.TIMEOUT_S
        while not precompile.cached(srcs[0][0], target, srcs[0][1]):  # a child compiled the first record
            assert time.monotonic() < deadline, "no child compiled the first record"
            time.sleep(0.05)
        assert not precompile.cached(srcs[1][0], target, srcs[1][1])
        pool.submit(("yi_cli.kernels.glue", "_silu_mul", second))
    finally:
        assert pool.finish() == 2
    assert precompile.cached(srcs[1][0], target, srcs[1][1])
    assert not pool.pids and pool.shm is None and killed == []


def dry_start(monkeypatch, tmp_path, target, data):
    """What ahead needs around a start's dry steps, on a machine without a GPU: Triton's active driver stands in
    with the target (its C launchers cannot be built here: no libcuda), and a step's launch of glue._silu_mul is
    the call Triton's run makes to the jit_cache_hook that ahead installs. Returns that step."""
    from types import SimpleNamespace

    from triton import knobs
    from triton.runtime import driver

    from yi_cli.kernels import glue

    def no_launcher(*_):
        raise RuntimeError("no libcuda here")

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(driver, "_active", SimpleNamespace(get_current_target=lambda: target, launcher_cls=no_launcher))
    monkeypatch.setattr(glue._silu_mul, "device_caches", {0: ({},)})
    fn = SimpleNamespace(module="yi_cli.kernels.glue", name="_silu_mul", jit_function=glue._silu_mul)
    return lambda: knobs.runtime.jit_cache_hook(key="k", fn=fn, compile={"device": 0, "specialization_data": data})


def test_ahead_compiles_what_the_steps_find(tmp_path, monkeypatch):
    """ahead hands the kernel a dry step finds to its children, which compile it into the on-disk cache and end by
    themselves before it returns; a second start finds it there and forks nothing."""
    pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget

    from yi_cli.kernels import glue, precompile

    target = GPUTarget("cuda", 90, 32)
    data = silu_mul_specialization(target)
    step = dry_start(monkeypatch, tmp_path, target, data)
    killed = kills(monkeypatch)
    src, options = precompile.source(glue._silu_mul, data, target)
    out = precompile.ahead([step, lambda: None], n=2)
    assert out["kernels"] == 1 and out["workers"] == 2 and killed == []
    assert precompile.cached(src, target, options)
    again = precompile.ahead([step, lambda: pytest.fail("a warm start runs the first step only")], n=2)
    assert again["kernels"] == 0 and again["workers"] == 0


def test_an_interrupted_start_stops_its_children(tmp_path, monkeypatch):
    """Ctrl-C during the dry steps, after children were forked: ahead passes the interrupt on at once and leaves no
    child running (they are killed, not waited for: here they would compile for an hour, and a wait would last
    TIMEOUT_S, 60 s)."""
    pytest.importorskip("triton")
    import time

    from triton.backends.compiler import GPUTarget

    from yi_cli.kernels import precompile

    target = GPUTarget("cuda", 90, 32)
    step = dry_start(monkeypatch, tmp_path, target, silu_mul_specialization(target))
    forked = []
    real_fork = os.fork

    def fork():
        pid = real_fork()
        forked.append(pid)
        return pid

    def interrupted():
        step()
        assert len(forked) == 2  # the children are up, compiling the record
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fork", fork)
    monkeypatch.setattr(precompile, "compile_all", lambda share, target: time.sleep(3600))  # in the children
    monkeypatch.setattr(precompile, "TIMEOUT_S", 60)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        precompile.ahead([interrupted], n=2)
    assert time.monotonic() - t0 < 30
    for pid in forked:
        with pytest.raises(ChildProcessError):  # reaped: no child of this process by that pid
            os.waitpid(pid, os.WNOHANG)


def test_recording_skips_this_threads_launches_only(tmp_path, monkeypatch):
    """Within recording, this thread's launches run as warm-ups (nothing launched) and each missing specialization
    is recorded once (and handed to the callback) and stands as _SKIP in its kernel's cache; another thread's
    launches are untouched; all is put back after. Triton's run is a stand-in here (it needs a GPU); the hook is
    Triton's own jit_cache_hook call."""
    pytest.importorskip("triton")
    import threading
    from types import SimpleNamespace

    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.runtime.jit import JITFunction

    from yi_cli.kernels import glue, precompile

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))
    target = GPUTarget("cuda", 90, 32)
    data = silu_mul_specialization(target)
    kernel_cache: dict = {}
    fn = SimpleNamespace(module="yi_cli.kernels.glue", name="_silu_mul", jit_function=glue._silu_mul)
    monkeypatch.setattr(glue._silu_mul, "device_caches", {0: (kernel_cache,)})
    calls = []
    monkeypatch.setattr(JITFunction, "run", lambda self, *a, grid, warmup, **k: calls.append(warmup))
    before = JITFunction.run
    submitted = []
    with precompile.recording(target, submitted.append) as found:
        JITFunction.run(glue._silu_mul, grid=(1,), warmup=False)
        other = threading.Thread(target=lambda: JITFunction.run(glue._silu_mul, grid=(1,), warmup=False))
        other.start()
        other.join()
        hook = knobs.runtime.jit_cache_hook
        assert hook(key="k1", fn=fn, compile={"device": 0, "specialization_data": data}) is True
        assert kernel_cache == {"k1": precompile._SKIP}
        answer = []
        other = threading.Thread(target=lambda: answer.append(hook(key="k2", fn=fn, compile={"device": 0})))
        other.start()
        other.join()
        assert answer == [None] and "k2" not in kernel_cache  # compiled as ever
    assert calls == [True, False]
    assert found == [("yi_cli.kernels.glue", "_silu_mul", data)] == submitted  # handed over as found
    assert kernel_cache == {} and JITFunction.run is before and knobs.runtime.jit_cache_hook is None


def test_off_runs_nothing():
    from yi_cli.kernels import precompile

    ran = []
    assert precompile.ahead([lambda: ran.append(1)], n=0)["kernels"] == 0
    assert not ran


START = """
import json, sys, threading, torch
from triton import knobs
from triton.runtime import build
from yi_cli.checkpoint.loader import open_checkpoint
from yi_cli.engines.settings import GenSettings
from yi_cli.runtime.decoder import FastDecoder
misses = []
def listener(*, src, cache_hit, **_):
    if not cache_hit:
        misses.append(src.name)
knobs.compilation.listener = listener
builds, _build = [], build._build
def counted(name, *a, **k):  # a C module built here (on a miss in the on-disk cache)
    builds.append(name)
    return _build(name, *a, **k)
build._build = counted
dec = FastDecoder(open_checkpoint(sys.argv[1], device="cuda", dtype="bf16"))
setting = GenSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=24, speculate="off")
toks = list(dec.generate(json.loads(sys.argv[2]), setting, threading.Event(), set()))
launchers = [b for b in builds if b == "__triton_launcher"]
print(json.dumps({"compiled": dec.compiled, "misses": misses, "launchers": launchers, "tokens": toks}))
"""


def start(path, prompt, cache, precompile) -> dict:
    env = dict(os.environ, TRITON_CACHE_DIR=str(cache), YI_CHAT_PRECOMPILE=precompile, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", START, str(path), json.dumps(prompt)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_an_empty_cache_start_compiles_ahead_in_children(tmp_path):
    """A fresh process on an empty Triton cache: every kernel its start launches was compiled by the children, with
    its C launcher (the chat's own compiles and launcher builds all hit the cache), the reply is the one a start
    without them gives, and a second start finds nothing to compile."""
    from test_fast import PROMPT, checkpoint

    path = checkpoint(0, "awq")
    prompt = PROMPT + [7]  # 17 tokens: a prompt length FastDecoder._compile_ahead runs
    plain = start(path, prompt, tmp_path / "plain", "0")
    assert plain["compiled"]["kernels"] == 0 and plain["misses"] and plain["launchers"]  # built where launched
    ahead = start(path, prompt, tmp_path / "ahead", "4")
    assert ahead["compiled"]["kernels"] >= len(set(plain["misses"])) and ahead["compiled"]["workers"] == 4
    assert ahead["misses"] == [] and ahead["launchers"] == []
    assert ahead["tokens"] == plain["tokens"]
    again = start(path, prompt, tmp_path / "ahead", "4")
    assert again["compiled"]["kernels"] == 0 and again["misses"] == [] and again["tokens"] == plain["tokens"]

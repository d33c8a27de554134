"""A fresh start's Triton compiles in parallel processes instead of one after another in the chat's own.

With an empty Triton cache every kernel a start launches compiles where it is first launched, serially, each
holding the interpreter lock (the H200, Yi-6B AWQ: ~10 s of a 16 s start). `ahead(steps)` runs the callables
`steps` (the start's decode, prefill and verify steps) with no kernel launched: each Triton launch missing from the
on-disk cache is recorded (Triton's jit_cache_hook hands out its specialization, as `JITFunction.preload` reads it)
and skipped. The records go, as they are found, to forked child processes that compile them into the same on-disk
cache while the steps still run dry, each child taking the next record when it is done; `ahead` returns when they
are: the real launches that follow load those binaries.
Nothing is launched during the steps, so their torch ops see unwritten buffers: they must only compute, not decide
anything from them. Where anything fails, the kernels simply compile where they are launched, as before.

YI_CHAT_PRECOMPILE=0 turns it off; YI_CHAT_PRECOMPILE=N sets the number of children (default: the cores less one,
at most 8).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import importlib
import json
import mmap
import os
import signal
import struct
import sys
import threading
import time
import warnings
from contextlib import contextmanager

from ..errors import ENDING

try:
    from triton import knobs
    from triton.compiler import ASTSource, make_backend
    from triton.compiler.compiler import get_cache_invalidating_env_vars, get_cache_key, get_cache_manager
    from triton.runtime.jit import JITFunction
except ImportError:
    knobs = None
try:
    from triton.experimental.gluon._runtime import GluonASTSource
except ImportError:
    GluonASTSource = None

SETTING = os.environ.get("YI_CHAT_PRECOMPILE", "")
WORKERS_MAX = 8
TIMEOUT_S = 120  # a child still compiling after this long is stopped (its kernels then compile in the chat)


def workers() -> int:
    """How many processes compile: 0 (off) where YI_CHAT_PRECOMPILE=0 or Triton is missing."""
    if knobs is None or not hasattr(os, "fork"):
        return 0
    if SETTING.isascii() and SETTING.isdigit():
        return int(SETTING)
    return max(1, min(WORKERS_MAX, (os.cpu_count() or 2) - 1))


@functools.cache
def _backend(target):
    return make_backend(target)


def _kernel(module: str, name: str):
    """The JIT function `name` of `module` (a qualified name: attributes below the module)."""
    out = importlib.import_module(module)
    for part in name.split("."):
        out = getattr(out, part)
    return out


def source(fn, data: str, target):
    """(source, options) of one compile of JIT function fn from its serialized specialization (as
    JITFunction.preload rebuilds them) for target, with the options triton.compile derives from them."""
    import triton.language as tl

    spec = json.loads(data)
    constexprs = {
        tuple(k): tl.dtype(v)
        if tl.dtype.is_dtype(v)
        else tl.constexpr(v["constexpr"])
        if isinstance(v, dict) and "constexpr" in v
        else v
        for k, v in zip(spec["constant_keys"], spec["constant_vals"], strict=True)
    }
    attrs = dict(zip(map(tuple, spec["attrs_keys"]), spec["attrs_vals"], strict=True))
    signature = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["signature"].items()}
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["options"].items()}
    kind = GluonASTSource if getattr(fn, "is_gluon", lambda: False)() else ASTSource
    src = kind(fn, signature, constexprs, attrs)
    return src, _backend(target).parse_options(dict(options, **src.parse_options()))


def cached(src, target, options) -> bool:
    """Whether triton.compile would find this source's binary in the on-disk cache."""
    key = get_cache_key(src, _backend(target), options, env_vars=get_cache_invalidating_env_vars())
    manager = get_cache_manager(hashlib.sha256(key.encode("utf-8")).hexdigest())
    name = f"{src.name[:150]}.json"
    return name in (manager.get_group(name) or {})


_SKIP = object()  # stands in the process's kernel cache for a recorded specialization while recording


@contextmanager
def recording(target, submit=None):
    """Within it no Triton kernel launches; yields the list that collects (module, name, specialization) of each
    launch whose binary is in neither the process's nor the on-disk cache, once each, and hands each to `submit`
    as it is found. A recorded specialization stands as _SKIP in its kernel's cache meanwhile, so that its next
    launches cost a lookup (Triton would otherwise serialize it again at each)."""
    found: list[tuple[str, str, str]] = []
    marked: list[tuple[dict, object]] = []
    me = threading.get_ident()  # another thread's launches (none at a start) run and compile as ever

    def hook(*, key, fn, compile, **_):
        if threading.get_ident() != me:
            return None if prior is None else prior(key=key, fn=fn, compile=compile, **_)
        cache = fn.jit_function.device_caches[compile["device"]][0]
        cache[key] = _SKIP
        marked.append((cache, key))
        data = compile["specialization_data"]
        try:
            src, options = source(fn.jit_function, data, target)
            if not cached(src, target, options):
                found.append((fn.module, fn.name, data))
                if submit is not None:
                    submit(found[-1])
        except Exception:  # noqa: BLE001 - unreadable here, or no child to take it: it compiles where launched
            pass
        return True  # skip the compile (and with it the launch)

    run, prior = JITFunction.run, knobs.runtime.jit_cache_hook

    def dry_run(self, *args, grid, warmup, **kwargs):
        return run(self, *args, grid=grid, warmup=warmup or threading.get_ident() == me, **kwargs)

    JITFunction.run, knobs.runtime.jit_cache_hook = dry_run, hook
    try:
        yield found
    finally:
        JITFunction.run, knobs.runtime.jit_cache_hook = run, prior
        for cache, key in marked:
            cache.pop(key, None)


def ahead(steps, n: int | None = None) -> dict:
    """Run the callables `steps` with no kernel launched, compile what they would have compiled in n child
    processes (forked at the first such kernel, compiling while the steps go on), and return once they are done:
    {"kernels": how many, "workers": children forked, "dry_s": seconds of the steps, "s": seconds in all}. Where the
    first step finds every kernel in the on-disk cache the rest do not run (a warm start pays one dry step, and
    forks nothing). Any failure leaves the compiles to the launches."""
    n = workers() if n is None else n
    if n <= 0:
        return {"kernels": 0, "workers": 0, "dry_s": 0.0, "s": 0.0}
    from triton.runtime import driver

    t0 = time.perf_counter()
    target = driver.active.get_current_target()
    with Children(target, n) as pool:  # waited for at the end of the block; stopped at once on Ctrl-C
        with recording(target, pool.submit) as found:
            for i, step in enumerate(steps):
                if i == 1 and not found:
                    break
                try:
                    step()
                except Exception:  # noqa: BLE001 - a step that cannot run dry: its kernels compile where launched
                    break
        dry = time.perf_counter() - t0
    return {
        "kernels": len(found),
        "workers": pool.forked,
        "dry_s": round(dry, 3),
        "s": round(time.perf_counter() - t0, 3),
    }


def in_children(found: list, target, n: int) -> int:
    """Compile `found` (recording's records) in up to n forked children, the tensor-core GEMV's first; returns how
    many ran."""
    with Children(target, min(n, len(found))) as pool:
        for record in sorted(found, key=lambda r: r[0] != "yi_cli.kernels.mma_tile"):
            pool.submit(record)
    return pool.forked


class Children:
    """n forked compilers fed one record at a time (a kernel, then its C launcher): each takes the next when it is
    done, so no child's share is fixed in advance (a few kernels take 1-1.3 s to compile, most 0.1-0.5 s: Yi-6B
    AWQ's 23 on the H200). They are forked at the first record, so they compile while the start's steps still run
    dry (1.1-1.5 s of Yi-6B's). A record goes into a shared anonymous mapping and its (offset, length) through a
    pipe as one 8-byte write, which a reader takes whole (writes up to PIPE_BUF are atomic), so the children need no
    lock; closing the pipe tells them there is no more. As a context manager, its block's end calls `finish`: the
    children are waited for, or on an exception (Ctrl-C at a start included) stopped at once.

    A fork shares the chat's imports (a fresh interpreter would spend seconds importing torch before its first
    compile); a child only compiles (Triton's compiler, ptxas and gcc, never CUDA or torch), its output goes
    nowhere, it leaves the terminal's process group (Ctrl-C interrupts the chat, which then kills it), it dies with
    the chat (Linux) and it ends with os._exit (no exit handlers of the chat's state)."""

    SIZE = 1 << 22  # bytes of records (a specialization's is ~2-3 KB); past it, the rest compile where launched

    def __init__(self, target, n: int):
        self.target, self.n = target, n
        self.pids: list[int] = []
        self.shm: mmap.mmap | None = None
        self.w, self.at = -1, 0
        self.forked = 0  # how many children were forked

    def __enter__(self) -> Children:
        return self

    def __exit__(self, kind, *_) -> None:
        self.finish(wait=kind is None)

    def submit(self, record) -> None:
        """Hand one record to the children, forking them at the first; raises where none can take it (it then
        compiles where it is launched)."""
        data = json.dumps(record).encode()
        if self.at + len(data) > self.SIZE:
            raise OSError("no child to compile it")
        if self.shm is None:
            self._fork()
        if not self.pids:
            raise OSError("no child to compile it")
        self.shm[self.at : self.at + len(data)] = data
        os.write(self.w, struct.pack("<II", self.at, len(data)))
        self.at += len(data)

    def _fork(self) -> None:
        self.shm = mmap.mmap(-1, self.SIZE)  # MAP_SHARED | MAP_ANONYMOUS: the children see what is written later
        r, self.w = os.pipe()
        parent = os.getpid()
        try:
            for _ in range(self.n):
                # Ctrl-C, Ctrl-\, SIGTERM or SIGHUP at the terminal's process group must not reach a child before
                # it leaves that group (it would unwind the chat's own code in the child): held until it has
                held = signal.pthread_sigmask(signal.SIG_BLOCK, QUIT_SIGNALS)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, fork() may deadlock"
                        pid = os.fork()
                    if pid == 0:
                        try:
                            os.close(self.w)  # else the pipe would never reach its end for this child
                            _child(r, self.shm, self.target, parent, held)
                        finally:
                            os._exit(1)
                    self.pids.append(pid)
                    self.forked += 1
                except OSError:  # no more processes: those forked do the work
                    if not self.pids:
                        raise
                    break
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, held)
        finally:
            os.close(r)

    def finish(self, wait: bool = True) -> int:
        """No more records: wait for the children to compile what they were given (at most TIMEOUT_S; not at all
        without `wait`), then kill those still at it with their compilers (what they did not finish compiles where
        launched); returns how many were forked."""
        if self.w >= 0:
            os.close(self.w)
            self.w = -1
        try:
            deadline = time.monotonic() + (TIMEOUT_S if wait else 0)
            while self.pids and time.monotonic() < deadline:
                for p in list(self.pids):
                    if _reaped(p, os.WNOHANG):
                        self.pids.remove(p)
                if self.pids:
                    time.sleep(0.01)
        finally:
            for p in self.pids:  # past the deadline or interrupted: the child's group (ptxas, gcc) or the child
                try:
                    os.killpg(p, signal.SIGKILL)  # a child leads its own group once it is past setsid
                except ProcessLookupError:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
            for p in self.pids:
                _reaped(p, 0)
            self.pids = []
            if self.shm is not None:
                self.shm.close()
                self.shm = None
        return self.forked


QUIT_SIGNALS = set(ENDING)


def _reaped(pid: int, flags: int) -> bool:
    """waitpid: whether child pid has ended (and is reaped now, or was already)."""
    try:
        return os.waitpid(pid, flags)[0] != 0
    except ChildProcessError:
        return True


def _child(r: int, shm: mmap.mmap, target, parent: int, mask) -> None:
    """A child's life: compile each record it reads from the pipe `r` (its bytes in `shm`) until the pipe ends. It
    starts with the quit signals held (`mask`: the signal mask to restore once it has left the chat's group)."""
    code = 1
    try:
        os.setsid()
        _die_with_parent()
        if os.getppid() != parent:  # the chat ended before the line above took effect
            return
        for sig in QUIT_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        gc.disable()  # nothing of the chat's (CUDA tensors included) is freed here
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the child ends with os._exit
        failed = 0
        while len(head := os.read(r, 8)) == 8:
            at, size = struct.unpack("<II", head)
            failed += compile_all([tuple(json.loads(shm[at : at + size]))], target)
        code = 1 if failed else 0
    finally:
        os._exit(code)


def _die_with_parent() -> None:
    """Linux: SIGKILL this child when the thread that forked it ends (the chat killed mid-start included)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def compile_all(share: list, target) -> int:
    """Each (module, name, specialization) of share compiled into the on-disk cache, with its C launcher; returns
    how many failed."""
    import triton

    failed = 0
    for module, name, data in share:
        try:
            src, options = source(_kernel(module, name), data, target)
            kernel = triton.compile(src, target=target, options=options.__dict__)
        except Exception:  # noqa: BLE001 - this one compiles where it is launched
            failed += 1
            continue
        launcher(src, kernel.metadata)
    return failed


def launcher(src, metadata) -> None:
    """Build the C launcher that a first launch of this kernel builds (gcc, one per signature and constants) into
    the on-disk cache, where a launch then finds it. Needs no CUDA context; where it cannot be built here (no
    libcuda: a machine without the driver), the launch builds it."""
    try:
        from triton.runtime import driver

        driver.active.launcher_cls(src, metadata)
    except Exception:  # noqa: BLE001 - built where launched
        pass

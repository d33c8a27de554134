"""Open a checkpoint once: resolve the name, read config, tokenizer and quantization; weights are read on demand.

A `Checkpoint` holds no weights. The runtime reads them through `Checkpoint.weights()`: dense tensors and, for
AWQ / GPTQ projections, `QWeight`s, one at a time, so the unpacked codes of the whole model never sit in memory.
"""

from __future__ import annotations

import difflib
import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .. import inputs
from ..errors import LoadError, UsageError, failed, failure, first_line, shown
from ..rust_panic import reports_held
from . import configs, light, plausible, quantized, shapes
from .files import (
    Tensors,
    check_layers,
    check_safetensors,
    check_side_files,
    fetch_again,
    plain_files,
    read_config,
    read_json,
)


@dataclass
class Checkpoint:
    path: Path
    name: str  # the hub id for a hub snapshot, else the directory's name
    config: object  # transformers PretrainedConfig, or a light.LlamaView of it (hf_config is always the former)
    tokenizer: object  # transformers tokenizer, or a light_tokenizer.LightTokenizer (hf_tokenizer is the former)
    device: str
    dtype: object  # torch.dtype asked for (a quantized model on CUDA computes in bf16: kernels.tinygemm)
    quant: dict | None = None  # {"method": "awq"|"gptq", "bits": 4|8, "group_size": g, "skip": [...], ...}
    generation_config: object | None = None
    files: list[Path] = field(default_factory=list)  # weight files
    trust_remote_code: bool = False

    @property
    def context_length(self) -> int:
        return int(getattr(self.config, "max_position_embeddings", 4096) or 4096)

    @property
    def hf_config(self):
        """The transformers config (built on first use when `config` is a light view)."""
        return self.config.real() if isinstance(self.config, light.LlamaView) else self.config

    @property
    def hf_tokenizer(self):
        """The transformers tokenizer (built on first use when `tokenizer` is a light_tokenizer.LightTokenizer)."""
        from . import light_tokenizer

        t = self.tokenizer
        return t.real() if isinstance(t, light_tokenizer.LightTokenizer) else t

    @property
    def hf_generation_config(self):
        g = self.generation_config
        return g.real() if isinstance(g, light.GenerationView) else g

    @property
    def safetensors(self) -> bool:
        return bool(self.files) and all(f.suffix == ".safetensors" for f in self.files)

    def is_quantized(self, module: str) -> bool:
        """Whether decoder projection `module` (e.g. model.layers.0.self_attn.q_proj) is stored packed."""
        q = self.quant
        return q is not None and module.rsplit(".", 1)[-1] in quantized.PROJ and not any(s in module for s in q["skip"])

    @contextmanager
    def weights(self):
        """Name -> tensor access over the safetensors files while the block runs."""
        with ExitStack() as stack:
            yield Weights(self, Tensors(self.path, self.files, stack))


class Weights:
    def __init__(self, ckpt: Checkpoint, t: Tensors):
        self.ckpt, self.t = ckpt, t

    def __contains__(self, name: str) -> bool:
        return name in self.t

    def tensor(self, name: str, shape=None, dtype=None):
        """Tensor `name` on the checkpoint's device, in `dtype` (default: its own), shape checked when given."""
        w = self.t.get(name, shape, " (shape from config.json)" if shape is not None else "")
        if not w.dtype.is_floating_point:  # I16 or U16 bits converted as numbers: a model that said only "\n"
            raise LoadError(f"{self.t.where[name]}: tensor {name} is {quantized.dtype_name(w.dtype)}, not floats")
        return w.to(self.ckpt.device, dtype)

    def qweight(self, module: str, k: int, n: int, bias: bool = False):
        """The QWeight of packed projection `module` ([n, k] as nn.Linear) on the checkpoint's device."""
        try:
            w = quantized.read_qweight(self.t, module, k, n, self.ckpt.quant, self.ckpt.device, bias)
            from .formats import group_perm

            group_perm(w)  # g_idx must form equal groups: refused here, with the file's name
        except ValueError as e:
            raise LoadError(f"{self.t.missing_in}: layer {module}: {e}") from None
        return w


def known_device(value: str) -> bool:
    """A device name yi-chat takes: auto, cpu, mps, cuda or cuda:N with N in ASCII digits ("cuda:٣" passed
    isdigit() and was torch's traceback, "Invalid device string")."""
    index = value.removeprefix("cuda:") if value.startswith("cuda:") else None
    return value in ("auto", "cpu", "mps", "cuda") or bool(index and index.isascii() and index.isdigit())


def device_name(device) -> str | None:
    """The API's device as a name: a torch.device ("cuda:0") or a CUDA index (0) as a transformers user passes
    them (each was an AttributeError from inside the loader); any other type a LoadError."""
    if device is None or isinstance(device, str):
        return device
    if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
        return f"cuda:{device}"
    if type(device).__name__ == "device" and hasattr(device, "type"):  # torch.device, without importing torch
        return str(device)
    raise LoadError(f"device = {device!r}: unknown device (use cpu, cuda or cuda:N)")


def pick_device(device: str | None, setting: str = "--device") -> str:
    """The device to load on; an error names `setting`, where `device` was given."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not known_device(device):  # yi_cli.load(device=...) passes no argument parser
        raise LoadError(f"{setting} {device}: unknown device (use cpu, cuda or cuda:N)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LoadError(f"{setting} {device}: CUDA is not available on this machine (use --device cpu)")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        have = f"{n} CUDA device{'s' * (n != 1)} (cuda:0 to cuda:{n - 1})"
        raise LoadError(f"{setting} {device}: this machine has {have}")
    if device == "mps" and not torch.backends.mps.is_available():  # torch's RuntimeError was a traceback
        raise LoadError(f"{setting} {device}: Apple's MPS is not available on this machine (use --device cpu)")
    return device


def quant_kind(quant: dict | None) -> tuple[int | None, int]:
    """(bits, group size) of a checkpoint's quantization (None, 0: not quantized), as tinygemm.compute_dtype takes
    them."""
    return (quant["bits"], quant["group_size"]) if quant else (None, 0)


def pick_dtype(dtype, device: str, quant: dict | None):
    import torch

    from ..kernels import tinygemm

    if dtype in (None, "", "auto"):
        return tinygemm.compute_dtype(device, torch.float32 if device == "cpu" else torch.float16, *quant_kind(quant))
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise LoadError(f"--dtype {dtype}: unknown dtype (use auto, fp32, fp16 or bf16)")
    return getattr(torch, DTYPES[dtype])


DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16"}
DTYPES.update(bf16="bfloat16", bfloat16="bfloat16")  # the names --dtype and yi_cli.load take, torch's for each


def resolve(model: str, allow_pickle: bool = False) -> Path:
    """`model` is a local directory, 'demo'/'demo-*', a Yi alias (yi-6b-chat-4bits) or a hub id: a complete
    snapshot in the Hugging Face cache is used as is, anything else is fetched (unless HF_HUB_OFFLINE=1)."""
    from . import demo, family, hub

    if model in demo.NAMES:
        demo_cache()
        return demo.ensure(model)
    p = inputs.user_path(model, LoadError)
    if (kind := inputs.looked_up(p, LoadError)) is not None:  # a folder on the way that cannot be searched is said
        if kind != "directory":  # what it is: /dev/zero was "is a file"
            what = "a file" if kind == "regular file" else f"a {kind}"
            raise LoadError(f"{p}: is {what}; --model takes a checkpoint directory")
        return utf8_path(p, "move or link the model to a folder whose name is UTF-8")
    repo = family.expand(model)
    if hub.written_as_id(repo):
        if bad := hub.malformed(repo, model):  # bad//id, a/b/c: a usage error (as `pull` says it), not a missing model
            raise UsageError(bad)
        utf8_path(hub.cache_root(), "set HF_HOME (or HF_HUB_CACHE) to a folder whose name is UTF-8")
        snap = hub.cached_snapshot(repo)
        if hub.usable(repo, snap, allow_pickle):
            return snap
        return hub.fetch(repo, allow_pickle=allow_pickle)
    near = difflib.get_close_matches(model.lower(), [*family.ALIASES, *demo.NAMES], n=1, cutoff=0.8)
    hint = f" (did you mean {near[0]}?)" if near else ""
    if problem := hub.name_problem(repo):  # `-m 'a b'`: no folder, and no hub id either (a usage error, exit 2)
        raise UsageError(f"{shown(model, 200)}: no such directory, and not a valid hub id ({problem}){hint}")
    # named as typed: Path drops a leading ./, and `./models/yi` read `models/yi`, as if a hub id had been asked
    raise LoadError(f"{shown(model, 200)}: no such directory, Yi alias (yi-chat models --all) or hub id{hint}")


def demo_cache() -> Path:
    """yi-chat's cache, where the demo models are: LoadError where its name is not UTF-8 (utf8_path)."""
    from ..paths import cache_dir

    return utf8_path(cache_dir(), "set YI_CHAT_HOME to a folder whose name is UTF-8 (its cache is there)")


def utf8_path(path: Path, fix: str) -> Path:
    """`path`, where its name is UTF-8 text. The tokenizers and safetensors libraries (Rust) take a path only as
    UTF-8: one holding a byte that is not (a Latin-1 folder name, kept by Python as a surrogate escape) failed in
    them, after the demo's 20 s conversion, with "demo conversion failed (UnicodeEncodeError: ...)". The rest of
    yi-chat (its sessions, a remote model's chats) works there; a model is not loaded from there, and this says why."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        named = shown(os.fsencode(path).decode("utf-8", "backslashreplace"), 200)  # the byte as \xe9, as typed
        raise LoadError(
            f"{named}: the folder's name is not UTF-8, and the tokenizers and safetensors libraries open only UTF-8 "
            f"paths; {fix}"
        ) from None
    return path


def open_checkpoint(
    path,
    device: str | None = None,
    dtype=None,
    *,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    context: int | None = None,
) -> Checkpoint:
    """Resolve `path`, check its files and read everything but the weights; context: the positions a session may
    use where fewer than the model's (--context), for the memory check."""
    path = resolve(str(path), allow_pickle)
    cfg = read_config(path)
    plausible.check(cfg, path / "config.json")
    check_side_files(path)
    device = pick_device(device)
    quant = quantized.detect(path, cfg)
    if quant is not None:
        files = [path / f for f in quant["files"]]
    else:
        files = plain_files(path, allow_pickle)
    names = check_safetensors(files, plain=quant is None)
    dtype = pick_dtype(dtype, device, quant)
    elem = dtype.itemsize
    plausible.check_memory(cfg, path / "config.json", device, elem, quant["bits"] if quant else elem * 8, context)
    check_layers(names, plausible.layers(cfg))
    shapes.check(names, cfg, quant)  # as `yi-chat models` and `pull` check them: the same line first
    config = configs.build(path, cfg, quant is not None, trust_remote_code)
    from .family import repo_of

    return Checkpoint(
        path=path,
        name=repo_of(path) or path.name,
        config=config,
        tokenizer=load_tokenizer(path, trust_remote_code),
        device=device,
        dtype=dtype,
        quant=quant,
        generation_config=_generation_config(path),
        files=files,
        trust_remote_code=trust_remote_code,
    )


def _generation_config(path: Path):
    if not (path / "generation_config.json").is_file():
        return None
    data = read_json(path / "generation_config.json")
    view = light.generation_view(data, lambda: _hf_generation_config(path, data))
    return view or _hf_generation_config(path, data)


def _hf_generation_config(path: Path, data: dict):
    """transformers' GenerationConfig of generation_config.json, whose dict (as yi-chat read it) is `data`."""
    configs.quiet_transformers()
    from transformers import GenerationConfig

    try:
        if configs.bom(path / "generation_config.json"):  # as configs._auto_config: transformers refuses the BOM
            return GenerationConfig.from_dict(data)
        return GenerationConfig.from_pretrained(str(path))
    except ValueError:  # a field transformers refuses (max_new_tokens 0): the fast engine, reading only the token
        pass  # ids, chatted and the generate engine failed; yi-chat's settings decide all but the ids (checked)
    except Exception as e:
        raise LoadError(f"{path / 'generation_config.json'}: {first_line(e)}") from None
    ids = ("bos_token_id", "eos_token_id", "pad_token_id")
    try:
        return GenerationConfig(**{k: data[k] for k in ids if k in data})
    except Exception as e:
        raise LoadError(f"{path / 'generation_config.json'}: {first_line(e)}") from None


# The files a tokenizer is read from (tokenizers' JSON, sentencepiece, BPE / WordPiece vocabularies, tiktoken)
TOKENIZER_FILES = ("tokenizer.json", "*.model", "vocab.json", "vocab.txt", "merges.txt", "*.tiktoken")


def load_tokenizer(path: Path, trust_remote_code: bool = False):
    """A LightTokenizer where it gives transformers' results exactly (light_tokenizer.py), else transformers' own."""
    # a file of those names that is no file (a dangling link, a folder, a FIFO) is none: transformers then made a
    # tokenizer of 3 tokens that encoded every message as nothing, exit 0
    usable = (f for g in TOKENIZER_FILES for f in path.glob(g) if f.is_file())
    if not trust_remote_code and next(usable, None) is None:  # transformers' words were
        # the demo's own folder has nowhere to copy them from
        how = fetch_again(path / "tokenizer.json", otherwise="copy them from where the model came from")
        raise LoadError(  # "Couldn't instantiate the backend tokenizer from one of: (1) a `tokenizers` library ..."
            f"{path}: no tokenizer files (tokenizer.json or tokenizer.model); {how}"
        )
    plain = not trust_remote_code and _plain_tokenizer(path)
    if plain:
        from . import light_tokenizer

        tok = light_tokenizer.load(path, lambda: _hf_tokenizer(path, trust_remote_code, plain))
        if tok is not None:
            return tok
    return _hf_tokenizer(path, trust_remote_code, plain)


def _hf_tokenizer(path: Path, trust_remote_code: bool, plain: bool):
    """transformers' tokenizer; plain: _plain_tokenizer holds (and no remote code)."""
    configs.quiet_transformers()
    _bound_templates()
    try:
        if plain:
            # The class AutoTokenizer picks for these files, without the model config it builds to decide (that
            # imports transformers' modeling side: seconds of a fresh start on the GPU machine).
            from transformers.tokenization_utils_tokenizers import TokenizersBackend as Auto

            kwargs = {}
        else:
            from transformers import AutoTokenizer as Auto

            kwargs = {"trust_remote_code": trust_remote_code}
        with reports_held():  # (imported before: Ctrl-C waits for the hold's end)
            return Auto.from_pretrained(str(path), **kwargs)
    except OSError as e:
        if e.filename and e.strerror:  # a file it could not open (permission denied): named, as our readers do
            raise LoadError(f"{e.filename}: cannot read the tokenizer file ({e.strerror})") from None
        raise LoadError(f"{path}: cannot load the tokenizer ({failure(e)})") from None
    except BaseException as e:  # transformers raises many types for a broken tokenizer; tokenizers, a Rust panic
        if not failed(e):
            raise
        # a JSON error's line and column are in a file of its own: named (the folder was, the file not)
        where = (_unparsed_json(path) if isinstance(e, ValueError | TypeError) else None) or path
        raise LoadError(f"{where}: cannot load the tokenizer ({failure(e)})") from None


TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def _unparsed_json(path: Path) -> Path | None:
    """The first of the tokenizer's files in path that is not what it should be, if one is not: JSON that is not
    JSON, or not an object (tokenizer.json `[]` was a TypeError said of the folder), a chat_template.jinja that is
    not UTF-8 (a UnicodeDecodeError said of the folder)."""
    import json

    for name in (*TOKENIZER_JSON, "chat_template.jinja"):
        f = path / name
        try:
            if f.is_file():  # (not a FIFO: a read would wait for a writer)
                text = f.read_bytes().decode("utf-8-sig")
                if name != "chat_template.jinja" and not isinstance(json.loads(text), dict):
                    return f
        except OSError:
            continue
        except ValueError:
            return f
    return None


def _bound_templates() -> None:
    """transformers renders a chat template in a sandbox of its own: it gets light_tokenizer's bounds on `*` and
    `**` (a `{{ 9 ** 99999999 }}` hung the run), set where it looks the class up, before it compiles any template."""
    from transformers.utils import chat_template_utils

    from .light_tokenizer import BoundedSandbox

    chat_template_utils.ImmutableSandboxedEnvironment = BoundedSandbox


def _plain_tokenizer(path: Path) -> bool:
    """A Llama checkpoint whose tokenizer_config.json names the generic tokenizers class for its tokenizer.json,
    with no code of its own: AutoTokenizer returns exactly TokenizersBackend.from_pretrained for it."""
    tc = path / "tokenizer_config.json"
    if not (tc.is_file() and (path / "tokenizer.json").is_file()):
        return False
    t, c = read_json(tc), read_json(path / "config.json")
    return (
        t.get("tokenizer_class") == "TokenizersBackend"
        and "auto_map" not in t
        and c.get("model_type") == "llama"
        and "auto_map" not in c
    )


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

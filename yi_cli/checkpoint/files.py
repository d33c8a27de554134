"""The files of a checkpoint directory, read defensively: config.json, the safetensors index, safetensors headers,
and name -> tensor access over one or several safetensors files, with errors that name the file."""

from __future__ import annotations

import json
import math
import os
import re
import struct
from contextlib import ExitStack
from pathlib import Path

from .. import inputs
from ..errors import LoadError, first_line, shown

# JSON files that transformers reads after us: checked here first (size, nesting, finite numbers), since its own
# readers recurse, accept NaN and read any size.
SIDE_FILES = (
    "generation_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "quantize_config.json",
    "preprocessor_config.json",
)
TEMPLATE_LIMIT = 1 << 20  # a chat template's file (its characters too): the largest shipped are tens of KB
MAX_TOKEN_ID = 2**31 - 1  # eos_token_id: past it no vocabulary (10**39 failed every turn of the generate engine)
# Tensors of AutoAWQ's and AutoGPTQ's linear layers (formats.py), which a checkpoint without a quantization config
# cannot have.
QUANTIZED_TENSORS = (".qweight", ".qzeros", ".g_idx")
# Bytes per element of the safetensors dtypes.
DTYPES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


def read_json(f: Path) -> dict:
    return inputs.read_json(f, inputs.JSON_LIMIT, LoadError, f.name)


def read_config(path: Path) -> dict:
    cfg = path / "config.json"
    # A folder that cannot be searched is said (EACCES), not taken for "no config.json"; a FIFO or a directory by
    # that name is named as such by read_json.
    if inputs.looked_up(cfg, LoadError, path, "the checkpoint directory") is None:
        raise LoadError(f"{path}: no config.json (not a model checkpoint directory)")
    data = inputs.read_json(cfg, inputs.JSON_LIMIT, LoadError, "config.json", obj=False)
    if not isinstance(data, dict) or "model_type" not in data:
        raise LoadError(f"{cfg}: not a transformers model config (no model_type)")
    check_eos(cfg, data)
    return data


def check_side_files(path: Path) -> None:
    """The small files beside the weights, each one there (a link to nothing or in a loop included: such a chat
    template was passed over in silence, and the chat ran on yi-chat's ChatML instead) a file yi-chat can read."""
    there = os.path.lexists
    for name in SIDE_FILES:
        if there(path / name):
            data = read_json(path / name)
            if name == "generation_config.json":
                check_eos(path / name, data)
    # tokenizer.json is read by the tokenizers library, whose Rust parser bounds its nesting; a directory by that
    # name was "Couldn't instantiate the backend tokenizer from one of: ", a FIFO blocked, any size was read. Not
    # parsed here: a few MB parsed twice would cost every start.
    if there(path / "tokenizer.json"):
        inputs.check_regular(path / "tokenizer.json", inputs.TOKENIZER_LIMIT, LoadError, "tokenizer.json")
    # Chat templates in files of their own, read whole by the tokenizer's loader (200 MB of comment took 1.2 GB)
    more = path / "additional_chat_templates"
    for f in [path / "chat_template.jinja", *(sorted(more.glob("*.jinja")) if more.is_dir() else [])]:
        if there(f):
            inputs.check_regular(f, TEMPLATE_LIMIT, LoadError, "chat template")


def check_eos(f: Path, data) -> None:
    """eos_token_id: a token id or a list of them (`["x"]` was int()'s ValueError as a traceback)."""
    eos = data.get("eos_token_id") if isinstance(data, dict) else None
    ids = eos if isinstance(eos, list) else [eos]
    if eos is not None and not all(type(i) is int and 0 <= i <= MAX_TOKEN_ID for i in ids):
        raise LoadError(f"{f}: eos_token_id must be a token id or a list of them, got {shown(json.dumps(eos), 60)}")
    # bos and pad are one id each (transformers validates them so: "x" or [2] for a pad ran on the fast engine, which
    # reads no pad, and failed /model and --engine generate in pydantic's or the comparison's words)
    for key in ("bos_token_id", "pad_token_id"):
        v = data.get(key) if isinstance(data, dict) else None
        if v is not None and not (type(v) is int and -MAX_TOKEN_ID <= v <= MAX_TOKEN_ID):
            raise LoadError(f"{f}: {key} must be a token id or null, got {shown(json.dumps(v), 60)}")


def weight_files(path: Path, allow_pickle: bool) -> list[Path]:
    st = matching(path, "*.safetensors")
    if st:
        return st
    pickles = matching(path, "*.bin")
    if pickles:
        if not allow_pickle:
            raise LoadError(
                f"{path}: only pickle (.bin) weights found; they can run code when loaded, "
                "pass --allow-pickle if you trust them"
            )
        return pickles
    raise LoadError(f"{path}: no weight files (*.safetensors)")


def plain_files(path: Path, allow_pickle: bool) -> list[Path]:
    """An unquantized checkpoint's weight files: the shards its index names where it has one, as transformers reads
    them (another *.safetensors beside them, a backup, replaced their tensors in the fast engine), else every one."""
    files = weight_files(path, allow_pickle)
    shards = check_index(path)
    return files if shards is None else [path / n for n in sorted(shards)]


def matching(path: Path, pattern: str) -> list[Path]:
    """sorted(path.glob(pattern)), where a folder that cannot be listed (its read permission off) is said: pathlib's
    glob passes over it in silence, which read as 'no weight files'."""
    try:
        os.listdir(path)
    except OSError as e:
        raise LoadError(f"{path}: cannot list the checkpoint directory ({e.strerror or e})") from None
    return sorted(path.glob(pattern))


def check_index(path: Path) -> set[str] | None:
    """The index's shards are all there as regular files: their names, None where there is no index (a dangling
    link is none). An index that is no regular file (a FIFO, a device) is refused as any checkpoint JSON is (it was
    passed over in silence), and a shard that is one is said as what it is (a link to /dev/zero was "missing")."""
    idx = path / "model.safetensors.index.json"
    if inputs.looked_up(idx, LoadError, path, "the checkpoint directory") is None:
        return None
    names = index_files(idx)  # read_json: a FIFO or a device is "not a regular file"
    for n in sorted(names):
        kind = inputs.looked_up(path / n, LoadError, path / n, "the weight shard")
        if kind is None:
            raise LoadError(f"{path / n}: weight shard listed in the index is missing")
        if kind != "regular file":
            raise LoadError(f"{path / n}: weight shard listed in the index is a {kind}, not a regular file")
    return names


def impossible_name(name: str) -> bool:
    """A name no file can have: a NUL byte, half a character (a surrogate: JSON's "\\ud800"), over 255 bytes.
    Looked for, the first was ValueError, the second UnicodeEncodeError, the last ENAMETOOLONG."""
    return (
        "\0" in name
        or re.search("[\ud800-\udfff]", name) is not None
        or len(name.encode("utf-8", "surrogatepass")) > 255
    )


def index_files(idx: Path) -> set[str]:
    """The shard names of a safetensors index: plain file names only (no paths out of the directory)."""
    wm = read_json(idx).get("weight_map")
    if not isinstance(wm, dict) or not all(isinstance(v, str) for v in wm.values()):
        raise LoadError(f"{idx}: weight_map must be an object of tensor name -> file name")
    bad = next((v for v in wm.values() if not v or Path(v).name != v or v in (".", "..") or impossible_name(v)), None)
    if bad is not None:
        raise LoadError(f"{idx}: weight_map names {shown(bad, 60)!r}, not a file name in the directory")
    if not wm:  # it was "missing tensor ..." at the load, where `pull` had said ready and `models` ok
        raise LoadError(f"{idx}: weight_map is empty: it names no weight file")
    # a safetensors index names safetensors shards: an `evil.bin` beside one was read by torch's pickle loader (the
    # shard's name sorting first), no --allow-pickle asked
    if (other := next((v for v in sorted(wm.values()) if not v.endswith(".safetensors")), None)) is not None:
        raise LoadError(f"{idx}: weight_map names {shown(other, 60)!r}, not a .safetensors file")
    return set(wm.values())


LAYER = re.compile(r"model\.layers\.(\d{1,9})\.")  # a decoder layer's tensors (Llama and its kin)


def check_layers(names: dict[Path, list[str]], layers: int | None) -> None:
    """The weights' `model.layers.N.` tensors (`names`: each safetensors file's, as check_safetensors read them) are
    of config.json's num_hidden_layers layers (`layers`; None: not stated): more were passed over in silence (a model
    cut short that babbled: the demo's 30 edited to 20), fewer said only as the model loaded (`pull` said ready and
    `models` ok)."""
    if layers is None:
        return
    found: dict[int, Path] = {}
    for f, tensors in names.items():
        for name in tensors:
            if (m := LAYER.match(name)) is not None:
                found.setdefault(int(m[1]), f)
    if not found:  # another architecture's names
        return
    files = list(names)
    if past := [i for i in found if i >= layers]:
        i = min(past)
        raise LoadError(
            f"{found[i]}: holds tensors of layer {i}, but config.json has num_hidden_layers = {layers}: the weights "
            "are another model's, or the config was changed"
        )
    if gone := [i for i in range(layers) if i not in found]:
        where = files[0].parent if len(files) > 1 else files[0]
        raise LoadError(
            f"{where}: no tensors of layer {gone[0]}, but config.json has num_hidden_layers = {layers}: the weights "
            "are another model's, or the config was changed"
        )


def check_safetensors(files: list[Path], plain: bool = False) -> dict[Path, dict[str, list[int]]]:
    """Read each file's header (within a size limit) and check every entry: a known dtype, a shape of
    non-negative integers, data_offsets that match the shape and fit the file (catches truncated downloads).
    plain: the config names no quantization, which AWQ / GPTQ tensors contradict. Returns each safetensors file's
    tensors' names and shapes (for check_layers, shapes.check)."""
    names: dict[Path, dict[str, list[int]]] = {}
    for f in files:
        if f.suffix != ".safetensors":
            continue
        header, n, size = read_header(f)
        if plain:
            check_unquantized(f, header)
            check_float_weights(f, header)
        meta = header.get("__metadata__", {})
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise LoadError(f"{f}: __metadata__ must map names to strings")
        # The safetensors library's own rule: the tensors' bytes tile the data from 0, in order, with no gap or
        # overlap (`yi-chat models` said "ok" of overlapping ones, which the load then refused).
        spans = sorted((_entry_span(f, name, v), name) for name, v in header.items() if name != "__metadata__")
        end = 0
        for (begin, stop), name in spans:
            if begin != end:
                raise LoadError(f"{f}: tensor {shown(name, 80)}: data_offsets overlap another tensor's or leave a gap")
            end = stop
        if 8 + n + end > size:
            raise LoadError(f"{f}: truncated ({size} bytes, header needs {8 + n + end}); {fetch_again(f)}")
        if 8 + n + end < size:  # the library refuses it ("file not fully covered"): `models` said ok, -m failed
            raise LoadError(
                f"{f}: not a valid safetensors file ({size - 8 - n - end} bytes after its tensors' data); "
                f"{fetch_again(f)}"
            )
        names[f] = {k: v["shape"] for k, v in header.items() if k != "__metadata__"}  # (checked: _entry_span)
        # one tensor in two files (a backup copy beside the weights, model_old.safetensors, or a shard's twin): the
        # last by name won in the fast engine, silently, where transformers reads the index's files or one alone
        for other, theirs in names.items():
            if other != f and (both := next((k for k in names[f] if k in theirs), None)) is not None:
                raise LoadError(
                    f"{f}: tensor {shown(both, 200)} is also in {other.name}; each tensor must be in one file "
                    "(move a copy or backup of the weights out of the folder)"
                )
    return names


def fetch_again(f: Path, otherwise: str | None = "download it again") -> str | None:
    """How to get a damaged or missing file `f` whole again, by where it lies: the hub cache, the demo's, else
    `otherwise` (a folder of the user's) (`yi-chat pull ORG/NAME` was said of the demo too, which no pull fetches;
    and under HF_HUB_OFFLINE, where that pull is refused, and by the offline pull itself)."""
    from .family import repo_of

    repo = repo_of(f)
    if repo is not None:
        from ..env_files import hub_constants

        if hub_constants().HF_HUB_OFFLINE:  # the pull named would be refused: said so, not run in vain
            return f"HF_HUB_OFFLINE=1 forbids fetching it again (`yi-chat pull {repo}` does, online)"
        return pull_again(repo)
    return remake_demo(f) or otherwise


def remake_demo(f: Path) -> str | None:
    """How to make file `f` of a demo model whole again, where it lies in the demo's cache (yi-chat's own
    conversion: a damaged file there is made again, never fetched), else None."""
    from ..paths import cache_dir

    demo = os.path.realpath(cache_dir() / "demo")
    if os.path.dirname(os.path.dirname(os.path.realpath(f))) == demo:  # (by a relative path, a link, too)
        return f"remove {f.parent} and the next run converts the demo again"
    return None


def with_remedy(e: LoadError, folder: Path) -> LoadError:
    """`e`, a checkpoint's error naming a file of `folder`, with how to make it whole again where `folder` is a demo
    model's: a corrupt config.json or a truncated model.safetensors in the cache said what was wrong, not what to do
    (the demo's is a folder the user never made)."""
    said, how = str(e), remake_demo(Path(folder) / "config.json")
    if how is None or how in said or not said.startswith(str(folder)) or "memory" in said.lower():  # not damage
        return e
    return LoadError(f"{said}; {how}")


def pull_again(repo: str) -> str:
    """fetch_again's advice for a hub repo's file."""
    return f"`yi-chat pull {repo}` fetches it again"


def check_unquantized(where, names) -> None:
    """LoadError where a checkpoint whose config names no quantization holds AWQ / GPTQ tensors (its q_proj.weight
    would be reported missing): tensor names from a safetensors header or an index's weight_map."""
    name = next((k for k in names if isinstance(k, str) and k.endswith(QUANTIZED_TENSORS)), None)
    if name is not None:
        raise LoadError(
            f"{where}: tensor {shown(name, 80)} is AWQ / GPTQ-quantized, but config.json has no quantization_config "
            "(and there is no quantize_config.json)"
        )


# safetensors' integer dtypes, as torch names them: the bits of a weight stored so were read as numbers
INTEGERS = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16", "U32": "uint32"}
INTEGERS |= {"I32": "int32", "U64": "uint64", "I64": "int64"}


def check_float_weights(f: Path, header: dict) -> None:
    """An unquantized checkpoint's weights are floats: one stored as integers (its bits as I32, a converter's
    slip) was read as numbers by the generate engine, which answered "\n\n\n\n", exit 0 (the fast engine refused
    it at its read, Weights.tensor). Said of the file, for every engine, before any weight is read."""
    for name, v in header.items():
        if name.endswith(".weight") and isinstance(v, dict) and (kind := INTEGERS.get(v.get("dtype"))):
            raise LoadError(f"{f}: tensor {shown(name, 80)} is {kind}, not floats")


def read_header(f: Path) -> tuple[dict, int, int]:
    """(header, its length, file size) of a safetensors file; the header is read only within HEADER_LIMIT."""
    try:
        if not f.is_file():  # a FIFO named *.safetensors would block the open
            raise LoadError(f"{f}: not a regular file")
        size = f.stat().st_size
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if not 0 < n <= min(size - 8, inputs.HEADER_LIMIT):
                why = (
                    f"its header is {n} bytes, more than the limit of {inputs.HEADER_LIMIT} bytes"
                    if n > inputs.HEADER_LIMIT
                    else "its header length does not fit the file"
                )
                raise LoadError(f"{f}: not a valid safetensors file ({why})")
            raw = fh.read(n)
    except OSError as e:  # permission denied, an I/O error: nothing is known yet about the file's contents
        raise LoadError(f"{f}: cannot read the safetensors file ({e.strerror or e})") from None
    except struct.error:  # shorter than the 8 bytes of its header length
        raise LoadError(f"{f}: not a valid safetensors file") from None
    if raw.startswith(b"\xef\xbb\xbf"):  # JSON elsewhere may begin with one; the library's header may not
        raise LoadError(f"{f}: not a valid safetensors file (its header begins with a byte-order mark)")
    try:
        header = inputs.loads(raw, f.name, LoadError, what="header")
    except LoadError as e:
        raise LoadError(f"{f}: not a valid safetensors file ({str(e).removeprefix(f.name + ': ')})") from None
    if not isinstance(header, dict):
        raise LoadError(f"{f}: not a valid safetensors file (the header is not a JSON object)")
    return header, n, size


def _entry_span(f: Path, name: str, v) -> tuple[int, int]:
    where = f"{f}: tensor {shown(name, 80)}"
    if not isinstance(v, dict):
        raise LoadError(f"{where}: header entry is not an object")
    dtype, shape, offsets = v.get("dtype"), v.get("shape"), v.get("data_offsets")
    if dtype not in DTYPES:
        raise LoadError(f"{where}: unknown dtype {shown(str(dtype), 20)!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise LoadError(f"{where}: shape must be a list of non-negative integers")
    size = 1
    for d in shape:  # as the library multiplies, in 64 bits: [2**62, 2**62, 0] overflows before the 0
        size *= d
        if size >= 1 << 64:
            raise LoadError(f"{where}: shape {shown(str(shape), 80)} overflows")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise LoadError(f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end")
    if offsets[1] - offsets[0] != math.prod(shape) * DTYPES[dtype]:
        raise LoadError(
            f"{where}: data_offsets span {offsets[1] - offsets[0]} bytes, its shape {shape} "
            f"{dtype} needs {math.prod(shape) * DTYPES[dtype]}"
        )
    return offsets[0], offsets[1]


def missing_in(path: Path, files: list[Path]) -> Path:
    """What a missing tensor of a checkpoint at `path` (its weight `files`) names as the culprit: the one file, else
    the index that lists the files, else the folder."""
    index = path / "model.safetensors.index.json"
    return files[0] if len(files) == 1 else index if index.is_file() else path


class Tensors:
    """Name -> tensor over one or several safetensors files, with errors that name the file."""

    def __init__(self, path: Path, files: list[Path], stack: ExitStack):
        from safetensors import safe_open

        self.where, self.handles = {}, {}
        self.missing_in = missing_in(path, files)
        for f in files:
            try:
                h = stack.enter_context(safe_open(str(f), framework="pt", device="cpu"))
            except Exception as e:
                raise LoadError(f"{f}: cannot read ({first_line(e)})") from None
            self.handles[f] = h
            for k in h.keys():  # each in one file: check_safetensors refused one in two (a backup beside them)
                self.where[k] = f

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def get(self, name: str, shape=None, what: str = ""):
        f = self.where.get(name)
        if f is None:
            raise LoadError(f"{self.missing_in}: missing tensor {name}{what}")
        h = self.handles[f]
        if shape is not None:
            got = list(h.get_slice(name).get_shape())
            if got != list(shape):
                raise LoadError(f"{f}: tensor {name} has shape {got}, expected {list(shape)}{what}")
        try:
            return h.get_tensor(name)
        except Exception as e:
            raise LoadError(f"{f}: cannot read tensor {name} ({first_line(e)})") from None

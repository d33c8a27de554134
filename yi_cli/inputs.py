"""Input files read defensively: a size limit before reading, regular files only (a FIFO or /dev/zero is refused
without blocking), JSON with a nesting limit and finite numbers, enum values with a did-you-mean (no torch).

Every failure is the caller's error type with one line that starts with the file's name: the callers (sessions,
config.toml, the checkpoint's JSON files, safetensors headers) only choose the type, and so the exit code.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import shlex
import stat
import sys
from itertools import accumulate, repeat
from operator import sub
from pathlib import Path, PurePath

from .errors import YiError, shown

MiB = 1 << 20
SESSION_LIMIT = 64 * MiB  # a long chat with attachments is a few MB
CONFIG_LIMIT = 1 * MiB  # config.toml
JSON_LIMIT = 16 * MiB  # config.json, generation_config.json, quantize_config.json, tokenizer_config.json, index
# tokenizer.json: a Yi or Llama one is a few MB (the demo's 3.5 MB), the largest vocabularies' (Gemma 3) over 30 MB
TOKENIZER_LIMIT = 64 * MiB
HEADER_LIMIT = 100_000_000  # a safetensors header: the safetensors library's own limit (10**8 bytes, not 100 MiB)
MAX_DEPTH = 64  # our files nest 4 deep; a tokenizer_config.json about 6
# Integers up to 40 digits: transformers itself writes model_max_length = int(1e30) into tokenizer_config.json;
# each reader checks its own ranges, this only keeps a 4000-digit number from costing a quadratic parse.
MAX_DIGITS = 40

# A JSON string literal (unrolled loop: no backtracking per character); brackets inside strings do not nest.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
# Opening brackets -> 2, closing -> 0, everything else deleted: minus one each gives the depth steps.
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_OTHERS = bytes(sorted(set(range(256)) - set(b"[{]}")))


def size_text(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB else f"{n // 1024} KiB" if n >= 1024 else f"{n} bytes"


def check_regular(path: str | Path, limit: int, err: type[YiError] = YiError, what: str = "file") -> None:
    """`path` is a regular file of at most `limit` bytes, by stat alone: what read_bytes checks before opening, and
    all that is checked of a file another library reads (tokenizer.json, read by `tokenizers`)."""
    name = shown(str(path), 200)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise err(missing(path, what)) from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise err(f"{name}: cannot read the {what} ({getattr(e, 'strerror', None) or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise err(f"{name}: not a regular file (a {kind_of_mode(st.st_mode)}); a {what} must be a regular file")
    if st.st_size > limit:
        raise err(f"{name}: {st.st_size} bytes, more than the {size_text(limit)} limit of a {what}")


def missing(path: str | Path, what: str = "file") -> str:
    """The line for a missing file: PATH: no such WHAT, or where PATH is a symbolic link whose target is gone, that
    ("no such file" of a file `ls` lists was a riddle)."""
    name = shown(str(path), 200)
    try:
        target = os.readlink(path)
    except (OSError, ValueError):
        return f"{name}: no such {what}"
    return f"{name}: a symbolic link to {shown(target, 200)}, which does not exist"


def read_bytes(path: str | Path, limit: int, err: type[YiError] = YiError, what: str = "file") -> bytes:
    """The bytes of regular file `path`, at most `limit` of them. Checked with stat before opening (a FIFO would
    block in open, a device never ends) and opened non-blocking in case it was swapped for one since."""
    name = shown(str(path), 200)
    check_regular(path, limit, err, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise err(missing(path, what)) from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise err(f"{name}: cannot read the {what} ({getattr(e, 'strerror', None) or e})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise err(f"{name}: not a regular file; a {what} must be a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)  # one byte more tells a file that grew past the limit since stat
    except OSError as e:
        raise err(f"{name}: cannot read the {what} ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise err(f"{name}: more than the {size_text(limit)} limit of a {what}")
    return data


def kind_of(path: str | Path) -> str | None:
    """What is at `path` (following symlinks): None when nothing is, else "regular file", "directory", "FIFO"..."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL or a lone surrogate, no file's
        return None
    return "regular file" if stat.S_ISREG(mode) else kind_of_mode(mode)


def looked_up(path: str | Path, err: type[YiError] = YiError, where=None, what: str = "") -> str | None:
    """kind_of(path), where a lookup the file system refused (EACCES from a folder above it that cannot be searched)
    is err "WHERE: cannot read WHAT (reason)" instead of a missing path, which pathlib's exists and is_file answer
    for both from Python 3.14."""
    try:
        return kind_of(path)
    except OSError as e:
        name = shown(str(where or path), 200)
        raise err(f"{name}: cannot read {what + ' ' if what else ''}({e.strerror or e})") from None


def _fs_form(name: str) -> str:
    """A name typed at the prompt (its UTF-8 decoded: commands.utf8) in the form the file system's encoding takes:
    where that is not UTF-8 (LC_ALL=C without Python's UTF-8 mode) and cannot encode it, the bytes the terminal sent,
    as surrogates. `/file 文件.txt` was "not a valid file name" and `/save 目录/` an 'ascii' codec error, where
    `-f 文件.txt` (argv, in that form already) attached the file."""
    try:
        name.encode(sys.getfilesystemencoding(), "surrogateescape")
        return name
    except UnicodeEncodeError:
        return os.fsdecode(name.encode("utf-8", "surrogateescape"))
    except LookupError:  # (an encoding Python does not know: as it was)
        return name


def user_path(name: str, err: type[YiError] = YiError) -> Path:
    """Path(name) with a leading ~ or ~USER expanded, where a user the system does not know (or no home for ~) is
    err "NAME: cannot expand ~USER (...)" instead of pathlib's RuntimeError, which callers would report as a
    failure of their own or a traceback. Only a ~ that begins the text as typed: pathlib made `./~/notes.txt`
    `~/notes.txt` and expanded it to the home folder's. A name that ends in / (or /.) names a folder, as for the
    shell: err "NAME: not a directory" where a file is there (pathlib drops the slash, and `notes.txt/` read the
    file)."""
    p = Path(_fs_form(name))
    if name.startswith("~"):
        try:
            p = p.expanduser()
        except RuntimeError:
            user = name[1:].split("/", 1)[0]
            why = f"no user {user!r} here" if user else "no home folder is set"
            raise err(f"{shown(name, 200)}: cannot expand ~{user} ({why})") from None
    elif str(p).startswith("~"):  # `./~/x` is Path("~/x"), which reads as the home folder's where it is said
        p = p.absolute()
    if name.endswith(("/", "/.")) and _file_at(p):
        raise err(f"{shown(name, 200)}: not a directory (a path ending in / names a folder)")
    return p


def _file_at(p: Path) -> bool:
    """Something that is no folder is at p (a file, a FIFO; a link's target): what a trailing slash refuses."""
    try:
        return not stat.S_ISDIR(os.stat(p).st_mode)
    except (OSError, ValueError):  # nothing there (the open says so), a NUL
        return False


def kind_of_mode(mode: int) -> str:
    """What a file of stat mode `mode` is that is not a regular file: "directory", "FIFO", "character device"..."""
    for test, word in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return word
    return "special file"


def bom_text(data: bytes) -> str:
    """UTF-8 text with or without a BOM (Windows editors save one). A bad byte's offset (UnicodeDecodeError.start)
    counts from the file's start: the utf-8-sig codec counts it after the BOM, 3 bytes short."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
        raise UnicodeDecodeError(e.encoding, data, e.start + bom, e.end + bom, e.reason) from None


UTF16_BOMS = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"}


def wide_encoding(head: bytes) -> str | None:
    """The encoding (iconv's name) of text in UTF-16 or UTF-32 that `head`, its first bytes, begins, else None: by
    its byte order mark, UTF-32's first (its little-endian mark starts as UTF-16's: it was called UTF-16, and
    iconv -f UTF-16 made a binary file of it), then what follows reading as text (a line end, mostly ASCII, or
    printable throughout: a line of Chinese as Notepad saves it); without a mark, UTF-16LE or BE of Latin letters
    (every other byte NUL, the others none), printable (a binary file of small numbers has that pattern too)."""
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "UTF-32"
    if (codec := UTF16_BOMS.get(head[:2])) is not None:
        text = _decoded(head[2:], codec)
        lines_or_ascii = "\n" in text or 2 * sum(c < "\x80" for c in text) > len(text)
        return "UTF-16" if lines_or_ascii or _printable(text) else None
    head = head[:4096]
    for zeros, others, codec in ((head[1::2], head[0::2], "UTF-16LE"), (head[0::2], head[1::2], "UTF-16BE")):
        if len(head) >= 4 and zeros.count(0) * 10 >= len(zeros) * 9 and 0 not in others:
            if _printable(_decoded(head, codec.lower())):
                return codec
    return None


def _decoded(data: bytes, codec: str) -> str:
    return data[: len(data) - len(data) % 2].decode(codec, "replace")


def _printable(text: str) -> bool:
    """Text throughout: printable characters and white space, nothing undecodable but where a read cut a pair."""
    whole = text[:-1] if text.endswith("\ufffd") else text
    return bool(whole) and "\ufffd" not in whole and all(c.isprintable() or c in "\t\r\n" for c in whole)


def read_text(path: str | Path, limit: int, err: type[YiError] = YiError, what: str = "file") -> str:
    data = read_bytes(path, limit, err, what)
    if wide := wide_encoding(data):  # Notepad's "Unicode", PowerShell's `>` (without a mark, ASCII's NULs decode)
        raise err(f"{shown(str(path), 200)}: {wide} text, not UTF-8 ({convert(str(path), wide)})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise err(f"{shown(str(path), 200)}: not UTF-8 text (byte {e.start})") from None


def convert(name: str, encoding: str, what: str = "") -> str:
    """How to make a file UTF-8 text with iconv (stdin: the pipe through it); `what` says which files it is for."""
    if name == "stdin":
        return f"{what}pipe it through iconv -f {encoding} -t UTF-8"
    p = PurePath(name)
    out = _shell_word(str(p.with_name(f"{p.stem}.utf8{p.suffix}")))
    return f"{what}iconv -f {encoding} -t UTF-8 {_shell_word(name)} > {out} converts it"


def _shell_word(name: str) -> str:
    """A path as a shell reads it back: a leading `~/` (`~user/`) left unquoted, the home folder it meant (quoted it
    was a folder named ~); a leading `-` after ./ (iconv took `-cn.txt` for its options)."""
    home = re.match(r"~[\w.-]*/", name)
    if home:
        return home.group() + shlex.quote(name[home.end() :])
    return shlex.quote(f"./{name}" if name.startswith("-") else name)


def depth(text: str | bytes) -> int:
    """How deep the brackets of JSON text nest, outside string literals; iterative, so any depth is safe."""
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    steps = _STRING.sub(b"", text).translate(_STEPS, _OTHERS)
    return max(accumulate(map(sub, steps, repeat(1))), default=0)


class _Bad(ValueError):
    def __init__(self, message: str, number: str | None = None):
        super().__init__(message)
        self.number = number  # as written, to say where it is


def _where(text: str | bytes, number: str | None) -> str:
    """Where `number` first stands in `text`, as JSON's errors say it ("line 3 column 40"); a parse hook is told no
    key, and a session's `tokens` out of range was named by its digits alone."""
    if number is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    i = text.find(number)
    if i < 0:
        return ""
    return f" at line {text.count(chr(10), 0, i) + 1} column {i - text.rfind(chr(10), 0, i)}"


def _float(s: str) -> float:
    v = float(s)
    if not math.isfinite(v):
        raise _Bad(f"the number {shown(s, 30)} is out of range", s)
    return v


def _int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_DIGITS:
        raise _Bad(f"the number {shown(s, 30)} is out of range", s)
    return int(s)


def _constant(s: str):
    raise _Bad(f"{s} is not a JSON number")


def loads(text: str | bytes, name: str, err: type[YiError] = YiError, max_depth: int = MAX_DEPTH, what: str = "JSON"):
    """json.loads with the nesting checked first (the parser recurses), and only finite, bounded numbers."""
    name = shown(str(name), 200)
    if not text.strip():  # it was "corrupt ... (JSONDecodeError: Expecting value: line 1 column 1 (char 0))"
        raise err(f"{name}: corrupt {what} ({'the file is empty' if not text else 'only blanks in it'})")
    d = depth(text)
    if d > max_depth:
        raise err(f"{name}: JSON nested {d} deep, more than the limit of {max_depth}")
    try:
        return json.loads(text, parse_float=_float, parse_int=_int, parse_constant=_constant)
    except _Bad as e:
        raise err(f"{name}: {e}{_where(text, e.number)}") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise err(f"{name}: corrupt {what} ({e.__class__.__name__}: {shown(str(e), 120)})") from None


def read_json(
    path: str | Path, limit: int = JSON_LIMIT, err: type[YiError] = YiError, what: str = "JSON file", obj: bool = True
):
    """A JSON file read within `limit` bytes; `obj`: it must be a JSON object."""
    data = loads(read_bytes(path, limit, err, what), str(path), err, what=what)
    if obj and not isinstance(data, dict):
        raise err(f"{shown(str(path), 200)}: expected a JSON object, found {type_name(data)}")
    return data


def type_name(v) -> str:
    return {
        bool: "true/false",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }.get(type(v), type(v).__name__)


def field(data: dict, key: str, kinds, src, err: type[YiError] = YiError, default=None, label: str = ""):
    """data[key] when it has one of the exact `kinds` (bool is not an int here), else one line naming the field."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    v = data.get(key, default)
    if v is default:
        return v
    ok = any(type(v) is k or (k is float and type(v) is int) for k in kinds)
    if not ok:
        want = " or ".join(type_name(k()) if k is not type(None) else "null" for k in kinds)
        value = shown(json.dumps(v) if not isinstance(v, str) else repr(v), 40)
        raise err(f"{shown(str(src), 200)}: {label or key} {value} must be {want}, not {type_name(v)}")
    return v


def choice(value: str, choices, src, key: str, err: type[YiError] = YiError) -> str:
    """The one of `choices` that `value` is, in any case (`BF16`, as /set and --speculate take a value); else one
    line with a did-you-mean."""
    lower = {c.lower(): c for c in choices}
    if value.lower() in lower:
        return lower[value.lower()]
    near = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.5)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    raise err(f"{shown(str(src), 200)}: {key} = {shown(value, 40)!r}: use one of {', '.join(choices)}{hint}")

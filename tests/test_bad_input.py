"""The bad-input catalogue of issue 5: one test per row, each run as a user runs the installed command.

Every test asserts the message, the exit code (0 ok, 1 chat failure, 2 usage, 3 load failure, 130 interrupted)
and that no traceback reaches stderr. Load-failure rows break a tiny random Llama checkpoint (hidden 64, 2 layers)
that carries the demo's tokenizer, so most rows cost one interpreter start and no real model.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PY = sys.executable
TINY_CONTEXT = 4096  # long enough that a sampled reply outlasts a SIGTERM sent after its first bytes


# --- fixtures: tiny checkpoints ---------------------------------------------------------------------------------


def make_tiny(
    dst: Path, tokenizer_from: Path | None = None, *, context: int = TINY_CONTEXT, seed: int = 0, vocab: int = 0
) -> Path:
    """A random LlamaForCausalLM (hidden 64, 2 layers) saved as safetensors, with the tokenizer files of
    `tokenizer_from` (every non-weight, non-config file) or the ones already in `dst`; `vocab` rows (default: the
    tokenizer's)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    dst.mkdir(parents=True, exist_ok=True)
    if tokenizer_from is not None:
        for f in Path(tokenizer_from).iterdir():
            if (
                f.is_file()
                and f.suffix not in (".safetensors", ".bin")
                and f.name not in ("config.json", "generation_config.json", "model.safetensors.index.json")
            ):
                shutil.copy(f, dst / f.name)
    tok = AutoTokenizer.from_pretrained(str(dst))
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab or len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(cfg).save_pretrained(str(dst))
    return dst


def write_plain_tokenizer(dst: Path) -> None:
    """A byte-level tokenizer with no chat template and no ChatML tokens (a base model's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>").save_pretrained(
        str(dst)
    )


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, demo_fp32_dir):
    return make_tiny(tmp_path_factory.mktemp("tiny") / "tiny-llama", demo_fp32_dir)


@pytest.fixture
def tiny(tmp_path, tiny_dir):
    """A private copy of the tiny checkpoint, to break."""
    return Path(shutil.copytree(tiny_dir, tmp_path / "ckpt"))


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    h.mkdir()
    return h


# --- helpers ------------------------------------------------------------------------------------------------------

SAMPLE = ("--temperature", "1", "--top-p", "1", "--repetition-penalty", "1", "--seed", "0")  # random tokens: text


def yi(*args, stdin: bytes | str = b"", home: Path | None = None, env=None, timeout=180):
    e = {**os.environ, "COLUMNS": "80", **(env or {})}
    e.pop("NO_COLOR", None)
    if home is not None:
        e["YI_CHAT_HOME"] = str(home)
    return subprocess.run(
        [PY, "-m", "yi_cli", *map(str, args)],
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True,
        timeout=timeout,
        env=e,
    )


def piped(*args, home: Path) -> subprocess.Popen:
    """`python -m yi_cli ARGS` with its own YI_CHAT_HOME and stdin, stdout, stderr pipes, for a test to drive."""
    env = {**os.environ, "YI_CHAT_HOME": str(home)}
    pipe = subprocess.PIPE
    return subprocess.Popen([PY, "-m", "yi_cli", *map(str, args)], stdin=pipe, stdout=pipe, stderr=pipe, env=env)


def no_traceback(err: str) -> None:
    for bad in ("Traceback", "Exception ignored", "BrokenPipeError", "Fatal Python error"):
        assert bad not in err, err


def one_line_error(p, code: int, *needles: str) -> str:
    """The process failed with `code` and exactly one non-empty stderr line holding every needle."""
    err = p.stderr.decode(errors="replace")
    assert p.returncode == code, f"exit {p.returncode}, stderr:\n{err}"
    no_traceback(err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


def err_lines(p) -> list[str]:
    return [ln for ln in p.stderr.decode(errors="replace").splitlines() if ln.strip()]


def json_out(p) -> list[dict]:
    return [json.loads(x) for x in p.stdout.decode().splitlines() if x.strip()]


def set_config(ckpt: Path, **changes) -> None:
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg.update(changes)
    (ckpt / "config.json").write_text(json.dumps(cfg))


# --- the catalogue ------------------------------------------------------------------------------------------------


def test_invalid_utf8_and_nul_bytes_on_stdin(tiny_dir, home):
    stdin = (
        b"\xff\xfe not utf-8\n"  # invalid start bytes
        b"hello\n"
        b"hi\x00there\n"  # NUL byte
        b"\xed\xa0\x80 surrogate\n"  # UTF-8-encoded surrogate: invalid in strict UTF-8
        b"\xc0\xaf overlong\n"  # overlong encoding of '/'
        b"/history\n" + "你好，世界\n".encode("gbk")  # a prompt file saved in GBK: how to convert it is said
    )
    p = yi("--model", tiny_dir, "--json", "--temperature", "0", "--max-new-tokens", "2", stdin=stdin, home=home)
    err = p.stderr.decode()
    assert p.returncode == 1, err
    no_traceback(err)
    assert err_lines(p) == [
        "error: stdin line 1 is not valid UTF-8; skipped",
        "error: stdin line 3 contains a NUL byte; skipped",
        "error: stdin line 4 is not valid UTF-8; skipped",
        "error: stdin line 5 is not valid UTF-8; skipped",
        "error: stdin line 7 is not valid UTF-8; skipped (Chinese saved as GBK? pipe it through iconv -f GBK -t UTF-8)",
    ]
    objs = json_out(p)
    assert [o["prompt"] for o in objs if "prompt" in o] == ["hello"]  # the good line still ran
    hist = [o for o in objs if o.get("command") == "history"][0]["output"]
    assert "hello" in hist and "there" not in hist and "surrogate" not in hist


@pytest.mark.parametrize("columns", ["0", "99999999999", "1000000000"])
def test_a_columns_no_terminal_has_is_read_as_unset(tiny_dir, home, columns):
    """COLUMNS=0: rich took it as the width and printed every line empty, so the error lines and every command's
    output vanished and the run exited 1 in silence; 99999999999: /help ended in a MemoryError; 10**9: 13 s and 2.6
    GB for /help. They read as unset: the same output as COLUMNS=80 (a pipe's width)."""
    stdin = b"hi\x00there\nhello\n/set\n/help set\n"
    args = ("--model", tiny_dir, "--temperature", "0", "--max-new-tokens", "2")
    want = yi(*args, stdin=stdin, home=home)
    got = yi(*args, stdin=stdin, home=home, env={"COLUMNS": columns, "LINES": columns})
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)
    assert "contains a NUL byte" in got.stderr.decode() and b"temperature" in got.stdout


@pytest.mark.parametrize("where", ["-p", "words", "terminal"])
def test_invalid_utf8_in_the_prompt_argument_or_terminal(tiny_dir, home, where):
    """The same bytes the stdin row skips, arriving by the other two doors: -p (or the prompt words) and the
    interactive prompt. An argument is a usage error named as such before the model loads (it was "the input is
    not valid UTF-8; line ignored", exit 1, after loading it)."""
    if where != "terminal":
        args = [os.fsencode(PY), b"-m", b"yi_cli", b"--model", os.fsencode(tiny_dir), b"--max-new-tokens", b"2"]
        p = subprocess.run(
            [*args, *([b"-p"] if where == "-p" else []), b"caf\xe9 \xff"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=180,
            env={**os.environ, "YI_CHAT_HOME": str(home)},
        )
        name = "-p/--prompt is" if where == "-p" else "the prompt words are"
        assert one_line_error(p, 2, f"{name} not valid UTF-8")
        return
    import pexpect

    child = _spawn("--model", tiny_dir, "--temperature", "0", "--max-new-tokens", "2", home=home)
    try:
        child.expect_exact(">>>")
        os.write(child.child_fd, b"caf\xe9 \xff\r")
        child.expect_exact(">>>")  # still there
        child.sendline("/history")
        child.expect_exact(">>>")
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
        log = child.before
    finally:
        child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in log


def test_an_attached_file_whose_name_is_not_utf8(tiny_dir, home, tmp_path):
    """A file named in Latin-1 (an old archive's) attaches: its name, as the argument's surrogates, went into the
    message and the tokenizer's TypeError came out as a traceback. The message names it as `\\xe9`."""
    name = tmp_path / os.fsdecode(b"caf\xe9.txt")
    name.write_text("hello\n")
    p = subprocess.run(
        [os.fsencode(PY), b"-m", b"yi_cli", b"--model", os.fsencode(tiny_dir), b"--max-new-tokens", b"2", b"--json"]
        + [b"-f", os.fsencode(name), b"-p", b"hi"],
        capture_output=True,
        timeout=180,
        env={**os.environ, "YI_CHAT_HOME": str(home)},
    )
    err = p.stderr.decode(errors="replace")
    no_traceback(err)
    assert p.returncode == 0, err
    assert json_out(p)[0]["prompt"].startswith(str(tmp_path) + "/caf\\xe9.txt:\n```\nhello\n```")


@pytest.mark.parametrize("stdin", [b"", b"\n  \n\t\n"], ids=["empty", "blank-lines"])
def test_empty_stdin(tiny_dir, home, stdin):
    p = yi("--model", tiny_dir, stdin=stdin, home=home)
    err = p.stderr.decode()
    assert p.returncode == 0, err
    no_traceback(err)
    assert p.stdout == b""
    if not stdin:
        assert err_lines(p) == ["stdin is empty: nothing to do"]
    else:  # silent before, while an empty stdin said why nothing happened
        assert err_lines(p) == ["stdin has only blank lines: nothing to do"]


def test_a_one_shot_prompt_longer_than_the_context_names_flags_not_commands(tiny, home):
    """`--context 10 -p hi` said to /clear, which a one-shot run has not (a run-through)."""
    set_config(tiny, max_position_embeddings=128)
    p = yi("--model", tiny, "-p", "word " * 400, home=home)
    assert p.returncode == 1
    assert err_lines(p) == [err_lines(p)[0]] and err_lines(p)[0].startswith("error: the prompt is "), p.stderr
    # past the whole context, at the most the model takes: neither flag makes room (they were said all the same)
    assert err_lines(p)[0].endswith("; shorten it"), p.stderr
    assert "/clear" not in p.stderr.decode()
    p = yi("--model", tiny, "--context", "40", "-p", "word " * 40, home=home)
    assert p.returncode == 1 and err_lines(p)[0].endswith("; shorten it, or give more --context"), p.stderr
    p = yi("--model", tiny, "--context", "80", "--max-new-tokens", "40", "-p", "word " * 40, home=home)
    assert err_lines(p)[0].endswith("; shorten it, or give more --context or a lower --max-new-tokens"), p.stderr


def test_a_message_too_long_by_its_length_alone_is_refused_before_it_is_tokenized(tiny_dir, home):
    """50 MB piped in (one line, or -p -) took a minute and 4.7 GB to tokenize before the context refused it, or
    ended in the tokenizer's panic (a traceback) under a memory limit; the following lines were lost. More
    characters than 4 x the longest token's x the context is refused untokenized: one line, and the chat goes on."""
    big = "x" * 2_000_000  # the demo's longest token is 81 characters: 4 x 81 x 4096 = 1.3 M
    args = ("--model", tiny_dir, "--json", "--temperature", "0", "--max-new-tokens", "2")
    p = yi(*args, stdin=f"hi\n{big}\n/history\nagain\n", home=home)
    assert p.returncode == 1, p.stderr.decode()
    no_traceback(p.stderr.decode())
    said = "is 2000000 characters, more than the 4096-token context can hold; shorten it"
    assert err_lines(p) == [f"error: the message {said}"]
    objs = json_out(p)
    assert [o["prompt"] for o in objs if "prompt" in o and "error" not in o] == ["hi", "again"]
    [refused] = [o for o in objs if "error" in o]  # the refused message's object says why
    assert refused["prompt"] == big and refused["error"] == f"the message {said}" and refused["reply"] == ""
    assert "xxxx" not in [o for o in objs if o.get("command") == "history"][0]["output"]
    one_line_error(yi("--model", tiny_dir, "-p", "-", stdin=big, home=home), 1, f"the prompt {said}")


def test_an_edit_too_long_by_its_length_alone_is_refused_before_it_is_tokenized(tiny_dir, home):
    """`/edit TEXT` (and its editor's file, up to 64 MiB) went to the tokenizer whatever its length: a message's
    length check was in `send` only."""
    big = "x" * 2_000_000
    args = ("--model", tiny_dir, "--json", "--temperature", "0", "--max-new-tokens", "2")
    p = yi(*args, stdin=f"hi\n/edit {big}\n/history\n", home=home)
    assert p.returncode == 1, p.stderr.decode()
    no_traceback(p.stderr.decode())
    assert err_lines(p) == [
        "error: the message is 2000000 characters, more than the 4096-token context can hold; shorten it (the edit "
        "was not applied: /retry sends it again, /edit rewrites it)"
    ]
    assert "hi" in [o for o in json_out(p) if o.get("command") == "history"][0]["output"]  # the exchange stays


def test_a_message_refused_by_its_length_says_its_files_wait(tiny_dir, home, tmp_path):
    """A message too long by its length alone, with a file attached: the file waited for the next message, and
    nothing said so (README: a refused message leaves its attachments waiting, "and says so"; a context hunt)."""
    f = tmp_path / "tiny.txt"
    f.write_text("hello\n")
    p = yi("--model", tiny_dir, "--max-new-tokens", "2", stdin=f"/file {f}\n{'word ' * 400_000}\n/file\n", home=home)
    lines = err_lines(p)
    assert p.returncode == 1 and lines[0].startswith("error: the message is 2000000 characters"), lines
    assert lines[1] == f"still attached for the next message: {f} (/detach drops them)", lines
    assert lines[2:] == [f"error: {f}: attached, but the input ended before a message took it; not sent"], lines
    assert f"attached for the next message: {f}" in p.stdout.decode()


def test_a_file_grown_since_it_was_attached_is_refused_by_its_length_before_it_is_tokenized(tiny_dir, home, tmp_path):
    """A file attached small and grown before the message went was read again and tokenized whole (3 MB: seconds
    and a GB), where the same file given to /file then was refused by its length at once. Refused so, the message
    says its file waits for the next one, as a refusal by the tokenizer does."""
    f = tmp_path / "grow.txt"
    f.write_text("small\n")
    e = {**os.environ, "YI_CHAT_HOME": str(home), "COLUMNS": "80"}
    cmd = [PY, "-m", "yi_cli", "--model", tiny_dir, "--json", "--max-new-tokens", "2"]
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e) as proc:
        proc.stdin.write(f"/file {f}\n".encode())
        proc.stdin.flush()
        first = json.loads(proc.stdout.readline())  # the command's answer: the file is attached, as it was then
        assert first["command"] == "file" and "attached" in first["output"], first
        f.write_text("word " * 600_000)  # 3 MB, past 4 x 81 x 4096 characters
        out, err = proc.communicate(b"hi\n/file\n", timeout=180)
    err = err.decode()
    no_traceback(err)
    assert proc.returncode == 1, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    said = [ln for ln in lines if ln.startswith("error: the message with its files is ")]
    assert len(said) == 1 and said[0].endswith(" characters, more than the 4096-token context can hold; shorten it")
    waits = lines.index(said[0]) + 1  # and that the file waits, as a refusal by the tokenizer says: it said nothing
    assert lines[waits] == f"still attached for the next message: {f} (/detach drops them)", lines
    objs = [json.loads(ln) for ln in out.decode().splitlines() if ln.strip()]
    assert [o.get("command") for o in objs] == [None, "file", None], objs  # the message's, /file's, the end's
    assert objs[0]["error"] == said[0].removeprefix("error: ")
    assert "grow.txt" in objs[1]["output"]  # still attached for the next message
    assert objs[2]["error"].endswith("grow.txt: attached, but the input ended before a message took it; not sent")


def test_prompt_longer_than_the_context(tiny, home):
    set_config(tiny, max_position_embeddings=128)
    long = "word " * 400
    p = yi(
        "--model",
        tiny,
        "--json",
        "--temperature",
        "0",
        "--max-new-tokens",
        "2",
        stdin=f"hi\n{long}\n/history\nagain\n",
        home=home,
    )
    err = p.stderr.decode()
    assert p.returncode == 1, err
    no_traceback(err)
    lines = err_lines(p)
    assert len(lines) == 1, err  # one line, however narrow rich thinks a pipe is
    assert lines[0].startswith("error: the prompt is ") and "fit in the context" in lines[0], lines
    # /clear would not make room (the long message alone does not fit), nor a lower max_new_tokens (it is past the
    # whole context): neither is suggested; no system prompt to name
    assert lines[0].endswith("; shorten it"), lines
    objs = json_out(p)
    assert [o["prompt"] for o in objs if "prompt" in o and "error" not in o] == ["hi", "again"]  # it went on
    assert [o["prompt"] for o in objs if "error" in o] == [long]  # the refused message's object, with its line
    hist = [o for o in objs if o.get("command") == "history"][0]["output"]
    assert "hi" in hist and "word" not in hist  # the long turn was not recorded; the earlier one was kept


def test_unknown_or_malformed_slash_commands(tiny_dir, home):
    script = (
        "\n".join(
            [
                "/bogus",
                "/histroy",
                "/undo now",
                "/set top_p 7",
                "/set temperature",
                "/set colour red",
                "/",
                "/load",
                "/retry x",
                "hi",
                "/history",
            ]
        )
        + "\n"
    )
    p = yi("--model", tiny_dir, "--json", "--temperature", "0", "--max-new-tokens", "2", stdin=script, home=home)
    err = p.stderr.decode()
    assert p.returncode == 1, err
    no_traceback(err)
    lines = err_lines(p)
    expected = [
        "error: unknown command /bogus; /help lists them, and //TEXT sends a message starting /",
        "error: unknown command /histroy; did you mean /history?",
        "error: /undo takes no argument (usage: /undo)",
        "error: top_p must be in (0, 1], got 7.0",
        "error: usage: /set NAME VALUE (/set alone lists the settings)",
        "error: unknown setting 'colour'",
        "error: unknown command /; /help lists them, and //TEXT sends a message starting /",
        "error: usage: /load PATH (or a NAME yi-chat sessions lists)",
        "error: nothing to retry",
    ]
    assert len(lines) == len(expected), err
    for line, want in zip(lines, expected, strict=False):
        assert line.startswith(want), (line, want)
    assert "known: temperature, top_p" in lines[5] and lines[5].endswith("seed")  # long, still one line
    objs = json_out(p)
    assert [o["prompt"] for o in objs if "prompt" in o] == ["hi"]  # the session went on
    assert "hi" in [o for o in objs if o.get("command") == "history"][0]["output"]


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--top-p", "3"], "--top-p must be in (0, 1]"),
        (["--temperature", "-1"], "--temperature must be between 0 and 5"),
        (["--temperature", "nan"], "--temperature must be a finite number"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be between 1 and"),
        (["--top-k", "-1"], "--top-k must be >= 0"),
        (["--top-k", "9" * 45], "--top-k must be >= 0 (0 = off) and at most 2147483647 (2**31 - 1;"),  # not exit 1
        (["--context", "3000000K"], "is more tokens than any model's context (at most 2**31 - 1 = 2147483647)"),
        (["--connect-timeout", "1e12"], "'1e12' is too many seconds (at most 1000000)"),  # was a traceback
        (["--idle-timeout", "1e12"], "'1e12' is too many seconds (at most 1000000)"),
        (["--repetition-penalty", "0"], "--repetition-penalty must be in (0, 10]"),
        (["--seed", "-5"], "--seed must be an integer from 0 to 2**63 - 1, got -5"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--temperature", "hot"], "invalid float value: 'hot'"),
        (["--dtype", "fp8"], "invalid choice: 'fp8'"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--overflow", "maybe"], "invalid choice: 'maybe'"),
        (["--system", "caf\udce9"], "argument --system: not valid UTF-8 text"),  # b"caf\xe9": each turn failed
        (["--resume", ""], "--resume is empty: give a session file or id, or last"),  # a fresh session, silently
        (["-f", ""], "-f/--file is empty: give a file path, or - for stdin"),  # was ": is a directory"
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_flag_values(tiny_dir, home, flags, needle):
    p = yi("--model", tiny_dir, *flags, "-p", "hi", home=home)
    one_line_error(p, 2, needle)


@pytest.mark.parametrize("where", ["--model", "YI_CHAT_MODEL"])
def test_a_demo_name_with_a_newline_is_named_on_one_line(home, where):
    """`demo<newline>x`, a typo of a demo name: the line said "YI_CHAT_MODEL=demo", then "x: no such demo model"
    on a second line. Control characters are escaped, as in every other message naming a model."""
    name = "demo\nx"
    args, env = (["--model", name], None) if where == "--model" else ([], {"YI_CHAT_MODEL": name})
    one_line_error(yi(*args, "-p", "hi", home=home, env=env), 3, "demo\\nx: no such demo model or directory")


@pytest.mark.parametrize(
    "case,needle",
    [
        ("missing", "no config.json"),
        ("empty", "corrupt config.json (the file is empty)"),  # it was "(JSONDecodeError: Expecting value: ...)"
        ("corrupt", "corrupt config.json"),
        ("binary", "corrupt config.json"),
        ("not-an-object", "not a transformers model config"),
        ("no-model-type", "not a transformers model config (no model_type)"),
    ],
)
def test_missing_empty_or_corrupt_config_json(tiny, home, case, needle):
    cfg = tiny / "config.json"
    {
        "missing": lambda: cfg.unlink(),
        "empty": lambda: cfg.write_bytes(b""),
        "corrupt": lambda: cfg.write_text('{"model_type": "llama", '),
        "binary": lambda: cfg.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe"),
        "not-an-object": lambda: cfg.write_text("[1, 2, 3]"),
        "no-model-type": lambda: cfg.write_text('{"hidden_size": 64}'),
    }[case]()
    line = one_line_error(yi("--model", tiny, "-p", "hi", home=home), 3, needle)
    assert str(tiny) in line  # names the path


def _split_into_index(ckpt: Path) -> list[str]:
    """Rewrite model.safetensors as two shards plus model.safetensors.index.json; returns the shard names."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(ckpt / "model.safetensors"))
    (ckpt / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": names[: len(names) // 2],
        "model-00002-of-00002.safetensors": names[len(names) // 2 :],
    }
    for fname, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(ckpt / fname), metadata={"format": "pt"})
    weight_map = {k: f for f, keys in shards.items() for k in keys}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return list(shards)


def _drop_tensor(f: Path, name: str) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(f))
    del tensors[name]
    save_file(tensors, str(f), metadata={"format": "pt"})


@pytest.mark.parametrize(
    "case",
    ["no-weights", "shard-missing", "truncated", "garbage", "missing-tensor", "awq-missing-tensor", "awq-truncated"],
)
def test_checkpoint_missing_weights_or_tensor_or_truncated(tiny, tmp_path, home, case):
    ckpt = tiny
    if case.startswith("awq"):
        from yi_cli.checkpoint import writer

        ckpt = writer.make_awq(tiny, tmp_path / "awq", group_size=64)
    st = ckpt / "model.safetensors"
    if case == "no-weights":
        st.unlink()
        needles = [str(ckpt), "no weight files"]
    elif case == "shard-missing":
        shards = _split_into_index(ckpt)
        (ckpt / shards[1]).unlink()
        needles = [shards[1], "listed in the index is missing"]
    elif case in ("truncated", "awq-truncated"):
        data = st.read_bytes()
        st.write_bytes(data[: len(data) // 2])
        needles = [str(st), "truncated"]
    elif case == "garbage":
        st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json header!" + b"\0" * 64)
        needles = [str(st), "not a valid safetensors file"]
    elif case == "missing-tensor":
        _drop_tensor(st, "model.layers.1.mlp.down_proj.weight")
        needles = [str(st), "missing tensor model.layers.1.mlp.down_proj.weight"]
    else:
        _drop_tensor(st, "model.layers.0.self_attn.q_proj.qweight")
        needles = [str(st), "missing tensor model.layers.0.self_attn.q_proj.qweight"]
    one_line_error(yi("--model", ckpt, "-p", "hi", home=home), 3, *needles)


def _retype(f: Path, name: str, dtype: str) -> None:
    """Tensor `name`'s dtype in the header of safetensors file f changed to one of the same width, its bytes kept."""
    data = f.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header[name]["dtype"] = dtype
    text = json.dumps(header).encode()
    f.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n :])


@pytest.mark.parametrize("tensor", ["model.norm.weight", "model.layers.0.mlp.up_proj.scales"])
def test_weights_that_are_not_numbers_fail_the_turn_in_one_line(tiny, tmp_path, home, tensor):
    """NaN weights (a norm, an AWQ layer's scales): the fast engine answered "ringingringing…" or nothing, exit 0,
    where the generate engine failed the turn (a hostile-checkpoint hunt)."""
    import torch
    from safetensors.torch import load_file, save_file

    from yi_cli.checkpoint import writer

    ckpt = writer.make_awq(tiny, tmp_path / "awq", group_size=64)
    st = ckpt / "model.safetensors"
    tensors = load_file(str(st))
    tensors[tensor] = torch.full_like(tensors[tensor], float("nan"))
    save_file(tensors, str(st), metadata={"format": "pt"})
    # the generate engine too: greedy, it answered nothing, `stop`, exit 0; sampled, in transformers' own words
    for engine, greedy in itertools.product(("fast", "generate"), ([], ["--temperature", "0"])):
        p = yi("--model", ckpt, "--engine", engine, "--max-new-tokens", "4", *greedy, "-p", "hi", home=home)
        one_line_error(p, 1, "error: the model computed logits that are not numbers (NaN or infinity)")
        assert p.stdout.decode().strip() == ""


def test_a_tied_config_with_a_head_of_its_own_answers_alike_on_both_engines(tiny, home):
    """tie_word_embeddings true, and an lm_head.weight of its own in the file: the fast engine tied the head to the
    embeddings, transformers (the generate engine, yi_cli.load) reads the file's: two answers to one prompt. The
    file's head, on each: the answer of the checkpoint untied."""
    from safetensors.torch import load_file, save_file

    st = str(tiny / "model.safetensors")
    tensors = load_file(st)  # (tiny is tied: no head of its own) a head unlike the embeddings
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].flip(0).contiguous()
    save_file(tensors, st, metadata={"format": "pt"})
    flags = ("--json", "--temperature", "0", "--max-new-tokens", "6", "-p", "hi")
    greedy = ("--model", tiny, *flags)
    set_config(tiny, tie_word_embeddings=False)
    want = json.loads(yi(*greedy, home=home).stdout)["reply"]
    set_config(tiny, tie_word_embeddings=True)
    for engine in ("fast", "generate"):
        p = yi(*greedy, "--engine", engine, home=home)
        assert p.returncode == 0 and json.loads(p.stdout)["reply"] == want, (engine, p.stderr.decode())
    from yi_cli.checkpoint import writer  # quantized, the generate engine's model is built from the file's tensors

    awq = writer.make_awq(tiny, tiny.parent / "awq", group_size=64)
    replies = [
        json.loads(yi("--model", awq, *flags, "--engine", e, home=home).stdout)["reply"] for e in ("fast", "generate")
    ]
    assert replies[0] == replies[1], replies


def test_a_generation_config_asking_what_yi_chat_does_not_is_not_taken(tiny, home):
    """generation_config.json fields beyond yi-chat's settings, taken by the generate engine alone: min_p 2.0 failed
    every turn (transformers' ValueError), max_time 0.05 cut each reply to a token, said as the token limit, and
    min_new_tokens past --max-new-tokens printed four lines of transformers' warnings. The settings decide, as on
    the fast engine: its greedy reply is the one without them."""
    greedy = ("--model", tiny, "--engine", "generate", "--json", "--temperature", "0", "--max-new-tokens", "6")
    want = json.loads(yi(*greedy, "-p", "hi", home=home).stdout)["reply"]
    config = {"eos_token_id": 2, "min_p": 2.0, "typical_p": 0.0, "max_time": 0.0001, "min_new_tokens": 16}
    config["max_new_tokens"] = 0  # one transformers refuses: the generate engine failed to load (the fast chatted)
    (tiny / "generation_config.json").write_text(json.dumps(config))
    p = yi(*greedy, "-p", "hi", home=home)
    assert p.returncode == 0 and p.stderr.decode() == "", p.stderr.decode()
    assert json.loads(p.stdout)["reply"] == want


@pytest.mark.parametrize(
    "case", ["int-norm", "awq-int-scales", "backup-copy", "dangling-template", "looping-tokenizer"]
)
def test_checkpoint_files_that_loaded_into_garbage_are_one_line(tiny, tmp_path, home, case):
    """A hostile-checkpoint hunt: floats stored as I32 / I16 (a norm, AWQ scales) were converted as numbers, and a
    copy of the weights beside them (no index) replaced every tensor, each a chat of garbage, exit 0; a chat template
    linked to nothing was passed over (the chat ran on ChatML), a looping tokenizer.json was "no tokenizer files"."""
    ckpt = tiny
    if case.startswith("awq"):
        from yi_cli.checkpoint import writer

        ckpt = writer.make_awq(tiny, tmp_path / "awq", group_size=64)
    st = ckpt / "model.safetensors"
    if case == "int-norm":
        _retype(st, "model.norm.weight", "I32")
        needles = [str(st), "tensor model.norm.weight is int32, not floats"]
    elif case == "awq-int-scales":
        _retype(st, "model.layers.0.mlp.up_proj.scales", "I16")
        needles = [str(st), "tensor model.layers.0.mlp.up_proj.scales is int16, expected float16 or"]
    elif case == "backup-copy":
        shutil.copy(st, ckpt / "model_old.safetensors")
        needles = [str(ckpt / "model_old.safetensors"), "is also in model.safetensors"]
    elif case == "dangling-template":
        (ckpt / "chat_template.jinja").unlink(missing_ok=True)
        (ckpt / "chat_template.jinja").symlink_to("/nonexistent")
        needles = ["chat_template.jinja: a symbolic link to /nonexistent, which does not exist"]
    else:
        (ckpt / "tokenizer.json").unlink()
        (ckpt / "tokenizer.json").symlink_to("tokenizer.json")
        needles = ["tokenizer.json: cannot read the tokenizer.json"]
    one_line_error(yi("--model", ckpt, "-p", "hi", home=home), 3, *needles)
    if case == "int-norm":  # the generate engine read the bits as numbers: "\n\n\n\n", exit 0
        one_line_error(yi("--model", ckpt, "--engine", "generate", "-p", "hi", home=home), 3, *needles)


def test_a_sharded_checkpoint_reads_the_files_its_index_names_and_a_tensor_in_one_of_them(tiny, home):
    """The fast engine read every *.safetensors of a sharded checkpoint: a backup beside the shards (its norm
    changed) replaced their tensors, garbage with exit 0, where transformers reads the index's files alone; a tensor
    in two shards was the later one's on both engines. The index's files are read, and a tensor in two is refused."""
    from safetensors.torch import load_file, save_file

    greedy = ("--model", tiny, "--json", "--temperature", "0", "--max-new-tokens", "6", "-p", "hi")
    want = json.loads(yi(*greedy, home=home).stdout)["reply"]
    tensors = load_file(str(tiny / "model.safetensors"))
    (tiny / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2]}
    shards["model-00002-of-00002.safetensors"] = names[len(names) // 2 :]
    for f, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(tiny / f), metadata={"format": "pt"})
    weight_map = {k: f for f, keys in shards.items() for k in keys}
    (tiny / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    tensors["model.norm.weight"] = -3 * tensors["model.norm.weight"]
    save_file(tensors, str(tiny / "model_old.safetensors"), metadata={"format": "pt"})  # not in the index
    p = yi(*greedy, home=home)
    assert p.returncode == 0 and json.loads(p.stdout)["reply"] == want, p.stderr.decode()
    (tiny / "model_old.safetensors").unlink()
    first = tiny / "model-00001-of-00002.safetensors"
    one = load_file(str(first))
    one["model.norm.weight"] = tensors["model.norm.weight"]  # also in the second shard, which the index names
    save_file(one, str(first), metadata={"format": "pt"})
    one_line_error(yi(*greedy, home=home), 3, "tensor model.norm.weight is also in model-00001-of-00002.safetensors")


@pytest.mark.parametrize(
    "where,qc,needles",
    [
        ("config.json", {"quant_method": "bitsandbytes", "bits": 4}, ["'bitsandbytes' is not supported"]),
        ("config.json", {"quant_method": "awq", "bits": 3, "group_size": 64, "version": "gemm"}, ["bits=3"]),
        ("config.json", {"quant_method": "awq", "bits": 4, "group_size": 64, "version": "gemv"}, ["'gemv'"]),
        ("config.json", {"quant_method": "gptq", "bits": 3, "group_size": 64}, ["bits=3"]),
        ("config.json", {"quant_method": "awq", "bits": 4, "group_size": "big"}, ["group_size 'big'"]),
        ("quantize_config.json", {"bits": 2, "group_size": 64, "desc_act": False}, ["bits=2"]),
    ],
)
def test_unsupported_quant_method_or_bits(tiny, home, where, qc, needles):
    if where == "config.json":
        set_config(tiny, quantization_config=qc)
    else:
        (tiny / where).write_text(json.dumps(qc))
    line = one_line_error(yi("--model", tiny, "-p", "hi", home=home), 3, *needles)
    assert str(tiny / where) in line  # names the config file and the value


@pytest.mark.parametrize(
    "rope,needle",
    [
        ({"rope_type": "bogus", "rope_theta": 1e4}, "rope_type 'bogus' is not one yi-chat knows"),
        ({"rope_type": 5, "rope_theta": 1e4}, "rope_type 5 is not one yi-chat knows"),
        ({"rope_type": "linear", "rope_theta": 1e4, "factor": "x"}, "rope_parameters.factor must be a number"),
        ({"rope_type": "linear", "rope_theta": 1e4, "factor": 0.0}, "rope_parameters"),
    ],
)
def test_rope_parameters_the_fast_engine_cannot_compute_are_one_line(tiny, home, rope, needle):
    """An unknown rope_type, or a factor that is no number, was an internal error on the fast engine (KeyError,
    TypeError), exit 1, where the generate engine exits 3 (a hostile-checkpoint hunt)."""
    set_config(tiny, rope_parameters=rope)
    one_line_error(yi("--model", tiny, "-p", "hi", home=home), 3, f"{tiny / 'config.json'}: ", needle)


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"rope_scaling": {"rope_type": "linear", "factor": -5}}, "rope_scaling.factor must be a number in 1..65536"),
        (
            {"rope_scaling": {"rope_type": "yarn", "factor": 1e300, "original_max_position_embeddings": 8192}},
            "rope_scaling.factor must be a number in 1..65536, found a number 1e+300",
        ),
        (
            {
                "rope_scaling": {
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 0,
                }
            },
            "rope_scaling.original_max_position_embeddings must be an integer in 1..",
        ),
        (
            {
                "rope_scaling": {
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 4.0,
                    "high_freq_factor": 1.0,
                    "original_max_position_embeddings": 8192,
                }
            },
            "rope_scaling.low_freq_factor = 4 must be under its high_freq_factor = 1",
        ),
        ({"rms_norm_eps": 1e300}, "rms_norm_eps = 1e+300 is not a plausible epsilon"),
    ],
)
def test_rope_scalings_and_epsilons_no_model_has_are_one_line(tiny, home, change, needle):
    """A rope scaling factor of -5 or 1e300, llama3's original context 0 or its frequency factors the wrong way
    round, rms_norm_eps 1e300: each loaded and answered garbage (or nothing), exit 0 (a hostile-checkpoint hunt)."""
    set_config(tiny, **change)
    one_line_error(yi("--model", tiny, "-p", "hi", home=home), 3, f"{tiny / 'config.json'}: ", needle)


@pytest.mark.parametrize("engine", ["fast", "generate"])
@pytest.mark.parametrize("generation", ["bom", "missing"])
def test_json_files_saved_with_a_byte_order_mark_load_on_either_engine(tiny, home, engine, generation):
    """config.json and generation_config.json saved "UTF-8 with BOM" (a Windows editor): the fast engine chatted,
    while /model and --engine generate failed in transformers' words, "is not a valid JSON file" (a
    hostile-checkpoint hunt). The generate engine still failed so where generation_config.json was missing or had
    a BOM too: transformers' model loader then read config.json itself."""
    names = ["config.json"] + (["generation_config.json"] if generation == "bom" else [])
    if generation == "missing":
        (tiny / "generation_config.json").unlink()
    for name in names:
        f = tiny / name
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    p = yi("--model", tiny, "--engine", engine, "--max-new-tokens", "2", stdin="hi\n/model\n", home=home)
    assert p.returncode == 0 and "error" not in p.stderr.decode(), p.stderr.decode()


def test_an_odd_head_size_is_refused_as_the_model_loads(tiny, home):
    """head_dim 63 loaded, then every turn failed ("The size of tensor a (63) must match ... (64)"): RoPE turns
    pairs of dimensions; transformers refuses it as the model builds (a hostile-checkpoint hunt)."""
    set_config(tiny, head_dim=63)
    one_line_error(yi("--model", tiny, "-p", "hi", home=home), 3, f"{tiny / 'config.json'}: head_dim = 63 is odd")


@pytest.mark.parametrize("template", [5, True, [{"name": "default", "template": 5}]])
def test_a_chat_template_that_is_not_text_is_one_line(tiny, home, template):
    """`"chat_template": 5` in tokenizer_config.json was an internal error (AttributeError: 'int' object has no
    attribute 'strip'), exit 1, at -m and after `pull` said ready (a hostile-checkpoint hunt)."""
    (tiny / "chat_template.jinja").unlink()
    tc = json.loads((tiny / "tokenizer_config.json").read_text())
    tc["chat_template"] = template
    (tiny / "tokenizer_config.json").write_text(json.dumps(tc))
    one_line_error(yi("--model", tiny, "-p", "hi", home=home), 3, f"{tiny / 'tokenizer_config.json'}: chat_template")


@pytest.mark.parametrize("vocab", ["chatml", "plain"])
def test_tokenizer_without_a_template(tiny, tmp_path, home, vocab):
    """No chat template: ChatML when the vocab has <|im_start|>/<|im_end|>, else raw text (no template)."""
    if vocab == "chatml":
        ckpt = tiny
        (ckpt / "chat_template.jinja").unlink()
        tc = json.loads((ckpt / "tokenizer_config.json").read_text())
        tc.pop("chat_template", None)
        (ckpt / "tokenizer_config.json").write_text(json.dumps(tc))
    else:
        ckpt = tmp_path / "plain"
        ckpt.mkdir()
        write_plain_tokenizer(ckpt)
        make_tiny(ckpt)
    assert not (ckpt / "chat_template.jinja").exists()
    p = yi(
        "--model", ckpt, "--json", "--temperature", "0", "--max-new-tokens", "2", stdin="hi there\n/prompt\n", home=home
    )
    err = p.stderr.decode()
    assert p.returncode == 0, err
    no_traceback(err)
    objs = json_out(p)
    assert objs[0]["prompt"] == "hi there" and objs[0]["finish_reason"] in ("stop", "length")
    prompt = [o for o in objs if o.get("command") == "prompt"][0]["output"]
    if vocab == "chatml":  # yi-chat's ChatML fallback (SmolLM's own template would add a default system turn)
        assert prompt.startswith("<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n"), prompt
        assert "SmolLM" not in prompt
    else:  # raw mode: the conversation text as is, no markers
        assert prompt.startswith("hi there") and "<|im_start|>" not in prompt, prompt


@pytest.mark.parametrize("gone", [("tokenizer.json",), ("tokenizer.json", "tokenizer_config.json")])
def test_a_checkpoint_without_tokenizer_files_says_so(tiny, home, gone):
    """A checkpoint copied without its tokenizer said `cannot load the tokenizer (ValueError: Couldn't instantiate
    the backend tokenizer from one of: (1) a `tokenizers` library serialization file,)`, cut mid-list: one line
    saying which files are missing."""
    for name in gone:
        (tiny / name).unlink()
    one_line_error(
        yi("--model", tiny, "-p", "hi", home=home), 3, f"{tiny}: no tokenizer files (tokenizer.json or tokenizer.model)"
    )


def test_model_that_is_a_file(tmp_path, tiny_dir, home):
    for f in (tiny_dir / "model.safetensors", tiny_dir / "config.json"):
        line = one_line_error(
            yi("--model", f, "-p", "hi", home=home), 3, "is a file", "--model takes a checkpoint directory"
        )
        assert str(f) in line
    # what is there, said as it is (/dev/zero was "is a file")
    one_line_error(yi("--model", "/dev/zero", "-p", "hi", home=home), 3, "/dev/zero: is a character device; --model")


def test_a_tilde_for_a_user_this_system_does_not_know(tiny_dir, home):
    """~USER/... for an unknown user: one line naming it (pathlib raises RuntimeError: a traceback from --model,
    pull and --file, "failed (RuntimeError: ...)" from /save and /load), and a piped session goes on."""
    who = "~nosuchuser-yi"
    one_line_error(yi("--model", f"{who}/x", "-p", "hi", home=home), 3, f"cannot expand {who}", "no user")
    one_line_error(yi("pull", f"{who}/x", home=home), 2, f"cannot expand {who}")
    # with a trailing slash, its check expanded the ~ outside the guard: an internal error (RuntimeError)
    one_line_error(yi("--model", f"{who}/", "-p", "hi", home=home), 3, f"cannot expand {who}", "no user")
    one_line_error(yi("--model", tiny_dir, "-f", f"{who}/notes.txt", "-p", "hi", home=home), 2, f"{who}/notes.txt")
    script = f"/file {who}/f.txt\n/save {who}/s.json\n/load {who}/l.json\nhi\n"
    p = yi("--model", tiny_dir, "--json", "--temperature", "0", "--max-new-tokens", "2", stdin=script, home=home)
    no_traceback(p.stderr.decode())
    lines = err_lines(p)
    assert len(lines) == 3 and all(f"cannot expand {who} (no user" in ln for ln in lines), lines
    assert [o["prompt"] for o in json_out(p) if "prompt" in o] == ["hi"]


def test_device_cuda_without_cuda(tiny_dir, home):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for dev in ("cuda", "cuda:1"):
        one_line_error(
            yi("--model", tiny_dir, "--device", dev, "-p", "hi", home=home), 3, f"--device {dev}: CUDA is not available"
        )
    # from config.toml, the line names the setting there (it named a --device the user never typed)
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "config.toml").write_text('device = "cuda"\n')
    p = yi("--model", tiny_dir, "-p", "hi", home=home)
    one_line_error(p, 3, "config.toml: device = cuda: CUDA is not available")


def test_a_device_this_machine_lacks_is_one_line(tiny_dir, home, monkeypatch):
    """`--device mps` (which the parser takes) without MPS was torch's RuntimeError, a 31-line traceback; `cuda:٣`
    (Unicode digits pass isdigit) was torch's "Invalid device string"; cuda:N past the devices there are failed
    later, in torch."""
    import torch

    if not torch.backends.mps.is_available():
        p = yi("--model", tiny_dir, "--device", "mps", "-p", "hi", home=home)
        one_line_error(p, 3, "--device mps: Apple's MPS")
    one_line_error(yi("--model", tiny_dir, "--device", "cuda:\u0663", "-p", "hi", home=home), 2, "unknown device")
    from yi_cli.checkpoint.loader import pick_device
    from yi_cli.errors import LoadError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a unit: a machine with one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda:0") == "cuda:0"
    for bad in ("cuda:x", "cuda:", "cuda:\u0663", "tpu"):  # yi_cli.load(device=...) passes no argument parser
        with pytest.raises(LoadError, match="unknown device"):
            pick_device(bad)
    with pytest.raises(LoadError, match=r"--device cuda:1: this machine has 1 CUDA device \(cuda:0 to cuda:0\)"):
        pick_device("cuda:1")


def test_a_line_ended_by_a_bare_cr_is_handled_as_it_arrives(tiny_dir, home):
    """A CR-ended line waited for an LF (or the end) before it ran, and a CR-only stream was held whole: the line's
    answer comes while the writer still holds the pipe open."""
    import select

    e = {**os.environ, "YI_CHAT_HOME": str(home)}
    cmd = [PY, "-m", "yi_cli", "--model", str(tiny_dir), "--json"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
    try:
        p.stdin.write(b"/system be brief\r")
        p.stdin.flush()
        # the answer to the line, with stdin still open (180 s: a bound on a failure, the line waiting for more)
        assert select.select([p.stdout], [], [], 180)[0], "no answer to a CR-ended line while stdin stays open"
        assert json.loads(p.stdout.readline()) == {"command": "system", "output": "system prompt set\n"}
        out, err = p.communicate(b"\n/system\r\n", timeout=180)  # an LF right after the CR ends no second line
    finally:
        p.kill()
    assert p.returncode == 0, err.decode()
    assert [json.loads(x)["output"] for x in out.splitlines()] == ["system prompt: be brief\n"]


def test_utf16_whose_mark_comes_in_a_read_of_its_own_is_still_known(tiny_dir, home):
    """The byte order mark written alone (a slow writer), the text after it later: the first read held the mark
    and nothing to judge by, and each line was "not valid UTF-8" or "contains a NUL byte" (a pipes hunt). The run
    reads on until it can tell. The rest is written once the pipe is empty: the mark was read on its own."""
    import fcntl
    import termios

    p = piped("--model", tiny_dir, home=home)
    try:
        p.stdin.write(b"\xff\xfe")
        p.stdin.flush()
        deadline = time.monotonic() + 180
        queued = bytearray(4)
        while time.monotonic() < deadline:  # FIONREAD of the pipe, from its writing end: the bytes not read yet
            fcntl.ioctl(p.stdin.fileno(), termios.FIONREAD, queued)
            if int.from_bytes(queued, sys.byteorder) == 0 or p.poll() is not None:
                break
            time.sleep(0.01)
        out, err = p.communicate("hi\nthere\n".encode("utf-16-le"), timeout=180)
    finally:
        p.kill()
    lines = err.decode().splitlines()
    assert p.returncode == 1 and len(lines) == 1, err.decode()
    assert lines[0].startswith("error: stdin is UTF-16 text, not UTF-8; nothing read") and "iconv" in lines[0]


def test_utf16_piped_in_is_one_line_with_the_conversion(tiny_dir, home):
    """A UTF-16 prompt file (PowerShell's `>` writes one) was a line of errors for each of its lines and each CR
    in them ("not valid UTF-8", "contains a NUL byte"): one line, with the iconv command, and nothing read."""
    text = "hi\r\nthere\r\n/help\r\n".encode("utf-16")
    p = yi("--model", tiny_dir, "--json", stdin=text, home=home)
    line = one_line_error(p, 1, "stdin is UTF-16 text, not UTF-8; nothing read", "iconv -f UTF-16 -t UTF-8")
    assert [json.loads(x) for x in p.stdout.splitlines()] == [{"error": line.removeprefix("error: ")}]


@pytest.mark.parametrize(
    "encoding, named", [("utf-32", "UTF-32"), ("utf-16-le", "UTF-16LE"), ("utf-16-be", "UTF-16BE")]
)
def test_utf32_and_unmarked_utf16_piped_in_are_named_as_f_names_them(tiny_dir, home, encoding, named):
    """A piped chat called UTF-32 "UTF-16" (its iconv command then made lines of NUL bytes) and skipped unmarked
    UTF-16 line by line ("contains a NUL byte"), where -f and -p - named each: the same detector, the same line."""
    p = yi("--model", tiny_dir, stdin="hello there\nand more\n".encode(encoding), home=home)
    one_line_error(p, 1, f"stdin is {named} text, not UTF-8; nothing read", f"iconv -f {named} -t UTF-8")


def test_utf16_of_one_line_of_chinese_piped_in_is_known(tiny_dir, home):
    """A line of Chinese saved by Notepad as UTF-16 (a mark, no line end, nothing ASCII) was skipped as a line of
    invalid UTF-8, with no iconv command: the mark is enough where the rest reads as text."""
    p = yi("--model", tiny_dir, stdin="你好，请介绍一下你自己".encode("utf-16"), home=home)
    one_line_error(p, 1, "stdin is UTF-16 text, not UTF-8; nothing read", "iconv -f UTF-16 -t UTF-8")


def test_json_command_output_is_laid_out_whatever_columns_says(tiny_dir, home):
    """--json is machine output: a command's text is laid out at 100 columns, with COLUMNS 40 or 200 alike (README)."""
    runs = [
        yi("--model", tiny_dir, "--json", stdin="/help set\n/history\n", home=home, env={"COLUMNS": c})
        for c in ("40", "200")
    ]
    assert [p.returncode for p in runs] == [0, 0], runs[0].stderr.decode()
    assert runs[0].stdout == runs[1].stdout
    out = [json.loads(x)["output"] for x in runs[0].stdout.splitlines()]
    assert len(out) == 2 and max(len(ln) for o in out for ln in o.splitlines()) <= 100


def test_f_of_a_pipe_nothing_writes_into_says_what_it_waits_for(tiny_dir, home, tmp_path):
    """-f FIFO with no writer waited in silence (as /file did before its line): past a second the same line says
    what it waits for; what is written then goes with the prompt."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    e = {**os.environ, "YI_CHAT_HOME": str(home)}
    cmd = [PY, "-m", "yi_cli", "--model", tiny_dir, "-f", fifo, "-p", "hi", "--json", "--max-new-tokens", "1"]
    p = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
    try:
        import select

        # waits on the line itself, which comes while the open waits (120 s: a bound on a failure, no silent hang)
        assert select.select([p.stderr], [], [], 120)[0], "no line while -f waits on the pipe"
        line = p.stderr.readline().decode()
        assert (
            line.strip()
            == f"yi-chat: {fifo}: a pipe, read to its end: waiting for what writes into it (Ctrl-C gives it up)"
        )
        with open(fifo, "w") as w:
            w.write("fed through the pipe\n")
        out, err = p.communicate(timeout=180)
    finally:
        p.kill()
    assert p.returncode == 0, err.decode()
    [reply] = [json.loads(x) for x in out.splitlines()]
    assert reply["prompt"].startswith(f"{fifo}:\n```\nfed through the pipe\n```")


@pytest.mark.parametrize("name", ["-", "/dev/stdin"])
def test_f_of_stdin_that_nothing_writes_into_yet_says_what_it_waits_for(tiny_dir, home, name):
    """`sleep 100 | yi-chat -f - -p x` (or `-f /dev/stdin`) waited in silence, as if hung, where a FIFO's -f says
    past a second what it waits for: the same line, for stdin."""
    e = {**os.environ, "YI_CHAT_HOME": str(home)}
    cmd = [PY, "-m", "yi_cli", "--model", tiny_dir, "-f", name, "-p", "hi", "--json", "--max-new-tokens", "1"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
    try:
        import select

        assert select.select([p.stderr], [], [], 120)[0], "no line while -f waits on stdin"
        line = p.stderr.readline().decode()
        assert (
            line.strip()
            == "yi-chat: stdin: a pipe, read to its end: waiting for what writes into it (Ctrl-C gives it up)"
        )
        out, err = p.communicate(b"fed through stdin\n", timeout=180)
    finally:
        p.kill()
    assert p.returncode == 0, err.decode()
    [reply] = [json.loads(x) for x in out.splitlines()]
    assert "fed through stdin" in reply["prompt"], reply


def _spawn(*args, home: Path):
    pexpect = pytest.importorskip("pexpect")
    env = {
        **os.environ,
        "TERM": "xterm-256color",
        "PROMPT_TOOLKIT_NO_CPR": "1",
        "COLUMNS": "120",
        "LINES": "40",
        "YI_CHAT_HOME": str(home),
    }
    return pexpect.spawn(
        PY, ["-m", "yi_cli", *map(str, args)], env=env, encoding="utf-8", dimensions=(40, 120), timeout=60
    )


@pytest.mark.parametrize(
    "case", ["home-under-a-file", "history-is-a-directory", "history-is-a-fifo", "history-is-dev-zero"]
)
def test_unwritable_home_or_history_file(tiny_dir, tmp_path, case):
    """Root ignores permission bits, so the paths are made impossible instead: a home below a regular file
    (mkdir fails with ENOTDIR), or a directory where the history file should be (open fails with EISDIR). A FIFO
    there hung the chat before its first prompt (the open for writing waited for a reader); a link to /dev/zero
    would have been read without end."""
    import pexpect

    if case == "home-under-a-file":
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        home = blocker / "home"
    else:
        home = tmp_path / "home"
        (home / "data").mkdir(parents=True)
        hist = home / "data" / "history"
        {
            "history-is-a-directory": hist.mkdir,
            "history-is-a-fifo": lambda: os.mkfifo(hist),
            "history-is-dev-zero": lambda: hist.symlink_to("/dev/zero"),
        }[case]()
    child = _spawn("--model", tiny_dir, "--temperature", "0", "--max-new-tokens", "3", home=home)
    try:
        child.expect_exact("history is off: cannot write")
        child.expect_exact(">>>")
        child.sendline("hello there")
        child.expect(r"(stop|length) · \d+ prompt tok · \d+ new tok")  # the chat works
        child.expect_exact(">>>")
        child.sendline("/history")
        child.expect_exact("hello there")
        child.expect_exact(">>>")
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    assert "Traceback" not in (child.before or "")


@pytest.mark.parametrize("fd", [1, 2])
def test_a_non_blocking_stdout_or_stderr_is_made_blocking(home, fd):
    """A pipe its parent made non-blocking (Node.js does): Python's buffered writer drops what the full pipe refuses
    (EAGAIN) without an error, and a piped run lost half its replies with exit 0. yi-chat makes it blocking as it
    starts (the flag belongs to the pipe's open file, which this test holds too)."""
    r, w = os.pipe()
    try:
        os.set_blocking(w, False)
        p = subprocess.run(
            [PY, "-m", "yi_cli", "--version"],
            stdout=w if fd == 1 else subprocess.DEVNULL,
            stderr=w if fd == 2 else subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            timeout=120,
            env={**os.environ, "YI_CHAT_HOME": str(home)},
        )
        assert p.returncode == 0
        assert os.get_blocking(w)
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("mode", ["plain", "json", "one-shot"])
def test_closed_stdout(tiny_dir, tmp_path, home, mode):
    """`yi-chat ... | head -c 20`: yi-chat itself exits 0 (PIPESTATUS), stderr stays clean."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("tell me a long story\n" * 30)
    # Long replies for the streaming modes, so the reader is gone while the model still generates.
    n = "100" if mode == "json" else "2000"
    args = [PY, "-m", "yi_cli", "--model", str(tiny_dir), *SAMPLE, "--max-new-tokens", n]
    if mode == "json":
        args.append("--json")
    if mode == "one-shot":
        args += ["-p", "tell me a long story"]
    cmd = " ".join(f"'{a}'" for a in args)
    script = (
        f"{cmd} < '{prompts}' 2> '{tmp_path / 'err'}' | head -c 20 > '{tmp_path / 'out'}'; "
        'echo "${PIPESTATUS[0]} ${PIPESTATUS[1]}"'
    )
    p = subprocess.run(
        ["bash", "-c", script], capture_output=True, timeout=180, env={**os.environ, "YI_CHAT_HOME": str(home)}
    )
    err = (tmp_path / "err").read_text(errors="replace")
    assert p.stdout.decode().split() == ["0", "0"], err  # yi-chat's status, head's status
    assert (tmp_path / "out").stat().st_size == 20
    no_traceback(err)
    assert err.strip() == "", err


@pytest.mark.parametrize("lines", ["/system be brief\nhi\n", "/history\n"])
def test_a_reader_gone_before_a_commands_output_is_still_exit_0(tiny_dir, home, lines):
    """The reader of stdout gone when a command's output was written (rich's console, not the replies' stream):
    rich ended the run with SystemExit(1), silent, where a reader gone is exit 0 (README)."""
    r, w = os.pipe()
    os.close(r)  # gone before the first write: every write fails, whatever the timing
    try:
        p = subprocess.run(
            [PY, "-m", "yi_cli", "--model", str(tiny_dir), "--max-new-tokens", "4"],
            input=lines.encode(),
            stdout=w,
            stderr=subprocess.PIPE,
            timeout=180,
            env={**os.environ, "YI_CHAT_HOME": str(home)},
        )
    finally:
        os.close(w)
    assert p.returncode == 0 and p.stderr.decode().strip() == "", p.stderr.decode()


def test_sigterm_during_a_reply(tiny_dir, home):
    proc = piped("--model", tiny_dir, *SAMPLE, "--max-new-tokens", "4000", home=home)
    try:
        proc.stdin.write(b"first question\n")
        proc.stdin.flush()  # stdin stays open: the process is mid-session, not at EOF
        got = b""
        deadline = time.monotonic() + 120
        while len(got) < 40 and time.monotonic() < deadline:  # the reply is streaming
            if select.select([proc.stdout], [], [], 1)[0]:
                got += os.read(proc.stdout.fileno(), 4096)
        assert len(got) >= 40, "no reply streamed"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err.decode(errors="replace")
    assert proc.returncode == 130, err
    no_traceback(err)
    [path] = (home / "data" / "sessions").glob("*.json")
    assert [ln for ln in err.splitlines() if ln.strip()] == [f"yi-chat: terminated; the session is saved in {path}"]
    assert (got + out).rstrip().endswith(b"[interrupted]")
    [saved] = [json.loads(f.read_text()) for f in (home / "data" / "sessions").glob("*.json")]
    assert saved["mode"] == "pipe"
    turns = saved["turns"]
    assert [t["role"] for t in turns] == ["user", "assistant"]
    assert turns[0]["content"] == "first question"
    partial = turns[1]
    assert partial["finish_reason"] == "interrupted" and partial["content"].strip()
    assert 0 < partial["tokens"] < 4000
    # --resume FILE reopens it, marked interrupted.
    p = yi("--model", tiny_dir, "--resume", str(path), stdin="/history\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    assert "[interrupted]" in p.stdout.decode() and "first question" in p.stdout.decode()


# --- security basics ----------------------------------------------------------------------------------------------


class _Boom:
    """Unpickling this runs code: it creates the marker file named in its state."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_resumed_session_goes_on_with_its_own_model(tiny, home, tmp_path):
    """A resume with no -m loaded the default model (the config's, or the demo), not the session's, and said
    nothing (a run-through). A session records where its local model came from (`source`: a directory's absolute
    path); a resume with no model given loads it again, over the config's default; -m still chooses."""
    p = yi("-m", tiny, *SAMPLE, "--max-new-tokens", "2", stdin="hello\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    [path] = (home / "data" / "sessions").glob("*.json")
    assert json.loads(path.read_text())["source"] == str(tiny.resolve())
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text(f'model = "{tmp_path / "not-this-one"}"\n')
    p = yi("--resume", path, *SAMPLE, "--max-new-tokens", "2", stdin="again\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    data = json.loads(path.read_text())
    assert data["model"] == tiny.name and [t["content"] for t in data["turns"][::2]] == ["hello", "again"]
    p = yi("--resume", path, "-m", tmp_path / "not-this-one", stdin="more\n", home=home)
    assert p.returncode == 3 and "not-this-one" in p.stderr.decode()  # -m chose, and it is not there


def test_a_resumed_sessions_source_that_is_no_checkpoint_gives_way_to_the_default(tmp_path, monkeypatch):
    """A session's `source` naming a folder with no checkpoint in it (`/tmp`, hand-edited or a checkpoint since
    removed from it) made `-c` fail, exit 3, with a line that did not say the name came from the session; a
    relative one was looked up from the current folder. The default model takes over, as for a source gone."""
    from yi_cli.ui.cli import resumed_model

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    assert resumed_model({"source": str(ckpt)}) == str(ckpt)
    assert resumed_model({"source": str(tmp_path)}) is None
    monkeypatch.chdir(tmp_path)
    assert resumed_model({"source": "ckpt"}) is None  # no yi-chat writes a relative source


def test_a_model_name_too_long_for_the_file_system_is_cut_in_its_line(home):
    p = yi("-m", "/x" + "y" * 5000 + "/z", "-p", "hi", home=home)
    line = one_line_error(p, 3, "File name too long")
    assert len(line) < 400, line


def test_speculation_asked_of_the_generate_engine_is_said_to_do_nothing(tiny_dir, home):
    """--engine generate --speculate lookup took the flag and drafted nothing, silently (a run-through)."""
    p = yi(
        "-m", tiny_dir, "--engine", "generate", "--speculate", "lookup", "--max-new-tokens", "2", "-p", "hi", home=home
    )
    assert p.returncode == 0, p.stderr.decode()
    said = [ln for ln in err_lines(p) if "token limit" not in ln]  # (two tokens: the reply is cut, and says so)
    assert said == ["--speculate lookup: the generate engine does not speculate (the fast engine does)"]


def test_a_system_prompt_for_plain_completion_is_said_not_to_be_sent(tiny_dir, home):
    """--raw sends no system prompt: --system was taken silently (a run-through)."""
    p = yi("-m", tiny_dir, "--raw", "--system", "Be brief.", "--max-new-tokens", "2", "-p", "hi", home=home)
    assert p.returncode == 0, p.stderr.decode()
    said = [ln for ln in err_lines(p) if "token limit" not in ln]  # (two tokens: the reply is cut, and says so)
    assert said == ["the system prompt is not sent: this model runs as plain completion (--raw, or a base model)"]


def test_pickle_weights_need_allow_pickle(tiny, home, tmp_path):
    import torch
    from safetensors.torch import load_file

    sd = load_file(str(tiny / "model.safetensors"))
    (tiny / "model.safetensors").unlink()
    torch.save(sd, tiny / "pytorch_model.bin")
    line = one_line_error(yi("--model", tiny, "-p", "hi", home=home), 3, "--allow-pickle", "only pickle")
    assert str(tiny) in line
    p = yi("--model", tiny, "--allow-pickle", "--temperature", "0", "--max-new-tokens", "2", "-p", "hi", home=home)
    assert p.returncode == 0, p.stderr.decode()  # the flag is the way in
    # A pickle that runs code is never unpickled without the flag.
    marker = tmp_path / "pwned"
    torch.save({"x": _Boom(str(marker))}, tiny / "pytorch_model.bin")
    one_line_error(yi("--model", tiny, "-p", "hi", home=home), 3, "--allow-pickle")
    assert not marker.exists()
    # With the flag, a pickle (protocol 4) of more than tensors: torch's warning on stderr too (three lines), its
    # line cut mid-sentence advising `weights_only=False`.
    import pickle

    (tiny / "pytorch_model.bin").write_bytes(pickle.dumps({"x": _Boom(str(marker))}, protocol=4))
    line = one_line_error(yi("--model", tiny, "--allow-pickle", "-p", "hi", home=home), 3, "weights-only loader")
    assert "weights_only" not in line and not marker.exists()
    # a Git LFS pointer (a clone without git-lfs) in its place: torch's own reason, not a cause it is not
    (tiny / "pytorch_model.bin").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 5\n")
    line = one_line_error(yi("--model", tiny, "--allow-pickle", "-p", "hi", home=home), 3, "weights-only loader")
    assert "refuses the .bin file: Unsupported operand 118" in line, line


def test_trust_remote_code_off_unless_flag(tiny, monkeypatch, tmp_path):
    import transformers

    import yi_cli

    seen = []
    for cls in (transformers.AutoConfig, transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        orig = cls.from_pretrained.__func__

        def spy(klass, *a, _orig=orig, _name=cls.__name__, **kw):
            seen.append((_name, kw.get("trust_remote_code", False)))
            return _orig(klass, *a, **kw)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    yi_cli.load(tiny, device="cpu", dtype="fp32")
    # A tokenizer with no code of its own loads without AutoTokenizer (loader._plain_tokenizer, test_start.py)
    assert {n for n, _ in seen} >= {"AutoModelForCausalLM"}
    assert all(flag is False for _, flag in seen), seen
    seen.clear()
    yi_cli.load(tiny, device="cpu", dtype="fp32", trust_remote_code=True)
    assert seen and all(flag is True for _, flag in seen), seen
    # And the CLI: a checkpoint whose config asks for its own code is refused, its code never imported.
    marker = tmp_path / "remote-code-ran"
    (tiny / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from transformers import LlamaConfig\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'evil'\n"
    )
    set_config(tiny, model_type="evil", auto_map={"AutoConfig": "configuration_evil.EvilConfig"})
    p = yi("--model", tiny, "-p", "hi", home=tmp_path / "home", env={"HF_MODULES_CACHE": str(tmp_path / "mods")})
    one_line_error(p, 3, str(tiny))
    assert not marker.exists()


def _modes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root.parent)): oct(p.stat().st_mode & 0o777)
        for p in [root, *sorted(root.rglob("*"))]
        if not p.is_symlink()
    }


def _assert_private(root: Path) -> None:
    bad = {p: m for p, m in _modes(root).items() if m != ("0o700" if (root.parent / p).is_dir() else "0o600")}
    assert not bad, f"not 0700 dirs / 0600 files: {bad}"


@pytest.mark.parametrize("door", ["terminal", "pipe"])
def test_written_files_are_private(tiny_dir, tmp_path, door):
    """History, autosave and /save files 0600, the dirs yi-chat creates 0700 (YI_CHAT_HOME's own mode is the
    user's, as is the folder /save PATH writes into)."""
    import pexpect

    home = tmp_path / "home"
    home.mkdir()
    saved = home / "mine" / "saved.json"
    saved.parent.mkdir()  # the user's folder: /save creates none
    if door == "pipe":
        p = yi(
            "--model",
            tiny_dir,
            "--temperature",
            "0",
            "--max-new-tokens",
            "2",
            stdin=f"hello\n/save\n/save {saved}\n",
            home=home,
        )
        assert p.returncode == 0, p.stderr.decode()
    else:
        child = _spawn("--model", tiny_dir, "--temperature", "0", "--max-new-tokens", "2", home=home)
        try:
            child.expect_exact(">>>")
            child.sendline("hello")
            child.expect("new tok")
            child.expect_exact(">>>")
            child.sendline("/save")
            child.expect("saved to")
            child.expect_exact(">>>")
            child.sendline(f"/save {saved}")
            child.expect("saved to")
            child.expect_exact(">>>")
            child.sendcontrol("d")
            child.expect(pexpect.EOF)
        finally:
            child.close()
        assert child.exitstatus == 0
        assert (home / "data" / "history").is_file()
    data = home / "data"
    assert len(list((data / "sessions").glob("*.json"))) == 2 and saved.is_file()  # the autosave and /save
    _assert_private(data)
    assert oct(saved.stat().st_mode & 0o777) == "0o600"


@pytest.mark.slow  # needs the AWQ demo conversion
def test_demo_cache_is_private(demo_dir, demo_fp32_dir):
    from yi_cli.paths import cache_dir

    _assert_private(cache_dir())


def test_a_resumed_session_whose_hub_model_is_gone_goes_on_with_the_default(tiny, home, tmp_path):
    """README: a resumed session's `source` that "is gone" gives way to the default model (and an interactive chat
    says so). A directory gone does; a hub id no longer in the cache was fetched again (gigabytes, unasked) or, with
    HF_HUB_OFFLINE=1, ended the resume with exit 3 where it went on with the default before `source` existed."""
    p = yi("-m", tiny, *SAMPLE, "--max-new-tokens", "2", stdin="hello\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    [path] = (home / "data" / "sessions").glob("*.json")
    data = json.loads(path.read_text())
    data.update(source="01-ai/Yi-6B-Chat", model="Yi-6B-Chat", mode="interactive")  # its hub model deleted
    path.write_text(json.dumps(data))
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text(f'model = "{tiny}"\n')
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    p = yi("-c", *SAMPLE, "--max-new-tokens", "2", stdin="again\n", home=home, env=env)
    assert p.returncode == 0, p.stderr.decode()


def test_a_demo_session_records_the_demo_where_a_folder_named_demo_is_here(tmp_path, monkeypatch):
    """-m demo loads the embedded demo whatever the working directory holds (loader.resolve looks at the demo names
    first), but the session recorded a folder ./demo as its source where one was there: a resume then loaded that
    folder (a project's demo/, no checkpoint: exit 3), not the demo it was with."""
    from yi_cli.ui import cli

    (tmp_path / "demo").mkdir()
    monkeypatch.chdir(tmp_path)
    assert cli.model_source("demo") == "demo"


def test_a_home_with_a_line_break_still_gets_one_line_errors(tmp_path):
    """A YI_CHAT_HOME (or hub cache) whose path holds a line break: a bad config.toml, an unreadable sessions
    folder and an offline hub miss each said their one line in two, the path split where it broke. The break is
    shown as \\n, as other lines name such a path."""
    home = tmp_path / "two\nlines"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text('[generation]\ntemperature = "hot"\n')
    line = one_line_error(yi("-p", "hi", home=home), 2, "two\\nlines/config/config.toml", "temperature")
    assert line.startswith("yi-chat: ")
    (home / "config" / "config.toml").unlink()
    (home / "data").mkdir()
    (home / "data" / "sessions").write_text("x")
    one_line_error(yi("sessions", home=home), 1, "two\\nlines/data/sessions: cannot read the sessions folder")
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(home / "hub")}
    one_line_error(yi("-m", "acme/zz", "-p", "hi", home=home, env=env), 3, "(", "two\\nlines/hub)")
    crlf = tmp_path / "cr\r\nlf"  # said as it is named, \x0d\n: it was \n, as if no CR were there (a hub hunt)
    (crlf / "config").mkdir(parents=True)
    (crlf / "config" / "config.toml").write_text('[generation]\ntemperature = "hot"\n')
    one_line_error(yi("-p", "hi", home=crlf), 2, "cr\\x0d\\nlf/config/config.toml", "temperature")


@pytest.mark.parametrize(
    "flag", ["--endpoint", "--dtype", "--max-new-tokens", "--temperature", "--device", "--seed", "--deadline", "--x"]
)
@pytest.mark.parametrize("quote", ["", "'"])
def test_a_huge_flag_value_is_cut_in_its_error_line(home, flag, quote):
    """A 130 kB value of --endpoint, --dtype or --max-new-tokens was repeated whole in its one line (a flags hunt),
    where -m, -f and --resume cut a name at 200 characters; so too one holding a quote (repr's double quotes) and
    an unknown flag's (argparse quotes none)."""
    value = ("http://a b/" if flag == "--endpoint" else "") + quote + "x" * 5000
    args = (f"{flag}={value}",) if flag == "--x" else (flag, value)
    line = one_line_error(yi(*args, "-p", "hi", home=home), 2, "xxxxxxxxxx...")
    assert len(line) < 500, line


def test_a_loaded_session_whose_long_tokens_fit_keeps_its_exchanges(tiny_dir, home, tmp_path):
    """The pre-trim of a loaded session took 64 characters as the most a token stands for, and dropped an exchange
    that fitted: the demo's vocabulary has tokens of 81 characters (a line break and 80 spaces; a review). It takes
    the vocabulary's longest, as the length check of a message does."""
    turns = [
        {"role": "user", "content": "keep this:" + ("\n" + " " * 80) * 3400 + "\nend"},
        {"role": "assistant", "content": "ok", "finish_reason": "stop"},
    ]
    f = tmp_path / "indented.json"
    head = {"format": "yi-chat-session", "version": 1, "model": "tiny", "mode": "interactive", "system": None}
    f.write_text(json.dumps({**head, "turns": turns}))
    p = yi("--model", tiny_dir, "--max-new-tokens", "2", "--resume", f, "-p", "hi", home=home)
    assert p.returncode == 0 and "context full" not in p.stderr.decode(), p.stderr.decode()


def test_a_loaded_session_past_what_the_template_renders_drops_its_oldest_exchanges(tiny_dir, home, tmp_path):
    """A session file of 30,000 short exchanges (a remote chat's, or one written by hand: no context_start): every
    message was refused, "the chat template wrote 1.7M characters for 60000 of messages (a template that blows its
    input up?)", the whole conversation rendered before anything was dropped, and only /clear got out (a sessions
    hunt). The exchanges past any context go first, and the reply comes, with the one line that says so."""
    head = {"format": "yi-chat-session", "version": 1, "model": "tiny", "mode": "interactive", "system": None}
    exchange = [{"role": "user", "content": "m"}, {"role": "assistant", "content": "r", "finish_reason": "stop"}]
    turns = exchange * 30_000
    f = tmp_path / "many.json"
    f.write_text(json.dumps({**head, "turns": turns}))
    p = yi("--model", tiny_dir, "--max-new-tokens", "2", "--resume", f, "-p", "hello", home=home)
    err = p.stderr.decode()
    assert p.returncode == 0 and "context full (" in err and "template" not in err, err


def test_continue_of_a_reply_at_the_end_of_the_context_says_it_cannot_go_on(tiny_dir, home):
    """/continue of a reply cut at the end of the context said "shorten it, or lower max_new_tokens", and the same
    after `/set max_new_tokens 1`: no setting makes room for a reply that fills the context (a context hunt)."""
    args = ("--model", tiny_dir, "--context", "96", "--max-new-tokens", "100000", "--temperature", "0", "--json")
    p = yi(*args, stdin="say something long\n/continue\n/set max_new_tokens 1\n/continue\n", home=home)
    replies = [json.loads(ln) for ln in p.stdout.decode().splitlines()]
    assert replies[0]["finish_reason"] == "length", replies[0]  # it ran to the end of the context
    lines = err_lines(p)
    said = "the reply has reached the end of the context ("
    assert len(lines) == 2 and all(ln.startswith(f"error: {said}") for ln in lines), lines
    assert lines[0].endswith(
        "tokens with the message it answers): it cannot go on; /retry asks again, or send a new message"
    )


def test_a_message_a_command_sends_again_and_is_refused_has_a_refused_messages_object(tiny_dir, home):
    """--json: /retry or /edit of a message refused as too long, refused again, wrote a command's object (no prompt,
    no reply, no finish_reason) where a refused message has its reply-shaped one (README), `command` beside it."""
    args = ("--model", tiny_dir, "--context", "96", "--max-new-tokens", "4", "--json")
    long = "word " * 200
    p = yi(*args, stdin=f"hi\n{long}\n/retry\n/edit {long}\n", home=home)
    objs = [json.loads(ln) for ln in p.stdout.decode().splitlines()]
    assert [o.get("command") for o in objs] == [None, None, "retry", "edit"], objs
    for o in objs[1:]:
        assert o["reply"] == "" and o["finish_reason"] == "error" and o["prompt"].startswith("word word"), o
        assert o["new_tokens"] == 0 and "fit in the context" in o["error"], o
    errors = [ln for ln in err_lines(p) if ln.startswith("error: ")]
    assert p.returncode == 1 and [o["error"] for o in objs[1:]] == [e.removeprefix("error: ") for e in errors]


def test_the_python_api_takes_a_torch_device_and_names_its_own_arguments(tiny_dir, monkeypatch):
    """yi_cli.load(device=torch.device("cpu")) (or a CUDA index, as transformers takes) was an AttributeError from
    inside the loader ("'torch.device' object has no attribute 'startswith'"); its errors named CLI flags the
    caller never used (--device, --dtype)."""
    import torch

    import yi_cli
    from yi_cli.errors import LoadError

    assert yi_cli.load(tiny_dir, device=torch.device("cpu"), dtype=torch.float32).device == "cpu"
    for context in (0, -1, 2**40, 1.5, True, "8K"):  # as --context refuses them (context=0 loaded)
        with pytest.raises(LoadError, match="^context = .*: not a positive number of tokens under 2"):
            yi_cli.load(tiny_dir, context=context)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for dev, said in ((0, "device = cuda:0: CUDA is not available"), (1.5, "device = 1.5: unknown device")):
        with pytest.raises(LoadError, match=f"^{said}"):
            yi_cli.load(tiny_dir, device=dev)
    import re

    for dtype in ("int8", 32, ["fp32"]):  # (a number said --dtype; a list was a TypeError)
        with pytest.raises(LoadError, match=f"^dtype = {re.escape(repr(dtype))}: unknown dtype"):
            yi_cli.load(tiny_dir, device="cpu", dtype=dtype)


def test_a_choice_in_another_case_is_that_choice():
    """config.toml's `dtype = "BF16"` was "did you mean 'fp16'?", another precision (a flags review), then refused
    with a hint at bf16, where /set and --speculate take a value in any case (a CLI review): it is bf16. A typo is
    still hinted."""
    from yi_cli.errors import YiError
    from yi_cli.inputs import choice

    choices = ("auto", "fp32", "fp16", "bf16")
    assert [choice(typed, choices, "config.toml", "dtype") for typed in ("BF16", "Fp16", "auto")] == [
        "bf16",
        "fp16",
        "auto",
    ]
    with pytest.raises(YiError) as e:
        choice("bf61", choices, "config.toml", "dtype")
    assert str(e.value).endswith("(did you mean 'bf16'?)"), str(e.value)


@pytest.mark.parametrize(
    "flag, value, key",
    [("--dtype", "BF16", "dtype"), ("--engine", "Generate", "engine"), ("--overflow", "REFUSE", "overflow")],
)
def test_a_flags_choice_in_another_case_is_that_choice(flag, value, key):
    from yi_cli.ui.args import parse_args

    assert getattr(parse_args([flag, value, "-p", "hi"]), key) == value.lower()


def test_a_regular_file_whose_read_does_not_end_says_so(tmp_path, monkeypatch):
    """`-f /proc/kmsg` (or a file on a stalled network mount): a regular file whose read blocks, and the chat showed
    nothing, as if hung (the line was armed for pipes only). Past a second it says what it reads; the read here is
    one that waits for that line, so the test needs no such file."""
    import threading

    from yi_cli import pipes
    from yi_cli.conversation import attach

    f = tmp_path / "log"
    f.write_text("kernel says hi\n")
    said, read_upto = threading.Event(), pipes.read_upto
    lines: list[str] = []

    def blocking(stream, limit):
        assert said.wait(120), "no line while the read blocks"
        return read_upto(stream, limit)

    monkeypatch.setattr(pipes, "read_upto", blocking)
    a = attach.read(str(f), waiting=lambda line: (lines.append(line), said.set()))
    assert a.text == "kernel says hi\n"
    assert lines == [
        f"{f}: still reading it: a file with no end (as some of /proc), or a stalled disk? (Ctrl-C gives it up)"
    ]


def test_the_gbk_hint_is_for_chinese_only():
    """Latin-1 (`Zürich`, `señor`) and Shift-JIS Japanese decode in GB18030 as CJK characters: they were told to
    convert from GBK, which iconv did without an error into nonsense (`Z黵ich`). Chinese in GBK and Big5 still gets
    the hint; the others the plain "not UTF-8" line."""
    from yi_cli.conversation.attach import legacy_chinese

    chinese = [("你好，世界。今天天气很好。", "gbk"), ("今天天氣很好。", "big5"), ("中文 and English 中文", "big5")]
    others = [
        ("Zürich ist schön", "latin-1"),
        ("señor naïve façade", "latin-1"),
        ("Ærøskøbing, Müller", "latin-1"),
        ("こんにちは世界", "shift_jis"),
        ("日本語のテキストです", "shift_jis"),
    ]
    assert [legacy_chinese(t.encode(e)) for t, e in chinese] == [True] * 3
    assert [legacy_chinese(t.encode(e)) for t, e in others] == [False] * 5


@pytest.mark.parametrize(
    "encoding,line", [("gbk", "中文测试内容，这是一个很长的文件。\n"), ("big5", "中文測試內容，這是一個很長的檔案。\n")]
)
def test_the_gbk_hint_of_a_large_file_looks_at_its_first_pages_only(encoding, line):
    """A 20 MB file in GBK was decoded whole, twice, into lists of characters to decide on the hint: 11 s and
    2.2 GB before its refusal (an attachment, `-p -`, a piped line). The first pages decide; where their end cuts
    a character in two, it is still Chinese."""
    import tracemalloc

    from yi_cli.conversation.attach import SAMPLE, legacy_chinese

    data = ("a" + line * 600_000).encode(encoding)  # odd: SAMPLE cuts a character
    assert len(data) > 300 * SAMPLE and data[:SAMPLE].decode(encoding, "replace").endswith("\ufffd")
    tracemalloc.start()
    try:
        assert legacy_chinese(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * SAMPLE * 8, peak  # a few copies of the sample at most, not of the file

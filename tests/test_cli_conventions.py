"""Issue 14, driven as a user drives the installed command: context from pipes and files, sessions as a store,
--version / --help / completion, the endpoint and key from the environment, and the errors that name what is wrong.

Most tests talk to the loopback OpenAI-compatible server of tests/openai_server.py over real HTTP, serving a
scripted engine that echoes the last user message: the test sees exactly what yi-chat sent, and no model loads.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest

from tests.fixtures import ScriptedEngine
from tests.openai_server import OpenAIServer
from yi_cli.errors import YiError

ROOT = Path(__file__).resolve().parent.parent
CLEAN = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "YI_CHAT_ENDPOINT", "YI_CHAT_MODEL", "NO_COLOR")


def yi(*args, stdin: bytes | str | Path | None = b"", home: Path, env: dict | None = None, cwd=None, timeout=300):
    """Run `python -m yi_cli ARGS` with its own YI_CHAT_HOME; stdin a pipe holding `stdin` (None: /dev/null; a Path:
    that file, redirected as `< FILE` does)."""
    e = {k: v for k, v in os.environ.items() if k not in CLEAN}
    e.update(YI_CHAT_HOME=str(home), **(env or {}))
    if isinstance(stdin, Path):
        with open(stdin, "rb") as f:
            return subprocess.run(
                [sys.executable, "-m", "yi_cli", *args], stdin=f, capture_output=True, timeout=timeout, env=e, cwd=cwd
            )
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return subprocess.run(
        [sys.executable, "-m", "yi_cli", *args],
        input=data,
        capture_output=True,
        timeout=timeout,
        env=e,
        cwd=cwd,
        stdin=subprocess.DEVNULL if data is None else None,
    )


def one_line_error(p, code: int, *needles: str) -> str:
    err = p.stderr.decode()
    assert p.returncode == code, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def server():
    with OpenAIServer(ScriptedEngine(), model="served") as srv:
        yield srv


def sent(srv) -> str:
    """The last user message of the last chat request the server received."""
    return srv.requests[-1]["messages"][-1]["content"]


def session_files(home: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((home / "data" / "sessions").glob("*.json"))]


# 1. context from pipes and files -------------------------------------------------------------------------------


def test_piped_stdin_goes_before_the_prompt_as_a_fenced_block(server, home):
    p = yi("--endpoint", server.url, "-p", "review this", stdin="- a\n+ b\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    assert sent(server) == "```\n- a\n+ b\n```\n\nreview this"
    assert p.stdout.decode().startswith("echo: ```")


def test_positional_prompt_works_like_p(server, home):
    p = yi("--endpoint", server.url, "Say", "hi", home=home)
    assert p.returncode == 0, p.stderr.decode()
    assert sent(server) == "Say hi" and "echo: Say hi" in p.stdout.decode()


@pytest.mark.parametrize("term", ["dumb", "unknown"])
@pytest.mark.parametrize("redirected", [False, True], ids=["stdout-tty", "stdout-file"])
def test_a_dumb_terminal_gets_a_plain_prompt(server, home, tmp_path, redirected, term):
    """TERM=dumb (Emacs' shell) got prompt_toolkit's full-screen prompt: hundreds of erase-line and cursor moves,
    the toolbar, bracketed paste (a run-through). It gets prompt_toolkit's plain prompt: text only, not even the
    cursor's show escape prompt_toolkit wrote as its prompt was made (it showed as ^[[?12l^[[?25h). So does a chat
    with stdout redirected (`yi-chat > out`), drawn on stderr: prompt_toolkit takes its plain prompt only on its
    default output, and that one got the full prompt. TERM=unknown is as dumb (prompt_toolkit's and rich's word),
    and the held keys' bracketed paste wrote ^[[?2004h on it as text."""
    pexpect = pytest.importorskip("pexpect")
    out = tmp_path / "out.txt" if redirected else None
    child = spawn("--endpoint", server.url, home=home, cwd=tmp_path, env={"TERM": term}, out=out, prompt=False)
    child.logfile_read = seen = io.StringIO()
    child.expect_exact(">>>")
    child.sendline("hi")
    child.expect_exact("echo: hi")
    child.expect_exact(">>>")
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and sent(server) == "hi"
    codes = re.findall(r"\x1b\[[0-9;?]*[a-zA-Z]|\x1b[78]", seen.getvalue())
    assert codes == [], codes  # prompt_toolkit's "show the cursor" was printed raw before the banner
    assert "ctx " not in seen.getvalue()  # no toolbar
    if redirected:
        assert out.read_text() == "echo: hi\n\n"  # the reply alone, as a piped run writes it


@pytest.mark.parametrize("args", [["-p", "-"], ["-f", "-", "-p", "hi"], ["-"]])
def test_stdin_named_at_a_terminal_is_refused_not_waited_on(server, home, tmp_path, args):
    """`-p -` (and `-f - -p TEXT`) with stdin a terminal hung: the keys were held unechoed from the start, so what
    was typed was not shown and Ctrl-D was a plain byte, until Ctrl-C (a run-through). One line, exit 2."""
    pexpect = pytest.importorskip("pexpect")
    child = spawn("--endpoint", server.url, *args, home=home, cwd=tmp_path, prompt=False)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2, child.before
    shown = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", child.before)  # the held keys' bracketed-paste mode, on and off
    lines = [ln for ln in shown.replace("\r", "").split("\n") if ln.strip()]
    assert len(lines) == 1 and "stdin is the terminal here; pipe" in lines[0], child.before
    assert server.requests == []


def test_p_dash_reads_the_prompt_from_stdin(server, home):
    p = yi("--endpoint", server.url, "-p", "-", stdin="What is in\nthis file?\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    assert sent(server) == "What is in\nthis file?"


def test_files_are_attached_in_order_with_their_names(server, home, tmp_path):
    (tmp_path / "a.py").write_text("print('a')\n```\nnot a fence end\n```\n")
    (tmp_path / "b.txt").write_text("bee")
    p = yi(
        "--endpoint",
        server.url,
        "-f",
        "a.py",
        "-f",
        "-",
        "-f",
        "b.txt",
        "-p",
        "compare",
        stdin="from stdin",
        home=home,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr.decode()
    assert sent(server) == (
        "a.py:\n````\nprint('a')\n```\nnot a fence end\n```\n````\n\n```\nfrom stdin\n```\n\n"
        "b.txt:\n```\nbee\n```\n\ncompare"
    )


def test_files_attach_to_the_first_message_of_a_piped_chat(server, home, tmp_path):
    (tmp_path / "notes.md").write_text("# notes\n")
    p = yi("--endpoint", server.url, "-f", str(tmp_path / "notes.md"), stdin="first\nsecond\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    firsts = [r["messages"][-1]["content"] for r in server.requests]
    assert firsts == [f"{tmp_path / 'notes.md'}:\n```\n# notes\n```\n\nfirst", "second"]


@pytest.mark.parametrize(
    "content, needle, encoding",
    [
        (b"\x7fELF\x02\x01\x00\x00", "binary file", None),
        # small 16-bit numbers: every other byte NUL, as unmarked UTF-16 is, but no text (it was called UTF-16LE)
        (bytes(b for i in range(2000) for b in ((i % 200) + 1, 0)), "binary file", None),
        (b"caf\xe9 au lait", "not UTF-8 text (undecodable byte at offset 3)", None),
        (b"\xef\xbb\xbfcaf\xe9", "not UTF-8 text (undecodable byte at offset 6)", None),  # counted after the BOM: 3
        # Chinese saved by Windows in GBK or Big5 was refused as "only text files can be attached", with no way on;
        # UTF-16 (Notepad's "Unicode") as a binary file for its NUL bytes
        ("这是一个中文文件。\n".encode("gbk"), "only UTF-8 text can be attached (Chinese saved as GBK: ", "GBK"),
        ("這是一個中文檔案。\n".encode("big5"), "only UTF-8 text can be attached (Chinese saved as GBK: ", "GBK"),
        ("notes: 你好\n".encode("utf-16"), "UTF-16 text, not UTF-8 (", "UTF-16"),
        # UTF-32's mark starts as UTF-16's (iconv -f UTF-16 made a binary file of it); UTF-16 with no mark was binary
        ("notes\n".encode("utf-32"), "UTF-32 text, not UTF-8 (", "UTF-32"),
        ("hello world\n".encode("utf-16-le"), "UTF-16LE text, not UTF-8 (", "UTF-16LE"),
        ("hello world\n".encode("utf-16-be"), "UTF-16BE text, not UTF-8 (", "UTF-16BE"),
    ],
)
def test_binary_and_undecodable_files_exit_2_before_the_model_loads(home, tmp_path, content, needle, encoding):
    f = tmp_path / "data.bin"
    f.write_bytes(content)
    # A model that does not exist: had yi-chat tried to load it first, the exit would be 3.
    no_model = ("--model", str(tmp_path / "no-model"))
    line = one_line_error(yi(*no_model, "-f", str(f), "-p", "hi", home=home), 2, str(f), needle)
    assert ("iconv" in line) == (encoding is not None), line  # Latin-1 text is not said to be Chinese
    if encoding:  # the command that converts it, into a file beside it
        assert f"iconv -f {encoding} -t UTF-8 {f} > {tmp_path / 'data.utf8.bin'} converts it" in line, line
    line = one_line_error(yi(*no_model, "-p", "hi", stdin=content, home=home), 2, "stdin:", needle)
    assert ("iconv" in line) == (encoding is not None), line
    if encoding:
        assert f"pipe it through iconv -f {encoding} -t UTF-8" in line, line
        # the command as a shell runs it: `~/` unquoted (quoted it is a folder named ~), `./` before a leading `-`
        (tmp_path / "-data.bin").write_bytes(content)
        line = one_line_error(yi(*no_model, "--file=-data.bin", "-p", "hi", home=home, cwd=tmp_path), 2, needle)
        assert f"iconv -f {encoding} -t UTF-8 ./-data.bin > ./-data.utf8.bin converts it" in line, line
        line = one_line_error(yi(*no_model, "-f", "~/-data.bin", "-p", "hi", home=home, env={"HOME": str(tmp_path)}), 2)
        assert f"iconv -f {encoding} -t UTF-8 ~/-data.bin > ~/-data.utf8.bin converts it" in line, line


@pytest.mark.parametrize(
    "content, needle",
    [
        ("北京是中国的首都。\n".encode("gbk"), "only UTF-8 text can be read as the prompt (Chinese saved as GBK: pipe"),
        (b"\x7fELF\x02\x01\x00\x00", "binary file (it contains NUL bytes); only text can be read as the prompt"),
    ],
)
def test_a_prompt_piped_to_p_dash_that_is_not_utf8_is_refused_as_the_prompt(home, tmp_path, content, needle):
    """`yi-chat -p - < gbk.txt` said "only UTF-8 text can be attached": nothing was being attached there, the
    pipe is the prompt. The line says what it was read as, with the iconv hint where it reads as Chinese."""
    line = one_line_error(yi("--model", str(tmp_path / "no-model"), "-p", "-", stdin=content, home=home), 2, needle)
    assert line.startswith("yi-chat: stdin: ") and "attached" not in line, line


def test_a_file_too_large_for_the_context_exits_2_before_the_model_loads(home, tmp_path):
    ckpt = tmp_path / "ckpt"  # only a config: the refusal must come before anything else is read
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 100}))
    big = tmp_path / "big.txt"
    big.write_text("word " * 400)  # 2,000 characters: over 10 per token of a 100-token context
    one_line_error(
        yi("--model", str(ckpt), "-f", str(big), "-p", "hi", home=home),
        2,
        str(big),
        "too large for the model's context",
    )
    # --context less than the model's: that is the context (the model's 8192 was said, and the file let through)
    (ckpt / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 8192}))
    one_line_error(
        yi("--model", str(ckpt), "--context", "100", "-f", str(big), "-p", "hi", home=home),
        2,
        f"{big}: too large for the model's context (2000 characters; the context holds 100 tokens)",
    )
    # two files under the bound each, over it together: refused before the load too (it was after it)
    half = tmp_path / "half.txt"
    half.write_text("word " * 120)  # 600 characters: under 10 per token of 100 tokens alone
    one_line_error(
        yi("--model", str(ckpt), "--context", "100", "-f", str(half), "-f", str(half), "-p", "hi", home=home),
        2,
        f"{half}, {half}: too large for the model's context (1200 characters together; the context holds 100",
    )


def test_missing_file_and_stdin_misuse_are_usage_errors(server, home, tmp_path):
    one_line_error(
        yi("--endpoint", server.url, "-f", str(tmp_path / "nope.txt"), "-p", "x", home=home),
        2,
        "nope.txt: cannot read (No such file or directory)",
    )
    one_line_error(yi("--endpoint", server.url, "-f", str(tmp_path), "-p", "x", home=home), 2, "is a directory")
    master, slave = os.openpty()  # a terminal: its read would wait for keys (in the REPL, held ones)
    try:
        tty = os.ttyname(slave)
        one_line_error(
            yi("--endpoint", server.url, "-f", tty, "-p", "x", home=home),
            2,
            f"{tty}: not a regular file (a character device)",  # before it is opened, as any device
        )
    finally:
        os.close(master)
        os.close(slave)
    one_line_error(yi("--endpoint", server.url, "-p", "-", "-f", "-", home=home), 2, "stdin can be read once")
    one_line_error(yi("--endpoint", server.url, "-f", "-", stdin="hi\n", home=home), 2, "-f -: stdin is the chat's")
    one_line_error(yi("--endpoint", server.url, "-p", "-", stdin="  \n", home=home), 2, "-p -: stdin is empty")
    one_line_error(yi("--endpoint", server.url, "-p", "x", "y", home=home), 2, "two prompts")
    assert server.requests == []


@pytest.mark.parametrize(
    "value, said",
    [("-1e-3", "between 0 and 5, got -0.001"), ("-2E+1", "between 0 and 5, got -20.0"), ("-inf", "finite number")],
)
def test_a_negative_number_in_e_notation_is_a_value_not_an_option(server, home, value, said):
    """argparse took -1e-3 and -inf for options: `--temperature -1e-3` said "expected one argument" where -0.001
    said the temperature's range."""
    one_line_error(yi("--endpoint", server.url, "--temperature", value, "-p", "hi", home=home), 2, said)
    assert server.requests == []


@pytest.mark.parametrize(
    "data, code, said",
    [
        (bytes(range(256)) * 12, 1, "error: stdin is binary data (it contains NUL bytes), not text; nothing read"),
        (
            "\ufeffhello\n".encode("utf-16-le"),
            1,
            "error: stdin is UTF-16 text, not UTF-8; nothing read (pipe it through iconv -f UTF-16 -t UTF-8)",
        ),
        (b"", 0, "stdin is empty: nothing to do"),
    ],
    ids=["binary", "utf16", "empty"],
)
def test_a_piped_chats_stdin_file_that_holds_no_lines_is_said_before_the_model_loads(
    server, home, tmp_path, data, code, said
):
    """`yi-chat < file` of binary data, UTF-16 or nothing said so only once the model had loaded (10 s and more on
    the demo). A regular file is looked at first, where reading it moves nothing; the line and the code are the same."""
    path = tmp_path / "in"
    path.write_bytes(data)
    p = yi("--endpoint", server.url, stdin=path, home=home)
    assert (p.returncode, p.stderr.decode().strip()) == (code, said)
    assert not server.models_asked.is_set() and server.requests == []


@pytest.mark.slow
def test_one_shot_answers_from_piped_context_on_the_demo_model(demo_dir, home):
    (home / "cache").symlink_to(Path(demo_dir).parent.parent, target_is_directory=True)
    p = yi(
        "--model",
        "demo",
        "--temperature",
        "0",
        "--max-new-tokens",
        "20",
        "-p",
        "What is the secret word?",
        stdin="The secret word is PINEAPPLE.\n",
        home=home,
    )
    assert p.returncode == 0, p.stderr.decode()
    assert "PINEAPPLE" in p.stdout.decode()


@pytest.mark.slow
def test_a_file_too_large_for_the_real_tokenizer_is_refused_after_loading(demo_dir, home, tmp_path):
    """Short enough to pass the size bound, too many tokens for the demo's 8k context: counted, then refused."""
    (home / "cache").symlink_to(Path(demo_dir).parent.parent, target_is_directory=True)
    big = tmp_path / "digits.txt"
    big.write_text(" ".join(str(i % 10) for i in range(9000)))  # ~9,000 tokens in 18,000 characters
    one_line_error(
        yi("--model", "demo", "-f", str(big), "-p", "sum them", home=home),
        2,
        "digits.txt",
        "too large for the model's context",
    )


@pytest.mark.slow
def test_a_file_is_counted_with_the_system_prompt_and_not_blamed_for_a_prompt_too_long(demo_dir, home, tmp_path):
    """A file that fit alone but not with --system went on and was refused as "the prompt" (exit 1, the file not
    named); a prompt too long for the context with a two-line file named the file (exit 2), which the user would
    have shortened in vain."""
    (home / "cache").symlink_to(Path(demo_dir).parent.parent, target_is_directory=True)
    doc = tmp_path / "doc.txt"
    doc.write_text("hello " * 8100)  # ~8,100 tokens: fits the demo's 8k context alone, with room for 8 new ones
    system = "be nice " * 200
    one_line_error(
        yi("-m", "demo", "--max-new-tokens", "8", "--system", system, "-f", str(doc), "-p", "hi", home=home),
        2,
        f"{doc}: too large for the model's context",
    )
    small = tmp_path / "notes.txt"
    small.write_text("two\nlines\n")
    p = yi("-m", "demo", "--max-new-tokens", "8", "-f", str(small), "-p", "hello " * 9000, home=home)
    assert p.returncode == 1 and "notes.txt" not in p.stderr.decode(), p.stderr.decode()
    assert "the prompt is" in p.stderr.decode() and "fit in the context" in p.stderr.decode(), p.stderr.decode()


# 1b. /file in the REPL, in a real terminal -------------------------------------------------------------------------


def term_env(home: Path, **extra) -> dict:
    """The environment of a yi-chat in a test's terminal: this one's, less what chooses an engine."""
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    env.update({"TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1", "YI_CHAT_HOME": str(home), **extra})
    return env


def spawn(*args, home: Path, cwd: Path, env: dict | None = None, out: Path | None = None, prompt: bool = True):
    """yi-chat in a pseudo-terminal (out: its stdout sent to that file, as `yi-chat > out` does); waits for its
    first prompt unless `prompt` is False."""
    pexpect = pytest.importorskip("pexpect")
    argv = [sys.executable, "-m", "yi_cli", *args]
    if out is not None:
        command = " ".join(shlex.quote(a) for a in argv)
        argv = ["/bin/sh", "-c", f"exec {command} > {shlex.quote(str(out))}"]
    child = pexpect.spawn(
        argv[0],
        argv[1:],
        env=term_env(home, **(env or {})),
        encoding="utf-8",
        dimensions=(40, 120),
        timeout=60,
        cwd=str(cwd),
    )
    if prompt:
        child.expect_exact(">>>")
    return child


def leave(child) -> int:
    import pexpect

    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


def spawn_redirected(*args, home: Path, cwd: Path, out: Path):
    """yi-chat in a terminal (stdin and stderr) with stdout sent to `out`, as `yi-chat > out` does."""
    return spawn(*args, home=home, cwd=cwd, out=out)


def test_keys_typed_while_the_model_loads_wait_unechoed_for_the_first_prompt(home, tmp_path):
    """They were echoed raw during the load, then drawn again by the prompt (a run-through)."""
    import threading

    pytest.importorskip("pexpect")
    with OpenAIServer(ScriptedEngine(), model="served") as srv:
        srv.models_gate = threading.Event()  # the start waits on the model list: past the renderer, loading
        child = spawn("--endpoint", srv.url, home=home, cwd=tmp_path, prompt=False)
        assert srv.models_asked.wait(60)
        child.send("typed early")
        srv.models_gate.set()
        child.expect_exact("yi-chat · served")  # the banner: the load is over
        assert "typed early" not in child.before  # not echoed while loading
        child.expect_exact(">>>")
        child.expect_exact("typed early")  # drawn by the prompt, as the start of the input
        child.send("\r")
        child.expect_exact("echo: typed early")
        child.expect_exact(">>>")
        assert leave(child) == 0
    assert sent(srv) == "typed early"


def test_a_chat_with_stdout_redirected_is_drawn_on_stderr_and_writes_the_replies_alone(server, home, tmp_path):
    """`yi-chat > log` in a terminal: the prompt, the replies and /history on the terminal (stderr), each reply
    once and nothing else in the file (it was a blind chat and the file held the prompt's redraws)."""
    out = tmp_path / "replies.txt"
    child = spawn_redirected("--endpoint", server.url, home=home, cwd=tmp_path, out=out)
    child.sendline("first question")
    child.expect_exact("echo: first question")  # on the terminal
    child.expect_exact("stop · ")
    child.expect_exact(">>>")
    child.sendline("/history")
    child.expect_exact("assistant")
    child.expect_exact(">>>")
    child.sendline("second question")
    child.expect_exact("echo: second question")
    child.expect_exact(">>>")
    assert leave(child) == 0
    assert out.read_text() == "echo: first question\n\necho: second question\n\n"


def test_an_editor_run_from_a_redirected_chat_draws_on_the_terminal_not_in_the_file(server, home, tmp_path):
    """/edit's $EDITOR inherited stdout: with `yi-chat > file`, a real editor drew its screen into the file."""
    editor = tmp_path / "ed.sh"
    editor.write_text('#!/bin/sh\necho EDITOR-SCREEN\nprintf "edited question" > "$1"\n')
    editor.chmod(0o755)
    out = tmp_path / "replies.txt"
    child = spawn("--endpoint", server.url, home=home, cwd=tmp_path, env={"EDITOR": str(editor)}, out=out)
    child.sendline("first question")
    child.expect_exact("stop · ")
    child.expect_exact(">>>")
    child.sendline("/edit")
    child.expect_exact("EDITOR-SCREEN")  # on the terminal
    child.expect_exact("echo: edited question")
    child.expect_exact(">>>")
    assert leave(child) == 0
    assert out.read_text() == "echo: first question\n\necho: edited question\n\n"


def test_a_message_edited_in_the_editor_is_shown_as_sent_and_an_emptied_file_cancels(server, home, tmp_path):
    """/edit with $EDITOR sent the edited message without showing it (the scrollback read `>>> /edit`, then the
    reply to a message it never showed; inline /edit leaves `edit> ...`): it is shown as the edit> prompt leaves
    it, a second line after `... `. A file saved empty said "the message is unchanged": it says the file was left
    empty, and the exchange stays as it was."""
    editor = tmp_path / "ed.sh"
    editor.write_text(
        '#!/bin/sh\nif [ -e empty ]; then : > "$1"; else printf "edited question\\nsecond line\\n" > "$1"; fi\n'
    )
    editor.chmod(0o755)
    child = spawn("--endpoint", server.url, home=home, cwd=tmp_path, env={"EDITOR": str(editor)})
    child.sendline("first question")
    child.expect_exact("stop · ")
    child.expect_exact(">>>")
    child.sendline("/edit")
    child.expect_exact("echo: edited question")
    shown = child.before.replace("\r", "")
    assert "edit> edited question\n... second line\n" in shown, shown  # before the reply, as a typed message
    child.expect_exact(">>>")
    (tmp_path / "empty").touch()
    child.sendline("/edit")
    child.expect_exact("edit cancelled: ")
    child.expect_exact(">>>")
    assert "the file was left empty" in child.before
    assert leave(child) == 0
    (saved,) = session_files(home)
    edited = "edited question\nsecond line"
    assert [t["content"] for t in saved["turns"]] == [edited, "echo: " + edited]
    # in the input history, where Up finds it (a rewrite whose send failed was found nowhere)
    assert "\n+edited question\n+second line\n" in (home / "data" / "history").read_text()


def test_a_blank_editor_variable_is_no_editor(server, home, tmp_path):
    """EDITOR=' ' split to no words, and /edit ran the temp file itself: "editor ' ' failed ([Errno 13] Permission
    denied: '/tmp/tmp....md')". A blank value is none: the message is edited inline."""
    child = spawn("--endpoint", server.url, home=home, cwd=tmp_path, env={"EDITOR": " ", "VISUAL": ""})
    child.sendline("first question")
    child.expect_exact("stop · ")
    child.expect_exact(">>>")
    child.sendline("/edit")
    child.expect_exact("edit> first question")
    child.sendline(" again")
    child.expect_exact("echo: first question again")
    child.expect_exact(">>>")
    assert "failed" not in child.before
    assert leave(child) == 0


def test_an_editor_that_saves_a_bom_or_latin_1(server, home, tmp_path):
    """/edit read the editor's file as plain UTF-8: a BOM (Windows editors, vim's 'bomb') went to the model at the
    message's start, and a Latin-1 file failed as "'/edit' failed (UnicodeDecodeError: ...)" (run-through 4)."""
    editor = tmp_path / "ed.sh"
    editor.write_text(
        '#!/bin/sh\nif [ -e latin ]; then printf "\\357\\273\\277caf\\351\\n" > "$1"; '
        'else printf "\\357\\273\\277edited question\\r\\n" > "$1"; fi\n'
    )
    editor.chmod(0o755)
    child = spawn("--endpoint", server.url, home=home, cwd=tmp_path, env={"EDITOR": str(editor)})
    child.sendline("first question")
    child.expect_exact("stop · ")
    child.expect_exact(">>>")
    child.sendline("/edit")
    child.expect_exact("echo: edited question")
    child.expect_exact(">>>")
    assert sent(server) == "edited question"
    (tmp_path / "latin").touch()
    child.sendline("/edit")
    child.expect_exact("error: the editor saved text that is not UTF-8 (byte 6); the message stays as it was")
    child.expect_exact(">>>")
    assert leave(child) == 0
    (saved,) = session_files(home)
    assert [t["content"] for t in saved["turns"]] == ["edited question", "echo: edited question"]


def test_an_editor_that_removes_or_replaces_its_file(server, home, tmp_path):
    """An editor that deleted the file it was given: "'/edit' failed (FileNotFoundError: [Errno 2] ...)"; one that
    left a folder there would have been read as one. Each is one line of ours, the message as it was, no temp file
    left behind."""
    editor = tmp_path / "ed.sh"
    editor.write_text('#!/bin/sh\nrm -f "$1"\nif [ -e folder ]; then mkdir "$1"; fi\necho "$1" >> names\n')
    editor.chmod(0o755)
    child = spawn("--endpoint", server.url, home=home, cwd=tmp_path, env={"EDITOR": str(editor), "VISUAL": ""})
    child.sendline("first question")
    child.expect_exact("stop · ")
    child.expect_exact(">>>")
    child.sendline("/edit")
    child.expect_exact("error: the editor removed the file it was given; the message stays as it was")
    child.expect_exact(">>>")
    (tmp_path / "folder").touch()
    child.sendline("/edit")
    child.expect_exact("not a regular file (a directory); a message file must be a regular file")
    child.expect_exact(">>>")
    assert leave(child) == 0
    (saved,) = session_files(home)
    assert [t["content"] for t in saved["turns"]] == ["first question", "echo: first question"]
    first, second = (tmp_path / "names").read_text().split()
    assert not os.path.lexists(first) and os.path.isdir(second)  # a folder the editor made is its own
    os.rmdir(second)


def test_an_editor_that_is_not_there_is_named_with_what_works_without_one(server, home, tmp_path):
    """EDITOR=nanox, then /edit: "editor 'nanox' failed ([Errno 2] No such file or directory: 'nanox')", no word of
    the fix nor of `/edit NEW TEXT` (a walkthrough)."""
    child = spawn("--endpoint", server.url, home=home, cwd=tmp_path, env={"EDITOR": "nanox", "VISUAL": ""})
    child.sendline("first question")
    child.expect_exact("stop · ")
    child.expect_exact(">>>")
    child.sendline("/edit")
    child.expect_exact("error: editor 'nanox' not found (set EDITOR or VISUAL to one; /edit NEW TEXT needs no editor)")
    child.expect_exact(">>>")
    child.sendline("/edit second question")
    child.expect_exact("echo: second question")
    child.expect_exact(">>>")
    assert leave(child) == 0


def test_an_editor_command_with_an_unclosed_quote_is_named(server, home, tmp_path):
    """EDITOR='vim "' was "'/edit' failed (ValueError: No closing quotation)", the catch-all of a bug in a command,
    not a word of EDITOR."""
    child = spawn("--endpoint", server.url, home=home, cwd=tmp_path, env={"EDITOR": 'vim "', "VISUAL": ""})
    child.sendline("first question")
    child.expect_exact("stop · ")
    child.expect_exact(">>>")
    child.sendline("/edit")
    child.expect_exact('error: EDITOR=vim " cannot be split into a command (No closing quotation); the message stays')
    child.expect_exact(">>>")
    assert leave(child) == 0


def test_sigterm_during_the_editor_leaves_the_terminal_as_the_chat_found_it(server, home, tmp_path):
    """SIGTERM while $EDITOR runs: the editor is killed with its alternate screen up and its raw modes set, and
    the shell was left in them (no echo, the exit line drawn inside the editor's screen)."""
    import termios

    pexpect = pytest.importorskip("pexpect")
    editor = tmp_path / "ed.sh"
    # its alternate screen, raw modes, and (vim's `mouse=a`) mouse reports, cursor keys and keypad in their
    # application modes: those were left on, and every click in the terminal typed escapes into the shell
    editor.write_text(
        "#!/bin/sh\nprintf '\\033[?1049h\\033[?1000h\\033[?1006h\\033[?1h\\033='\n"
        "stty raw -echo\necho EDITING\nsleep 60\n"
    )
    editor.chmod(0o755)
    child = spawn("--endpoint", server.url, home=home, cwd=tmp_path, env={"EDITOR": str(editor)})
    try:
        seen = io.StringIO()
        child.logfile_read = seen
        child.sendline("first question")
        child.expect_exact("stop · ")
        child.expect_exact(">>>")
        child.sendline("/edit")
        child.expect_exact("EDITING")
        assert not termios.tcgetattr(child.child_fd)[3] & termios.ECHO  # the editor's raw mode
        os.kill(child.pid, signal.SIGTERM)
        child.expect_exact("terminated; the session is saved in")
        child.expect(pexpect.EOF)
        after = termios.tcgetattr(child.child_fd)
        assert after[3] & termios.ECHO and after[3] & termios.ICANON  # cooked again
    finally:
        child.close(force=True)
    out = seen.getvalue()
    assert out.rfind("\x1b[?1049l") > out.rfind("\x1b[?1049h") > 0  # the editor's screen left...
    assert out.rfind("\x1b[?1049l") < out.index("terminated; the session")  # ...before the exit line
    for on, off in (
        ("\x1b[?1000h", "\x1b[?1000l"),
        ("\x1b[?1006h", "\x1b[?1006l"),
        ("\x1b[?1h", "\x1b[?1l"),
        ("\x1b=", "\x1b>"),
    ):
        assert out.rfind(off) > out.rfind(on) > 0, repr(on)


def _editing(server, home, tmp_path, script: str):
    """A chat whose $EDITOR is `script`, after one exchange, at /edit once the editor has printed EDITING."""
    editor = tmp_path / "editor.sh"
    editor.write_text(script)
    editor.chmod(0o755)
    child = spawn("--endpoint", server.url, home=home, cwd=tmp_path, env={"EDITOR": str(editor)})
    child.sendline("first question")
    child.expect_exact("stop · ")
    child.expect_exact(">>>")
    child.sendline("/edit")
    child.expect_exact("EDITING")
    return child


def test_ctrl_c_that_ends_the_editor_is_said_as_an_interrupt(server, home, tmp_path):
    """An editor that does not catch Ctrl-C (a wrapper: `code --wait`) ended by it: "error: editor ... failed
    (Command ... died with <Signals.SIGINT: 2>.)" (a review); the edit stops with "interrupted", as before."""
    child = _editing(server, home, tmp_path, "#!/bin/sh\necho EDITING\nsleep 60\n")
    child.sendcontrol("c")
    child.expect_exact("interrupted")
    child.expect_exact(">>>")
    assert "error" not in child.before and "Signals" not in child.before
    assert leave(child) == 0
    (saved,) = session_files(home)
    assert [t["content"] for t in saved["turns"]] == ["first question", "echo: first question"]


def test_ctrl_c_in_a_line_editor_is_the_editors_and_its_text_is_sent(server, home, tmp_path):
    """EDITOR=ed: Ctrl-C is ed's "stop this command", but the terminal sends it to the whole foreground group, and
    yi-chat took it too: it killed the editor, said "interrupted" and dropped the text the editor had saved (`w`)."""
    script = '#!/bin/sh\ntrap "echo EDITOR-GOT-CTRL-C" INT\nprintf "rewritten in ed" > "$1"\n'
    script += "echo EDITING\nread line\nexit 0\n"  # (read ends at the trapped Ctrl-C; the editor exits well)
    child = _editing(server, home, tmp_path, script)
    child.sendcontrol("c")
    child.expect_exact("EDITOR-GOT-CTRL-C")
    child.expect_exact("echo: rewritten in ed")
    child.expect_exact(">>>")
    assert "interrupted" not in child.before
    assert leave(child) == 0
    (saved,) = session_files(home)
    assert [t["content"] for t in saved["turns"]] == ["rewritten in ed", "echo: rewritten in ed"]


def test_kill_of_a_chat_stopped_at_the_prompt_ends_it_on_fg(server, home, tmp_path):
    """Ctrl-Z at the prompt, `kill %1` from the shell (dash: the job stays stopped), `fg`: the chat ended with
    SIGTERM's line and code; the SIGTERM raised inside prompt_toolkit's suspend task, which printed "Task exception
    was never retrieved" and went on prompting."""
    pexpect = pytest.importorskip("pexpect")
    dash = shutil.which("dash")
    if dash is None:
        pytest.skip("needs dash")
    argv = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "yi_cli", "--endpoint", server.url))
    child = pexpect.spawn(
        dash, ["-i"], env=term_env(home, PS1="$ "), encoding="utf-8", dimensions=(40, 120), timeout=60, cwd=tmp_path
    )
    try:
        seen = io.StringIO()
        child.logfile_read = seen
        child.expect_exact("$ ")
        child.sendline(argv)
        child.expect_exact(">>>")
        child.sendline("first question")
        child.expect_exact("echo: first question")
        child.expect_exact(">>>")
        child.sendcontrol("z")  # first a plain suspend: fg gives the prompt back
        child.expect("Stopped")
        child.expect_exact("$ ")
        child.sendline("fg")
        child.expect_exact(">>>")
        child.sendline("second question")
        child.expect_exact("echo: second question")
        child.expect_exact(">>>")
        child.sendcontrol("z")
        child.expect("Stopped")
        child.expect_exact("$ ")
        child.sendline("kill %1")
        child.expect_exact("$ ")
        child.sendline("fg")
        child.expect_exact("terminated; the session is saved in")
        child.expect_exact("$ ")
        child.sendline("echo code=$?")
        child.expect(r"code=(\d+)")
        assert child.match.group(1) == "130"
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert "Task exception" not in seen.getvalue() and "Traceback" not in seen.getvalue()
    (saved,) = session_files(home)
    assert [t["content"] for t in saved["turns"]][::2] == ["first question", "second question"]


# Run as yi-chat is (python -m yi_cli), with perf_counter and monotonic moved on by the seconds in the file $SHIFT
# names: the test writes 1000 there while the chat is stopped, a long Ctrl-Z without waiting through one.
SHIFTED_CLOCK = """import os, runpy, sys, time


def shifted(real):
    def clock():
        try:
            with open(os.environ["SHIFT"]) as f:
                return real() + float(f.read())
        except FileNotFoundError:
            return real()

    return clock


sys.path.insert(0, {root!r})
time.perf_counter, time.monotonic = shifted(time.perf_counter), shifted(time.monotonic)
sys.argv[0] = "yi-chat"
runpy.run_module("yi_cli", run_name="__main__", alter_sys=True)
"""


class Gated(ScriptedEngine):
    """Streams the first 5 words of its reply, then waits for `go` before the rest."""

    def __init__(self, replies):
        super().__init__(replies)
        self.waiting, self.go = threading.Event(), threading.Event()

    def stream(self, prompt, settings, cancel):
        for i, ev in enumerate(super().stream(prompt, settings, cancel)):
            if i == 5:
                self.waiting.set()
                assert self.go.wait(60)
            yield ev


@pytest.mark.parametrize("how", ["chat", "piped"])
def test_a_reply_stopped_with_ctrl_z_leaves_the_stop_out_of_its_speed(home, tmp_path, how):
    """Ctrl-Z mid-reply, `fg` later: the stopped time was counted as decode time, so the footer's tok/s (and
    /stats, and the session's decode_tok_s) fell to a fraction. The stop is left out, in the chat (the terminal's
    hold takes Ctrl-Z) and in a piped run (`< questions > replies`, the chat's own handler during a reply). yi-chat
    runs as a job of an interactive dash; while it is stopped its clock is moved on by 1000 s (a 1000 s stop), and
    the reply's decode time must not have grown by that. Nor may the stop count as the server's silence: a stop
    longer than --idle-timeout cut the rest of the reply on `fg` with "no data from the server for 30 s"."""
    import time

    pexpect = pytest.importorskip("pexpect")
    dash = shutil.which("dash")
    if dash is None:
        pytest.skip("needs dash")

    words = [f"w{i}" for i in range(20)]
    wrapper = tmp_path / "yi_shifted.py"
    wrapper.write_text(SHIFTED_CLOCK.format(root=str(ROOT)))
    shift, replies = tmp_path / "shift", tmp_path / "replies.txt"
    (tmp_path / "questions.txt").write_text("tell me a story\n")
    with OpenAIServer(Gated([" ".join(words)]), model="served") as srv:
        words_run = (sys.executable, str(wrapper), "--endpoint", srv.url, "--stats", "--idle-timeout", "30")
        argv = " ".join(shlex.quote(a) for a in words_run)
        env = term_env(home, PS1="$ ", SHIFT=str(shift))
        child = pexpect.spawn(dash, ["-i"], env=env, encoding="utf-8", dimensions=(40, 120), timeout=60, cwd=tmp_path)
        try:
            child.expect_exact("$ ")
            if how == "chat":
                child.sendline(argv)
                child.expect_exact(">>>")
                child.sendline("tell me a story")
                child.expect_exact("w4")  # the reply is on screen: its decode time has begun
            else:
                child.sendline(f"{argv} < questions.txt > replies.txt")
                deadline = time.monotonic() + 60
                while "w4" not in (replies.read_text() if replies.exists() else ""):  # written as it comes
                    assert time.monotonic() < deadline, "the reply's first words"
                    time.sleep(0.01)  # polling a condition with a deadline
            assert srv.engine.waiting.wait(60)
            child.sendcontrol("z")
            child.expect("Stopped")
            child.expect_exact("$ ")
            shift.write_text("1000")  # stopped for 1000 s, as the chat's clock sees it
            child.sendline("fg")
            child.expect_exact("fg")
            srv.engine.go.set()
            child.expect(r"stop · \d+ prompt tok · 20 new tok · ttft \d+\.\d+s · (\d+\.\d+) tok/s")
            footer = float(child.match.group(1))
            if how == "chat":
                child.expect_exact(">>>")
                child.sendcontrol("d")
            child.expect_exact("$ ")
            child.sendline("exit")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
    (saved,) = session_files(home)
    reply = saved["turns"][1]
    assert reply["content"] == " ".join(words) and reply["tokens"] == 20
    decode_s = 19 / reply["stats"]["decode_tok_s"]
    assert decode_s < 100, f"the stop counted as decode time: {decode_s:.0f} s ({footer} tok/s)"
    assert footer > 0.2  # the footer as well (19 tokens in less than 95 s)


def test_keys_typed_ahead_of_a_ctrl_z_wait_for_the_chat_not_the_shell(home, tmp_path):
    """A line typed during a reply, then Ctrl-Z: the keys were left in the terminal's queue as the shell took the
    terminal, so the shell ran the line as a command (dash glued it to the `fg` typed next, which then never ran),
    and after `fg` the chat had lost it. They wait for the chat's next prompt, as the README promises of keys typed
    during a reply, and the shell reads only what is typed at it."""
    pexpect = pytest.importorskip("pexpect")
    dash = shutil.which("dash")
    if dash is None:
        pytest.skip("needs dash")
    words = [f"w{i}" for i in range(8)]
    with OpenAIServer(Gated([" ".join(words)]), model="served") as srv:
        argv = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "yi_cli", "--endpoint", srv.url))
        child = pexpect.spawn(
            dash, ["-i"], env=term_env(home, PS1="$ "), encoding="utf-8", dimensions=(40, 120), timeout=60, cwd=tmp_path
        )
        try:
            child.logfile_read = seen = io.StringIO()
            child.expect_exact("$ ")
            child.sendline(argv)
            child.expect_exact(">>>")
            child.sendline("tell me a story")
            assert srv.engine.waiting.wait(60)
            child.expect_exact("w4")
            child.send("echo LEAKED\r")  # typed ahead, held unechoed: queued before the Ctrl-Z that follows
            child.sendcontrol("z")
            child.expect("Stopped")
            child.expect_exact("$ ")
            child.sendline("fg")
            child.expect_exact("fg")
            srv.engine.go.set()
            child.expect_exact("w7")
            child.expect_exact("echo: echo LEAKED")  # the typed-ahead line, sent as the next message
            child.expect_exact(">>>")
            child.sendcontrol("d")
            child.expect_exact("$ ")
            child.sendline("exit")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
    assert not re.search(r"^LEAKED", seen.getvalue().replace("\r", ""), re.M), seen.getvalue()  # the shell's echo
    (saved,) = session_files(home)
    assert [t["content"] for t in saved["turns"]][::2] == ["tell me a story", "echo LEAKED"]


def test_keys_typed_ahead_of_a_ctrl_z_in_a_one_shot_stay_the_shells(home, tmp_path):
    """`-p` at a terminal: no prompt follows, so the keys typed during its reply are the shell's, a Ctrl-Z or not.
    Taken out of the queue at the Ctrl-Z for a prompt that never came, they were lost. (bash: dash reads the line's
    Enter, queued as CR under the hold, as part of the line it types next.)"""
    pexpect = pytest.importorskip("pexpect")
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("needs bash")
    with OpenAIServer(Gated([" ".join(f"w{i}" for i in range(8))]), model="served") as srv:
        argv = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "yi_cli", "--endpoint", srv.url, "-p", "hi"))
        env = term_env(home, PS1="$ ", INPUTRC="/dev/null")
        child = pexpect.spawn(
            bash,
            ["--norc", "--noprofile", "-i"],
            env=env,
            encoding="utf-8",
            dimensions=(40, 120),
            timeout=60,
            cwd=tmp_path,
        )
        try:
            child.expect_exact("$ ")
            child.sendline(argv)
            assert srv.engine.waiting.wait(60)
            child.expect_exact("w4")
            child.send("echo TY''PED\r")  # the shell's echo prints TYPED; the line as typed has TY''PED
            child.sendcontrol("z")
            child.expect("Stopped")
            child.expect_exact("$ ")
            child.expect(r"[\r\n]TYPED\r\n")  # the shell ran it as it took the terminal
            child.expect_exact("$ ")
            child.sendline("fg")
            srv.engine.go.set()
            child.expect_exact("w7")
            child.sendline("exit")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)


@pytest.mark.parametrize("when", ["mid-reply", "at the prompt"])
def test_a_real_hangup_saves_the_turn_and_exits_129(home, tmp_path, when):
    """The terminal closed under the chat (its pty's master side: a closed window, a dropped ssh): the reply so far
    is recorded and the exit is SIGHUP's 129 — the chat's output, on a terminal that answers EIO now, went to
    /dev/null instead of failing (a traceback would exit 1)."""
    engine = ScriptedEngine(["one two three four"], hold_after=2 if when == "mid-reply" else None)
    with OpenAIServer(engine, model="served") as srv:
        child = spawn("--endpoint", srv.url, home=home, cwd=tmp_path)
        child.sendline("a question")
        if when == "mid-reply":
            assert engine.holding.wait(60)
            child.expect_exact("one two")
        else:
            child.expect_exact("one two three four")
            child.expect_exact(">>>")
        child.ptyproc.fileobj.close()  # the master side: the kernel hangs the terminal up and sends SIGHUP
        child.ptyproc.closed = child.closed = True  # (pexpect's own close would signal the child itself)
        _, status = os.waitpid(child.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 129
    (saved,) = session_files(home)
    reply = "one two" if when == "mid-reply" else "one two three four"
    assert [t["content"] for t in saved["turns"]] == ["a question", reply]
    assert saved["turns"][1]["finish_reason"] == ("interrupted" if when == "mid-reply" else "stop")


@pytest.mark.parametrize("edit", [False, True], ids=["message", "edit"])
def test_a_chat_killed_outright_mid_reply_keeps_the_message(home, tmp_path, edit):
    """SIGKILL (the OOM killer, `kill -9`) mid-reply: the session's file held the conversation as it was before the
    message, which was lost with the reply (the file is written as a reply ends). The message is in the file as its
    reply starts, its reply empty and interrupted: -c brings it back and /retry answers it. An /edit's new text
    too."""
    editor = tmp_path / "ed.sh"
    editor.write_text('#!/bin/sh\nprintf "the edited question" > "$1"\n')
    editor.chmod(0o755)
    engine = ScriptedEngine(["a b c d e f"] * (1 + edit), hold_after=None if edit else 2)
    with OpenAIServer(engine, model="served") as srv:
        child = spawn("--endpoint", srv.url, home=home, cwd=tmp_path, env={"EDITOR": str(editor)})
        child.sendline("a question")
        if edit:
            child.expect_exact("a b c d e f")
            child.expect_exact(">>>")
            engine.hold_after = 2
            child.sendline("/edit")
        assert engine.holding.wait(60)
        child.expect_exact("a b")
        child.kill(signal.SIGKILL)
        child.wait()
    (saved,) = session_files(home)
    said = "the edited question" if edit else "a question"
    assert [(t["content"], t.get("finish_reason")) for t in saved["turns"][-2:]] == [(said, ""), ("", "interrupted")]
    assert len(saved["turns"]) == 2
    with OpenAIServer(ScriptedEngine(["the answer"]), model="served") as srv:
        p = yi("--endpoint", srv.url, "-c", stdin="/retry\n", home=home)
        assert p.returncode == 0, p.stderr.decode()
        assert srv.requests[-1]["messages"][-1]["content"] == said
    (saved,) = session_files(home)
    assert [t["content"] for t in saved["turns"]] == [said, "the answer"]


def test_a_reply_that_fails_takes_its_message_out_of_the_file_again(home):
    """The message goes into the session's file as its reply starts; a reply that fails with nothing to keep takes
    it out again: a first message's file goes (a session of nothing), a later one's file is as it was."""

    class FailsSecond(ScriptedEngine):
        def stream(self, prompt, settings, cancel):
            if len(self.seen) == 1:
                self.seen.append(None)
                raise YiError("the engine broke")
            yield from super().stream(prompt, settings, cancel)

    with OpenAIServer(ScriptedEngine(fail_with=YiError("the engine broke")), model="served") as srv:
        p = yi("--endpoint", srv.url, "-p", "first", home=home)
    assert p.returncode == 1 and session_files(home) == [], p.stderr.decode()
    with OpenAIServer(FailsSecond(), model="served") as srv:
        p = yi("--endpoint", srv.url, stdin="first\nsecond\n", home=home)
    assert p.returncode == 1, p.stderr.decode()
    assert [[t["content"] for t in f["turns"]] for f in session_files(home)] == [["first", "echo: first"]]


@pytest.mark.parametrize("where", ["in a task", "in the loop"])
def test_a_signal_at_the_prompt_ends_it_through_its_event_loop(monkeypatch, capfd, caplog, where):
    """SIGTERM (SIGHUP, SIGQUIT) at the prompt: its handler raised KeyboardInterrupt from whatever the event loop ran
    at that instant. Landing in one of prompt_toolkit's tasks it printed a traceback ("Exception in default
    exception handler"), and a task left broken could keep the loop's shutdown waiting forever (orphaned chats holding
    their session's lock). The handler now ends the prompt through its loop, as Ctrl-C does, and the chat stops."""
    import asyncio
    import threading
    from types import SimpleNamespace

    from prompt_toolkit import PromptSession
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from yi_cli.ui import cli, repl

    chat = SimpleNamespace(running=True, terminated=False)
    monkeypatch.setattr(cli, "_CHAT", [chat])
    monkeypatch.setattr(cli, "_LEAVING", [])
    started = threading.Event()

    def pre_run():
        started.set()
        if where == "in a task":  # the handler runs inside the task, at the bytecode after the kill

            async def signalled():
                os.kill(os.getpid(), signal.SIGTERM)
                await asyncio.sleep(0)

            session.app.create_background_task(signalled())

    old = signal.signal(signal.SIGTERM, cli._leave)
    try:
        with create_pipe_input() as keys:
            session = PromptSession(input=keys, output=DummyOutput())
            if where == "in the loop":  # from another thread, while the loop waits for keys
                threading.Thread(target=lambda: started.wait(60) and os.kill(os.getpid(), signal.SIGTERM)).start()
            with pytest.raises(KeyboardInterrupt):
                repl.read_line(session, ">>> ", pre_run=pre_run)
    finally:
        signal.signal(signal.SIGTERM, old)
    assert not chat.running and chat.terminated and cli._LEAVING == [signal.SIGTERM]
    assert repl._READING == []
    err = capfd.readouterr().err
    assert "Traceback" not in err and "xception" not in err, err
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []  # what asyncio reports on stderr


def piped_run(server, home) -> subprocess.Popen:
    """A piped chat with `server`, its stdin, stdout and stderr pipes of the test's."""
    return subprocess.Popen(
        [sys.executable, "-m", "yi_cli", "--endpoint", server.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**{k: v for k, v in os.environ.items() if k not in CLEAN}, "YI_CHAT_HOME": str(home)},
    )


def test_ctrl_c_between_replies_of_a_piped_run_says_where_the_session_is(server, home):
    proc = piped_run(server, home)
    proc.stdin.write(b"q1\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == b"echo: q1\n"  # the reply; the run now waits on stdin for the next line
    assert proc.stdout.readline() == b"\n"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)  # stdin stays open until it has exited: an EOF must not end the run before the signal
    err = proc.stderr.read()
    proc.stdin.close()
    proc.stdout.close()
    proc.stderr.close()
    [saved] = (home / "data" / "sessions").glob("*.json")
    assert proc.returncode == 130
    assert err.decode().splitlines() == [f"yi-chat: interrupted; the session is saved in {saved}"]


def test_ctrl_c_while_a_piped_runs_file_waits_on_a_pipe_ends_the_run(server, home, tmp_path):
    """Ctrl-C while a piped run's `/file FIFO` waited for a writer gave up the file ("not attached") and the run went
    on reading stdin, where Ctrl-C ends a piped run everywhere else (a helper's stress found it). It ends the run:
    exit 130, the session's line."""
    fifo = tmp_path / "notes.fifo"
    os.mkfifo(fifo)
    proc = piped_run(server, home)
    proc.stdin.write(f"q1\n/file {fifo}\n".encode())
    proc.stdin.flush()
    assert proc.stdout.readline() == b"echo: q1\n"
    waiting = proc.stderr.readline().decode()  # past a second of the wait
    assert waiting.startswith(f"{fifo}: a pipe, read to its end: waiting"), waiting
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)  # stdin stays open: only the signal can end the run
    finally:
        proc.kill()
        err = proc.stderr.read()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            f.close()
    [saved] = (home / "data" / "sessions").glob("*.json")
    assert proc.returncode == 130
    assert err.decode().splitlines() == [f"yi-chat: interrupted; the session is saved in {saved}"]


@pytest.mark.parametrize("env", [{}, {"FORCE_COLOR": "1"}, {"TTY_COMPATIBLE": "1"}], ids=["plain", "force", "tty"])
def test_piped_tables_carry_no_trailing_spaces(server, home, env):
    """Piped `/history` padded every line of its table with spaces to 80 columns (`cat -A` showed them); `--json`
    already dropped them. Tables written to a pipe end at their last character; the columns still line up. So also
    with FORCE_COLOR=1 or TTY_COMPATIBLE=1 (set in many CI environments), which rich took for a terminal: escape
    codes and padded rows on stdout, a spinner's frames on stderr, and in `yi-chat models` too."""
    p = yi("--endpoint", server.url, stdin="what is a cat\n/history\n/help\n", home=home, env=env)
    assert p.returncode == 0, p.stderr.decode()
    assert b"\x1b" not in p.stdout + p.stderr, (p.stdout, p.stderr)
    listed = yi("models", home=home, env=env)
    assert listed.returncode == 0 and b"\x1b" not in listed.stdout + listed.stderr, listed.stdout
    assert [ln for ln in listed.stdout.decode().splitlines() if ln != ln.rstrip()] == []
    lines = p.stdout.decode().splitlines()
    assert [ln for ln in lines if ln != ln.rstrip()] == []
    rows = [ln for ln in lines if ln.lstrip().startswith(("#", "1 ", "2 "))][:3]
    assert [r.split(None, 2)[:2] for r in rows] == [["#", "role"], ["1", "user"], ["2", "assistant"]]
    assert rows[1].endswith("what is a cat") and rows[2].endswith("echo: what is a cat")
    assert len({r.index(w) for r, w in zip(rows, ("text", "what", "echo"), strict=True)}) == 1  # one text column


@pytest.mark.parametrize("path", ["/dev/stdin", "/proc/self/fd/0"])
def test_file_of_the_chats_own_piped_input_is_refused_and_its_lines_still_run(server, home, path):
    """`/file /dev/stdin` in a piped chat read the pipe the chat reads its lines from: the lines after it became the
    attachment and were never sent (a walkthrough). It is refused; the lines run as turns."""
    p = yi("--endpoint", server.url, stdin=f"/file {path}\nhi\nthere\n", home=home)
    assert p.returncode == 1, p.stderr.decode()
    assert p.stderr.decode().splitlines() == [
        f"error: {path}: is the chat's own input (stdin); attaching it would take the lines after this one"
    ]
    assert [r["messages"][-1]["content"] for r in server.requests] == ["hi", "there"]


def _run_with_files(home: Path, args: list, stdin: Path, stdout: Path):
    """`python -m yi_cli ARGS < stdin > stdout`: both regular files, as a shell's redirections make them."""
    e = {k: v for k, v in os.environ.items() if k not in CLEAN}
    e.update(YI_CHAT_HOME=str(home))
    with open(stdin, "rb") as i, open(stdout, "wb") as o:
        return subprocess.run(
            [sys.executable, "-m", "yi_cli", *args], stdin=i, stdout=o, stderr=subprocess.PIPE, env=e, timeout=300
        )


@pytest.mark.parametrize("path", ["/dev/stdout", "/proc/self/fd/1"])
def test_a_save_onto_the_runs_own_output_file_is_refused_and_no_reply_is_lost(server, home, tmp_path, path):
    """`/save! /dev/stdout` with stdout a file (`> out.txt`) replaced that file: the reply before it was gone, the
    ones after it went into the old, deleted file, and the run exited 0. Refused, /save and /save! alike; every
    reply is in the file."""
    script, out = tmp_path / "script.txt", tmp_path / "out.txt"
    script.write_text(f"hi\n/save! {path}\n/save {path}\nbye\n")
    p = _run_with_files(home, ["--endpoint", server.url], script, out)
    said = f"error: {path}: is the chat's own output (stdout); a session is saved to a file of its own"
    assert p.returncode == 1 and p.stderr.decode().splitlines() == [said, said], p.stderr.decode()
    assert out.read_text().split() == ["echo:", "hi", "echo:", "bye"]


def test_a_resume_of_the_chats_own_input_is_refused(server, home, tmp_path):
    """`--resume /dev/stdin < session.json` resumed the session, then read the same file again as the chat's lines:
    its JSON went to the model as a message, and into the session. Refused as -f and /file refuse it, before any
    request."""
    assert yi("--endpoint", server.url, stdin="hi\n", home=home).returncode == 0
    saved = next((home / "data" / "sessions").glob("*.json"))
    for args in (["--resume", "/dev/stdin"], ["--resume", str(saved)]):  # the file itself, as stdin and named
        p = _run_with_files(home, ["--endpoint", server.url, *args], saved, tmp_path / "out.txt")
        said = f"yi-chat: --resume {args[1]}: is the chat's own input (stdin); give the session file itself"
        assert p.returncode == 2 and p.stderr.decode().splitlines() == [said], p.stderr.decode()
    assert len(server.requests) == 1  # the first run's one chat request
    p = yi("--endpoint", server.url, "--resume", str(saved), stdin="and you\n", home=home)
    assert p.returncode == 0 and sent(server) == "and you", p.stderr.decode()


def test_binary_data_piped_into_a_chat_is_refused_whole(server, home):
    """An ELF (or a gzip file) piped into a chat without -p was 167 lines of "stdin line N ... skipped" and 28 of its
    fragments sent to the model as turns, and saved. A NUL byte in its first 8000 bytes (git's test for a binary
    file) among control characters, a twentieth of its bytes or more (text has none), refuses it whole: one line,
    exit 1, nothing sent; a line of text with a NUL in it is still one line skipped."""
    data = Path(sys.executable).resolve().read_bytes()[:20000]  # a program
    p = yi("--endpoint", server.url, stdin=data, home=home)
    assert p.returncode == 1 and p.stderr.decode().splitlines() == [
        "error: stdin is binary data (it contains NUL bytes), not text; nothing read"
    ], p.stderr.decode()
    assert not [r for r in server.requests if "messages" in r]
    p = yi("--endpoint", server.url, stdin=b"a\0b\nhello\n", home=home)  # a short first read: its lines judged
    assert p.returncode == 1 and "stdin line 1 contains a NUL byte; skipped" in p.stderr.decode()
    assert sent(server) == "hello"
    long_line = b"hi " * 3000 + b"\n"  # a bad line past the first 8000 bytes: skipped, as before
    p = yi("--endpoint", server.url, stdin=long_line + b"a\0b\nthere\n", home=home)
    assert p.returncode == 1 and "contains a NUL byte; skipped" in p.stderr.decode()
    assert sent(server) == "there"


@pytest.mark.parametrize("path,out", [("/dev/stdout", "stdout"), ("/proc/self/fd/2", "stderr")])
def test_file_of_the_chats_own_output_pipe_is_refused_at_once(server, home, path, out):
    """`/file /dev/stdout` (or `-f`) with stdout a pipe said it waited for the pipe's writer, which is yi-chat: the
    run hung until killed, the lines after it never sent (a pipes hunt)."""
    p = yi("--endpoint", server.url, stdin=f"/file {path}\nhi\n", home=home, timeout=120)
    assert p.returncode == 1, p.stderr.decode()
    said = f"{path}: is yi-chat's own {out}, a pipe it writes into; reading it would wait for ever"
    assert p.stderr.decode().splitlines() == [f"error: {said}"]
    assert [r["messages"][-1]["content"] for r in server.requests] == ["hi"]
    one_line_error(yi("--endpoint", server.url, "-f", path, "-p", "x", home=home, timeout=120), 2, said)


def test_a_prompt_from_stdin_past_the_read_limit_is_a_prompt_too_long(server, home):
    """`-p -` of over 64 MiB said "stdin: too large to attach", exit 2, of a prompt, where one past the context
    exits 1 (README); nothing is sent."""
    p = yi("--endpoint", server.url, "-p", "-", stdin=b"a" * ((64 << 20) + 1), home=home)
    one_line_error(p, 1, "stdin: the prompt is over 64 MiB, more than any context can hold")
    assert server.requests == []


@pytest.mark.parametrize("path", ["/dev/stdin", "/proc/self/fd/0"])
def test_f_naming_the_piped_stdin_is_f_dash(server, home, path):
    """`-f /dev/stdin` with stdin a pipe read that pipe as a file: in a piped chat the whole script became the
    attachment and no turn was sent ("the input ended before a message took it", exit 1); with -p the piped stdin
    went first as the context and the file after it was empty. It is `-f -` now, said as spelled."""
    one_line_error(
        yi("--endpoint", server.url, "-f", path, stdin="hi\nthere\n", home=home),
        2,
        f"-f {path}: stdin is the chat's input (one turn per line) here",
    )
    assert server.requests == []
    p = yi("--endpoint", server.url, "-f", path, "-p", "what is in it", stdin="some text\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stderr.decode() == ""  # no "is empty: attached as it is"
    [content] = [r["messages"][-1]["content"] for r in server.requests]
    assert content.count("some text") == 1 and content.endswith("what is in it")


@pytest.mark.parametrize("path", ["/dev/stdin", "notes.txt"])
def test_f_naming_a_file_redirected_to_stdin_is_f_dash(server, home, tmp_path, path):
    """`-f /dev/stdin -p x < notes.txt` (stdin a regular file, not a pipe) sent the text twice, as the piped context
    and again as the file; without -p the file went with the first turn and each of its lines was a turn as well.
    It is `-f -` as for a pipe (also named by its own path)."""
    notes = tmp_path / "notes.txt"
    notes.write_text("line one\nline two\n")
    e = {k: v for k, v in os.environ.items() if k not in CLEAN}
    e.update(YI_CHAT_HOME=str(home))

    def run(*args):
        with open(notes, "rb") as stdin:
            return subprocess.run(
                [sys.executable, "-m", "yi_cli", "--endpoint", server.url, "-f", path, *args],
                stdin=stdin,
                capture_output=True,
                timeout=300,
                env=e,
                cwd=tmp_path,
            )

    one_line_error(run(), 2, f"-f {path}: stdin is the chat's input (one turn per line) here")
    assert server.requests == []
    p = run("-p", "summarise")
    assert p.returncode == 0, p.stderr.decode()
    [content] = [r["messages"][-1]["content"] for r in server.requests]
    assert content.count("line one") == 1 and content.endswith("summarise"), content
    # /file of it in the chat it feeds is read apart, from its start: no line of the chat goes with it
    notes.write_text(f"/file {path}\nhi\n")
    with open(notes, "rb") as stdin:
        p = subprocess.run(
            [sys.executable, "-m", "yi_cli", "--endpoint", server.url],
            stdin=stdin,
            capture_output=True,
            timeout=300,
            env=e,
            cwd=tmp_path,
        )
    assert p.returncode == 0, p.stderr.decode()
    assert server.requests[-1]["messages"][-1]["content"].endswith(f"/file {path}\nhi\n```\n\nhi")


@pytest.mark.parametrize("how", ["one-shot", "piped"])
def test_a_script_whose_turns_were_not_saved_ends_with_the_line_that_says_so(server, home, how):
    """The autosave failing all through a one-shot or piped run: exit 1 as README says, but stderr had only the
    notice of the first failure ("the chat goes on (the next turns are tried too)", of a one-shot's next turns that
    never come), not the ending line README promises."""
    (home / "data").mkdir(parents=True)
    (home / "data" / "sessions").write_text("")  # a file where the sessions' folder belongs
    args, stdin = (["-p", "hi"], None) if how == "one-shot" else ([], "hi\nthere\n")
    p = yi("--endpoint", server.url, *args, stdin=stdin, home=home)
    assert p.returncode == 1, p.stderr.decode()
    lines = p.stderr.decode().splitlines()
    assert lines[-1] == "yi-chat: the last turns are not saved (autosave failed: Not a directory)", lines
    assert p.stdout.decode().startswith("echo: hi")
    with open("/dev/full", "wb") as full:  # stdout failing too: one ending line, which says both
        p = subprocess.run(
            [sys.executable, "-m", "yi_cli", "--endpoint", server.url, "-p", "hi"],
            stdin=subprocess.DEVNULL,
            stdout=full,
            stderr=subprocess.PIPE,
            env={**{k: v for k, v in os.environ.items() if k not in CLEAN}, "YI_CHAT_HOME": str(home)},
            timeout=300,
        )
    ending = [ln for ln in p.stderr.decode().splitlines() if ln.startswith("yi-chat: ")]
    assert p.returncode == 1 and ending == [
        "yi-chat: stdout failed (No space left on device); the last turns are not saved (autosave failed: Not a "
        "directory)"
    ], p.stderr.decode()


def test_a_piped_line_over_64_mib_is_skipped_and_said_and_the_next_runs(server, home):
    """A piped line is held whole until it ends: an endless one (`< /dev/zero`) grew by gigabytes, saying nothing.
    A line over an attachment's 64 MiB (far beyond any context) is skipped at its limit, with one line."""
    from yi_cli.conversation.attach import MAX_BYTES

    p = yi("--endpoint", server.url, stdin=b"x" * (MAX_BYTES + 1) + b"\nhi\n", home=home)
    assert p.returncode == 1
    assert p.stderr.decode().splitlines() == ["error: stdin line 1 is too long (over 64 MiB); skipped"]
    assert [r["messages"][-1]["content"] for r in server.requests] == ["hi"]


def test_stdin_of_dev_zero_is_said_at_once_and_ends_the_run(server, home):
    """`< /dev/zero` was one line that never ends (nothing said, ever), then "line 1 is too long" and a run that only
    a signal ended: binary data, said at once, and the run ends (exit 1), nothing sent."""
    e = {k: v for k, v in os.environ.items() if k not in CLEAN}
    e.update(YI_CHAT_HOME=str(home))
    with open("/dev/zero", "rb") as zero:
        p = subprocess.run(
            [sys.executable, "-m", "yi_cli", "--endpoint", server.url],
            stdin=zero,
            capture_output=True,
            env=e,
            timeout=300,
        )
    assert p.returncode == 1 and p.stderr.decode().splitlines() == [
        "error: stdin is binary data (it contains NUL bytes), not text; nothing read"
    ]
    assert server.requests == []


def test_an_empty_file_attached_with_f_is_said(server, home, tmp_path):
    """`-f empty.txt -p ...` attached an empty file without a word, where `/file empty.txt` says "(empty)" (a
    walkthrough): a file with nothing in it is more likely the wrong file than the context meant."""
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("\n  \n")
    p = yi("--endpoint", server.url, "-f", tmp_path / "empty.txt", "-f", tmp_path / "blank.txt", "-p", "hi", home=home)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stderr.decode().splitlines() == [
        f"{tmp_path / 'empty.txt'} is empty: attached as it is",
        f"{tmp_path / 'blank.txt'} is blank: attached as it is",
    ]
    assert server.requests[-1]["messages"][-1]["content"].endswith("hi")


def test_files_attached_with_f_for_a_chat_are_said_as_they_are(server, home, tmp_path):
    """`-f a.txt -f b.txt` before a chat said "attached a.txt, b.txt: it goes with your first message"."""
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(name + "\n")
    lines = {}
    for files in (["a.txt"], ["a.txt", "b.txt"]):
        args = [w for f in files for w in ("-f", str(tmp_path / f))]
        p = yi("--endpoint", server.url, *args, stdin="hi\n", home=home)
        assert p.returncode == 0, p.stderr.decode()
        lines[len(files)] = [ln for ln in p.stderr.decode().splitlines() if ln.startswith("attached")]
    assert lines[1] == [f"attached {tmp_path / 'a.txt'}: it goes with your first message"]
    assert lines[2] == [f"attached {tmp_path / 'a.txt'}, {tmp_path / 'b.txt'}: they go with your first message"]


def test_a_blank_system_flag_sets_none_as_an_empty_one_does(server, home):
    """`--system ""` set no system prompt, while `--system "  "` sent two spaces as one (a walkthrough)."""
    said = [yi("--endpoint", server.url, "--system", s, stdin="/system\n", home=home) for s in ("", "  ", "\t")]
    assert [p.returncode for p in said] == [0, 0, 0]
    assert {p.stdout.decode() for p in said} == {"(no system prompt)\n\n"}


@pytest.mark.parametrize("blank", ["", "   ", "\\n\\t "])
def test_a_blank_system_in_the_config_sets_none_as_the_flag_does(server, home, blank):
    """`system = "   "` in config.toml was sent to the model as the system prompt, where `--system "   "` is none set
    (a review): /system says none, and the server gets no system message."""
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text(f'system = "{blank}"\n')
    p = yi("--endpoint", server.url, stdin="/system\nhi\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode().startswith("(no system prompt)\n\n")
    assert [m["role"] for m in server.requests[-1]["messages"]] == ["user"]


@pytest.mark.parametrize("json_lines", [False, True])
def test_piped_history_keeps_each_turn_whole_on_its_line(server, home, json_lines):
    """Piped (and --json) `/history` folded a turn's text at 80 (100) columns, the table's width in a pipe: a long
    message came out in pieces on continuation lines. The table is as wide as its rows there."""
    words = " ".join(f"word{i}" for i in range(40))  # 309 characters
    p = yi("--endpoint", server.url, *(["--json"] if json_lines else []), stdin=f"{words}\n/history\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    out = p.stdout.decode()
    if json_lines:
        out = [json.loads(ln) for ln in out.splitlines()][-1]["output"]
    else:
        reply, out = out.split("\n\n", 1)  # the reply, its blank line, then the table
        assert reply == "echo: " + words
    rows = [ln for ln in out.splitlines() if ln.lstrip().startswith(("1 ", "2 "))]
    assert len(rows) == 2 and rows[0].endswith(words) and rows[1].endswith("echo: " + words)
    assert len(out.rstrip("\n").splitlines()) == 3  # the header and the two rows: no continuation lines


def test_a_json_chat_in_a_terminal_keeps_its_banner_out_of_the_json(server, home, tmp_path):
    """`yi-chat --json > lines.jsonl` at a terminal: the JSON lines go to the file, and the chat (its replies and the
    commands' output) to the screen, as without --json; the screen showed no reply at all before (a run-through)."""
    out = tmp_path / "lines.jsonl"
    child = spawn_redirected("--endpoint", server.url, "--json", home=home, cwd=tmp_path, out=out)
    child.sendline("hi")
    child.expect_exact("echo: hi")
    child.expect_exact("stop · ")  # the footer, on the screen
    child.expect_exact(">>>")
    child.sendline("/stats")
    child.expect_exact("tokens generated: ")  # the command's output, on the screen
    child.expect_exact(">>>")
    assert leave(child) == 0
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [ln.get("reply") or ln.get("command") for ln in lines] == ["echo: hi", "stats"]
    assert lines[0]["prompt"] == "hi" and lines[0]["finish_reason"] == "stop" and lines[0]["new_tokens"] > 0
    assert "tokens generated: " in lines[1]["output"]
    assert "yi-chat ·" not in lines[1]["output"]  # the banner went to the terminal


def test_piped_json_gives_each_failure_an_object_with_stderrs_line(server, home):
    """Piped --json wrote no object for a line skipped as not UTF-8, an unknown command or a command that failed,
    and none with the text of why: a reader pairing its lines with the objects lost count. Each has one now, its
    `error` the line stderr got."""
    p = yi("--endpoint", server.url, "--json", stdin=b"/undo\n\xff\xfe\n/bogus\nhi\n", home=home)
    assert p.returncode == 1, p.stderr.decode()
    objs = [json.loads(ln) for ln in p.stdout.decode().splitlines()]
    errors = [ln.removeprefix("error: ") for ln in p.stderr.decode().splitlines() if ln.startswith("error: ")]
    assert [o.get("command") or o.get("reply") for o in objs] == ["undo", None, None, "echo: hi"], objs
    assert [o["error"] for o in objs[:3]] == errors and len(errors) == 3, (objs, errors)
    assert "stdin line 2 is not valid UTF-8" in errors[1] and "unknown command /bogus" in errors[2]
    assert "error" not in objs[3]


def test_a_json_one_shot_of_a_mistyped_command_writes_its_object(server, home):
    """`yi-chat --json -p /histroy`: the line on stderr and exit 1, and no object on stdout (said before the model
    loads, where the chat's renderer does not exist yet); a piped `/bogus` line has one."""
    p = yi("--endpoint", server.url, "--json", "-p", "/histroy", home=home)
    assert p.returncode == 1
    assert [json.loads(ln) for ln in p.stdout.decode().splitlines()] == [
        {"error": "unknown command /histroy; did you mean /history?"}
    ]
    assert p.stderr.decode() == "yi-chat: unknown command /histroy; did you mean /history?\n"


def test_a_json_object_of_a_known_command_misused_names_it(server, home):
    """`/clear now`, `/set! x`: a command yi-chat knows, refused for its form, wrote `{"error": ...}` alone, as for a
    line that is no command (README: that object is for a skipped line or an unknown command); a script could not
    tell which command failed. Its object names it, piped and as a one-shot."""
    p = yi("--endpoint", server.url, "--json", stdin="/clear now\n/set! x\n/history extra\n/bogus\n", home=home)
    assert p.returncode == 1
    got = [json.loads(ln) for ln in p.stdout.decode().splitlines()]
    assert [(o.get("command"), o.get("output")) for o in got] == [
        ("clear", ""),
        ("set", ""),
        ("history", ""),
        (None, None),
    ]
    assert got[0]["error"] == "/clear takes no argument (usage: /clear)" and got[1]["error"].startswith("/set has no !")
    p = yi("--endpoint", server.url, "--json", "-p", "/exit now", home=home)
    assert p.returncode == 1
    assert [json.loads(ln) for ln in p.stdout.decode().splitlines()] == [
        {"command": "exit", "output": "", "error": "/exit takes no argument (usage: /exit)"}
    ]


def test_a_json_chat_in_a_terminal_writes_a_failed_commands_object(server, home, tmp_path):
    """`yi-chat --json > lines.jsonl` at a terminal: a command that failed (on the screen: its error line) left no
    line in the file."""
    out = tmp_path / "lines.jsonl"
    child = spawn_redirected("--endpoint", server.url, "--json", home=home, cwd=tmp_path, out=out)
    child.sendline("/undo")
    child.expect_exact("error: ")
    child.expect_exact(">>>")
    child.sendline("hi")
    child.expect_exact("stop · ")
    child.expect_exact(">>>")
    assert leave(child) == 0
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [ln.get("command") or ln.get("reply") for ln in lines] == ["undo", "echo: hi"], lines
    assert lines[0]["output"] == "" and "nothing to undo" in lines[0]["error"], lines


@pytest.mark.parametrize("leave", ["ctrl-d", "/exit", "/q"])
def test_ctrl_d_with_a_file_attached_says_it_was_not_sent(server, home, tmp_path, leave):
    """`yi-chat -f notes.txt` (or /file), then Ctrl-D: the chat ended and the file went unsent without a word, where
    a piped run says so (exit 1). The REPL says so too; Ctrl-D is still the way out (exit 0). /exit and /q said
    nothing still."""
    import pexpect

    (tmp_path / "notes.txt").write_text("buy milk\n")
    child = spawn("--endpoint", server.url, "-f", "notes.txt", home=home, cwd=tmp_path)
    if leave == "ctrl-d":
        child.sendcontrol("d")
    else:
        child.sendline(leave)
    child.expect_exact("notes.txt: attached, but the chat ended before a message took it; not sent")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert not any("messages" in r for r in server.requests)  # nothing was sent


def test_exit_in_a_piped_run_with_a_file_attached_says_so(server, home, tmp_path):
    """A piped `/file notes.txt` then `/exit`: the line said the input ended, where /exit had ended the chat."""
    (tmp_path / "notes.txt").write_text("buy milk\n")
    p = yi("--endpoint", server.url, stdin="/file notes.txt\n/exit\nnever read\n", home=home, cwd=tmp_path)
    assert p.returncode == 1
    want = "error: notes.txt: attached, but the chat ended (/exit) before a message took it; not sent"
    assert p.stderr.decode().splitlines()[-1] == want


def test_file_command_and_f_flag_in_a_real_terminal(server, home, tmp_path):
    (tmp_path / "todo.txt").write_text("buy milk\n")
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01")
    child = spawn("--endpoint", server.url, "-f", "todo.txt", home=home, cwd=tmp_path)
    child.sendline("what is on it?")
    child.expect_exact("stop · ")
    child.expect_exact(">>>")
    assert sent(server) == "todo.txt:\n```\nbuy milk\n```\n\nwhat is on it?"
    child.sendline("/file blob.bin")
    child.expect_exact("binary file")
    child.expect_exact(">>>")
    child.sendline("/file todo.txt")
    child.expect_exact("attached todo.txt (1 line)")
    child.expect_exact(">>>")
    child.sendline("/file")
    child.expect_exact("attached for the next message: todo.txt")
    child.expect_exact(">>>")
    child.sendline("again")
    child.expect_exact("stop · ")
    child.expect_exact(">>>")
    assert sent(server) == "todo.txt:\n```\nbuy milk\n```\n\nagain"
    child.sendline("plain")
    child.expect_exact("stop · ")
    child.expect_exact(">>>")
    assert sent(server) == "plain"  # an attachment goes with one message only
    assert leave(child) == 0


# 2. sessions as a store --------------------------------------------------------------------------------------------


def test_three_saves_in_one_second_and_two_processes_never_share_a_file(tmp_path):
    from yi_cli.conversation import store

    names = {store.write_new(tmp_path, json.dumps({"n": i})) for i in range(3)}
    assert len(names) == 3 and sorted(json.loads(p.read_text())["n"] for p in names) == [0, 1, 2]
    script = (
        "import sys; from pathlib import Path; from yi_cli.conversation import store\n"
        "for i in range(200): store.write_new(Path(sys.argv[1]), sys.argv[2] + str(i))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "two"), tag]) for tag in "ab"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    files = list((tmp_path / "two").glob("*.json"))
    assert sorted(f.read_text() for f in files) == sorted(f"{t}{i}" for t in "ab" for i in range(200))
    assert not list((tmp_path / "two").glob(".tmp-*"))


def test_continue_reopens_the_last_interactive_chat_not_a_later_one_shot(server, home, tmp_path):
    child = spawn("--endpoint", server.url, home=home, cwd=tmp_path)
    child.sendline("interactive question")
    child.expect_exact("stop · ")
    child.expect_exact(">>>")
    assert leave(child) == 0
    p = yi("--endpoint", server.url, "-p", "one-shot question", home=home)
    assert p.returncode == 0, p.stderr.decode()
    p = yi("--endpoint", server.url, stdin="piped question\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    files = session_files(home)
    assert sorted(f["mode"] for f in files) == ["interactive", "one-shot", "pipe"]  # each run its own file

    for flag in (["-c"], ["--continue"], ["--resume", "last"]):
        child = spawn("--endpoint", server.url, *flag, home=home, cwd=tmp_path)
        child.sendline("/history")
        child.expect_exact("interactive question")
        child.expect_exact(">>>")
        assert leave(child) == 0
    # -c in a one-shot run goes on in the interactive file; still three files
    p = yi("--endpoint", server.url, "-c", "-p", "follow-up", home=home)
    assert p.returncode == 0, p.stderr.decode()
    assert [m["content"] for m in server.requests[-1]["messages"]] == [
        "interactive question",
        "echo: interactive question",
        "follow-up",
    ]
    files = session_files(home)
    assert len(files) == 3
    [inter] = [f for f in files if f["mode"] == "interactive"]
    assert [t["content"] for t in inter["turns"]][::2] == ["interactive question", "follow-up"]


@pytest.mark.parametrize("damage", [{"version": 2}, {"turns": [{"role": "user", "content": "x", "tokens": -3}]}])
def test_continue_says_which_newer_session_files_it_passed_over(server, home, damage):
    """The newest interactive session damaged (or written by a newer yi-chat): -c opened the older one without a
    word, and with no other said "no interactive session saved yet" (a sessions hunt). Both say what was passed."""
    p = yi("--endpoint", server.url, stdin="old question\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    [old] = (home / "data" / "sessions").glob("*.json")
    data = {**json.loads(old.read_text()), "mode": "interactive", "updated": "2026-12-06T20:00:00.000000Z"}
    old.write_text(json.dumps(data))
    newer = old.with_name("20991231-000000-newer.json")
    newer.write_text(json.dumps({**data, "id": "f" * 16, "updated": "2099-12-31T00:00:00.000000Z", **damage}))
    said = "passed over 1 file that cannot be read as sessions: 20991231-000000-newer.json (--resume NAME says why)"
    older = old.with_name("20000101-000000-older.json")  # damaged long ago: no reason to doubt the one resumed
    older.write_text("{broken")
    os.utime(older, (946684800, 946684800))
    p = yi("--endpoint", server.url, "-c", "-p", "follow-up", home=home)
    assert p.returncode == 0 and p.stderr.decode().splitlines() == [said], p.stderr.decode()
    assert [m["content"] for m in server.requests[-1]["messages"]][::2] == ["old question", "follow-up"]
    newer.unlink()
    p = yi("--endpoint", server.url, "-c", "-p", "again", home=home)
    assert p.returncode == 0 and p.stderr.decode() == "", p.stderr.decode()
    old.unlink()
    line = one_line_error(yi("--endpoint", server.url, "-c", "-p", "hi", home=home), 1, "no interactive session")
    assert line.endswith(
        "(yi-chat sessions lists them; passed over 1 file that cannot be read as sessions: "
        "20000101-000000-older.json (--resume NAME says why))"
    ), line


def test_a_session_with_fields_this_yi_chat_does_not_know_goes_on_in_a_new_file(server, home):
    """A session file holding fields yi-chat does not write (a newer yi-chat's, an editor's: `note`, a turn's
    `name`): resumed in place, its next save dropped them without a word (a sessions hunt). The chat goes on in a
    new file, said, and that one stays byte for byte as it was."""
    p = yi("--endpoint", server.url, stdin="first question\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    [f] = (home / "data" / "sessions").glob("*.json")
    data = json.loads(f.read_text())
    data["note"] = "keep me"
    data["turns"][0]["name"] = "alice"
    f.write_text(json.dumps(data))
    before = f.read_bytes()
    p = yi("--endpoint", server.url, "--resume", f.stem, "-p", "next", home=home)
    said = f"{f.name} holds fields this yi-chat does not know (note, turns[].name): this chat goes on from it in a new"
    assert p.returncode == 0 and said in p.stderr.decode(), p.stderr.decode()
    assert f.read_bytes() == before
    [new] = [g for g in (home / "data" / "sessions").glob("*.json") if g != f]
    assert [t["content"] for t in json.loads(new.read_text())["turns"]][::2] == ["first question", "next"]


def test_a_resumed_chat_says_which_session_it_opened(server, home, tmp_path):
    """`yi-chat -c` showed only the usual banner: nothing said which session went on, or that one did. One line
    names its file (in the store by name, elsewhere as given), its exchanges and when it was last written."""
    import re

    child = spawn("--endpoint", server.url, home=home, cwd=tmp_path)
    child.sendline("first question")
    child.expect_exact("stop · ")
    child.expect_exact(">>>")
    child.sendline("/save snap.json")
    child.expect_exact("saved to snap.json")
    child.expect_exact(">>>")
    assert leave(child) == 0
    [path] = (home / "data" / "sessions").glob("*.json")
    updated = json.loads(path.read_text())["updated"]
    line = f"resumed 1 exchange from {path.name} (updated {updated[:10]} {updated[11:16]} UTC)"

    child = spawn("--endpoint", server.url, "-c", home=home, cwd=tmp_path, prompt=False)
    child.expect_exact("yi-chat · served")  # the banner: the line came before it, with the other notices
    assert line in " ".join(child.before.split()), child.before
    child.expect_exact(">>>")
    assert leave(child) == 0
    child = spawn("--endpoint", server.url, "--resume", "snap.json", home=home, cwd=tmp_path, prompt=False)
    child.expect_exact("yi-chat · served")
    assert re.search(r"resumed 1 exchange from snap\.json \(updated [-0-9]{10} [:0-9]{5} UTC\)", child.before)
    child.expect_exact(">>>")
    assert leave(child) == 0
    # a script's stderr is for errors: a one-shot or piped run resumes without a word
    p = yi("--endpoint", server.url, "-c", "-p", "follow-up", home=home)
    assert p.returncode == 0 and p.stderr.decode() == "", p.stderr
    p = yi("--endpoint", server.url, "--resume", "snap.json", stdin="/history\n", home=home, cwd=tmp_path)
    assert p.returncode == 0 and p.stderr.decode() == "", p.stderr


def test_a_session_is_resumed_and_loaded_by_the_name_yi_chat_sessions_lists(server, home, tmp_path):
    """`yi-chat sessions` lists names (its folder in the header); `--resume NAME` from another folder said "NAME: no
    such session file". A bare name no file in the working folder has is the store's, with or without `.json`; it
    goes on in place. A file of that name in the working folder still wins."""
    p = yi("--endpoint", server.url, stdin="first question\n", home=home, cwd=tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    [path] = (home / "data" / "sessions").glob("*.json")
    listed = yi("sessions", home=home, cwd=tmp_path).stdout.decode()
    assert path.name in listed
    for name in (path.name, path.stem):
        p = yi("--endpoint", server.url, "--resume", name, "-p", f"more by {name}", home=home, cwd=tmp_path)
        assert p.returncode == 0, p.stderr.decode()
        assert [m["content"] for m in server.requests[-1]["messages"]][::2][0] == "first question"
    assert [f.name for f in (home / "data" / "sessions").glob("*.json")] == [path.name]  # in place
    p = yi("--endpoint", server.url, stdin=f"/load {path.stem}\n/history\n", home=home, cwd=tmp_path)
    assert p.returncode == 0 and f"more by {path.stem}" in p.stdout.decode(), p.stderr.decode()
    (tmp_path / path.name).write_text("not a session")  # a file here of that name is the one meant
    p = yi("--endpoint", server.url, "--resume", path.name, "-p", "x", home=home, cwd=tmp_path)
    assert p.returncode == 1 and p.stderr.decode().startswith(f"yi-chat: {path.name}: corrupt session file")
    p = yi("--endpoint", server.url, "--resume", "20000101-000000-abcdef", "-p", "x", home=home, cwd=tmp_path)
    assert p.returncode == 1 and "20000101-000000-abcdef: no such session file" in p.stderr.decode()


def test_a_session_name_with_a_byte_that_is_not_utf8_is_resumed_as_the_listing_shows_it(server, home, tmp_path):
    """`yi-chat sessions` lists a file named with the Latin-1 byte 0xe9 as `caf\\xe9.json`, which `--resume` took for
    a name of its own ("no such session file"): the listed name finds the file, with or without `.json`."""
    p = yi("--endpoint", server.url, stdin="first question\n", home=home, cwd=tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    [path] = (home / "data" / "sessions").glob("*.json")
    path.rename(os.fsdecode(os.fsencode(path.parent) + b"/caf\xe9.json"))
    assert "caf\\xe9.json" in yi("sessions", home=home, cwd=tmp_path).stdout.decode()
    for name in ("caf\\xe9.json", "caf\\xe9"):
        p = yi("--endpoint", server.url, "--resume", name, "-p", "more", home=home, cwd=tmp_path)
        assert p.returncode == 0, p.stderr.decode()
        assert [m["content"] for m in server.requests[-1]["messages"]][::2][0] == "first question"


@pytest.mark.parametrize("char,listed", [("\t", "\\t"), ("\x1b", "\\x1b"), ("\n", "\\n"), ("\x85", "\\x85")])
def test_a_session_name_with_a_control_character_is_resumed_as_the_listing_shows_it(
    server, home, tmp_path, char, listed
):
    """A store file named with a tab or an escape is listed as `a\\tb.json` (the character as its escape, so the
    listing stays one line a name): `--resume` took the escape for the name's own text ("no such session file")."""
    p = yi("--endpoint", server.url, stdin="first question\n", home=home, cwd=tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    [path] = (home / "data" / "sessions").glob("*.json")
    path.rename(path.parent / f"a{char}b.json")
    assert f"a{listed}b.json" in yi("sessions", home=home, cwd=tmp_path).stdout.decode()
    for name in (f"a{listed}b.json", f"a{listed}b"):
        p = yi("--endpoint", server.url, "--resume", name, "-p", "more", home=home, cwd=tmp_path)
        assert p.returncode == 0, p.stderr.decode()
        assert [m["content"] for m in server.requests[-1]["messages"]][::2][0] == "first question"


def test_two_chats_continuing_one_session_never_overwrite_each_other(server, home, tmp_path):
    """-c in two terminals: the second goes on in a new file (and says so); neither loses a turn (issue found
    by a run-through: each process rewrote the file with its own turns)."""
    first = spawn("--endpoint", server.url, home=home, cwd=tmp_path)
    first.sendline("original question")
    first.expect_exact("stop · ")
    first.expect_exact(">>>")
    assert leave(first) == 0
    [original] = list((home / "data" / "sessions").glob("*.json"))

    a = spawn("--endpoint", server.url, "-c", home=home, cwd=tmp_path)  # holds the session while it runs
    a.sendline("A one")
    a.expect_exact("stop · ")
    a.expect_exact(">>>")
    p = yi("--endpoint", server.url, "-c", "-p", "B one", home=home)
    assert p.returncode == 0, p.stderr.decode()
    assert f"{original.name} is in use by another yi-chat" in p.stderr.decode()
    # B goes on from the file as A last saved it
    assert [m["content"] for m in server.requests[-1]["messages"]][::2] == ["original question", "A one", "B one"]
    a.sendline("A two")
    a.expect_exact("stop · ")
    a.expect_exact(">>>")
    assert leave(a) == 0

    files = {p.name: json.loads(p.read_text()) for p in (home / "data" / "sessions").glob("*.json")}
    asked = {name: [t["content"] for t in f["turns"]][::2] for name, f in files.items()}
    [fork] = set(asked) - {original.name}
    assert asked[original.name] == ["original question", "A one", "A two"]  # A went on in place
    assert asked[fork] == ["original question", "A one", "B one"]  # B in its own file
    # B's run is a one-shot: its file is one-shot's, so -c passes it by (README: a one-shot or piped run in between
    # never takes the chat's place); it was written as interactive, and -c opened it where it was the newest
    assert files[fork]["mode"] == "one-shot"
    assert not list((home / "data" / "sessions").glob(".*.lock"))  # let go when each process ended
    p = yi("--endpoint", server.url, "-c", "-p", "C one", home=home)  # nobody holds it now: in place again
    assert "in use by another" not in p.stderr.decode()
    assert [t["content"] for t in json.loads(original.read_text())["turns"]][::2][-1] == "C one"


@pytest.mark.parametrize("what", ["directory", "FIFO", "symbolic link"])
def test_a_session_whose_lock_place_holds_no_lock_file_goes_on_in_a_new_file(server, home, tmp_path, what):
    """A folder (or a FIFO, or a link to /dev/null) at `.NAME.lock` made the claim succeed with no lock at all: two
    chats could write one file, each over the other's turns. The resume goes on in a new file and says why."""
    p = yi("--endpoint", server.url, "-p", "original question", home=home, cwd=tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    [original] = list((home / "data" / "sessions").glob("*.json"))
    before = original.read_bytes()
    lock = original.with_name(f".{original.name}.lock")
    {"directory": lock.mkdir, "FIFO": lambda: os.mkfifo(lock), "symbolic link": lambda: lock.symlink_to(os.devnull)}[
        what
    ]()
    p = yi("--endpoint", server.url, "--resume", original.name, "-p", "more", home=home, cwd=tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    assert f".{original.name}.lock is a {what}, not a lock file: this chat goes on from {original.name} in a new " in (
        p.stderr.decode()
    )
    assert original.read_bytes() == before  # untouched
    files = {f.name: json.loads(f.read_text()) for f in (home / "data" / "sessions").glob("*.json")}
    [fork] = set(files) - {original.name}
    assert [t["content"] for t in files[fork]["turns"]][::2] == ["original question", "more"]


def test_a_resumed_session_file_whose_name_holds_a_line_break_is_named_on_one_line(server, home, tmp_path):
    """The notice of a resume going on in a new file printed the file's name raw: a line break in it split the
    notice, and the second line could pass for a line of yi-chat's own. It is shown escaped, as `resumed` shows it."""
    import fcntl

    from yi_cli.conversation import writes

    p = yi("--endpoint", server.url, "-p", "original question", home=home, cwd=tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    [original] = list((home / "data" / "sessions").glob("*.json"))
    renamed = original.with_name("notes\nyi-chat: all sessions deleted.json")
    original.rename(renamed)
    with open(writes.lock_path(renamed), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another yi-chat's, as far as flock knows
        p = yi("--endpoint", server.url, "--resume", str(renamed), "-p", "more", home=home, cwd=tmp_path)
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert "notes\\nyi-chat: all sessions deleted.json is in use by another yi-chat" in err
    assert not [line for line in err.splitlines() if line.startswith("yi-chat: all sessions deleted")], err


def test_two_chats_resumed_from_one_snapshot_never_save_over_each_other(server, home, tmp_path):
    """`--resume snap.json` in two terminals: both go on from it with its conversation's id, and the later /save
    snap.json replaced the other's continuation without a word (a lost conversation). It is refused with one line
    naming /save!; the one whose continuation is there saved over it as before, and every turn stays on disk."""
    p = yi("--endpoint", server.url, stdin="q0\n/save snap.json\n", home=home, cwd=tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    a = spawn("--endpoint", server.url, "--resume", "snap.json", home=home, cwd=tmp_path)  # has read it
    p = yi("--endpoint", server.url, "--resume", "snap.json", stdin="qb\n/save snap.json\n", home=home, cwd=tmp_path)
    assert p.returncode == 0 and p.stderr.decode() == "", p.stderr.decode()
    a.sendline("qa")
    a.expect_exact("stop · ")
    a.expect_exact(">>>")
    a.sendline("/save snap.json")
    assert a.expect_exact(["replaces it", "saved to snap.json"]) == 0, "B's continuation was replaced"
    assert "snap.json: the file exists and holds another continuation of this conversation; /save! snap.json" in (
        " ".join(a.before.split())
    )
    a.expect_exact(">>>")
    snap = json.loads((tmp_path / "snap.json").read_text())
    assert [t["content"] for t in snap["turns"]][::2] == ["q0", "qb"]  # B's continuation, untouched
    assert leave(a) == 0
    asked = sorted([t["content"] for t in f["turns"]][::2] for f in session_files(home))
    assert asked == [["q0"], ["q0", "qa"], ["q0", "qb"]]  # and each run's turns in the store


@pytest.mark.parametrize("how", ["pipe", "one-shot"])
def test_ctrl_c_stops_a_piped_or_one_shot_run_with_130_and_keeps_the_partial_reply(home, how):
    """A batch stops at Ctrl-C, as a pipeline does (each Ctrl-C cut one reply, the batch went on and exited 0)."""
    long_reply = " ".join(f"w{i}" for i in range(400))
    with OpenAIServer(ScriptedEngine([long_reply] * 3, delay=0.05), model="served") as srv:
        e = {k: v for k, v in os.environ.items() if k not in CLEAN}
        e.update(YI_CHAT_HOME=str(home))
        args = ["-p", "q1"] if how == "one-shot" else []
        proc = subprocess.Popen(
            [sys.executable, "-m", "yi_cli", "--endpoint", srv.url, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=e,
        )
        if how == "pipe":
            proc.stdin.write(b"q1\nq2\nq3\n")
        proc.stdin.close()
        proc.stdin = None
        got = proc.stdout.read(10)  # the reply is streaming: the signal lands inside it
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=120)
    out, err = (got + rest).decode(), err.decode()
    assert proc.returncode == 130, err
    assert [ln for ln in err.splitlines() if ln.strip()] == [
        f"yi-chat: interrupted; the session is saved in {next((home / 'data' / 'sessions').glob('*.json'))}"
    ]
    assert out.startswith("w0 w1") and out.count("[interrupted]") == 1 and "w399" not in out
    [saved] = session_files(home)
    assert [t["content"] for t in saved["turns"]][::2] == ["q1"]  # q2 and q3 never asked
    assert saved["turns"][1]["finish_reason"] == "interrupted"


def test_a_session_written_after_it_was_read_goes_on_in_a_new_file(tmp_path, monkeypatch):
    """-c reads the file, then loads the model (seconds) before it holds the file: another yi-chat may write a
    turn and exit meanwhile, and that turn must not be overwritten by the stale copy (a review)."""
    from tests.fixtures import plain_chat
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    first = store.Autosave("interactive")
    chat, _, _ = plain_chat(ScriptedEngine(), on_turn=first)
    chat.handle("one")
    first.close()
    _, _, data = store.read("last")  # this run reads it...
    chat.handle("two")  # ...another writes a turn (without holding it now: it was let go above)
    saver = store.autosave_for("last", data, "interactive")
    assert saver.forked and saver.path is None
    _, _, fresh = store.read("last")
    assert store.autosave_for("last", fresh, "interactive").path == first.path  # as read: in place


def test_a_store_without_locks_saves_as_before(tmp_path, monkeypatch):
    """flock failing for want of locks (ENOLCK on NFS without lockd) is not 'held': the first autosave looped
    over fresh names forever, holding off signals, leaving a lock file each time (a review)."""
    import errno
    import fcntl

    from tests.fixtures import plain_chat
    from yi_cli.conversation import store

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    monkeypatch.setattr(fcntl, "flock", no_locks)
    saver = store.Autosave("interactive")
    chat, _, err = plain_chat(ScriptedEngine(), on_turn=saver)
    chat.handle("hello")
    assert saver.path is not None and store.read(str(saver.path))[0].turns[0].content == "hello"
    assert sorted(p.name for p in saver.path.parent.iterdir()) == [saver.path.name]  # no lock files left
    _, _, data = store.read("last")
    assert store.autosave_for("last", data, "interactive").path == saver.path  # not taken for 'in use'


def test_keys_typed_ahead_of_a_ctrl_c_that_ends_the_run_are_not_run_by_the_shell(home, tmp_path):
    """A line typed during a one-shot reply (held: not echoed into it), then Ctrl-C: the shell ran it (the hold's
    NOFLSH kept it queued). Run under an interactive dash, as a person runs it."""
    pexpect = pytest.importorskip("pexpect")
    dash = shutil.which("dash")
    if dash is None:
        pytest.skip("needs dash")
    long_reply = " ".join(f"w{i}" for i in range(400))
    with OpenAIServer(ScriptedEngine([long_reply], delay=0.05), model="served") as srv:
        env = term_env(home, PS1="$ ")
        child = pexpect.spawn(dash, ["-i"], env=env, encoding="utf-8", timeout=60, cwd=str(tmp_path))
        try:
            child.expect_exact("$ ")
            child.sendline(f"{sys.executable} -m yi_cli --endpoint {srv.url} -p question; echo rc=$?")
            child.expect_exact("w5 ")  # the reply streams, the terminal held
            child.send("echo LEAKED\r")
            child.expect_exact("w12 ")
            child.sendcontrol("c")
            child.expect_exact("rc=130")
            child.expect_exact("$ ")
            child.sendline("echo DONE")
            child.expect_exact("DONE")
            assert "LEAKED" not in child.before
            child.expect_exact("$ ")
            assert "LEAKED" not in child.before
            child.sendline("exit")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)


def test_ctrl_c_that_also_ends_the_reader_of_stdout_is_still_an_interrupt(home):
    """`yi-chat -p ... | cat` and Ctrl-C: cat goes too, the [interrupted] marker meets a closed pipe, and the run
    exited 0 without a word as for `| head`."""
    engine = ScriptedEngine(["a b c d e f g h"], hold_after=3)
    with OpenAIServer(engine, model="served") as srv:
        e = {k: v for k, v in os.environ.items() if k not in CLEAN}
        e.update(YI_CHAT_HOME=str(home))
        proc = subprocess.Popen(
            [sys.executable, "-m", "yi_cli", "--endpoint", srv.url, "-p", "q"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=e,
        )
        assert proc.stdout.read(5) == b"a b c"
        assert engine.holding.wait(60)  # nothing more is written until the reply is cancelled
        proc.stdout.close()  # the reader is gone...
        proc.send_signal(signal.SIGINT)  # ...with the same Ctrl-C
        err = proc.stderr.read().decode()
        proc.wait(timeout=60)
    assert proc.returncode == 130, err
    [saved] = (home / "data" / "sessions").glob("*.json")
    assert err.splitlines() == [f"yi-chat: interrupted; the session is saved in {saved}"]


def test_a_save_snapshot_is_not_where_continue_goes(tmp_path, monkeypatch):
    from tests.fixtures import plain_chat
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    saver = store.Autosave("interactive")
    chat, out, err = plain_chat(ScriptedEngine(), on_turn=saver)
    chat.handle("hello")
    chat.handle("/save")
    [snap] = [e for e in store.entries() if e["mode"] == "saved"]
    assert store.resolve("last") == saver.path != Path(snap["path"])
    _, _, data = store.read(snap["path"])
    assert store.autosave_for(snap["path"], data, "interactive").path is None  # goes on in a new file
    _, _, data = store.read("last")
    held = store.autosave_for("last", data, "one-shot")  # the chat that wrote it still holds it: a new file
    assert held.path is None and held.forked
    # the new file is this run's, a one-shot: written as interactive, it was newer than the chat's own and `-c`
    # opened it in the chat's place
    assert held.mode == "one-shot"
    saver.close()
    resumed = store.autosave_for("last", data, "one-shot")
    assert resumed.path == saver.path and not resumed.forked  # let go: goes on in place, as interactive
    assert resumed.mode == "interactive"


def test_a_set_after_the_last_turn_is_saved_and_a_resume_restores_it(server, home):
    """/set is saved when it is given, not only with the next turn; a resumed session's settings win over
    config.toml (they were the chat's), a flag over both, and /set names where each came from."""
    p = yi("--endpoint", server.url, stdin="hi\n/set temperature 0.5\n/set speculate off\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    [f] = session_files(home)
    assert (f["settings"]["temperature"], f["settings"]["speculate"]) == (0.5, "off")
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text("[generation]\ntemperature = 0.9\ntop_k = 7\n")
    [path] = (home / "data" / "sessions").glob("*.json")
    p = yi("--endpoint", server.url, "--resume", str(path), stdin="/set\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    listed = p.stdout.decode()
    assert "temperature = 0.5  (session)" in listed and "speculate = off  (session)" in listed, listed
    p = yi("--endpoint", server.url, "--resume", str(path), "--temperature", "0.3", stdin="/set\n", home=home)
    assert "temperature = 0.3  (flag)" in p.stdout.decode()
    # a setting the file does not hold (a 0.1.0 file has no speculate) is the config's, not the default's
    (home / "config" / "config.toml").write_text('[generation]\nspeculate = "lookup"\n')
    data = json.loads(path.read_text())
    del data["settings"]["speculate"]
    path.write_text(json.dumps(data))
    listed = yi("--endpoint", server.url, "--resume", str(path), stdin="/set\n", home=home).stdout.decode()
    assert "speculate = lookup  (config)" in listed and "temperature = 0.5  (session)" in listed, listed


def test_an_undo_of_the_only_exchange_leaves_no_session_to_resume(server, home):
    """/undo of a conversation's only exchange left its file as it was: `-c` brought the undone exchange back (a
    run-through). The file goes with the exchange, in place too when the session was resumed; /undo of one of two
    exchanges keeps the file with the other."""
    p = yi("--endpoint", server.url, stdin="only\n/undo\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    assert session_files(home) == []
    p = yi("--endpoint", server.url, stdin="first\nsecond\n/undo\n", home=home)
    assert [[t["content"] for t in f["turns"]] for f in session_files(home)] == [["first", "echo: first"]]
    [path] = (home / "data" / "sessions").glob("*.json")
    p = yi("--endpoint", server.url, "--resume", str(path), stdin="/undo\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    assert session_files(home) == [] and not path.exists()


def test_a_resumed_session_of_no_exchange_is_written_in_place_never_removed(server, home):
    """A store file holding a system prompt and settings but no exchange, resumed: its first /set or /system
    removed it, unsaid (the branch for an /undo of the only exchange), and the change was saved nowhere. It is
    written in place, and an exchange sent and undone leaves it as it was."""
    assert yi("--endpoint", server.url, stdin="first\n", home=home).returncode == 0
    [path] = (home / "data" / "sessions").glob("*.json")
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "turns": [], "system": "You are a pirate."}))
    p = yi(
        "--endpoint",
        server.url,
        "--resume",
        str(path),
        stdin="/set temperature 0.5\n/system You are a captain.\n",
        home=home,
    )
    assert p.returncode == 0, p.stderr.decode()
    [f] = session_files(home)
    assert (f["turns"], f["system"], f["settings"]["temperature"]) == ([], "You are a captain.", 0.5)
    p = yi("--endpoint", server.url, "--resume", str(path), stdin="ahoy\n/undo\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    [f] = session_files(home)
    assert (f["turns"], f["system"]) == ([], "You are a captain.") and path.exists()
    # /clear with nothing to clear ("nothing to clear") left the conversation for a new one, unsaid
    p = yi("--endpoint", server.url, "--resume", str(path), stdin="/clear\n/set temperature 0.4\n", home=home)
    assert p.returncode == 0 and "nothing to clear" in p.stdout.decode(), p.stderr.decode()
    [f] = session_files(home)
    assert f["settings"]["temperature"] == 0.4


def test_a_session_resumed_by_a_store_link_and_by_its_own_name_is_held_once(server, home):
    """`work.json` in the store links to a session file there. A chat resumed by `work` locked `.work.json.lock`,
    one resumed by the file's own name its own lock: both wrote the one file in place, each over the other's turns
    (the second chat's message was lost, unsaid). Both names are held by the file's lock: the second goes on in a
    new file."""
    assert yi("--endpoint", server.url, stdin="first\n", home=home).returncode == 0
    store = home / "data" / "sessions"
    [real] = store.glob("*.json")
    data = json.loads(real.read_text())
    real.write_text(json.dumps({**data, "mode": "interactive"}))
    (store / "work.json").symlink_to(real.name)
    e = {k: v for k, v in os.environ.items() if k not in CLEAN}
    first = subprocess.Popen(
        [sys.executable, "-m", "yi_cli", "--endpoint", server.url, "--resume", str(store / "work.json")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**e, "YI_CHAT_HOME": str(home)},
    )
    try:
        first.stdin.write(b"one\n")
        first.stdin.flush()
        while b"echo: one" not in first.stdout.readline():  # its reply written: the turn is recorded (saved before)
            assert first.poll() is None, first.stderr.read()
        p = yi("--endpoint", server.url, "--resume", str(real), stdin="two\n", home=home)
        assert p.returncode == 0, p.stderr.decode()
        first.stdin.write(b"three\n")
    finally:
        first.stdin.close()
        first.wait(timeout=300)
    assert first.returncode == 0, first.stderr.read()
    files = [json.loads(f.read_text()) for f in store.glob("*.json") if not f.is_symlink()]
    said = sorted([t["content"] for t in f["turns"] if t["role"] == "user"] for f in files)
    assert said == [["first", "one", "three"], ["first", "one", "two"]], said
    assert (store / "work.json").resolve() == real


def test_a_chain_of_store_links_is_held_by_its_last_name_in_the_store(home, tmp_path, monkeypatch):
    """work.json -> 20261209-...json -> a file in a synced folder: each name's chat took the lock of the name it
    was given where the chain left the store, and two chats wrote the one file. The lock is the chain's last name
    in the store."""
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(home))
    sessions = store.sessions_dir()
    sessions.mkdir(parents=True)
    (tmp_path / "sync").mkdir()
    (tmp_path / "sync" / "x.json").write_text("{}")
    last = sessions / "20261209-000000-aaaaaa.json"
    last.symlink_to(tmp_path / "sync" / "x.json")
    (sessions / "work.json").symlink_to(last.name)
    (sessions / "plain.json").write_text("{}")
    assert store.held_name(sessions / "work.json") == last and store.held_name(last) == last
    assert store.held_name(sessions / "plain.json") == sessions / "plain.json"


def test_clear_starts_a_new_file_and_keeps_the_old_conversation(server, home):
    p = yi("--endpoint", server.url, stdin="one\n/clear\ntwo\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    assert sorted(f["turns"][0]["content"] for f in session_files(home)) == ["one", "two"]


@pytest.mark.parametrize("columns", [40, 80])
def test_models_on_a_narrow_terminal_cuts_no_name(home, tmp_path, columns):
    """`yi-chat models` cut its columns to fit the terminal: at 40 columns "demo-gp", the status gone, and `models
    --all` at 80 "01-ai/Yi-34B-Chat-4bi", its context and pull command gone (run-through 4). A table too wide for
    the terminal is written as whole rows, which the terminal wraps."""
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "yi_cli", "models", *(["--all"] if columns == 80 else [])],
        env=term_env(home, HF_HUB_OFFLINE="1"),
        encoding="utf-8",
        dimensions=(30, columns),
        timeout=60,
        cwd=str(tmp_path),
    )
    child.expect(pexpect.EOF)
    child.close()
    out = child.before.replace("\r\n", "\n")
    assert child.exitstatus == 0, out
    rows = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    assert {"demo", "demo-gptq8", "demo-fp32"} <= set(rows), out
    assert rows["demo-gptq8"].rstrip().endswith("converted on first use"), out
    if columns == 80:
        assert rows["01-ai/Yi-34B-Chat-4bits"].split()[1:2] == ["yi-34b-chat-4bits"], out
        assert rows["01-ai/Yi-34B-Chat-4bits"].rstrip().endswith("4096     yi-chat pull yi-34b-chat-4bits"), out


def test_sessions_lists_newest_first_as_a_table_and_as_json(server, home, tmp_path):
    p = yi("sessions", home=home)
    assert p.returncode == 0 and "no saved sessions" in p.stderr.decode()
    (tmp_path / "f.txt").write_text("ctx")
    assert yi("--endpoint", server.url, "-p", "first run", home=home).returncode == 0
    assert (
        yi("--endpoint", server.url, "-f", str(tmp_path / "f.txt"), "-p", "second run\nmore", home=home).returncode == 0
    )
    rows = json.loads(yi("sessions", "--json", home=home).stdout)
    assert [r["first_line"] for r in rows] == ["[+1 file] second run", "first run"]
    assert all(r["model"] == "served" and r["exchanges"] == 1 and r["mode"] == "one-shot" for r in rows)
    table = yi("sessions", home=home).stdout.decode().splitlines()
    assert "updated" in table[0] and "model" in table[0] and "first line" in table[0]
    # the count is of exchanges (a message and its reply), as --json and /history's pairs say: "turns" read as 2
    assert table[0].split()[4] == "exchanges" and table[1].split()[4] == "1", table
    assert "second run" in table[1] and "first run" in table[2] and "served" in table[1]
    assert len(json.loads(yi("sessions", "--json", "-n", "1", home=home).stdout)) == 1
    for bad, needle in (("0", "1 or more sessions, not 0"), ("-1", "not -1"), ("x", "a number of sessions")):
        one_line_error(yi("sessions", "-n", bad, home=home), 2, needle)  # it said "no saved sessions", exit 0


def test_sessions_cuts_and_pads_chinese_by_its_width_on_screen(server, home):
    """A Chinese first line was cut at 50 characters, 100 columns, where an English one took 50; a model named in
    Chinese padded by characters pushed the next columns out of line; an emoji family's joiners (ZWJ) and an
    ideographic space showed as \\u200d, \\u3000. Each cell is cut and padded by the columns it takes."""
    from rich.cells import cell_len

    question = "这是一个很长的中文问题，用来测试会话列表的截断是否按照显示宽度而不是字符数量来进行的"  # 43: 86 columns
    assert yi("--endpoint", server.url, "-p", question, home=home).returncode == 0
    family = "家庭\u3000👨\u200d👩\u200d👧 e\u0301"
    assert yi("--endpoint", server.url, "--model", "模型", "-p", family, home=home).returncode == 0
    assert yi("--endpoint", server.url, "-p", "short", home=home).returncode == 0
    rows = yi("sessions", home=home).stdout.decode().splitlines()[1:]
    by = {r.split()[-2]: r for r in rows}  # the first line's last word
    assert by["short"].index("short") == by["e\u0301"].index("家庭") + 2  # 模型 padded as its 4 columns
    assert cell_len(by["short"][: by["short"].index("short")]) == cell_len(by["e\u0301"][: by["e\u0301"].index("家庭")])
    assert family in by["e\u0301"]  # as typed, no escapes
    cut = next(r for r in rows if "这是" in r)
    first = cut[cut.index("这是") :].rsplit("  ", 1)[0]
    assert first.endswith("...") and cell_len(first) <= 53 and question.startswith(first.removesuffix("..."))


@pytest.mark.parametrize("updated", ["yesterday", "9999-99-99T99:99:99Z", "9999-12-31T00:00:00.000000Z"])
def test_a_hand_edited_updated_does_not_take_the_place_of_the_newest_session(server, home, updated):
    """A session file whose `updated` was edited to a word ("yesterday") sorted before every real time (as text):
    `sessions` listed it first and -c resumed it (a run-through); so did one of the right shape that is no time, or
    a time far ahead. Such a file is dated by its mtime."""
    assert yi("--endpoint", server.url, "--resume", "last", "-p", "x", home=home).returncode == 1  # none yet
    for question in ("older", "newer"):
        p = yi("--endpoint", server.url, home=home, stdin=f"{question}\n")
        assert p.returncode == 0, p.stderr.decode()
    files = {json.loads(f.read_text())["turns"][0]["content"]: f for f in (home / "data" / "sessions").glob("*.json")}
    data = json.loads(files["older"].read_text())
    data["updated"], data["mode"] = updated, "interactive"
    files["older"].write_text(json.dumps(data))
    os.utime(files["older"], (1_000_000_000, 1_000_000_000))  # 2001
    data = json.loads(files["newer"].read_text())
    data["mode"] = "interactive"
    files["newer"].write_text(json.dumps(data))
    rows = json.loads(yi("sessions", "--json", home=home).stdout)
    assert [r["first_line"] for r in rows] == ["newer", "older"] and rows[1]["updated"].startswith("2001-09-09")
    p = yi("--endpoint", server.url, "-c", "-p", "/history", home=home)
    assert p.returncode == 0 and "newer" in p.stdout.decode() and "older" not in p.stdout.decode()


def test_an_old_last_json_still_loads_and_is_listed(server, home):
    sessions = home / "data" / "sessions"
    sessions.mkdir(parents=True)
    old = {
        "format": "yi-chat-session",
        "version": 1,
        "model": "demo",
        "quant": None,
        "settings": {},
        "system": None,
        "turns": [{"role": "user", "content": "old question"}, {"role": "assistant", "content": "old answer"}],
    }
    (sessions / "last.json").write_text(json.dumps(old))
    p = yi("--endpoint", server.url, "--resume", "last", "-p", "/history", home=home)
    assert p.returncode == 0, p.stderr.decode()
    assert "old question" in p.stdout.decode()
    assert [r["name"] for r in json.loads(yi("sessions", "--json", home=home).stdout)] == ["last.json"]
    p = yi("--endpoint", server.url, "-c", "-p", "new", home=home)  # copied into a new file, last.json untouched
    assert p.returncode == 0, p.stderr.decode()
    assert json.loads((sessions / "last.json").read_text()) == old
    assert len(list(sessions.glob("*.json"))) == 2


def test_resume_last_with_no_interactive_session_says_so(server, home):
    assert yi("--endpoint", server.url, "-p", "x", home=home).returncode == 0
    one_line_error(yi("--endpoint", server.url, "-c", "-p", "y", home=home), 1, "no interactive session saved yet")


def test_every_atomic_write_syncs_the_file_and_the_directory(tmp_path, monkeypatch):
    from yi_cli import durable
    from yi_cli.conversation import store

    log = []
    real_fsync, real_replace, real_link = os.fsync, os.replace, os.link

    def fsync(fd):
        log.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", lambda a, b: (log.append(("rename", str(b))), real_replace(a, b)))
    monkeypatch.setattr(os, "link", lambda a, b: (log.append(("rename", str(b))), real_link(a, b)))
    target = tmp_path / "s.json"
    store.write_atomic(target, "{}")
    new = store.write_new(tmp_path, "{}")
    tmp_dir = tmp_path / ".tmp-ckpt"
    (tmp_dir / "sub").mkdir(parents=True)
    (tmp_dir / "sub" / "w.safetensors").write_bytes(b"w")
    durable.publish_dir(tmp_dir, tmp_path / "ckpt")
    kinds = [(k, Path(p).parent == tmp_path and Path(p).name.startswith(".tmp-"), p) for k, p in log]
    # each publication: the data synced (a temp file), then the rename, then the directory synced
    assert [k for k, *_ in kinds][:3] == ["fsync", "rename", "fsync"] and kinds[0][1] and kinds[2][2] == str(tmp_path)
    assert log[1] == ("rename", str(target)) and ("rename", str(new)) in log
    i = log.index(("rename", str(tmp_path / "ckpt")))
    assert ("fsync", str(tmp_dir / "sub" / "w.safetensors")) in log[:i] and ("fsync", str(tmp_dir)) in log[:i]
    assert log[i + 1] == ("fsync", str(tmp_path))


# 3. conventions ----------------------------------------------------------------------------------------------------


def test_version_and_help_examples(home):
    import yi_cli

    p = yi("--version", home=home)
    assert p.returncode == 0 and p.stdout.decode().strip() == f"yi-chat {yi_cli.__version__}"
    out = yi("--help", home=home).stdout.decode()
    assert "examples:" in out and 'git diff | yi-chat -p "review this"' in out and "yi-chat -c" in out
    words = " ".join(out.split())  # the epilog is filled to the terminal's width
    assert "models, pull, sessions or completion" in words and "put -- first" in words  # the positional-prompt rule
    for flag in ("--file", "--continue", "--version", "--resume", "--endpoint"):
        assert flag in out


def test_a_subcommands_usage_error_points_at_its_own_help(home):
    """`yi-chat pull ID extra` said "see yi-chat --help", whose help is not pull's; sessions and completion said
    "see --help" without saying whose."""
    for args, help in [
        (["pull", "01-ai/Yi-6B-Chat", "extra"], "yi-chat pull --help"),
        (["pull", "--bogus", "x"], "yi-chat pull --help"),
        (["models", "extra"], "yi-chat models --help"),
        (["sessions", "extra"], "yi-chat sessions --help"),
        (["completion", "bash", "extra"], "yi-chat completion --help"),
        (["completion"], "yi-chat completion --help"),
        (["--bogus"], "yi-chat --help"),
    ]:
        line = one_line_error(yi(*args, home=home), 2)
        assert f"(see {help})" in line, (args, line)


@pytest.mark.parametrize(
    "args, hint",
    [
        (["models", "are", "cool"], "yi-chat -- models are cool"),
        (["completion", "of the task"], "yi-chat -- completion 'of the task'"),
        (["pull", "the", "lever"], "yi-chat -- pull the lever"),
        (["sessions", "are", "kept"], "yi-chat -- sessions are kept"),
        (["models", "--bogus"], None),
        (["pull", "--bogus", "x"], None),
    ],
)
def test_a_prompt_that_starts_with_a_subcommands_word_is_told_how_to_send_it(home, args, hint):
    """`yi-chat models are cool` said only "unrecognized arguments: are cool": the words, taken for the subcommand
    they start with, are shown as a prompt sent after --, as `yi-chat -m demo models` is told (not for an option)."""
    line = one_line_error(yi(*args, home=home), 2)
    if hint is None:
        assert "prompt" not in line, line
    else:
        assert line.endswith(f"; to send the words as a prompt: {hint}"), line


def test_a_subcommand_word_is_not_sent_as_a_prompt(server, home):
    one_line_error(yi("--endpoint", server.url, "models are big", home=home), 2, "'models' is a subcommand", "-p")
    one_line_error(yi("--endpoint", server.url, "sessions", "-x", home=home), 2, "unrecognized arguments: -x")
    p = yi("--endpoint", server.url, "--", "models are big", home=home)
    assert p.returncode == 0 and sent(server) == "models are big"
    p = yi("--endpoint", server.url, "-p", "completion please", home=home)
    assert p.returncode == 0 and sent(server) == "completion please"


def test_local_model_flags_with_an_endpoint_are_said_to_do_nothing(server, home):
    """--context, --device, --dtype, --engine, --raw, --speculate with --endpoint were taken and did nothing,
    silently (a run-through): one line says so; the reply comes as ever."""
    p = yi("--endpoint", server.url, "--context", "100", "--raw", "--speculate", "lookup", "-p", "hi", home=home)
    assert p.returncode == 0 and p.stdout.decode() == "echo: hi\n\n", p.stderr
    assert p.stderr.decode().splitlines() == [
        "--context, --raw, --speculate: a local model's; the server at --endpoint decides (ignored)"
    ]
    p = yi("--endpoint", server.url, "--max-new-tokens", "3", "-p", "hi", home=home)
    assert p.returncode == 0 and p.stderr.decode() == ""


def test_a_model_name_from_the_environment_is_named_as_such(home):
    """YI_CHAT_MODEL=demo-bogus was reported as `--model demo-bogus`, a flag the user did not give (a run-through)."""
    p = yi("-p", "hi", home=home, env={"YI_CHAT_MODEL": "demo-bogus"})
    one_line_error(p, 3, "YI_CHAT_MODEL=demo-bogus: no such demo model or directory")
    one_line_error(yi("-m", "demo-bogus", "-p", "hi", home=home), 3, "--model demo-bogus: no such demo model")
    # through an alias or config.toml's model: named so, as any other target of theirs is (it said `--model
    # demo-fp16` of `-m mine`, `YI_CHAT_MODEL=demo-fp16` of YI_CHAT_MODEL=mine)
    (home / "config").mkdir()
    toml = home / "config" / "config.toml"
    toml.write_text('[aliases]\nmine = "demo-fp16"\n')
    alias = f"mine ([aliases] in {toml}): demo-fp16: no such demo model"
    one_line_error(yi("-m", "mine", "-p", "hi", home=home), 3, alias)
    one_line_error(yi("-p", "hi", home=home, env={"YI_CHAT_MODEL": "mine"}), 3, alias)
    toml.write_text('model = "demo-fp16"\n')
    one_line_error(yi("-p", "hi", home=home), 3, f"model in {toml}: demo-fp16: no such demo model")


def test_a_name_with_a_part_over_255_bytes_is_an_error_line_not_an_internal_error(home):
    """pathlib's exists / is_dir raise ENAMETOOLONG (only "no such file" is False): `pull` of such a name, `-m demo` +
    it, and a config alias to it ended in "internal error (OSError: [Errno 36] File name too long)", exit 1."""
    long = "y" * 256
    one_line_error(yi("pull", long, home=home), 2, f"{long}: not a hub id (ORG/NAME) or a Yi alias")
    one_line_error(yi("pull", f"a/{long}", home=home), 2, "not a valid hub id")
    one_line_error(yi("-m", f"demo{long}", "-p", "hi", home=home), 3, "no such demo model or directory")
    p = yi("-p", "hi", home=home, env={"YI_CHAT_MODEL": f"demo{long}"})
    one_line_error(p, 3, "YI_CHAT_MODEL=demoyyy", "no such demo model")
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text(f'[aliases]\nlong = "{long}"\n')
    one_line_error(yi("pull", "long", home=home), 3, "no such directory, and not a hub id")


def test_a_model_the_environment_or_the_config_names_is_said_to_come_from_there(home, tmp_path):
    """A model from YI_CHAT_MODEL or config.toml's `model` that is not there was one line naming the bare path
    (`/models/gone: no such directory`), which left the user to guess where it came from; YI_CHAT_MODEL=' ' was
    exit 3 with ` : no such directory`, where `--model ' '` is a usage error. Each names its source; -m wins over
    both and is named as typed."""
    gone = str(tmp_path / "gone")
    p = yi("-p", "hi", home=home, env={"YI_CHAT_MODEL": " "})
    one_line_error(p, 2, "YI_CHAT_MODEL is blank: set it to a checkpoint directory, a hub id or demo, or unset it")
    one_line_error(yi("-p", "hi", home=home, env={"YI_CHAT_MODEL": gone}), 3, f"YI_CHAT_MODEL: {gone}: no such dir")
    one_line_error(yi("-p", "hi", home=home, env={"YI_CHAT_MODEL": "a//b"}), 2, "YI_CHAT_MODEL: a//b: no such dir")
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text(f'model = "{gone}"\n')
    cfg = home / "config" / "config.toml"
    one_line_error(yi("-p", "hi", home=home), 3, f"yi-chat: model in {cfg}: {gone}: no such directory")
    line = one_line_error(yi("-m", gone + "2", "-p", "hi", home=home, env={"YI_CHAT_MODEL": gone}), 3)
    assert line.startswith(f"yi-chat: {gone}2: no such directory"), line


def test_every_word_after_dashdash_is_the_prompt_verbatim(server, home):
    """README recommends `--` for a prompt that holds flag-like words: argparse's intermixed parsing read flags past
    it ('unrecognized arguments: do', 'two prompts', a --max-new-tokens taken from the prompt)."""
    p = yi("--endpoint", server.url, "--max-new-tokens", "5", "--", "what", "does", "--json", "do", home=home)
    assert p.returncode == 0, p.stderr
    assert sent(server) == "what does --json do" and server.requests[-1]["max_tokens"] == 5
    assert not p.stdout.decode().startswith("{")  # --json after -- is a word, not the flag
    p = yi("--endpoint", server.url, "--", "explain", "the", "-p", "flag", home=home)
    assert p.returncode == 0 and sent(server) == "explain the -p flag", p.stderr
    p = yi("--endpoint", server.url, "--", "models", "are", "cool", "--max-new-tokens", "3", "--", home=home)
    assert p.returncode == 0 and sent(server) == "models are cool --max-new-tokens 3 --", p.stderr
    assert server.requests[-1]["max_tokens"] != 3
    # a prompt that starts with "/" after -- is a message too (it was run as a slash command: "unknown command
    # /etc/hosts", a run-through); before it, a slash command as ever, whose error says how to send one
    p = yi("--endpoint", server.url, "--", "/etc/hosts", "has", "what", "format?", home=home)
    assert p.returncode == 0 and sent(server) == "/etc/hosts has what format?", p.stderr
    p = yi("--endpoint", server.url, "-p", "/usr/bin/env prints what?", home=home)
    one_line_error(p, 1, "unknown command /usr/bin/env;", "//TEXT sends a message starting /")
    p = yi("--endpoint", server.url, "-p", "/file README.md", home=home)  # its attachment had no message to go with
    one_line_error(p, 1, "/file: a one-shot prompt has no next message; attach with -f PATH")


def test_a_prompt_after_dashdash_is_never_a_command_however_it_starts(server, home):
    """After --, the prompt is sent as typed, README says, "one starting with `/` too": one starting with a
    full-width slash (an input method's, `／stats 是什么`) or with a space before its `/` ran as that slash command
    (its output, no reply; `／help 怎么用` an error, exit 1)."""
    for prompt in ["／stats 是什么", "／help 怎么用", " /stats", "\u3000／model 是什么意思", "//two slashes"]:
        p = yi("--endpoint", server.url, "--json", "--", prompt, home=home)
        assert p.returncode == 0, p.stderr
        assert sent(server) == prompt and '"reply"' in p.stdout.decode(), prompt


def test_a_mistyped_command_as_the_prompt_is_said_before_the_model_loads(home, tmp_path):
    """`yi-chat /histroy` loaded the model (seconds on the demo, a minute of a 34B) to say "unknown command": it is
    said first, exit 1 as before; here the model is a folder that is not there, whose exit 3 came first."""
    missing = str(tmp_path / "no-such-model")
    for argv in (["/histroy"], ["-p", "/clear now"], ["-c", "/stast"]):
        p = yi("-m", missing, *argv, home=home)
        one_line_error(p, 1, "unknown command /histroy; did you mean /history?" if argv == ["/histroy"] else "/")
        assert "no-such-model" not in p.stderr.decode()
    one_line_error(yi("-m", missing, "/history", home=home), 3, "no-such-model")  # a command known: loads


def _bash_complete(script: Path, wrapper: Path, *words: str, lines: bool = False) -> list[str]:
    """COMPREPLY of the bash completion function for the command line `words` (the last one being completed); one
    entry a line where `lines`, else split at whitespace."""
    line = " ".join(f"'{w}'" for w in words)
    prog = (
        f"source '{script}'; COMP_WORDS=('{wrapper}' {line}); COMP_CWORD={len(words)}; _yi_chat; "
        "printf '%s\\n' \"${COMPREPLY[@]}\""
    )
    out = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.splitlines() if lines else out.stdout.split()


def test_bash_completion_of_resume_offers_last_and_the_stores_sessions(server, home, tmp_path):
    """`--resume <Tab>` offered the folder's files and `last`, not the store's sessions, which `--resume NAME` takes
    by the name `yi-chat sessions` lists: they are offered now, newest first, then the folder's files."""
    for said in ("one", "two"):
        assert yi("--endpoint", server.url, stdin=f"{said}\n", home=home).returncode == 0
    names = [f.name for f in sorted((home / "data" / "sessions").glob("*.json"), key=lambda f: -f.stat().st_mtime)]
    assert len(names) == 2, names
    listed = yi("completion", "--list-sessions", home=home)
    assert listed.returncode == 0 and listed.stdout.decode().split() == names, listed
    p = yi("completion", "bash", home=home)
    script = tmp_path / "yi-chat.bash"
    script.write_bytes(p.stdout)
    wrapper = tmp_path / "yi-chat"
    wrapper.write_text(
        f"#!/bin/sh\nYI_CHAT_HOME='{home}' PYTHONPATH='{ROOT}' exec '{sys.executable}' -m yi_cli \"$@\"\n"
    )
    wrapper.chmod(0o755)
    assert _bash_complete(script, wrapper, "--resume", names[0][:4], lines=True) == names
    assert _bash_complete(script, wrapper, "--resume", names[1], lines=True) == [names[1]]
    assert _bash_complete(script, wrapper, "--resume", "la", lines=True) == ["last"]
    assert _bash_complete(script, wrapper, "--resume", str(tmp_path / "yi-chat."), lines=True) == [str(script)]


def test_bash_completion_script(home, tmp_path):
    p = yi("completion", "bash", home=home)
    assert p.returncode == 0, p.stderr.decode()
    script = tmp_path / "yi-chat.bash"
    script.write_bytes(p.stdout)
    subprocess.run(["bash", "-n", str(script)], check=True)
    wrapper = tmp_path / "yi-chat"  # what ${COMP_WORDS[0]} runs for the model names
    wrapper.write_text(
        f"#!/bin/sh\nYI_CHAT_HOME='{home}' PYTHONPATH='{ROOT}' exec '{sys.executable}' -m yi_cli \"$@\"\n"
    )
    wrapper.chmod(0o755)
    assert _bash_complete(script, wrapper, "--dt") == ["--dtype"]
    assert _bash_complete(script, wrapper, "--dtype", "") == ["auto", "fp32", "fp16", "bf16"]
    assert _bash_complete(script, wrapper, "--model", "demo") == ["demo", "demo-gptq8", "demo-fp32"]
    assert _bash_complete(script, wrapper, "se") == ["sessions"]
    assert _bash_complete(script, wrapper, "/he") == ["/help"]
    assert _bash_complete(script, wrapper, "-p", "/fi") == ["/file"]
    assert _bash_complete(script, wrapper, "completion", "") == ["bash", "zsh", "fish"]
    assert "--json" in _bash_complete(script, wrapper, "sessions", "--")
    # a subcommand's own flags, not the chat's (models --temperature is an error); pull's argument is a model name
    assert _bash_complete(script, wrapper, "models", "--") == ["--help", "--all", "--json"]
    assert _bash_complete(script, wrapper, "pull", "--r") == ["--revision"]
    assert _bash_complete(script, wrapper, "models", "--temp") == []
    assert _bash_complete(script, wrapper, "pull", "demo-f") == ["demo-fp32"]
    assert _bash_complete(script, wrapper, "pull", "--revision", "") == []
    # `--device cuda:` as bash splits it at the colon: each match less the text up to the colon, which bash keeps
    # on the line (it offered nothing); checked in a real bash in tmux too
    assert _bash_complete(script, wrapper, "--device", "cuda", ":", "") == ["0", "1"]
    assert _bash_complete(script, wrapper, "--device", "cuda", ":") == ["0", "1"]
    assert _bash_complete(script, wrapper, "--device", "cuda", ":", "1") == ["1"]
    assert _bash_complete(script, wrapper, "--device", "cu") == ["cuda", "cuda:0", "cuda:1"]
    # a file name with a space is one name (it completed as two words: bash's own -f completion, checked in tmux,
    # then quotes it and ends a folder with /)
    (tmp_path / "my dir").mkdir()
    (tmp_path / "my notes.txt").write_text("x")
    want = [str(tmp_path / "my dir"), str(tmp_path / "my notes.txt")]
    assert sorted(_bash_complete(script, wrapper, "-f", str(tmp_path / "my"), lines=True)) == want
    assert sorted(_bash_complete(script, wrapper, "--resume", str(tmp_path / "my"), lines=True)) == want
    # a config alias with a space is one name (it completed as two words)
    (home / "config").mkdir(exist_ok=True)
    (home / "config" / "config.toml").write_text('[aliases]\n"two words" = "/x"\n')
    assert _bash_complete(script, wrapper, "-m", "two", lines=True) == ["two words"]
    # each name as written, and nothing in one run: compgen -W expanded `$(...)`, `$HOME` and quotes in them
    ran = tmp_path / "ran"
    names = [f"x$(touch {ran})", "bob's", "cost$HOME"]
    (home / "config" / "config.toml").write_text("[aliases]\n" + "".join(f"{json.dumps(n)} = '/x'\n" for n in names))
    for name in names:
        assert _bash_complete(script, wrapper, "-m", name[:2], lines=True) == [name]
    assert not ran.exists()


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_parse(home, tmp_path, shell):
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    p = yi("completion", shell, home=home)
    assert p.returncode == 0, p.stderr.decode()
    script = tmp_path / f"yi-chat.{shell}"
    script.write_bytes(p.stdout)
    subprocess.run([shell, "-n", str(script)], check=True)
    text = p.stdout.decode()
    if shell == "zsh":
        assert "'file:attach a text file" in text and "{--continue,-c}" in text and "_yi_chat_models" in text
        zsh_checks(script, home, tmp_path)
        return

    def complete(line):  # fish's own completion engine, on the script as a user's shell loads it
        out = subprocess.run(
            ["fish", "--no-config", "-c", f"source '{script}'; complete -C '{line}'"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        return [ln.split("\t")[0] for ln in out.splitlines()]

    assert complete("yi-chat --dt") == ["--dtype"]
    assert sorted(complete("yi-chat --dtype ")) == ["auto", "bf16", "fp16", "fp32"]
    assert complete("yi-chat /fi") == ["/file"]
    assert sorted(complete("yi-chat completion ")) == ["bash", "fish", "zsh"]
    # a subcommand's own flags, not the chat's
    assert sorted(complete("yi-chat models --")) == ["--all", "--help", "--json"]
    assert complete("yi-chat pull --r") == ["--revision"]
    assert complete("yi-chat models --temp") == [] and complete("yi-chat models /fi") == []
    assert sorted(complete("yi-chat sessions --")) == ["--help", "--json", "--limit"]
    assert complete("yi-chat --resume la") == ["last"]  # and the store's sessions (none in this home)


def zsh_checks(script: Path, home: Path, tmp_path: Path) -> None:
    """What zsh itself completes with the script (tests/zsh_complete.zsh): a spec it refused ("*(-f --file)":
    "_arguments: invalid rest argument definition") left every flag of the chat without completion."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "yi-chat"  # what the script runs for the model names
    wrapper.write_text(
        f"#!/bin/sh\nYI_CHAT_HOME='{home}' PYTHONPATH='{ROOT}' exec '{sys.executable}' -m yi_cli \"$@\"\n"
    )
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def complete(line: str) -> list[str]:
        out = subprocess.run(
            ["zsh", "-f", str(ROOT / "tests" / "zsh_complete.zsh"), str(script), line],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
        ).stdout
        got = [ln.strip() for ln in out.splitlines() if ln.strip()]
        assert all(ln.startswith("candidate:") for ln in got), got  # zsh's own complaints, printed
        return [ln.removeprefix("candidate:") for ln in got]

    assert complete("yi-chat --dt") == ["--dtype"]
    assert complete("yi-chat --dtype ") == ["auto", "fp32", "fp16", "bf16"]
    assert complete("yi-chat -m demo-f") == ["demo-fp32"]
    assert complete("yi-chat /fi") == ["file"]
    assert complete("yi-chat -f x --fi") == ["--file"]
    assert complete("yi-chat models --") == ["--help", "--all", "--json"]
    assert complete("yi-chat pull --r") == ["--revision"]
    assert complete("yi-chat pull demo-g") == ["demo-gptq8"]
    assert complete("yi-chat completion ") == ["bash", "zsh", "fish"]
    assert complete("yi-chat --resume la") == ["last"]  # and the store's sessions (none in this home)
    # a config alias with a space is one name: zsh split it in two, `my` and `model`, neither a model (a README
    # audit); bash and fish kept it whole
    (home / "config").mkdir(exist_ok=True)
    (home / "config" / "config.toml").write_text('[aliases]\n"two words" = "/x"\n')
    assert complete("yi-chat -m tw") == ["two\\ words"]  # as zsh inserts it, quoted


def test_completion_without_a_shell_is_a_usage_error(home):
    one_line_error(yi("completion", home=home), 2, "which shell")
    one_line_error(yi("completion", "tcsh", home=home), 2, "invalid choice")


def test_endpoint_and_key_from_the_environment_shown_by_model_never_the_key(home):
    with OpenAIServer(ScriptedEngine(), model="served", api_key="s3cret-key") as srv:
        for env, source in (
            ({"YI_CHAT_ENDPOINT": srv.url, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}, "$YI_CHAT_ENDPOINT"),
            ({"OPENAI_BASE_URL": srv.url}, "$OPENAI_BASE_URL"),
        ):
            p = yi(stdin="hello\n/model\n", home=home, env={**env, "OPENAI_API_KEY": "s3cret-key"})
            out = p.stdout.decode()
            assert p.returncode == 0, p.stderr.decode()
            assert "echo: hello" in out and f"endpoint from {source}" in out
            assert "API key from $OPENAI_API_KEY (not shown)" in out and "s3cret-key" not in out + p.stderr.decode()
            assert len(srv.requests) == 1
            srv.requests.clear()
        # api_key_env in the config names the variable; it wins over $OPENAI_API_KEY
        (home / "config").mkdir()
        (home / "config" / "config.toml").write_text(f'endpoint = "{srv.url}"\napi_key_env = "MY_KEY"\n')
        p = yi("-p", "/model", home=home, env={"MY_KEY": "s3cret-key", "OPENAI_API_KEY": "wrong"})
        assert p.returncode == 0, p.stderr.decode()
        shown = "".join(p.stdout.decode().split())  # rich folds a long path at the width of a pipe
        assert "APIkeyfrom$MY_KEY(notshown)" in shown and f"endpointfrom{home}/config/config.toml" in shown
        # one it names that is not set is an error, not $OPENAI_API_KEY sent to this server (README)
        p = yi("-p", "hi", home=home, env={"OPENAI_API_KEY": "wrong"})
        one_line_error(p, 2, "config.toml: api_key_env names $MY_KEY, which is not set")
        for f in (home / "data" / "sessions").glob("*.json"):
            assert "s3cret-key" not in f.read_text()  # keys are never written


def test_a_chat_says_when_the_environment_chose_its_server(server, home, tmp_path):
    """Its password and secret query values as ***: the line showed the URL as the variable held it."""
    url = server.url.replace("://", "://alice:pw-SECRET1@") + "?api-version=2&sig=SIG-SECRET9"
    child = spawn(home=home, cwd=tmp_path, env={"OPENAI_BASE_URL": url})
    shown = server.url.replace("://", "://***@") + "?api-version=2&sig=***"
    assert f"streaming from {shown} (set by $OPENAI_BASE_URL" in child.before  # the screen before the prompt
    assert "SECRET" not in child.before
    child.sendline("/model")
    child.expect_exact("endpoint from $OPENAI_BASE_URL")
    child.expect_exact(">>>")
    assert leave(child) == 0


def test_a_server_the_environment_or_config_chose_that_fails_at_start_is_said_to_come_from_there(home):
    """An OPENAI_BASE_URL set for another tool made yi-chat fail with `http://.../v1/models: cannot connect` (or
    `not a url: not an http(s) URL`) and no word of why it had asked a server at all: the line names the variable
    (or config.toml) and `--endpoint ''`. Given as --endpoint, the line is as before."""
    with socket.socket() as s:  # a port nobody listens on: bound, then released
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    tail = "; --endpoint '' runs the local model)"
    for var in ("OPENAI_BASE_URL", "YI_CHAT_ENDPOINT"):
        line = one_line_error(yi("-p", "hi", home=home, env={var: url}), 3, f"{url}/models: cannot connect")
        assert line.endswith(f"(set by ${var}{tail}"), line
        line = one_line_error(yi("-p", "hi", home=home, env={var: "ftp://x"}), 2, "ftp://x: not an http(s) URL")
        assert line.endswith(f"(set by ${var}{tail}"), line
        # its secret query values as *** (the user info was hidden, the query's api-key shown)
        bad = "ftp://u:pw-SECRET1@x/v1?api-key=KEY-SECRET2&v=1#top"
        line = one_line_error(yi("-p", "hi", home=home, env={var: bad}), 2, "ftp://***@x/v1?api-key=***&v=1#top: not")
        assert "SECRET" not in line, line
    line = one_line_error(yi("--endpoint", url, "-p", "hi", home=home), 3, f"{url}/models: cannot connect")
    assert "set by" not in line, line
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text(f'endpoint = "{url}"\n')
    line = one_line_error(yi("-p", "hi", home=home), 3, f"{url}/models: cannot connect")
    assert line.endswith(f"(set by {home / 'config' / 'config.toml'}{tail}"), line


def test_an_empty_endpoint_flag_means_the_local_model_whatever_the_environment(home, tmp_path):
    p = yi(
        "--endpoint",
        "",
        "--model",
        str(tmp_path / "nope"),
        "-p",
        "hi",
        home=home,
        env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},
    )
    one_line_error(p, 3, "no such directory")  # the local loader answered, not the (unreachable) server


# errors that name what is wrong ------------------------------------------------------------------------------------


def test_model_name_errors(home):
    one_line_error(yi("--model", "demo-fp16", "-p", "hi", home=home), 3, "demo-fp16", "demo, demo-gptq8, demo-fp32")
    one_line_error(yi("--model", "", "-p", "hi", home=home), 2, "--model is empty")


@pytest.mark.parametrize(
    "toml, needle",
    [
        ("[generation]\ntemperature = 9\n", "generation: temperature must be between 0 and 5"),
        ('api_key = "sk-123"\n', "api_key: keys are not kept in the config file; set api_key_env"),
        ('dtype = "fp8"\n', "dtype = 'fp8': use one of auto, fp32, fp16, bf16"),
        ('device = "gpu"\n', "unknown device 'gpu'"),
        ('api_key_env = "MY KEY"\n', "is not an environment variable name"),
        ('colour = "blue"\n', "unknown key(s): colour"),
        ("model = [\n", "cannot read the config file"),
        # a key in Chinese, or with a space, is TOML's "Invalid statement": said how to write it (quoted)
        ('[aliases]\n模型 = "demo"\n', "Invalid statement (at line 2, column 1)); a key of other characters"),
        ('[aliases]\n模型 = "demo"\n', 'is written quoted: "模型" = ...'),
        ('[aliases]\nmy model = "demo"\n', 'is written quoted: "my model" = ...'),
        ("[generation]\nmax_new_tokens = 1.5\n", "max_new_tokens must be an integer, got 1.5"),
        ("[generation]\ntop_k = 2.0\n", "top_k must be an integer, got 2.0"),
        ("[remote]\nfoo = 5\n", "unknown key remote.foo"),  # checked without --endpoint too
        ("[remote]\nmax_redirect = 5\n", "unknown key remote.max_redirect (did you mean remote.max_redirects?)"),
        ("[remote]\nIDLE_TIMEOUT = 5\n", "unknown key remote.IDLE_TIMEOUT (did you mean remote.idle_timeout?)"),
        ('[remote]\nidle_timeout = "x"\n', "remote.idle_timeout must be a positive number"),
        ("context = 100.5\n", "context: 100.5 is not a positive whole number of tokens"),
    ],
)
def test_config_errors_name_the_file(home, toml, needle):
    (home / "config").mkdir()
    cfg = home / "config" / "config.toml"
    cfg.write_text(toml)
    one_line_error(yi("-p", "hi", home=home), 2, str(cfg), needle)


@pytest.mark.parametrize("codec,named", [("utf-16", "UTF-16"), ("utf-16-le", "UTF-16LE"), ("utf-32", "UTF-32")])
def test_a_config_file_saved_as_utf16_says_so_and_how_to_convert_it(home, codec, named):
    """Notepad's "Unicode" and PowerShell's `>` write UTF-16: the line said "not UTF-8 text (byte 0)", nothing of
    what the file is or how to make it UTF-8 (as -f and a piped stdin say)."""
    (home / "config").mkdir()
    cfg = home / "config" / "config.toml"
    cfg.write_bytes("[generation]\ntemperature = 0.5\n".encode(codec))
    one_line_error(yi("-p", "hi", home=home), 2, f"{cfg}: {named} text, not UTF-8 (iconv -f {named} -t UTF-8 {cfg} > ")


# 4. packaging ------------------------------------------------------------------------------------------------------


def test_pyproject_floor_license_and_version():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    import yi_cli

    assert any(d.startswith("torch>=2.6") for d in meta["project"]["dependencies"])
    assert meta["project"]["license"] == "Apache-2.0" and "Apache License" in (ROOT / "LICENSE").read_text()
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "yi_cli.__version__"}
    changelog = (ROOT / "CHANGELOG.md").read_text()
    # a released version has its section; main between releases is the next one's .dev0, its changes "Unreleased"
    # (it said 0.1.0 while the README called 0.1.0 an older release)
    release, dev, n = yi_cli.__version__.partition(".dev")
    assert f"## {release}" in changelog if not dev else (n == "0" and "## Unreleased" in changelog)
    if dev:
        released = [ln.split()[1] for ln in changelog.splitlines() if ln.startswith("## ") and ln[3].isdigit()]
        assert tuple(map(int, release.split("."))) > tuple(map(int, released[0].split(".")))
    assert (ROOT / "yi_cli" / "py.typed").is_file()


def test_the_tests_run_from_the_sdist(tmp_path):
    pytest.importorskip("build")
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [sdist] = out.glob("*.tar.gz")
    shutil.unpack_archive(sdist, tmp_path)
    [tree] = [d for d in tmp_path.iterdir() if d.name.startswith("yi_chat-")]
    for f in (
        "tests/conftest.py",
        "tests/fixtures.py",
        "tests/openai_server.py",
        "scripts/make_checkpoint.py",
        "LICENSE",
        "CHANGELOG.md",
        "yi_cli/py.typed",
    ):
        assert (tree / f).is_file(), f
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "YI_CHAT_HOME")}
    env["PYTHONPATH"] = str(tree)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_session.py",
            "tests/test_cli_conventions.py::test_version_and_help_examples",
        ],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert " passed" in p.stdout


# 5. the README -----------------------------------------------------------------------------------------------------


def test_readme_lists_every_flag_command_and_subcommand_and_links_nothing_outside():
    import re

    from yi_cli.conversation import commands
    from yi_cli.ui import args

    readme = (ROOT / "README.md").read_text()
    for act in args.parser()._actions:
        for flag in act.option_strings:
            assert f"`{flag}" in readme or f"`--{flag.lstrip('-')}" in readme or f", `{flag}" in readme, flag
    table = readme[readme.index("### Commands") : readme.index("After each reply")]
    for name in commands.TABLE:
        assert f"`/{name}" in table, name
    for name in args.SUBCOMMANDS:
        assert f"yi-chat {name}" in readme, name
    prose = re.sub(r"```.*?```|`[^`]*`", "", readme, flags=re.S)  # URLs in code are examples, not links
    assert not re.search(r"\]\((?!#)[^)]*\)|\.\./|https?://", prose)  # no links, no paths out of the repo


def test_a_dumb_terminal_edit_shows_the_message_it_edits(server, home, tmp_path):
    """TERM=dumb: /edit's inline edit> prompt is prompt_toolkit's plain prompt, which writes the prompt and then each
    key typed, never the default text: the message being edited was in the buffer, unseen, and what was typed went
    on after it (the screen showed `edit> bye`, the message sent was `hibye`)."""
    pexpect = pytest.importorskip("pexpect")
    env = {"TERM": "dumb", "VISUAL": "", "EDITOR": ""}
    child = spawn("--endpoint", server.url, home=home, cwd=tmp_path, env=env, prompt=False)
    child.logfile_read = seen = io.StringIO()
    child.expect_exact(">>>")
    child.sendline("hi")
    child.expect_exact("echo: hi")
    child.expect_exact(">>>")
    child.sendline("/edit")
    child.expect_exact("edit> ")
    child.send("bye")
    child.send("\r")
    child.expect_exact("echo: ")
    child.expect_exact(">>>")
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    line = next(ln for ln in seen.getvalue().replace("\r", "\n").split("\n") if ln.startswith("edit> "))
    assert "edit> " + sent(server) == line.rstrip(), (line, sent(server))


def test_a_dumb_terminal_edit_keeps_the_files_attached_to_the_message(server, home, tmp_path):
    """TERM=dumb: the line typed at edit> replaced the whole message, the file attached to it with it, without a
    word (the README: the files attached to it stay, as the inline editor and /edit TEXT keep them)."""
    pexpect = pytest.importorskip("pexpect")
    (tmp_path / "small.txt").write_text("the word is cobalt\n")
    env = {"TERM": "dumb", "VISUAL": "", "EDITOR": ""}
    child = spawn("--endpoint", server.url, home=home, cwd=tmp_path, env=env, prompt=False)
    child.expect_exact(">>>")
    child.sendline("/file small.txt")
    child.expect_exact(">>>")
    child.sendline("what is in the file")
    child.expect_exact("echo: ")
    child.expect_exact(">>>")
    first = sent(server)
    child.sendline("/edit")
    child.expect_exact("(type the new message (its attached files stay); an empty line keeps this one)")
    child.expect_exact("edit> ")
    child.sendline("which word is in it")
    child.expect_exact("the message keeps its 1 attached file")
    child.expect_exact(">>>")
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    assert sent(server) == first.replace("what is in the file", "which word is in it") and "cobalt" in first


def test_an_editor_keeps_a_crlf_file_attached_to_the_message(server, home, tmp_path):
    """/edit in $EDITOR read the file back with every CR turned into a new line, those of a CRLF file's block too:
    the block no longer matched, the file went into the message as text (no "keeps its file" notice), and a later
    `/edit TEXT` then dropped it."""
    pexpect = pytest.importorskip("pexpect")
    (tmp_path / "crlf.txt").write_bytes(b"hello\r\nworld\r\n")
    editor = tmp_path / "append.sh"
    editor.write_text('#!/bin/sh\nprintf " EDITED" >> "$1"\n')
    editor.chmod(0o755)
    child = spawn("--endpoint", server.url, home=home, cwd=tmp_path, env={"EDITOR": str(editor), "VISUAL": ""})
    for line, then in (("/file crlf.txt", ">>>"), ("what is in it", "echo: "), ("/edit", "keeps its 1 attached file")):
        child.sendline(line)
        child.expect_exact(then)
    child.expect_exact(">>>")
    edited = sent(server)
    child.sendline("/edit only this")
    child.expect_exact("echo: ")
    child.expect_exact(">>>")
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    assert "hello\r\nworld" in edited and edited.endswith("what is in it EDITED")
    assert "hello\r\nworld" in sent(server) and sent(server).endswith("only this")


def test_a_one_shot_prompt_that_fails_says_nothing_of_a_next_message(home, tmp_path):
    """A message that fails keeps its attachments "for the next message (/detach drops them)": a one-shot run has
    neither a next message nor /detach (it refuses /file for that reason), and a script's stderr keeps to errors.
    `yi-chat -f notes.txt -p TEXT` whose reply fails wrote that line after the error."""
    (tmp_path / "notes.txt").write_text("some notes\n")
    with OpenAIServer(ScriptedEngine(), model="served", error=(500, "boom")) as srv:
        p = yi("--endpoint", srv.url, "-f", str(tmp_path / "notes.txt"), "-p", "sum up", home=home)
    assert p.returncode == 1, p.stderr.decode()
    assert "next message" not in p.stderr.decode() and "/detach" not in p.stderr.decode(), p.stderr.decode()


def test_an_undo_of_the_only_exchange_of_a_0_1_0_session_leaves_no_session_to_resume(server, home):
    """A store file written by 0.1.0 has no `id` (store.read gives it its path's): the autosave's `conv` was None,
    so /undo of its only exchange left the file as it was and `-c` brought the undone exchange back, the defect the
    rule "/undo of a conversation's last exchange removes its file" fixed for newer files."""
    p = yi("--endpoint", server.url, stdin="only\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    [path] = (home / "data" / "sessions").glob("*.json")
    data = json.loads(path.read_text())
    del data["id"]  # as 0.1.0 wrote it
    path.write_text(json.dumps(data))
    p = yi("--endpoint", server.url, "--resume", str(path), stdin="/undo\n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    assert not path.exists() and session_files(home) == []


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["--temperature", "abc"]])
def test_help_version_and_usage_errors_give_the_terminal_back(home, tmp_path, args):
    """argparse's exit (--help, --version, a usage error) skipped the code that gives the terminal its echo back:
    the shell showed nothing typed after it, until `stty sane` (a fresh-clone walkthrough)."""
    pexpect = pytest.importorskip("pexpect")
    command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "yi_cli", *args])
    child = pexpect.spawn(
        "/bin/sh", ["-c", f"{command} > /dev/null 2>&1; echo EXIT; stty -a"], env=term_env(home), encoding="utf-8",
        timeout=60, cwd=str(tmp_path),
    )  # fmt: skip
    child.expect_exact("EXIT")
    child.expect(pexpect.EOF)
    modes = child.before.split()
    assert "echo" in modes and "icanon" in modes, child.before


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize(
    "args",
    [["sessions", "--json"], ["models", "--json"], ["completion", "bash"], ["--help"], ["--version"], ["pull", "-h"]],
)
def test_subcommand_into_a_full_disk_is_one_line(args, home):
    """`yi-chat sessions > /dev/full` (a full disk, an I/O error on stdout) was a traceback from print() (OSError:
    [Errno 28]); now one line saying stdout failed and that the listing is cut short, exit 1. --help and --version
    (the chat's or a subcommand's) exited 0 with nothing written: argparse ignores a write that fails."""
    e = {k: v for k, v in os.environ.items() if k not in CLEAN}
    e.update(YI_CHAT_HOME=str(home))
    with open("/dev/full", "w") as full:
        p = subprocess.run(
            [sys.executable, "-m", "yi_cli", *args],
            stdin=subprocess.DEVNULL,
            stdout=full,
            stderr=subprocess.PIPE,
            env=e,
            timeout=120,
        )
    one_line_error(p, 1, "stdout failed", f"yi-chat {args[0]} is cut short")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("json_out", [False, True])
@pytest.mark.parametrize("first", ["one", "/history"])
def test_piped_run_into_a_full_disk_stops_at_the_first_write(first, json_out, home, server):
    """A piped run into a full disk (`> /dev/full`) generated every line's reply and said of each "error: 'one'
    failed (OSError: [Errno 28] ...)", though the turn was saved; now it stops at the first reply or command output
    it cannot write (a reply kept in the session), one line saying stdout failed and where the session is, exit 1."""
    e = {k: v for k, v in os.environ.items() if k not in CLEAN}
    e.update(YI_CHAT_HOME=str(home))
    with open("/dev/full", "w") as full:
        p = subprocess.run(
            [sys.executable, "-m", "yi_cli", "--endpoint", server.url, *(["--json"] if json_out else [])],
            input=f"{first}\ntwo\nthree\n".encode(),
            stdout=full,
            stderr=subprocess.PIPE,
            env=e,
            timeout=120,
        )
    if first == "/history":  # its output failed: no line after it was sent
        one_line_error(p, 1, "stdout failed (No space left on device)", "no turn was saved")
        assert server.requests == []
    else:
        line = one_line_error(p, 1, "stdout failed (No space left on device)", "the session is saved in")
        assert [r["messages"][-1]["content"] for r in server.requests] == ["one"], line
        (saved,) = session_files(home)
        assert [t["content"] for t in saved["turns"] if t["role"] == "user"] == ["one"]


@pytest.mark.parametrize("stderr", ["a pipe its reader closed", "/dev/full"])
@pytest.mark.parametrize("one_shot", [False, True])
def test_a_failing_stderr_is_a_silent_chat(one_shot, stderr, home, server):
    """stderr whose reader is gone (`2>&1 | head -1`, `2> >(cmd)` that exited) or that fails (a full disk): rich
    ends the process with exit 1 at a BrokenPipeError, and an OSError from a notice escaped the turn, so a piped run
    stopped at its first line on stderr (the stats line here; a token-limit cut), the lines after it never sent,
    exit 1, and a one-shot run answered but exited 1. Now stderr goes quiet as a closed one does (`2>&-`): every
    line is sent, the exit code is the run's."""
    if stderr == "/dev/full" and not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    e = {k: v for k, v in os.environ.items() if k not in CLEAN}
    e.update(YI_CHAT_HOME=str(home))
    if stderr == "/dev/full":
        err = os.open("/dev/full", os.O_WRONLY)
    else:
        r, err = os.pipe()
        os.close(r)
    args = ["-p", "one"] if one_shot else []
    try:
        p = subprocess.run(
            [sys.executable, "-m", "yi_cli", "--endpoint", server.url, "--stats", *args],
            input=None if one_shot else b"one\ntwo\nthree\n",
            stdin=subprocess.DEVNULL if one_shot else None,
            stdout=subprocess.PIPE,
            stderr=err,
            env=e,
            timeout=120,
        )
    finally:
        os.close(err)
    want = ["one"] if one_shot else ["one", "two", "three"]
    assert [r["messages"][-1]["content"] for r in server.requests] == want
    assert p.returncode == 0
    assert p.stdout.decode().count("\n\n") == len(want)


@pytest.mark.parametrize("prompt", [["-p", "/history"], ["/system", "be", "terse"], ["stdin", "-p", "/history"]])
def test_a_one_shot_command_with_a_file_attached_says_it_was_not_sent(prompt, home, server, tmp_path):
    """`yi-chat -f notes.md -p /history` (or `yi-chat -f notes.md /system be terse`, `git diff | yi-chat -p
    /history`): the prompt ran as a command, the file waited for a message that never came, and the run ended 0
    with it dropped unsaid, where a piped run whose input ends so says it and exits 1. Now one line saying so,
    exit 1."""
    notes = tmp_path / "notes.md"
    notes.write_text("# notes\n")
    if prompt[0] == "stdin":  # piped stdin goes before a one-shot's prompt: an attachment named stdin
        p = yi("--endpoint", server.url, *prompt[1:], stdin="# notes\n", home=home)
        name = "stdin"
    else:
        p = yi("--endpoint", server.url, "-f", str(notes), *prompt, stdin=None, home=home)
        name = str(notes)
    err = p.stderr.decode()
    assert p.returncode == 1, err
    assert err.splitlines()[-1] == f"error: {name}: attached, but the prompt ran a command, not a message; not sent"
    assert server.requests == []


def test_a_model_folder_named_with_markup_loads_and_is_named_as_it_is(demo_dir, home, tmp_path):
    """`yi-chat -m 'models/m[/x]'` in a terminal ended in a MarkupError traceback: the "loading ..." spinner read the
    folder's name as rich markup (`[b]` vanished from it, `:x:` became an emoji)."""
    folder = tmp_path / "m[" / "x] [b]:x:"  # the path reads `.../m[/x] [b]:x:`
    folder.mkdir(parents=True)
    for f in Path(demo_dir).iterdir():
        (folder / f.name).symlink_to(f)
    child = spawn("-m", str(folder), home=home, cwd=tmp_path, prompt=False)
    child.expect_exact(f"loading {folder} ...")
    child.expect_exact(">>>")
    assert "Traceback" not in child.before and "❌" not in child.before
    assert leave(child) == 0


def _listing(h):
    """A server that lists one model, `served`, and answers any request with "pong"."""
    if h.command == "GET":
        return h.json(200, {"object": "list", "data": [{"id": "served"}]})
    h.sse_start()
    h.event({"choices": [{"index": 0, "delta": {"content": "pong"}, "finish_reason": "stop"}]})
    h.sse_end()


def test_a_configs_model_goes_only_to_the_configs_own_endpoint(home):
    """config.toml's `model = "/models/Yi-6B-Chat-4bits"` (the README's example) was sent as the model's name to
    a server given by --endpoint, which answered 404 to every turn: the server's first listed model was never
    asked for. With the config's own `endpoint`, its `model` names that server's model, as before."""
    from tests.compat_servers import Server

    (home / "config").mkdir()
    with Server(_listing) as srv:
        (home / "config" / "config.toml").write_text('model = "/models/Yi-6B-Chat-4bits"\n')
        p = yi("--endpoint", srv.root, "-p", "hi", home=home, stdin=None)
        assert p.returncode == 0 and p.stdout.decode().strip() == "pong", p.stderr.decode()
        assert [r["body"]["model"] for r in srv.requests if r["method"] == "POST"] == ["served"]
        (home / "config" / "config.toml").write_text(f'endpoint = "{srv.root}"\nmodel = "its-own"\n')
        p = yi("-p", "hi", home=home, stdin=None)
        assert p.returncode == 0, p.stderr.decode()
        assert srv.requests[-1]["body"]["model"] == "its-own"


def test_an_empty_api_key_flag_sends_no_key(home):
    """`--api-key ''` fell back to $OPENAI_API_KEY and sent OpenAI's key to the server named: '' is none, as
    `--endpoint ''` is the local model whatever the environment says."""
    from tests.compat_servers import Server

    with Server(_listing) as srv:
        env = {"OPENAI_API_KEY": "sk-meant-for-openai"}
        p = yi("--endpoint", srv.root, "--api-key", "", "-p", "hi", home=home, env=env, stdin=None)
        assert p.returncode == 0, p.stderr.decode()
        assert [r["headers"].get("Authorization") for r in srv.requests] == [None, None]
        p = yi("--endpoint", srv.root, "-p", "hi", home=home, env=env, stdin=None)
        assert srv.requests[-1]["headers"].get("Authorization") == "Bearer sk-meant-for-openai"


def test_a_servers_flags_given_to_a_local_model_are_said_to_be_ignored(home):
    """`--deadline`, `--idle-timeout`, `--connect-timeout` and `--api-key` with a local model did nothing without a
    word, as `--device` with a server is said to (and `--allow-pickle`, `--trust-remote-code` there too)."""
    from tests.compat_servers import Server

    flags = ["--deadline", "5", "--api-key", "k", "--max-new-tokens", "1"]
    p = yi("-m", "demo", *flags, "-p", "hi", home=home, stdin=None)
    assert p.returncode == 0, p.stderr.decode()
    assert "--api-key, --deadline: a server's (--endpoint); the local model has none (ignored)" in p.stderr.decode()
    with Server(_listing) as srv:
        p = yi("--endpoint", srv.root, "--allow-pickle", "--trust-remote-code", "-p", "hi", home=home, stdin=None)
    assert "--allow-pickle, --trust-remote-code: a local model's; the server" in p.stderr.decode(), p.stderr.decode()


def test_an_abbreviated_version_flag_to_a_full_stdout_names_itself():
    """`yi-chat --vers > /dev/full` (argparse takes --vers for --version) said "the output of yi-chat --help is cut
    short"."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with open("/dev/full", "wb") as full:
        p = subprocess.run([sys.executable, "-m", "yi_cli", "--vers"], stdout=full, stderr=subprocess.PIPE, timeout=120)
    assert p.returncode == 1 and "the output of yi-chat --version is cut short" in p.stderr.decode(), p.stderr


def test_a_non_ascii_file_name_typed_in_an_ascii_locale_is_attached_and_saved_to(server, home, tmp_path):
    """LC_ALL=C without Python's UTF-8 mode: `/file 文件.txt` was "not a valid file name" and `/save 目录/x.json` an
    'ascii' codec error, where `-f 文件.txt` (argv) attached the same file (a terminals review)."""
    (tmp_path / "文件.txt").write_text("the notes in a file\n")
    (tmp_path / "目录").mkdir()
    env = {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONPATH": str(ROOT)}
    script = "/file 文件.txt\nsummarize\n/save 目录/会话.json\n"
    p = yi("--endpoint", server.url, stdin=script, home=home, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    assert "the notes in a file" in sent(server)
    saved = json.loads((tmp_path / "目录" / "会话.json").read_text())
    assert [t["content"] for t in saved["turns"]][1] == "echo: " + sent(server)


def test_a_signal_that_ends_a_chat_with_files_attached_names_them(server, home, tmp_path):
    """`/file notes.txt`, then SIGTERM before a message took it: the run said only "terminated", where Ctrl-D or the
    input's end says the file went unsent. The ending line names it."""
    (tmp_path / "notes.txt").write_text("n\n")
    e = {k: v for k, v in os.environ.items() if k not in CLEAN}
    e.update(YI_CHAT_HOME=str(home))
    proc = subprocess.Popen(
        [sys.executable, "-m", "yi_cli", "--endpoint", server.url],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=e,
        cwd=tmp_path,
    )
    watchdog = threading.Timer(120, proc.kill)  # a broken wait fails the test instead of hanging it
    watchdog.start()
    try:
        proc.stdin.write(b"/file notes.txt\n")
        proc.stdin.flush()
        first = proc.stdout.readline().decode()  # attached: the chat waits on stdin, which stays open
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read().decode()
        proc.wait(timeout=120)
    finally:
        watchdog.cancel()
        proc.kill()
        proc.stdin.close()
        proc.stdout.close()
        proc.stderr.close()
    assert first.startswith("attached notes.txt"), first
    assert proc.returncode == 143 or proc.returncode == 130, (proc.returncode, rest)
    assert rest.splitlines()[-1].startswith("yi-chat: terminated; notes.txt: attached, not sent"), rest

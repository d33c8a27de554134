"""The installed command as a user runs it: exit codes, one-line errors, pipes, one-shot, JSON."""

import json
import os
import signal
import subprocess
import sys

import pytest

from yi_cli.ui.args import parser


def yi(*args, stdin="", env=None, timeout=300):
    e = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "yi_cli", *args],
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True,
        timeout=timeout,
        env=e,
    )


def one_line_error(p, code, *needles):
    err = p.stderr.decode()
    assert p.returncode == code, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0]


def test_flags_parse_with_seed_defaults():
    a = parser().parse_args(["--model", "x", "--temperature", "0", "--top-p", "0.5", "--seed", "3", "-p", "hi"])
    assert (a.model, a.temperature, a.top_p, a.seed, a.prompt) == ("x", 0.0, 0.5, 3, "hi")
    from yi_cli.engines.settings import GenSettings

    d = GenSettings()
    assert (d.temperature, d.top_p, d.repetition_penalty) == (0.6, 0.8, 1.2)


def test_help_states_the_sampling_defaults_in_force():
    """--help said "default: the model's, else 0.6", but only the demo brings its own values (a checkpoint's
    generation_config.json sets none): each sampling flag's help names the built-in default, and the demo's where
    it differs, as the settings hold them."""
    import re

    from yi_cli.checkpoint import demo
    from yi_cli.engines.settings import GenSettings

    helps = {a.dest: a.help for a in parser()._actions}
    for name in ("temperature", "top_p", "top_k", "repetition_penalty"):
        said = re.search(r"default ([0-9.]+)(?:, Yi's; the demo's ([0-9.]+))?\)", helps[name])
        assert said, helps[name]
        assert float(said[1]) == getattr(GenSettings(), name), helps[name]
        ours = demo.RECOMMENDED.get(name)
        assert (float(said[2]) if said[2] else None) == (ours if ours != getattr(GenSettings(), name) else None)


def test_usage_errors_exit_2():
    p = yi("--temperature", "hot")
    assert p.returncode == 2 and b"invalid float value" in p.stderr
    p = yi("--model", "x", "--top-p", "3", "-p", "hi")
    one_line_error(p, 2, "yi-chat: --top-p must be in (0, 1], got 3.0")  # the flag typed, not the setting


@pytest.mark.parametrize("second", ["-p", "--prompt"])
def test_two_prompt_flags_are_a_usage_error(second):
    """`-p a -p b` answered b alone: the first prompt was dropped unsaid (run-through 4)."""
    one_line_error(yi("-m", "demo", "-p", "first", second, "second"), 2, f"two prompts: {second} is given twice")


def test_missing_model_dir_exits_3(tmp_path):
    one_line_error(yi("--model", str(tmp_path / "nope"), "-p", "hi"), 3, "no such directory")


def test_model_that_is_a_file_exits_3(tmp_path):
    f = tmp_path / "weights.safetensors"
    f.write_bytes(b"x")
    one_line_error(yi("--model", str(f), "-p", "hi"), 3, "is a file")


def test_corrupt_config_exits_3(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    one_line_error(yi("--model", str(tmp_path), "-p", "hi"), 3, "corrupt config.json", str(tmp_path))


def test_cuda_without_cuda_exits_3(demo_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    one_line_error(yi("--model", "demo", "--device", "cuda", "-p", "hi"), 3, "CUDA is not available")


def test_help_documents_exit_codes():
    out = yi("--help").stdout.decode()
    for code in ("0 ", "1 ", "2 ", "3 ", "130"):
        assert f"\n  {code}" in out


@pytest.mark.parametrize("columns", [50, 80, 100, 200])
def test_help_fits_the_terminal_and_keeps_every_word(columns):
    """The epilog was laid out for 115 columns: at 80 its lines broke mid-word into the first column (a fresh-clone
    walkthrough). Every line now fits (at most 100 columns however wide the terminal), no word is lost or split,
    and an exit code's text goes on under itself."""
    from yi_cli.ui.args import EPILOG

    out = yi("--help", env={"COLUMNS": str(columns)}).stdout.decode()
    epilog = out[out.index("examples:") :]
    lines = epilog.splitlines()  # (argparse's usage block keeps an option and its metavar on one line)
    assert max(map(len, lines)) <= min(columns, 100), [ln for ln in lines if len(ln) > min(columns, 100)]
    assert epilog.split() == EPILOG.replace("\\\n", "").split()
    code1 = lines.index(next(ln for ln in lines if ln.startswith("  1    ")))
    assert lines[code1 + 1].startswith(" " * 7) and lines[code1 + 1][7] != " "


@pytest.mark.slow
def test_piped_two_turn_session_with_history(demo_dir):
    script = "What is the capital of France?\nWhat is the population of that city?\n/history\n"
    p = yi("--model", "demo", "--temperature", "0", "--max-new-tokens", "40", stdin=script)
    out, err = p.stdout.decode(), p.stderr.decode()
    assert p.returncode == 0, err
    assert "\x1b[" not in out  # no ANSI codes into a pipe
    replies = out.split("\n\n")
    assert "Paris" in replies[0]
    assert "Paris" in replies[1]  # "that city" resolves only through the first turn
    assert "user" in out and "assistant" in out and "population of that city" in out


@pytest.mark.slow
def test_one_shot_json(demo_dir):
    p = yi("--model", "demo", "--temperature", "0", "--json", "-p", "What is the capital of France?")
    assert p.returncode == 0, p.stderr.decode()
    obj = json.loads(p.stdout.decode().strip())
    assert "Paris" in obj["reply"] and obj["finish_reason"] == "stop"
    assert obj["prompt"] == "What is the capital of France?" and obj["new_tokens"] > 0 and obj["prompt_tokens"] > 0


@pytest.mark.slow
def test_bad_lines_in_a_pipe_are_skipped_loudly(demo_dir):
    p = yi(
        "--model",
        "demo",
        "--temperature",
        "0",
        "--max-new-tokens",
        "5",
        stdin=b"\xff\xfe bad\n/bogus\nhi\x00there\n/history\n",
    )
    err = p.stderr.decode()
    assert p.returncode == 1 and "Traceback" not in err
    assert "stdin line 1 is not valid UTF-8" in err and "unknown command /bogus" in err and "NUL byte" in err


@pytest.mark.slow
@pytest.mark.parametrize("end", [b"\r\n", b"\r"], ids=["crlf", "cr"])
def test_a_prompt_file_with_a_bom_runs_its_first_command(demo_dir, end):
    """A prompt file saved as UTF-8 with BOM (Notepad, PowerShell) and CRLF: the BOM began the first line, so its
    /system went to the model as a message (-f and -p - dropped it already). Ended by bare CRs (classic Mac), the
    whole file was one message."""
    p = yi(
        *("--model", "demo", "--temperature", "0", "--max-new-tokens", "3", "--json"),
        stdin=b"\xef\xbb\xbf/system Be terse." + end + b"Hi" + end,
    )
    assert p.returncode == 0, p.stderr.decode()
    objs = [json.loads(x) for x in p.stdout.decode().splitlines()]
    assert objs[0] == {"command": "system", "output": "system prompt set\n"}
    assert [o["prompt"] for o in objs[1:]] == ["Hi"]


@pytest.mark.slow
@pytest.mark.parametrize("json_lines", [False, True])
def test_text_with_emoji_codes_is_shown_as_written(demo_dir, tmp_path, json_lines):
    """rich turns `:name:` into an emoji: `/system be :smile: a[:x:2]` was shown back as "be 😄 a[❌2]" by /system,
    /prompt (the prompt "as the model sees it") and a pipe's or --json's copy, and a file named a:x:b.txt as a❌b.txt
    in /file's lines and errors. The model got the text as typed; the screen did not show it."""
    named = tmp_path / "a:x:b.txt"
    named.write_text("x[:x:2]\n")
    text = "be :smile: a[:x:2] :thumbs_up:"
    script = f"/system {text}\n/system\n/prompt\n/file {named}\n/file {tmp_path}/no:smile:.txt\n"
    script += "Hi :x: there\n/history\n"
    p = yi("--model", "demo", "--max-new-tokens", "2", *(["--json"] if json_lines else []), stdin=script)
    out, err = p.stdout.decode(), p.stderr.decode()
    assert p.returncode == 1, err  # the missing file
    if json_lines:
        objs = [json.loads(line) for line in out.splitlines()]
        out = "".join(o.get("output", "") for o in objs)
    assert f"system prompt: {text}" in out and f"system\n{text}<|im_end|>" in out, out
    assert f"attached {named}" in out and f"error: {tmp_path}/no:smile:.txt: cannot read" in err
    table = out[out.index(" #  role") :]
    assert f"system             {text}" in table and "user       " in table and "Hi :x: there" in table, table
    assert not any(c in out + err for c in "😄❌👍"), out + err


@pytest.mark.slow
def test_a_pipe_that_ends_with_an_attachment_waiting_says_it_was_not_sent(demo_dir, tmp_path):
    """`/file notes.md` as a prompt file's last line: the file waited for a message that never came, and the run
    ended 0 with nothing sent (run-through 4)."""
    notes = tmp_path / "notes.md"
    notes.write_text("# notes\n")
    p = yi("--model", "demo", "--max-new-tokens", "3", stdin=f"Hi\n/file {notes}\n")
    err = p.stderr.decode()
    assert p.returncode == 1, err
    assert err.splitlines()[-1] == f"error: {notes}: attached, but the input ended before a message took it; not sent"


@pytest.mark.slow
def test_an_empty_stdin_with_a_file_attached_says_so_in_one_true_line(demo_dir, tmp_path):
    """`yi-chat -f notes.md < /dev/null`: the file was attached and then nothing came; that once, not also "stdin is
    empty" (run-through 4 said "no message followed" and "nothing to do": two lines, one of them false)."""
    notes = tmp_path / "notes.md"
    notes.write_text("# notes\n")
    p = yi("--model", "demo", "-f", str(notes), stdin=b"")
    err = p.stderr.decode()
    assert p.returncode == 1, err
    assert "nothing to do" not in err, err
    assert err.count("not sent") == 1, err
    assert err.splitlines()[-1] == f"error: {notes}: attached, but the input ended before a message took it; not sent"


@pytest.mark.slow
@pytest.mark.parametrize("model", ["demo", "demo-gptq8"])
def test_both_quantized_demos_answer_paris(model, demo_dir):
    p = yi("--model", model, "--temperature", "0", "--json", "-p", "What is the capital of France?")
    assert p.returncode == 0, p.stderr.decode()
    assert "Paris" in json.loads(p.stdout.decode())["reply"]
    from yi_cli.checkpoint import demo, files

    quant = files.read_config(demo.ensure(model)).get("quantization_config", {})
    assert (quant.get("quant_method"), quant.get("bits")) == (("awq", 4) if model == "demo" else ("gptq", 8))


def as_a_shell_starts_a_command() -> None:
    """In the child: the four signals at their default action, whatever this run inherited (a CI job started in the
    background of a non-interactive shell has SIGINT and SIGQUIT ignored, and yi-chat leaves an ignored one so)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)


def run_script(code: str, *args: str) -> subprocess.CompletedProcess:
    """`python -c code args` with the signals as a shell starts a command."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        timeout=120,
        env=os.environ,
        preexec_fn=as_a_shell_starts_a_command,
    )


LATE_SIGNAL = r"""
import os, signal, sys
from yi_cli.ui import cli

when, sig = sys.argv[1], getattr(signal, sys.argv[2])
sys.argv[1:] = []  # entry() sees no subcommand

def main():
    if when == "during":
        os.kill(os.getpid(), sig)  # its handler runs here, inside main
    return 0

def unhold():  # what entry() does after main() has ended; the signal lands there
    if when == "after":
        os.kill(os.getpid(), sig)
    sys.stderr.write("unheld\n")

class Late:
    def __del__(self):  # run as the interpreter tears its modules down, past its own signal handling's end
        os.kill(os.getpid(), sig)
        sys.stderr.write("torn down\n")

if when == "teardown":
    late = Late()

cli.main = main
cli._unhold_early = unhold
cli.entry()
"""


@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 130), ("SIGHUP", 129), ("SIGQUIT", 131)])
def test_a_signal_just_after_the_chat_ended_is_no_traceback(sig, code):
    """soak_signals.py found them: a SIGHUP landing after main() had returned (the chat done and saved) raised its
    handler's KeyboardInterrupt outside every try: a traceback and exit 1; and one landing as Python tore its
    modules down (~0.3 s with torch), when it has put its handlers back to the default action, killed the process.
    Now main's own code stands. During main, the signal's documented code as before."""
    for when, want in (("after", 0), ("teardown", 0), ("during", code)):
        p = run_script(LATE_SIGNAL, when, sig)
        err = p.stderr.decode()
        assert p.returncode == want and "Traceback" not in err, (when, p.returncode, err)
        assert "unheld" in err  # the rest of the way out ran
        assert ("torn down" in err) == (when == "teardown")  # the signal was sent there, and ignored


START_SIGNAL = r"""
import os, signal, sys
from yi_cli.ui import cli

when, sig = sys.argv[1], getattr(signal, sys.argv[2])
sys.argv[1:] = []  # entry() sees no subcommand: a chat's start

def parse_args(argv):  # the signal lands inside the command line's parse
    os.kill(os.getpid(), sig)
    sys.stderr.write("parsed\n")
    raise SystemExit(0)  # the parse ended (--help): the held signal is still delivered

def main():  # the signal lands in main; a second one inside the write of the first's line
    os.kill(os.getpid(), sig)
    return 0

def second(line):
    cli._err = err
    os.kill(os.getpid(), signal.SIGHUP)
    err(line)

err = cli._err
if when == "parse":
    cli.parse_args = parse_args
else:
    cli.main = main
    cli._err = second
cli.entry()
"""


@pytest.mark.parametrize(
    "sig,code,words", [("SIGINT", 130, "interrupted"), ("SIGTERM", 130, "terminated"), ("SIGQUIT", 131, "quit")]
)
def test_a_signal_in_the_start_says_one_line_and_keeps_its_code(sig, code, words):
    """A helper's stress of start-up found: a signal while the command line was parsed ended yi-chat with its code
    but no line (entry() took the KeyboardInterrupt without a word), and argparse's intermixed parse cut by it raised
    AttributeError ('save_nargs') from its own cleanup, a traceback; a second signal landing while the first's line
    was written left no line, or a second one with its own code. The parse holds the signals (it takes ms); the
    first signal says the one line and keeps its code."""
    for when in ("parse", "second"):
        p = run_script(START_SIGNAL, when, sig)
        want = (["parsed"] if when == "parse" else []) + [f"yi-chat: {words}"]
        assert (p.returncode, p.stderr.decode().splitlines()) == (code, want), when


EARLY_TWICE = r"""
import os, signal
from yi_cli import launch

real = os.write

def write(fd, data):  # a second signal lands while the first's line is written
    os.write = real
    os.kill(os.getpid(), signal.SIGHUP)
    return real(fd, data)

launch.catch(launch.ENDING, launch._early)
os.write = write
os.kill(os.getpid(), signal.SIGQUIT)
"""


def test_a_second_signal_in_the_first_imports_leaves_the_firsts_line_and_code():
    """launch's handler, run again inside itself by a second signal, wrote a second line and exited with the second
    signal's code (SIGQUIT then SIGHUP: "hung up", 129)."""
    p = run_script(EARLY_TWICE)
    assert (p.returncode, p.stderr.decode().splitlines()) == (131, ["yi-chat: quit"])


IMPORT_CALLBACK = r"""
import signal, sys, time
from yi_cli.ui import cli

CB = '''
def cb(signum):
    try:
        cli._interrupt(signum, sys._getframe())
    except KeyboardInterrupt:
        return "raised inside the callback"
    return "returned"
'''
ns = {"cli": cli, "sys": sys}  # a function as importlib's module-lock callback is: named cb, in its frozen file
exec(compile(CB, "<frozen importlib._bootstrap>", "exec"), ns)
signal.signal(signal.SIGINT, cli._interrupt)
try:
    print(ns["cb"](signal.SIGINT), flush=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.01)
    print("never raised")
except KeyboardInterrupt:
    print("raised after the callback")
"""


def test_a_signal_inside_an_imports_callback_is_raised_after_it():
    """Python prints and drops an exception raised inside importlib's module-lock callback ("Exception ignored in
    ... cb", a traceback on stderr): a Ctrl-C landing there at start-up was lost, the run went on. The handler sends
    the signal again, to be raised once the callback has returned."""
    p = run_script(IMPORT_CALLBACK)
    out = p.stdout.decode()  # "returned" first, where the signal came after its print (or inside it)
    assert out.endswith("raised after the callback\n") and "inside" not in out, (out, p.stderr)


DURING_IMPORTS = r"""
import os, runpy, signal, sys

SIG = getattr(signal, sys.argv[1])

class Hook:  # the signal arrives while the CLI's module is being imported, before its own handlers exist
    def find_spec(self, name, path=None, target=None):
        if name == "yi_cli.ui.cli":
            os.kill(os.getpid(), SIG)
        return None

sys.meta_path.insert(0, Hook())
sys.argv[1:] = []
runpy.run_module("yi_cli", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(
    "sig,code,words", [("SIGINT", 130, "interrupted"), ("SIGTERM", 130, "terminated"), ("SIGQUIT", 131, "quit")]
)
def test_a_signal_during_the_first_imports_is_one_line(sig, code, words):
    """The ~70 ms before the CLI's handlers exist: Ctrl-C printed a KeyboardInterrupt traceback, SIGTERM and SIGQUIT
    killed the process (SIGQUIT dumping core). yi_cli.launch catches them first: one line, the documented code."""
    p = run_script(DURING_IMPORTS, sig)
    one_line_error(p, code, f"yi-chat: {words}")

"""Issue 4's chat features driven through the real `yi-chat` in a real pseudo-terminal, on the real demo model.

Each test gets its own YI_CHAT_HOME (session files, autosave, history, config) whose cache/ links to the shared
demo cache, so `--model demo` works without converting the demo again. Replies are checked through the autosave
file (the screen shows them as live redraws); commands through their text on the screen.
"""

import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")
pytestmark = pytest.mark.slow
PROMPT = ">>>"  # prompt_toolkit draws the trailing space with cursor moves
CPR_REQUEST = "\x1b[6n"
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")
SGR = re.compile(r"\x1b\[([0-9;]*)m")
FOOTER = re.compile(r"(stop|length) · (\d+) prompt tok · (\d+) new tok · ttft (\d+\.\d+)s · (\d+\.\d+) tok/s")
TIMEOUT = 90


def plain(text: str) -> str:
    return ANSI.sub("", text).replace("\r", "")


def flat(text: str) -> str:
    """Whitespace collapsed: rich wraps long lines at the terminal width."""
    return " ".join(text.split())


def colour_codes(raw: str) -> list[str]:
    """SGR sequences that set a foreground/background colour (30-38, 40-48, 90-97, 100-107)."""
    bad = []
    for m in SGR.finditer(raw):
        params = [int(p) for p in m.group(1).split(";") if p]
        if any(30 <= p <= 38 or 40 <= p <= 48 or 90 <= p <= 97 or 100 <= p <= 107 for p in params):
            bad.append(m.group(0))
    return bad


def make_home(tmp_path: Path, demo_dir) -> Path:
    """A private YI_CHAT_HOME whose cache is the shared one (the demo checkpoints live in <cache>/demo/)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(Path(demo_dir).parent.parent, target_is_directory=True)
    return home


OPEN: list = []


@pytest.fixture(autouse=True)
def _close_terms():
    """A test that fails mid-session leaves no yi-chat process behind."""
    yield
    while OPEN:
        child = OPEN.pop()
        if child.isalive():
            child.close(force=True)


class Term:
    """yi-chat in a pty. With cpr=True it behaves like a real terminal and answers cursor-position requests, which
    prompt_toolkit needs before it draws the bottom toolbar (with PROMPT_TOOLKIT_NO_CPR=1 the toolbar stays hidden)."""

    def __init__(self, *args, home: Path, cpr: bool = False, env: dict | None = None):
        base = {
            k: v for k, v in os.environ.items() if k not in ("EDITOR", "VISUAL", "NO_COLOR", "PROMPT_TOOLKIT_NO_CPR")
        }
        base.update(TERM="xterm-256color", COLUMNS="100", LINES="40", YI_CHAT_HOME=str(home))
        if not cpr:
            base["PROMPT_TOOLKIT_NO_CPR"] = "1"
        base.update(env or {})
        self.cpr = cpr
        self.log = io.StringIO()
        # Run in the test's tmp dir so that file arguments are short relative names (long lines wrap on screen).
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "yi_cli", *args],
            env=base,
            encoding="utf-8",
            dimensions=(40, 100),
            timeout=TIMEOUT,
            cwd=str(home.parent),
        )
        self.child.logfile_read = self.log
        OPEN.append(self.child)
        self.expect(PROMPT)

    def expect(self, pattern, regex: bool = False) -> str:
        """Wait for `pattern` (literal unless regex; or pexpect.EOF); returns the plain text up to and including it."""
        pats = [pattern if pattern is pexpect.EOF or regex else re.escape(pattern)]
        if self.cpr:
            pats.append(re.escape(CPR_REQUEST))
        seen = ""
        while True:
            i = self.child.expect(pats)
            seen += self.child.before + (self.child.after if isinstance(self.child.after, str) else "")
            if i == 0:
                return plain(seen)
            self.child.send("\x1b[30;1R")  # row 30 of 40: room below the prompt for the toolbar

    def cmd(self, line: str, until: str, regex: bool = False) -> str:
        """Send a line, wait for `until` in its output (not in the echoed line!) and the next prompt; the text."""
        self.child.sendline(line)
        out = self.expect(until, regex)
        return out + self.expect(PROMPT)

    def turn(self, line: str) -> re.Match:
        """Send a chat message; wait for the footer line and the next prompt; the footer's match."""
        self.child.sendline(line)
        m = FOOTER.search(self.expect(FOOTER.pattern, regex=True))
        self.expect(PROMPT)
        return m

    def paste(self, text: str, chunk: int = 2048) -> None:
        """A bracketed paste, written in chunks while draining the screen output: a single blocking write of
        tens of KB fills the pty both ways (the child redraws what it reads) and deadlocks."""
        data = "\x1b[200~" + text + "\x1b[201~"
        for i in range(0, len(data), chunk):
            self.child.send(data[i : i + chunk])
            self._drain()
        self._drain(0.5)

    def _drain(self, timeout: float = 0.05) -> None:
        try:
            while True:
                out = self.child.read_nonblocking(65536, timeout=timeout)
                if self.cpr and CPR_REQUEST in out:
                    self.child.send("\x1b[30;1R")
        except pexpect.TIMEOUT:
            pass

    def exit(self) -> int:
        self.child.sendcontrol("d")
        self.expect(pexpect.EOF)
        self.child.close()
        return self.child.exitstatus

    @property
    def raw(self) -> str:
        return self.log.getvalue()


def last_session_file(home: Path) -> Path:
    """The newest file of the session store (each conversation has its own)."""
    return max((home / "data" / "sessions").glob("*.json"), key=lambda p: json.loads(p.read_text())["updated"])


def last_session(home: Path) -> dict:
    return json.loads(last_session_file(home).read_text())


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


# 1. sessions as files ------------------------------------------------------------------------------------------------


def test_save_resume_autosave_and_refused_load(demo_dir, tmp_path):
    home = make_home(tmp_path, demo_dir)
    saved = tmp_path / "france.json"
    flags = ("--model", "demo", "--temperature", "0", "--max-new-tokens", "8")
    t = Term(*flags, home=home)
    t.turn("What is the capital of France?")
    out = t.cmd("/save france.json", "saved to")
    assert "saved to france.json" in out
    assert mode(saved) == 0o600
    data = json.loads(saved.read_text())
    assert data["format"] == "yi-chat-session" and data["system"] is None
    assert [x["role"] for x in data["turns"]] == ["user", "assistant"]
    assert data["settings"]["temperature"] == 0 and data["settings"]["max_new_tokens"] == 8
    # the autosave follows every finished turn, privately
    t.turn("And of Germany?")
    auto = last_session_file(home)
    assert mode(auto) == 0o600
    assert [x["content"] for x in last_session(home)["turns"][::2]] == [
        "What is the capital of France?",
        "And of Germany?",
    ]
    # malformed and foreign files: one line each, the session untouched
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "yi-chat-session", "version": 1, "turns": [')
    out = t.cmd("/load bad.json", "error:")
    out += t.cmd("/history", "Germany")
    assert "corrupt session file" in flat(out)
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}))
    out = t.cmd("/load foreign.json", "error:")
    assert "not a yi-chat session file" in flat(out)
    swapped = tmp_path / "swapped.json"
    swapped.write_text(json.dumps({**data, "turns": data["turns"][::-1]}))
    out = t.cmd("/load swapped.json", "error:")
    assert "malformed session file" in flat(out) and "roles alternate" in flat(out)
    hist = t.cmd("/history", "Germany")
    for n in ("1", "2", "3", "4"):
        assert re.search(rf"^\s*{n}\s+(user|assistant)\s", hist, re.M), hist
    assert "France" in hist and "Germany" in hist
    assert t.exit() == 0

    t = Term("--resume", "france.json", *flags, home=home)  # the /save file: one exchange
    hist = t.cmd("/history", "assistant")
    assert "What is the capital of France?" in hist and "Germany" not in hist
    assert re.search(r"^\s*2\s+assistant\s", hist, re.M) and not re.search(r"^\s*3\s+user", hist, re.M)
    assert t.exit() == 0

    t = Term("--resume", "last", *flags, home=home)  # the autosave: both exchanges
    hist = t.cmd("/history", "Germany")
    assert "What is the capital of France?" in hist
    assert re.search(r"^\s*4\s+assistant\s", hist, re.M), hist
    assert t.exit() == 0


# 2. editing the conversation ----------------------------------------------------------------------------------------


def test_retry_undo_edit_continue(demo_dir, tmp_path):
    home = make_home(tmp_path, demo_dir)
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nsed -i s/France/Italy/ "$1"\n')
    editor.chmod(0o755)
    t = Term("--model", "demo", "--temperature", "0", "--max-new-tokens", "10", home=home, env={"EDITOR": str(editor)})
    t.turn("What is the capital of France?")
    first = last_session(home)["turns"]
    assert [x["role"] for x in first] == ["user", "assistant"]

    t.turn("/retry")  # greedy: the same reply again, in place of the old one
    turns = last_session(home)["turns"]
    assert [x["role"] for x in turns] == ["user", "assistant"]
    assert turns[0]["content"] == first[0]["content"] and turns[1]["content"] == first[1]["content"]

    t.cmd("/set temperature 1.0", "temperature = 1.0")
    t.turn("/retry 7")
    a = last_session(home)["turns"]
    t.turn("/retry 7")
    b = last_session(home)["turns"]
    assert len(a) == len(b) == 2 and a[1]["content"] == b[1]["content"], "the same seed gives the same reply"
    seed_listing = t.cmd("/set", "seed = ")  # checked at the end
    t.cmd("/set temperature 0", "temperature = 0.0")

    t.turn("/edit")  # $EDITOR rewrites the last user message; the reply is regenerated
    turns = last_session(home)["turns"]
    assert [x["content"] for x in turns[::2]] == ["What is the capital of Italy?"]
    hist = t.cmd("/history", "assistant")
    assert "Italy" in hist and "France?" not in hist

    t.cmd("/undo", "removed the last exchange")
    t.cmd("/history", "no turns yet")
    assert "/continue extends a reply cut" in flat(t.cmd("/continue", "error:"))

    t.cmd("/set max_new_tokens 4", "max_new_tokens = 4")
    m = t.turn("Write a long story about a dragon.")
    assert m.group(1) == "length" and m.group(3) == "4"
    cut = last_session(home)["turns"]
    assert cut[1]["finish_reason"] == "length" and cut[1]["tokens"] == 4
    t.turn("/continue")
    grown = last_session(home)["turns"]
    assert [x["role"] for x in grown] == ["user", "assistant"], "history stays alternating"
    assert grown[1]["content"].startswith(cut[1]["content"]) and len(grown[1]["content"]) > len(cut[1]["content"])
    assert grown[1]["tokens"] == 8
    hist = t.cmd("/history", "[length]")
    assert "dragon" in hist and not re.search(r"^\s*3\s", hist, re.M)
    assert t.exit() == 0
    assert re.search(r"seed = None +\(default\)", seed_listing), seed_listing  # /retry 7 was for that reply only


def toolbar(t: Term) -> int:
    """The context used the toolbar shows at the prompt (drawn after the prompt itself)."""
    return int(re.search(r"ctx (\d+)/8192", t.expect(r"ctx \d+/8192", regex=True)).group(1))


def prompt_count(t: Term) -> int:
    """The token count /prompt gives for the conversation as it stands."""
    return int(re.search(r"\((\d+) tokens\)", t.cmd("/prompt", r"\(\d+ tokens\)", regex=True)).group(1))


# 3. live settings, 4. stats and the context meter, 5. inspection, 2. inline /edit ---------------------------------


def test_settings_stats_meter_inspection_and_inline_edit(demo_dir, tmp_path):
    home = make_home(tmp_path, demo_dir)
    t = Term("--model", "demo", "--temperature", "0", "--max-new-tokens", "12", home=home, cpr=True)
    t.expect("ctx 0/8192")  # the toolbar's context meter, drawn once the terminal reported the cursor position
    out = t.cmd("/set", "seed = ")
    for line in (
        "temperature = 0.0  (flag)",
        "top_p = 0.9  (model)",
        "top_k = 0  (default)",
        "repetition_penalty = 1.0  (model)",
        "max_new_tokens = 12  (flag)",
        "seed = None  (default)",
    ):
        assert line in out, out

    assert "system prompt set" in t.cmd("/system You are a pirate.", "system prompt set")
    assert "system prompt: You are a pirate." in t.cmd("/system", "system prompt:")
    t.cmd("/set temperature 0.5", "temperature = 0.5")
    mark = len(t.raw)
    out = t.cmd("/set top_p 2", "error:")
    assert "top_p must be in (0, 1], got 2.0" in flat(out)
    assert colour_codes(t.raw[mark:]), "errors are coloured (the NO_COLOR test relies on seeing colour here)"
    out = t.cmd("/set", "seed = ")
    assert "temperature = 0.5  (command)" in out and "top_p = 0.9  (model)" in out
    t.cmd("/set temperature 0", "temperature = 0.0")

    m = t.turn("What is the capital of France?")
    reason, prompt_tok, new_tok = m.group(1), int(m.group(2)), int(m.group(3))
    assert reason in ("stop", "length") and prompt_tok > 10 and 1 <= new_tok <= 12
    assert float(m.group(4)) > 0 and float(m.group(5)) > 0
    meter = toolbar(t)
    out = t.cmd("/stats", "context used")
    assert "replies since the chat started: 1  (interrupted 0, cut by length " in out
    assert f"tokens generated: {new_tok}" in out
    assert re.search(r"mean time to first token: \d+\.\d+ s", out) and re.search(
        r"mean decode speed: [\d.]+ tok/s", out
    )
    used = int(re.search(r"context used: (\d+) / 8192 tokens", out).group(1))
    assert meter == used > prompt_tok, "the toolbar shows the context used after the reply"

    out = t.cmd("/prompt", r"\(\d+ tokens\)", regex=True)
    for piece in (
        "<|im_start|>system\nYou are a pirate.<|im_end|>",
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>",
        "<|im_start|>assistant\n",
    ):
        assert piece in out, out
    # the conversation so far, the reply's turn closed, and no opening of another reply (no request sends that)
    assert re.search(r"<\|im_start\|>assistant\n.+?<\|im_end\|>\s*\(\d+ tokens\)", out, re.S), out
    assert out.count("<|im_start|>assistant") == 1, out
    # what the context holds, the toolbar's count: the prompt and the reply, its turn closed by "<|im_end|>\n" (the
    # toolbar had the turn's prompt and generated tokens, short of the closing: 86 against 88)
    assert int(re.search(r"\((\d+) tokens\)", out).group(1)) == used

    out = t.cmd("/model", "lm_head")
    for pattern in (
        r"architecture\s+LlamaForCausalLM",
        r"layers\s+30\b",
        r"hidden / intermediate\s+576 / 1536",
        r"heads / kv heads\s+9 / 3\b",
        r"vocab\s+49152",
        r"context\s+8192",
        r"rope theta\s+\d",
        r"quantization\s+awq int4, group 64",
        r"parameters\s+[\d.]+ M",
        r"memory\s+[\d.]+ MiB",
        r"device / dtype\s+cpu / float32",
        r"engine: (fast|generate)",
        r"self_attn: LlamaAttention",
        r"q_proj: (Int4Linear|Linear) \(in=576, out=576, bits=4, group=64",  # generate engine | fast runtime
        r"more LlamaDecoderLayer layers",
    ):
        assert re.search(pattern, out), pattern

    # /edit with neither EDITOR nor VISUAL: an inline `edit> ` prompt, prefilled with the old message
    t.child.sendline("/edit")
    t.expect("edit>")
    t.expect("What is the capital of France?")
    t.child.send("\x7f" * len("France?") + "Italy?\r")
    t.expect(FOOTER.pattern, regex=True)
    t.expect(PROMPT)
    turns = last_session(home)["turns"]
    assert [x["content"] for x in turns[::2]] == ["What is the capital of Italy?"]
    hist = t.cmd("/history", "assistant")
    assert "Italy" in hist and "France?" not in hist
    assert toolbar(t) == prompt_count(t), "after a regenerated reply"
    t.cmd("/system You are a parrot.", "system prompt set")
    assert toolbar(t) == prompt_count(t), "after the system prompt changed under a conversation"
    t.cmd("/undo", "removed the last exchange")
    assert toolbar(t) == prompt_count(t) > 0, "a system prompt alone"
    assert t.exit() == 0


# 4. context overflow ------------------------------------------------------------------------------------------------


def long_session(path: Path) -> None:
    """A saved session whose first exchange alone is past the demo's 8192-token context (' apple' is one token)."""
    turns = [
        {"role": "user", "content": "apple" + " apple" * 8300},
        {"role": "assistant", "content": "Many apples."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    path.write_text(
        json.dumps(
            {
                "format": "yi-chat-session",
                "version": 1,
                "model": "demo",
                "system": "Answer briefly.",
                "settings": {"temperature": 0.0, "max_new_tokens": 12},
                "turns": turns,
            }
        )
    )


def test_overflow_drops_oldest_exchange_and_refuses_a_too_long_message(demo_dir, tmp_path):
    home = make_home(tmp_path, demo_dir)
    long = tmp_path / "long.json"
    long_session(long)
    t = Term(
        "--model", "demo", "--resume", "long.json", "--temperature", "0", "--max-new-tokens", "12", home=home, cpr=True
    )
    before = int(re.search(r"ctx (\d+)/8192", t.expect(r"ctx \d+/8192", regex=True)).group(1))
    assert before > 8192
    t.child.sendline("Hi")
    notice = flat(t.expect("the system prompt is kept"))
    assert "context full (8192 tokens): dropped the oldest 1 exchange to fit" in notice
    t.expect(FOOTER.pattern, regex=True)
    t.expect(PROMPT)
    after = int(re.search(r"ctx (\d+)/8192", t.expect(r"ctx \d+/8192", regex=True)).group(1))
    assert after < 200, "the meter shows the smaller context"
    hist = t.cmd("/history", "assistant")
    assert "apple apple" not in hist and "What is 2+2?" in hist and "Hi" in hist
    assert re.search(r"^\s+system\s+Answer briefly\.", hist, re.M), "the system prompt is kept"
    saved = last_session(home)  # the dropped exchange stays in the file, out of the context
    assert [x["content"][:12] for x in saved["turns"][::2]] == ["apple apple ", "What is 2+2?", "Hi"]
    assert saved["context_start"] == 2

    # one message longer than the whole context: one line, nothing recorded, the session goes on
    t.paste("pear" + " pear" * 8300)
    t.child.send("\r")
    out = t.expect("error:") + t.expect(PROMPT)
    assert re.search(r"the prompt is \d+ tokens but only \d+ fit", flat(out)), out[-500:]
    hist = t.cmd("/history", "assistant")
    assert "pear" not in hist and re.search(r"^\s*4\s+assistant", hist, re.M) and not re.search(r"^\s*5\s", hist, re.M)

    # /edit now rewrites that refused message (not the exchange before it): another too-long text is refused
    # too, and the exchange before it is kept
    t.paste("/edit plum" + " plum" * 8300)
    t.child.send("\r")
    out = t.expect("error:") + t.expect(PROMPT)
    assert "editing the message that was not sent" in flat(out), out[-500:]
    assert re.search(r"the prompt is \d+ tokens but only \d+ fit", flat(out)), out[-500:]
    hist = t.cmd("/history", "assistant")
    assert t.exit() == 0
    assert "Hi" in hist and re.search(r"^\s*4\s+assistant", hist, re.M), "a refused /edit loses the exchange"


def test_overflow_refuse_policy_when_piped(demo_dir, tmp_path):
    home = make_home(tmp_path, demo_dir)
    long = tmp_path / "long.json"
    long_session(long)
    env = {**os.environ, "YI_CHAT_HOME": str(home)}
    r = subprocess.run(
        [sys.executable, "-m", "yi_cli", "--model", "demo", "--resume", "long.json", "--overflow", "refuse", "--json"],
        input="Hi\n/history\n",
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=TIMEOUT,
    )
    assert r.returncode == 1
    errors = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(errors) == 1 and re.search(r"error: the prompt is \d+ tokens but only \d+ fit", errors[0]), r.stderr
    objs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [o.get("command") for o in objs] == [None, "history"], "the refused turn is not answered"
    assert objs[0]["prompt"] == "Hi" and objs[0]["finish_reason"] == "error" and objs[0]["reply"] == ""
    assert objs[0]["error"] == errors[0].removeprefix("error: ")  # its object says why, as stderr does
    assert "What is 2+2?" in objs[1]["output"] and "Hi" not in objs[1]["output"]


# 6. raw completion ----------------------------------------------------------------------------------------------------


def checkpoint_copy(src: Path, dst: Path) -> Path:
    """Config and tokenizer copied (to be edited), the weights linked."""
    dst.mkdir()
    for f in src.iterdir():
        if f.suffix == ".safetensors":
            (dst / f.name).symlink_to(f)
        elif f.is_file():
            shutil.copy(f, dst / f.name)
    return dst


def test_raw_flag_sends_text_without_template(demo_dir, tmp_path):
    home = make_home(tmp_path, demo_dir)
    t = Term("--model", "demo", "--raw", "--temperature", "0", "--max-new-tokens", "6", home=home)
    t.turn("The capital of France is")
    assert "no chat template" not in flat(t.raw)  # --raw was asked for: not said
    out = t.cmd("/prompt", r"\(\d+ tokens\)", regex=True)
    assert "The capital of France is" in out
    assert "<|im_start|>" not in out and "<|im_end|>" not in out
    assert t.exit() == 0


def test_checkpoint_without_template_uses_chatml_when_its_vocab_has_it(demo_dir, tmp_path):
    # The demo tokenizer's vocab has <|im_start|>/<|im_end|>: without its template, ChatML (not raw) is right.
    ck = checkpoint_copy(Path(demo_dir), tmp_path / "no-template")
    (ck / "chat_template.jinja").unlink()
    cfg = json.loads((ck / "tokenizer_config.json").read_text())
    assert "chat_template" not in cfg
    home = make_home(tmp_path, demo_dir)
    t = Term("--model", str(ck), "--temperature", "0", "--max-new-tokens", "6", home=home)
    t.turn("Hi")
    out = t.cmd("/prompt", r"\(\d+ tokens\)", regex=True)
    assert "<|im_start|>user\nHi<|im_end|>" in out and out.rstrip().count("<|im_start|>assistant") == 1  # the reply
    assert "SmolLM" not in out, "the generic ChatML template, not the demo's own (it adds a default system prompt)"
    assert t.exit() == 0


def test_checkpoint_without_template_or_chatml_tokens_goes_raw(demo_dir, tmp_path):
    ck = checkpoint_copy(Path(demo_dir), tmp_path / "base")
    (ck / "chat_template.jinja").unlink()
    renames = {"<|im_start|>": "<|begin|>", "<|im_end|>": "<|end_of_text|>"}
    tok_json = (ck / "tokenizer.json").read_text()
    tok_cfg = (ck / "tokenizer_config.json").read_text()
    for old, new in renames.items():
        tok_json, tok_cfg = tok_json.replace(old, new), tok_cfg.replace(old, new)
    (ck / "tokenizer.json").write_text(tok_json)
    (ck / "tokenizer_config.json").write_text(tok_cfg)
    home = make_home(tmp_path, demo_dir)
    t = Term("--model", str(ck), "--temperature", "0", "--max-new-tokens", "6", home=home)
    t.turn("The capital of France is")
    # said at the start (a base model's chat went on as plain completion, unsaid), not under --raw (asked for)
    assert "base has no chat template (a base model): each message is continued as plain text" in flat(t.raw)
    out = t.cmd("/prompt", r"\(\d+ tokens\)", regex=True)
    assert "The capital of France is" in out
    assert not re.search(r"<\|(im_start|begin|im_end)\|>", out), out
    assert t.exit() == 0


# 8. config file and NO_COLOR --------------------------------------------------------------------------------------


def test_config_file_defaults_flag_overrides_and_no_color(demo_dir, tmp_path):
    home = make_home(tmp_path, demo_dir)
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text("[generation]\ntemperature = 0.1\ntop_p = 0.7\nmax_new_tokens = 6\n")
    t = Term("--model", "demo", "--top-p", "0.5", home=home, env={"NO_COLOR": "1"})
    out = t.cmd("/set", "seed = ")
    for line in (
        "temperature = 0.1  (config)",
        "top_p = 0.5  (flag)",
        "max_new_tokens = 6  (config)",
        "repetition_penalty = 1.0  (model)",
        "top_k = 0  (default)",
    ):
        assert line in out, out
    m = t.turn("What is the capital of France?")
    assert int(m.group(3)) <= 6
    t.cmd("/set top_p 2", "error:")
    t.cmd("/history", "assistant")
    t.cmd("/nosuchcommand", "error:")
    assert t.exit() == 0
    assert colour_codes(t.raw) == [], "NO_COLOR: no colour escape sequences"


def test_malformed_config_exits_2_with_one_line(tmp_path):
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text("[generation\ntemperature = 0.1\n")
    env = {**os.environ, "YI_CHAT_HOME": str(home), "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"}
    out, status = pexpect.run(
        f"{sys.executable} -m yi_cli --model demo", env=env, withexitstatus=True, encoding="utf-8", timeout=TIMEOUT
    )
    lines = [x for x in plain(out).splitlines() if x.strip()]
    assert status == 2
    assert len(lines) == 1 and "config.toml" in lines[0] and "cannot read the config file" in lines[0], out

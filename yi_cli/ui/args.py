"""yi-chat's flags: the parser (its help fitted to the terminal, its errors one line), the argument types, and the
generation settings the flags, the config file and the model give."""

from __future__ import annotations

import argparse
import re
import sys

from .. import __version__
from ..engines.remote_limits import MAX_SECONDS
from ..errors import UsageError
from .config import device_arg, tokens_arg
from .streams import say_error

EPILOG = """examples:
  yi-chat                                    chat with the demo model (Ctrl-D leaves)
  yi-chat "Say hi"                           one prompt, one answer (like -p)
  git diff | yi-chat -p "review this"        piped stdin goes before the prompt as a fenced block
  yi-chat -f notes.md -f todo.txt -p "merge these"  attach text files (also in a chat, and /file PATH)
  yi-chat -p - < question.txt                the prompt itself from stdin
  yi-chat --json < prompts.txt > replies.jsonl  one turn per stdin line, one JSON object per reply
  yi-chat -c                                 go on with the last interactive chat (--resume last)
  yi-chat sessions                           the saved conversations (--json too)
  source <(yi-chat completion bash)          tab completion (also zsh, fish)

subcommands: when the first argument is one of models, pull, sessions or completion, it names a subcommand \
(yi-chat sessions --help); any other words are a prompt. To send a prompt starting with one of those words, use \
-p TEXT or put -- first (yi-chat -- "models are ...").

exit codes:
  0    success (also: stdout closed by the reader, e.g. | head)
  1    a session to resume cannot be read; in a one-shot or piped run, a turn or command failed (a remote reply \
cut by the network, a timeout or a limit keeps its partial text); an interactive chat ends 0
  2    usage error (bad flag or value, a malformed --endpoint URL or hub id, a config file error; an attached \
file that is binary, not UTF-8 or too large; stdout closed)
  3    the model could not be loaded (missing path, corrupt config or weights, unsupported format, sizes that \
are implausible or need more memory than the device has), or could not be fetched (missing or gated repo, network \
error, full disk); the --endpoint server could not be reached or listed no model
  129  hung up (SIGHUP: the terminal closed); the reply in flight is kept, the session saved
  130  interrupted (Ctrl-C while the model loads, or in a one-shot or piped run; SIGTERM); the reply in flight is \
kept and the session saved
  131  quit (SIGQUIT: Ctrl-\\ during a reply, kill -QUIT); the reply in flight is kept, the session saved

Model: a checkpoint directory, a hub id (fetched into the Hugging Face cache when missing), a Yi alias such as \
yi-6b-chat-4bits, or 'demo' (SmolLM2-135M, AWQ int4), 'demo-gptq8', 'demo-fp32'. Piped stdin without -p: each \
non-empty line is one user turn of one session.
Defaults: the ones above are built in; config.toml ($YI_CHAT_HOME/config/, else ~/.config/yi-chat/) sets its own \
(max_new_tokens, temperature, model, ...), and a flag wins over both.
Environment: YI_CHAT_MODEL, YI_CHAT_ENDPOINT (then OPENAI_BASE_URL), OPENAI_API_KEY, YI_CHAT_HOME, NO_COLOR, \
HF_HOME, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE."""
HELP_WIDTH = 100  # the epilog's lines at most, however wide the terminal (argparse's own columns follow it)


class HelpFormatter(argparse.HelpFormatter):
    """The epilog fitted to the terminal: its lines were laid out for 115 columns, and an 80-column terminal broke
    them mid-word into its first column. A logical line is one line of EPILOG; an indented one is two columns (the
    text after its first run of 2+ spaces goes on under itself, or a line below when the column is too narrow)."""

    def __init__(self, prog, **kw):
        import shutil

        kw.setdefault("width", min(shutil.get_terminal_size().columns - 2, HELP_WIDTH))
        super().__init__(prog, **kw)

    def _fill_text(self, text, width, indent):
        import re
        import textwrap

        def fill(t, first, rest):
            return textwrap.fill(t, width, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False)

        out = []
        for section in text.split("\n\n"):
            rows = [re.match(r"( +)(\S.*?)( {2,})(\S.*)$", line) or line for line in section.splitlines()]
            # the section's column: where its aligned rows (3+ spaces) start their text; a longer left side (its
            # text after 2 spaces) takes a line of its own and its text goes on that column below it
            cols = [len(r[1] + r[2] + r[3]) for r in rows if not isinstance(r, str) and len(r[3]) > 2]
            col = max(cols, default=0)
            for r in rows:
                if isinstance(r, str):  # a heading or prose: filled, its continuation lines indented
                    out.append(fill(r, "", "  "))
                    continue
                lead, left, gap, right = r.groups()
                here = len(lead + left + gap)
                at = " " * (here if here <= col or not col else col)
                if width - len(at) < 30:  # narrow: the text below its left side, indented
                    out += [lead + left, fill(right, lead + "    ", lead + "    ")]
                elif len(at) < here:
                    out += [lead + left, fill(right, at, at)]
                else:
                    out.append(fill(left + gap + right, lead, at))
            out.append("")
        return "\n".join(indent + ln if ln else ln for ln in "\n".join(out[:-1]).splitlines())


# The first argument names a subcommand when it is one of these; any other words are a prompt.
# name -> (module under yi_cli with main(argv) -> int; one line of help)
SUBCOMMANDS = {
    "sessions": ("sessions_cmd", "list the saved conversations (--json)"),
    "completion": ("completion", "print a completion script: bash, zsh or fish"),
    "models": ("models_cmd", "list the models on this machine (--all: the Yi family too; --json)"),
    "pull": ("models_cmd", "download a model from the Hugging Face Hub without chatting"),
}


# what float() reads as a negative number: argparse's own pattern (Python 3.11) took -1e-3 and -inf for options,
# and `--temperature -1e-3` said "expected one argument" where -0.001 said the temperature's range
NEGATIVE_NUMBER = re.compile(r"^-(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf(?:inity)?|nan)$", re.IGNORECASE)


ARGV: list[str] = []  # the run's arguments, as main() got them (a subcommand's error offers them as a prompt)


def as_prompt_hint(message: str) -> str:
    """For a subcommand's word followed by words it does not take (`yi-chat models are cool`): how to send them all
    as a prompt instead, as `yi-chat -m demo models` is told; else ""."""
    if not (ARGV and ARGV[0] in SUBCOMMANDS) or not message.startswith(("unrecognized arguments", "argument shell")):
        return ""
    if message.startswith("unrecognized") and "-" in [w[:1] for w in message.split(":", 1)[1].split()]:
        return ""  # a mistyped option (`models --bogus`), not words of a prompt
    import shlex

    return f"; to send the words as a prompt: yi-chat -- {long_values_cut(shlex.join(ARGV))}"


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER  # argparse's hook for what reads as a negative number

    def error(self, message):  # one line, not argparse's usage block: every failure is one line on stderr
        # a subcommand's help: yi-chat sessions --help
        say_error(f"{long_values_cut(message)} (see {self.prog} --help){as_prompt_hint(message)}")
        sys.exit(2)


def long_values_cut(message: str, keep: int = 100) -> str:
    """argparse's message with each value past `keep` characters cut (`--dtype` of 130 kB repeated it whole, where
    -m, -f and --resume cut a name at 200): one in single or double quotes (repr's, as the value's own quotes
    choose), and any run without a blank (`unrecognized arguments: --x=...` quotes none)."""
    for q in ("'", '"'):
        message = re.sub(rf"{q}([^{q}]{{{keep}}})[^{q}]+{q}", rf"{q}\1...{q}", message)
    return re.sub(rf"(\S{{{keep}}})\S+", r"\1...", message)


def seconds_arg(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        v = -1.0
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    if v > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{value!r} is too many seconds (at most {MAX_SECONDS})")
    return v


class Once(argparse.Action):
    """-p given twice: argparse kept the last prompt and dropped the first unsaid."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest) is not None:
            parser.error(f"two prompts: {option_string} is given twice; a run answers one (pipe several, one a line)")
        setattr(namespace, self.dest, values)


def text_arg(value: str) -> str:
    """Text for the conversation (--system). An argument's bytes that are not UTF-8 arrive as surrogates, which no
    tokenizer takes: every turn failed with a TypeError."""
    try:
        text = value.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        raise argparse.ArgumentTypeError("not valid UTF-8 text") from None
    return text if text.strip() else ""  # blank as "" is: none set (`--system "  "` was sent as a system prompt)


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="yi-chat",
        description="Chat with Yi models (and other chat models) in a terminal.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    a = p.add_argument
    a("words", nargs="*", metavar="PROMPT", help="answer this prompt and exit, like -p (see subcommands below)")
    a("--version", action="version", version=f"yi-chat {__version__}")
    a("--model", "-m", help="checkpoint directory, hub id, Yi alias, or demo (default: demo)")
    a("--system", type=text_arg, help="system prompt")
    a(
        "--prompt",
        "-p",
        action=Once,
        help="answer this one prompt and exit; '-' reads it from stdin; piped stdin is prepended as context",
    )
    a(
        "--file",
        "-f",
        action="append",
        dest="files",
        metavar="PATH",
        help="attach a text file to the (first) message; repeatable; '-' is piped stdin (with -p)",
    )
    a("--json", action="store_true", help="write one JSON object per turn to stdout")
    a("--max-new-tokens", type=int, help="most tokens per reply (default 512)")
    a("--temperature", type=float, help="sampling temperature, 0 = greedy (default 0.6, Yi's; the demo's 0.2)")
    a("--top-p", type=float, help="nucleus sampling (default 0.8, Yi's; the demo's 0.9)")
    a("--top-k", type=int, help="top-k sampling, 0 = off (default 0)")
    a("--repetition-penalty", type=float, help="repetition penalty (default 1.2, Yi's; the demo's 1.0)")
    a("--seed", type=int, help="random seed for reproducible sampling")
    a(
        "--speculate",
        type=str.lower,  # as config.toml and /set take it (LOOKUP)
        choices=["auto", "lookup", "off"],
        help="prompt-lookup speculative decoding, same output "
        "(default auto: on where a verify computes each token as a decode step does)",
    )
    a("--device", type=device_arg, help="auto, cpu, cuda, cuda:N (default auto: cuda when available)")
    a(
        "--dtype",
        type=str.lower,  # any case, as config.toml and /set take a value (BF16)
        choices=["auto", "fp32", "fp16", "bf16"],
        help="activation dtype (default: fp32 on cpu, fp16 on cuda, bf16 there for 4-bit codes)",
    )
    a(
        "--context",
        type=tokens_arg,
        metavar="N",
        help="tokens of context a session may use (default: the model's, as far as GPU memory holds)",
    )
    a(
        "--engine",
        type=str.lower,
        choices=["auto", "fast", "generate"],
        help="decode engine: fast (CUDA graphs) or plain generate",
    )
    a("--raw", action="store_true", help="no chat template: feed the text as is (base models)")
    a(
        "--resume",
        metavar="PATH",
        help="start from a saved session file (a name yi-chat sessions lists; 'last' = the newest interactive one)",
    )
    a(
        "--continue",
        "-c",
        action="store_true",
        dest="continue_",
        help="go on with the newest interactive session (= --resume last)",
    )
    a("--endpoint", metavar="URL", help="stream from an OpenAI-compatible server instead of a local model")
    a(
        "--api-key",
        help="API key for --endpoint (default: the variable named by api_key_env in the config, which must be "
        "set; else $OPENAI_API_KEY; a variable keeps it out of ps)",
    )
    a("--connect-timeout", type=seconds_arg, metavar="S", help="--endpoint: seconds to connect (default 10)")
    a(
        "--idle-timeout",
        type=seconds_arg,
        metavar="S",
        help="--endpoint: seconds without reply data before giving up; keep-alives do not count (default 60)",
    )
    a("--deadline", type=seconds_arg, metavar="S", help="--endpoint: seconds for one whole reply (default 900)")
    a(
        "--overflow",
        type=str.lower,
        choices=["drop", "refuse"],
        help="when the context is full: drop oldest turns, or refuse",
    )
    a("--stats", action="store_true", help="print the stats line after each reply also when piped (stderr)")
    a("--allow-pickle", action="store_true", help="allow pickle (.bin) weights; they can run code")
    a("--trust-remote-code", action="store_true", help="allow the checkpoint's own Python code")
    return p


def settings_from(args, gen_cfg: dict, model: str | None):
    from ..checkpoint import demo
    from ..engines.settings import GenSettings, parse

    s, sources = GenSettings(), {}
    if model in demo.NAMES:
        for name, value in demo.RECOMMENDED.items():
            setattr(s, name, value)
            sources[name] = "model"
    for name, value in gen_cfg.items():
        setattr(s, name, value)
        sources[name] = "config"
    for name in ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "seed", "speculate"):
        v = getattr(args, name)
        if v is not None:
            try:
                setattr(s, name, parse(name, v))
            except UsageError as e:  # said of the flag typed, not of the setting's name
                said, flag = str(e), "--" + name.replace("_", "-")
                raise UsageError(flag + said[len(name) :] if said.startswith(name) else said) from None
            sources[name] = "flag"
    return s, sources


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Flags and prompt words; every word after the first `--` is a prompt word as typed (`yi-chat -- what does
    --json do`). Usage errors exit 2 through argparse."""
    # Split here: parse_intermixed_args drops the `--` and goes on reading flags after it.
    i = argv.index("--") if "--" in argv else len(argv)
    args = parser().parse_intermixed_args(argv[:i])
    args.verbatim = not args.words and i + 1 < len(argv)  # the prompt's first word comes after `--`: as typed
    args.words += argv[i + 1 :]
    args.dashdash = "--" in argv  # a subcommand's name after it is a prompt word
    return args

"""yi-chat: argument parsing; interactive, piped or one-shot; errors mapped to exit codes."""
from __future__ import annotations

import argparse
import os
import signal
import sys

from .errors import EXIT_HANGUP, EXIT_INTERRUPTED, UsageError, YiError

EPILOG = """exit codes:
  0    success (also: stdout closed by the reader, e.g. | head)
  1    a failure during the chat (in a piped script: any turn or command failed)
  2    usage error (bad flag or value)
  3    the model could not be loaded (missing path, corrupt config or weights, unsupported format)
  129  hung up (SIGHUP: the terminal closed); the reply in flight is kept, the session autosaved
  130  interrupted (Ctrl-C outside a reply, SIGTERM); after SIGTERM the session is autosaved

Model: a checkpoint directory, a hub id already in the local cache, or 'demo' (SmolLM2-135M, AWQ int4),
'demo-gptq8', 'demo-fp32'. Piped stdin: each non-empty line is one user turn of one session."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block: every failure is one line on stderr
        _err(f"{message} (see --help)")
        sys.exit(2)


def device_arg(value: str) -> str:
    if value in ("auto", "cpu", "cuda", "mps") or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise argparse.ArgumentTypeError(f"unknown device {value!r} (use auto, cpu, cuda or cuda:N)")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="yi-chat", description="Chat with Yi models (and other chat models) in a terminal.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--model", "-m", help="checkpoint directory, cached hub id, or demo (default: demo)")
    a("--system", help="system prompt")
    a("--prompt", "-p", help="answer this one prompt and exit")
    a("--json", action="store_true", help="write one JSON object per turn to stdout")
    a("--max-new-tokens", type=int, help="most tokens per reply (default 512)")
    a("--temperature", type=float, help="sampling temperature, 0 = greedy (default 0.6)")
    a("--top-p", type=float, help="nucleus sampling (default 0.8)")
    a("--top-k", type=int, help="top-k sampling, 0 = off (default 0)")
    a("--repetition-penalty", type=float, help="repetition penalty (default 1.2)")
    a("--seed", type=int, help="random seed for reproducible sampling")
    a("--device", type=device_arg, help="cpu, cuda, cuda:N (default: cuda when available)")
    a("--dtype", choices=["auto", "fp32", "fp16", "bf16"], help="activation dtype (default: fp32 on cpu, fp16 on cuda)")
    a("--engine", choices=["auto", "fast", "generate"], help="decode engine: fast (CUDA graphs) or plain generate")
    a("--raw", action="store_true", help="no chat template: feed the text as is (base models)")
    a("--resume", metavar="PATH", help="start from a saved session file ('last' = the autosave)")
    a("--endpoint", metavar="URL", help="stream from an OpenAI-compatible server instead of a local model")
    a("--api-key", help="API key for --endpoint (default: $OPENAI_API_KEY)")
    a("--overflow", choices=["drop", "refuse"], help="when the context is full: drop oldest turns, or refuse")
    a("--stats", action="store_true", help="print the stats line after each reply also when piped (stderr)")
    a("--allow-pickle", action="store_true", help="allow pickle (.bin) weights; they can run code")
    a("--trust-remote-code", action="store_true", help="allow the checkpoint's own Python code")
    return p


def settings_from(args, gen_cfg: dict, model: str | None):
    from . import demo
    from .settings import GenSettings, parse

    s, sources = GenSettings(), {}
    if model in demo.NAMES:
        for name, value in demo.RECOMMENDED.items():
            setattr(s, name, value)
            sources[name] = "model"
    for name, value in gen_cfg.items():
        setattr(s, name, value)
        sources[name] = "config"
    for name in ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "seed"):
        v = getattr(args, name)
        if v is not None:
            setattr(s, name, parse(name, v))
            sources[name] = "flag"
    return s, sources


def main(argv=None) -> int:
    args = parser().parse_args(argv)  # usage errors exit 2 through argparse
    _LEAVING.clear()
    for signum in LEAVE:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # under nohup, SIGHUP stays ignored
            signal.signal(signum, _leave)
    try:
        return _main(args)
    except YiError as e:
        _err(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        _err(LEAVE[_LEAVING[0]][1] if _LEAVING else "interrupted")
        return LEAVE[_LEAVING[0]][0] if _LEAVING else EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader closed stdout (| head): nothing more to say. Point stdout at devnull so the
        # interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# Signals that end yi-chat: exit code, and what the one line on stderr says.
LEAVE = {signal.SIGTERM: (EXIT_INTERRUPTED, "terminated"), signal.SIGHUP: (EXIT_HANGUP, "hung up")}
_LEAVING: list[int] = []  # the first such signal received
_CHAT: list = []  # the Chat, once there is one


def _leave(signum, frame):
    """Like Ctrl-C the reply in flight ends and is recorded (Chat turns the KeyboardInterrupt into cancel); then
    the chat stops. After SIGHUP the terminal is gone: output to it would fail (EIO), so it goes to /dev/null."""
    if not _LEAVING:
        _LEAVING.append(signum)
    if signum == signal.SIGHUP:
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            if os.isatty(fd):
                os.dup2(null, fd)
        os.close(null)
    for chat in _CHAT:
        chat.running, chat.terminated = False, True
    raise KeyboardInterrupt


def _err(msg: str) -> None:
    try:
        print(f"yi-chat: {msg}", file=sys.stderr, flush=True)
    except OSError:
        pass


def _main(args) -> int:
    from . import config, store
    from .chat import Chat, Options
    from .session import ChatSession

    if args.prompt is not None and not args.prompt.strip():
        raise UsageError("-p/--prompt is empty")
    top, gen_cfg = config.read()
    args.endpoint = args.endpoint or top.get("endpoint")
    # A remote engine names its own model when none is given; a local one defaults to the demo.
    args.model = args.model or os.environ.get("YI_CHAT_MODEL") or top.get("model") or (None if args.endpoint else "demo")
    settings, sources = settings_from(args, gen_cfg, None if args.endpoint else args.model)
    session = None
    if args.resume:
        session, saved, _ = store.read(args.resume)
        for k, v in saved.to_dict().items():
            if k not in sources:  # flags win over the file's settings
                setattr(settings, k, v)
    if args.system is not None or (session is None and top.get("system")):
        session = session or ChatSession()
        session.system = args.system if args.system is not None else top["system"]
    interactive = args.prompt is None and sys.stdin.isatty()
    render = make_renderer(args, interactive)
    engine = make_engine(args, top, render)
    options = Options(overflow=args.overflow or top.get("overflow", "drop"), setting_sources=sources)
    chat = Chat(engine, render, settings, session, options, on_turn=store.autosave)
    _CHAT[:] = [chat]
    try:
        if args.prompt is not None:
            chat.handle(args.prompt)
            code = 1 if chat.failures else 0
        elif interactive:
            from . import repl

            code = repl.run(chat)
        else:
            code = run_pipe(chat)
    except KeyboardInterrupt:
        if not chat.terminated:
            raise
    finally:
        render.release_keys()
        _CHAT.clear()
    if chat.terminated:
        exit_code, what = LEAVE[_LEAVING[0]]
        if chat.session.turns:  # again: the signal may have cut the autosave of the turn before it
            store.autosave(chat)
            what += "; the session is autosaved (--resume last)"
        _err(what)
        return exit_code
    return code


def run_pipe(chat) -> int:
    """Each non-empty stdin line is one user turn (or command) of one session; bad lines are skipped loudly."""
    stdin = sys.stdin.buffer
    n = 0
    for n, raw in enumerate(stdin, 1):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            chat.failures += 1
            chat.render.error(f"stdin line {n} is not valid UTF-8; skipped")
            continue
        if "\x00" in line:
            chat.failures += 1
            chat.render.error(f"stdin line {n} contains a NUL byte; skipped")
            continue
        if line.strip() and not chat.handle(line):
            break
    if n == 0:
        chat.render.notice("stdin is empty: nothing to do")
    return 1 if chat.failures else 0


def make_renderer(args, interactive: bool):
    from rich.console import Console

    from .keys import KeyHold
    from .render import JsonRenderer, PlainRenderer, TerminalRenderer

    err = Console(stderr=True)
    if args.json:
        return JsonRenderer(Console(), err)
    if interactive or (sys.stdout.isatty() and args.prompt is not None):
        return TerminalRenderer(Console(), err, keys=KeyHold(sys.stdin.fileno()) if sys.stdin.isatty() else None)
    return PlainRenderer(Console(), err, show_stats=args.stats)


def make_engine(args, top: dict, render):
    endpoint = args.endpoint
    if endpoint:
        from .remote import RemoteEngine

        key = args.api_key or os.environ.get("OPENAI_API_KEY")
        return RemoteEngine(endpoint, key, model=args.model)
    from . import demo
    from .engine import LocalEngine
    from .loader import load

    model = args.model
    if model in demo.NAMES:
        demo.ensure(model)  # the first run converts it, with its own progress display: before the spinner
    with render.err.status(f"loading {model} ...") if render.err.is_terminal else _nullctx():
        loaded = load(model, device=args.device or top.get("device"), dtype=args.dtype or top.get("dtype"),
                      allow_pickle=args.allow_pickle, trust_remote_code=args.trust_remote_code)
        return LocalEngine(loaded, backend=args.engine or top.get("engine", "auto"), raw=args.raw)


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def entry() -> None:
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # libgomp spinning makes small CPU ops ~100x slower
    sys.exit(main())


if __name__ == "__main__":
    entry()

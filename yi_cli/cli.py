"""yi-chat: argument parsing; interactive, piped or one-shot; errors mapped to exit codes."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from .errors import EXIT_INTERRUPTED, UsageError, YiError

EPILOG = """exit codes:
  0    success (also: stdout closed by the reader, e.g. | head)
  1    a failure during the chat (in a piped script: any turn or command failed; a remote reply cut by
       the network, a timeout or a limit keeps its partial text)
  2    usage error (bad flag or value, a malformed --endpoint URL)
  3    the model could not be loaded (missing path, corrupt config or weights, unsupported format), or could not
       be fetched (missing or gated repo, network error, full disk); the --endpoint server could not be reached
       or listed no model
  130  interrupted (Ctrl-C outside a reply, SIGTERM)

Model: a checkpoint directory, a hub id (fetched into the Hugging Face cache when missing), a Yi alias such as
yi-6b-chat-4bits, or 'demo' (SmolLM2-135M, AWQ int4), 'demo-gptq8', 'demo-fp32'. Piped stdin: each non-empty line
is one user turn of one session.

subcommands:
  yi-chat pull REPO [--revision R] [--allow-pickle]   download a hub checkpoint without chatting
  yi-chat models [--all] [--json]                     list the models this machine can chat with"""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block: every failure is one line on stderr
        _err(f"{message} (see --help)")
        sys.exit(2)


def device_arg(value: str) -> str:
    if value in ("auto", "cpu", "cuda", "mps") or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise argparse.ArgumentTypeError(f"unknown device {value!r} (use auto, cpu, cuda or cuda:N)")


def seconds_arg(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        v = -1.0
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return v


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="yi-chat",
        description="Chat with Yi models (and other chat models) in a terminal.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("--model", "-m", help="checkpoint directory, hub id, Yi alias, or demo (default: demo)")
    a("--system", help="system prompt")
    a("--prompt", "-p", help="answer this one prompt and exit")
    a("--json", action="store_true", help="write one JSON object per turn to stdout")
    a("--max-new-tokens", type=int, help="most tokens per reply (default 512)")
    a("--temperature", type=float, help="sampling temperature, 0 = greedy (default 0.6)")
    a("--top-p", type=float, help="nucleus sampling (default 0.8)")
    a("--top-k", type=int, help="top-k sampling, 0 = off (default 0)")
    a("--repetition-penalty", type=float, help="repetition penalty (default 1.2)")
    a("--seed", type=int, help="random seed for reproducible sampling")
    a(
        "--speculate",
        choices=["auto", "lookup", "off"],
        help="prompt-lookup speculative decoding, same output (default auto: on where it pays)",
    )
    a("--device", type=device_arg, help="cpu, cuda, cuda:N (default: cuda when available)")
    a("--dtype", choices=["auto", "fp32", "fp16", "bf16"], help="activation dtype (default: fp32 on cpu, fp16 on cuda)")
    a("--engine", choices=["auto", "fast", "generate"], help="decode engine: fast (CUDA graphs) or plain generate")
    a("--raw", action="store_true", help="no chat template: feed the text as is (base models)")
    a("--resume", metavar="PATH", help="start from a saved session file ('last' = the autosave)")
    a("--endpoint", metavar="URL", help="stream from an OpenAI-compatible server instead of a local model")
    a("--api-key", help="API key for --endpoint (default: $OPENAI_API_KEY; the variable keeps it out of ps)")
    a("--connect-timeout", type=seconds_arg, metavar="S", help="--endpoint: seconds to connect (default 10)")
    a(
        "--idle-timeout",
        type=seconds_arg,
        metavar="S",
        help="--endpoint: seconds without reply data before giving up; keep-alives do not count (default 60)",
    )
    a("--deadline", type=seconds_arg, metavar="S", help="--endpoint: seconds for one whole reply (default 900)")
    a("--overflow", choices=["drop", "refuse"], help="when the context is full: drop oldest turns, or refuse")
    a("--stats", action="store_true", help="print the stats line after each reply also when piped (stderr)")
    a("--allow-pickle", action="store_true", help="allow pickle (.bin) weights; they can run code")
    a("--trust-remote-code", action="store_true", help="allow the checkpoint's own Python code")
    return p


def settings_from(args, gen_cfg: dict, model: str | None):
    from . import demo
    from .engines.settings import GenSettings, parse

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
            setattr(s, name, parse(name, v))
            sources[name] = "flag"
    return s, sources


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from . import models_cmd

    models = bool(argv) and argv[0] in models_cmd.COMMANDS  # `yi-chat pull REPO`, `yi-chat models`
    args = None if models else parser().parse_args(argv)  # usage errors exit 2 through argparse
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        return _models(argv) if models else _main(args)
    except YiError as e:
        _err(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader closed stdout (| head): nothing more to say. Point stdout at devnull so the
        # interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _models(argv: list[str]) -> int:
    from . import config, models_cmd

    return models_cmd.main(argv, config.read()[0].get("aliases", {}))


def _sigterm(signum, frame):
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
    args.model = (
        args.model or os.environ.get("YI_CHAT_MODEL") or top.get("model") or (None if args.endpoint else "demo")
    )
    args.model = top.get("aliases", {}).get(args.model, args.model)  # [aliases] in config.toml
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

    def on_term(signum, frame):  # like Ctrl-C, the reply in flight ends and is recorded; then we leave
        chat.running, chat.terminated = False, True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    if args.prompt is not None:
        chat.handle(args.prompt)
        return 1 if chat.failures else 0
    if interactive:
        from . import repl

        code = repl.run(chat)
    else:
        code = run_pipe(chat)
    if chat.terminated:
        _err("terminated; the session is autosaved (--resume last)")
        return EXIT_INTERRUPTED
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

    from .render import JsonRenderer, LiveRenderer, PlainRenderer

    err = Console(stderr=True)
    if args.json:
        return JsonRenderer(Console(), err)
    if interactive or (sys.stdout.isatty() and args.prompt is not None):
        return LiveRenderer(Console(), err)
    return PlainRenderer(Console(), err, show_stats=args.stats)


def make_engine(args, top: dict, render):
    endpoint = args.endpoint
    if endpoint:
        from . import config
        from .engines.remote import RemoteEngine
        from .engines.remote_http import Limits

        key = args.api_key or os.environ.get("OPENAI_API_KEY")
        limits = Limits.from_config(top.get("remote") or {}, str(config.path()))
        for name in ("connect_timeout", "idle_timeout", "deadline"):
            if getattr(args, name) is not None:
                setattr(limits, name, getattr(args, name))
        return RemoteEngine(endpoint, key, model=args.model, limits=limits, notify=render.notice)
    from .checkpoint.loader import open_checkpoint, resolve
    from .engines.local import LocalEngine

    path = resolve(args.model, args.allow_pickle)  # a hub id not cached is fetched here, with its own progress
    with render.err.status(f"loading {args.model} ...") if render.err.is_terminal else _nullctx():
        ckpt = open_checkpoint(
            path,
            device=args.device or top.get("device"),
            dtype=args.dtype or top.get("dtype"),
            allow_pickle=args.allow_pickle,
            trust_remote_code=args.trust_remote_code,
        )
        return LocalEngine(ckpt, backend=args.engine or top.get("engine", "auto"), raw=args.raw)


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

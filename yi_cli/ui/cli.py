"""yi-chat: interactive, piped or one-shot (the flags are args.py's); errors mapped to exit codes; the signals that
end it."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import warnings

from .. import env_files, progress, terminal
from ..engines.remote_endpoint import shown_url
from ..errors import ENDING, EXIT_CHAT, LoadError, StdoutFailed, UsageError, YiError, catch, failure, shown
from ..held import signals_held
from .args import ARGV, SUBCOMMANDS, parse_args, parser, settings_from
from .streams import say_error as _err
from .streams import to_null


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ARGV[:] = argv
    sub = subcommand(argv)
    from . import streams

    stdout = sys.stdout
    guard = streams.GuardedStdout(stdout)
    if sub is None:
        sys.stdout = guard  # --help and --version are all parsing writes
        try:
            # held: argparse's intermixed parse cut by a KeyboardInterrupt raised AttributeError ('save_nargs') from
            # its own cleanup, a traceback instead of the signal's line
            with signals_held():
                args = parse_args(argv)
        except SystemExit:
            _said(guard, _info_asked(argv) or "--help")  # `--vers` printed the version: not "--help's output"
            raise
        finally:
            sys.stdout = stdout
    else:  # a subcommand draws its own output: the keys typed are the terminal's to echo
        _unhold_early()
    _LEAVING.clear()
    _DONE.clear()
    _KEPT.clear()
    _catch_leave()
    if sub is not None:
        sys.stdout = guard
    try:
        if sub is None or (argv[0] in HUB_SUBCOMMANDS and not _asks_help(argv[1:])):  # sessions, completion and a
            _check_hf_endpoint()  # --help use no hub: a bad HF_ENDPOINT failed them (`source <(yi-chat completion)`)
        if sub is None:
            return _main(args)
        code = sub(argv[1:])
        sys.stdout.flush()  # what is still buffered fails here, not in the interpreter's last flush
        return code
    except SystemExit:  # a subcommand's --help: argparse ignored a write that failed
        _said(guard, argv[0])
        raise
    except StdoutFailed as e:  # > /dev/full: one line, not a traceback from print()
        to_null(stdout.fileno())  # the buffered rest goes nowhere
        _err(f"stdout failed ({e.strerror}); the output of yi-chat {argv[0]} is cut short")
        return EXIT_CHAT
    except YiError as e:  # and the messages typed ahead kept, where a chat failed before its first prompt
        # a chat's (a one-shot's keys are the shell's), before its renderer took them over: a session or config
        chat = sub is None and args.prompt is None and not args.words  # refused
        if chat and _EARLY and _EARLY[0].waits:
            _keep_typed_ahead(_EARLY[0].take)
        _err("; ".join([str(e), *_KEPT[:1]]))
        return e.exit_code
    except KeyboardInterrupt:
        _DONE.append(True)  # the run ends here: a second signal is not a second line
        _keep_early()
        code, what = _leaving()
        return _said_end(what, code)
    except BrokenPipeError:
        # The reader closed stdout (| head): nothing more to say. Point stdout at devnull so the
        # interpreter's final flush does not raise again.
        to_null(sys.stdout.fileno())
        return 0
    finally:
        sys.stdout = stdout


def _said(out, what: str) -> None:
    """argparse's --help or --version text written, or one line and exit 1 where writing it failed: argparse ignores
    a write that fails, so `yi-chat --help > /dev/full` exited 0 with nothing written. A reader gone (| head) stays
    the quiet exit argparse chose."""
    try:
        out.flush()
    except OSError:  # a failure is in out.failed; a reader gone is no failure
        pass
    if out.failed is None:
        return
    to_null(sys.stdout.fileno())
    _err(f"stdout failed ({out.failed.strerror}); the output of yi-chat {what} is cut short")
    sys.exit(EXIT_CHAT)


def _catch_leave() -> None:
    catch(LEAVE, _leave)  # replacing launch's early handlers
    catch([signal.SIGINT], _interrupt)


def _check_hf_endpoint() -> None:
    """HF_ENDPOINT (the hub huggingface_hub talks to) as a URL, before anything imports huggingface_hub: a malformed
    one ('http://[::1', a port past 65535) raised a ValueError traceback from its import or its first request."""
    from urllib.parse import urlsplit

    from ..errors import shown

    url = os.environ.get("HF_ENDPOINT", "")
    if not url:
        return
    said = env_files.hidden_userinfo(url)  # a password in it stays out of the line
    odd = lambda text: any(c.isspace() or not c.isprintable() for c in text)  # noqa: E731
    if odd(url):  # urlsplit passed ' http://...': "cannot reach", exit 3
        where = "" if odd(said) else ", in the part shown as ***"
        raise UsageError(
            f"HF_ENDPOINT='{shown(said, 80)}' is not a URL (it contains whitespace or control characters{where})"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (checked on access: 'abc' or 99999 raise ValueError)
    except ValueError as e:
        raise UsageError(f"HF_ENDPOINT={shown(said, 80)} is not a URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"HF_ENDPOINT={shown(said, 80)} is not an http(s) URL (e.g. https://huggingface.co)")
    if "?" in url or "#" in url:  # huggingface_hub appends its paths after them: every request missed, "cannot reach"
        raise UsageError(
            f"HF_ENDPOINT={shown(said, 80)} is not a hub's base URL (it has a query string or fragment: "
            "remove what follows '?' or '#')"
        )


def subcommand(argv: list[str]):
    """The main(argv) of the subcommand that the first argument names, or None for a chat or a prompt."""
    if not argv or argv[0] not in SUBCOMMANDS:
        return None
    import importlib

    module = importlib.import_module(f".{SUBCOMMANDS[argv[0]][0]}", __package__)
    if argv[0] in HUB_SUBCOMMANDS:  # one parser for both, which takes the word itself; [aliases] from config (not
        from . import config  # for --help: a config error printed instead of the help)

        return lambda rest: module.main(
            [argv[0], *rest], {} if _asks_help(rest) else config.read()[0].get("aliases", {})
        )
    return module.main


HUB_SUBCOMMANDS = ("models", "pull")


def _asks_help(words: list[str]) -> bool:
    """-h or --help among a subcommand's words (before a `--`), or a start of --help that argparse takes for it
    (`models --he` printed a broken config's error instead of its help). Where another option shares that start
    argparse refuses the word as ambiguous, whatever this answers."""
    return any(w == "-h" or (len(w) > 2 and "--help".startswith(w)) for w in _flags(words))


def _flags(words: list[str]) -> list[str]:
    """The words before a `--` (after it none is a flag)."""
    return words[: words.index("--")] if "--" in words else words


# Signals that end yi-chat (errors.ENDING less Ctrl-C): exit code, and what the one line on stderr says. SIGQUIT
# (Ctrl-\ while a reply streams, the terminal then keeping its signal keys; kill -QUIT) ends it as SIGTERM does: left
# to Python's default it dumped core, with the terminal's echo off and the reply in flight lost.
LEAVE = {s: v for s, v in ENDING.items() if s != signal.SIGINT}
_LEAVING: list[int] = []  # the first such signal received
_CHAT: list = []  # the Chat, once there is one
_EARLY: list = []  # the KeyHold entry() took the terminal with, until the chat's renderer takes it over
_DONE: list = []  # set once the run is ending (main's chat has ended): a signal then is recorded, not raised
_SAID: list = []  # the exit code of the line that said why the run ended, once written: a run writes one
_KEPT: list = []  # what the ending line says of the messages typed ahead (typed_ahead.said), once they are kept


def _said_end(line: str, code: int) -> int:
    """The line that says how the run ended (a signal's word, where the session is, the messages typed ahead),
    written once; returns the exit code of the line that was written. The run is ending: a signal from here on is
    recorded, not raised (one raised inside the write of this line left the run with none)."""
    _DONE.append(True)
    if not _SAID:
        _SAID.append(code)
        _err("; ".join([line, *_KEPT[:1]]))
    return _SAID[0]


def _keep_early() -> None:
    """The run ends before its chat's first prompt: the keys held since entry() are kept (_keep_typed_ahead)."""
    for keys in _EARLY[:1]:
        if keys.waits:
            _keep_typed_ahead(keys.take)
        else:  # a piped run's hold (keys.hold_early): its keys are the shell's, and Ctrl-C drops them as it did
            keys.discard()


def _keep_typed_ahead(take, held: str = "") -> None:
    """The chat at a terminal ends with no prompt to come: the messages typed ahead (`held`, the REPL's, then the
    keys `take` reads out of the terminal's queue) go to the input history, not to the shell, which ran each line
    as a command; the ending line says how many (typed_ahead.py)."""
    from . import typed_ahead

    with signals_held():  # a second signal meanwhile: the keys taken are kept first
        messages = typed_ahead.lines(held + take().decode("utf-8", "replace"))
        if messages and not _KEPT:
            _KEPT.append(typed_ahead.said(messages, typed_ahead.keep(messages)))


def _leave(signum, frame):
    """Like Ctrl-C the reply in flight ends and is recorded (Chat turns the KeyboardInterrupt into cancel); then
    the chat stops; a prompt is ended through its event loop (repl.end_prompt), not by raising. After a hangup the
    terminal is gone: output to it would fail (EIO), so it goes to /dev/null; a SIGHUP sent to a chat whose
    terminal is still there (kill -HUP) leaves it its line. A background job (`kill %1`) lets go of the terminal:
    it is the shell's (terminal.let_go)."""
    terminal.resume_output()  # a terminal paused with Ctrl-S: the writes that end the chat would wait for a Ctrl-Q
    if not _DONE and _unraisable(frame, signum):
        return
    if not _LEAVING:
        _LEAVING.append(signum)
    if signum == signal.SIGHUP:
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            if _hung_up(fd):
                os.dup2(null, fd)
        os.close(null)
    terminal.let_go()
    if _DONE:  # the run is already ending (its chat has ended, or a signal before ended it): its code and line stand
        return
    for chat in _CHAT:
        chat.running, chat.terminated = False, True
    # imported for a chat at a terminal only; listed already while its import runs, without end_prompt yet (a signal
    # then was an internal error, AttributeError, exit 1)
    end_prompt = getattr(sys.modules.get(f"{__package__}.repl"), "end_prompt", None)
    if not (end_prompt and end_prompt()):  # at the prompt: ended through its event loop
        raise KeyboardInterrupt


def _interrupt(signum, frame):
    """SIGINT: Python's default (KeyboardInterrupt) until main() has ended."""
    if not _DONE and not _unraisable(frame, signum):
        raise KeyboardInterrupt


def _unraisable(frame, signum: int) -> bool:
    """The handler runs inside importlib's module-lock callback (a weakref's, at the end of an import), where an
    exception is printed as "Exception ignored in ..." and dropped: the signal was lost (a run went on) and a
    traceback shown. Then the signal is sent again from another thread, not waited for, to be handled once that
    callback has returned (raise_signal would run the handler at once, inside the callback still)."""
    import _thread

    for _ in range(8):  # the callback itself, or what it calls
        code = getattr(frame, "f_code", None)
        if code is None:
            return False
        if code.co_name == "cb" and code.co_filename.startswith("<frozen importlib"):
            _thread.start_new_thread(os.kill, (os.getpid(), signum))
            return True
        frame = frame.f_back
    return False


def _hung_up(fd: int) -> bool:
    """fd is a terminal that has been hung up: the kernel answers its ioctls with EIO (a file, a pipe or a live
    terminal: False)."""
    import errno
    import termios

    try:
        termios.tcgetattr(fd)
    except termios.error as e:
        return e.args[0] == errno.EIO
    except (OSError, ValueError):
        return False
    return False


BINARY_PEEK = 8000  # bytes of a piped chat's stdin looked at to tell binary data (git looks at as many)
BINARY_LEAST = 1024  # a first read shorter than this (a slow writer's line) is not judged: its lines are
CONTROLS = frozenset(range(32)) - set(b"\t\n\v\f\r\x1b") | {0x7F}  # none of a text's characters


def binary_data(first: bytes) -> bool:
    """Whether the start of a piped chat's stdin (its first read, of 1 KiB or more) is binary data (a program, a
    gzip file, /dev/zero), not lines of text with a bad one: a NUL byte (git's test for a binary file) among
    control characters that are a twentieth of its first 8000 bytes or more (compressed bytes: a tenth; text: none
    but the NUL, or an escape sequence's ESC)."""
    head = first[:BINARY_PEEK]
    if len(head) < BINARY_LEAST:  # `a\0b` alone would be a twentieth of control characters
        return False
    return b"\0" in head and sum(b in CONTROLS for b in head) * 20 >= len(head)


def _main(args) -> int:
    from .. import pipes
    from ..conversation import attach, store
    from ..conversation.chat import Chat, Options
    from ..conversation.session import ChatSession
    from . import config, remote_env

    tty = terminal.isatty(sys.stdin)
    first = " ".join(args.words).split()[:1]
    if first and first[0] in SUBCOMMANDS and not args.dashdash:
        raise UsageError(
            f"'{first[0]}' is a subcommand: put it first (yi-chat {first[0]} ...), or send it as a "
            f"prompt with -p TEXT or after --"
        )
    prompt, attachments = attach.gather(args.words, args.prompt, args.files or [], tty, _err)  # before anything loads
    if prompt is None and not tty and (out := pipes.writes_into_stdin()):  # a piped chat's lines are read as it goes
        raise UsageError(f"stdin is the file {out} writes into: each line written would be read back as a message")
    # A mistyped command (`yi-chat /histroy`) is said before the model loads, not after. After --, the words are a
    # message as typed, whatever they start with (a `/`, an input method's `／`, a space): Chat.handle's verbatim
    if prompt is not None and not args.verbatim:
        from ..conversation import commands

        try:
            commands.parse(prompt)  # YiError: its one line, exit 1, as the chat would have said it
        except YiError as e:
            if args.json:  # and its object, as the chat writes it for a line that is no command (or misuses one)
                from .render import json_object

                named = {"command": e.command, "output": ""} if isinstance(e, commands.Misused) else {}
                with contextlib.suppress(OSError):  # stdout closed or full: the line on stderr says it all the same
                    print(json_object({**named, "error": str(e)}), flush=True)
            raise
    top, gen_cfg = config.read()
    args.endpoint, endpoint_from = remote_env.endpoint(args.endpoint, top)
    if args.model is not None and not args.model.strip():
        raise UsageError("--model is empty: give a checkpoint directory, a cached hub id, or demo")
    session = data = None
    if args.resume == "":  # it was read as no --resume at all: a fresh session, the one asked for not resumed
        raise UsageError("--resume is empty: give a session file or id, or last")
    resume = "last" if args.continue_ else args.resume
    if args.continue_ and args.resume not in (None, "last"):
        raise UsageError("-c/--continue and --resume PATH name two sessions; give one")
    if resume and resume != "last" and not tty and attach.own_input(resume):
        # `--resume /dev/stdin < s.json` resumed it, then read it again as the chat's lines (or, with -p, as text
        # before the prompt): its JSON was sent as a message
        raise UsageError(
            f"--resume {shown(resume, 200)}: is the chat's own input (stdin); give the session file itself"
        )
    if resume:
        session, saved, data = store.read(resume)
    named = "--model " if args.model else "YI_CHAT_MODEL=" if os.environ.get("YI_CHAT_MODEL") else "model "
    env_model = os.environ.get("YI_CHAT_MODEL")
    if args.model is None and env_model and env_model.isspace():  # as --model ' ' (it was " : no such directory")
        raise UsageError("YI_CHAT_MODEL is blank: set it to a checkpoint directory, a hub id or demo, or unset it")
    # A remote engine names its own model when none is given; a local one defaults to the model a resumed session
    # was with (the config's default would switch it silently), else to the demo. model_from: the setting that
    # named it where no flag did, said before an error resolving it (the line gave the name alone)
    args.model_from = None
    if args.model:
        pass
    elif env_model:
        args.model, args.model_from = env_model, "YI_CHAT_MODEL"
    elif not args.endpoint and (was := resumed_model(data)):
        args.model = was
    elif top.get("model") and (not args.endpoint or endpoint_from == str(config.path())):
        # with a server, the config's model is the one its own `endpoint` serves, never a local folder sent as a name
        args.model, args.model_from = top["model"], f"model in {config.path()}"
    elif not args.endpoint:
        args.model = "demo"
    aliases = top.get("aliases", {})  # [aliases] in config.toml
    args.alias = args.model if args.model in aliases else None
    args.model = aliases.get(args.model, args.model)
    if not args.endpoint:  # a demo typo named by what gave it: the alias, config.toml's model (said as the name)
        with config.as_alias(args.alias, args.model):
            in_config = args.model_from and args.model_from.startswith("model in ")
            check_model_name(args.model, "" if args.alias else f"{args.model_from}: " if in_config else named)
        # the model's context, or --context's where less (it was the model's whatever that said)
        known = [n for n in (attach.context_hint(args.model), args.context or top.get("context")) if n]
        attach.check_size(attachments, min(known, default=None))
    settings, sources = settings_from(args, gen_cfg, None if args.endpoint else args.model)
    if resume:  # flags win, the file over config and model
        store.take_settings(settings, sources, saved, data)
    if args.system is not None or (session is None and top.get("system")):
        session = session or ChatSession()
        # a blank one is none set, as --system's (`system = "  "` was sent to the model as its system prompt)
        session.system = args.system if args.system is not None else top["system"] if top["system"].strip() else ""
    # The chat is drawn where a person sees it: stdout, or stderr when stdout goes to a file or a pipe (which then
    # gets the replies alone, as a piped run writes them); with neither a terminal it reads its lines as a pipe.
    screen = _screen()
    interactive = prompt is None and tty and screen is not None
    render = make_renderer(args, interactive, prompt, screen)
    if interactive:  # keys typed while the model loads wait, unechoed, for the first prompt (they were echoed
        terminal.wait_foreground()  # raw, then shown again by it); a background job (`yi-chat &`) waits for `fg`
        render.pin_keys(True)
    if getattr(render, "keys", None) not in _EARLY:  # no prompt to read the keys held since entry() (nor a piped
        _unhold_early()  # run's hold, make_renderer): the terminal echoes them again
    for a in attachments:  # -f of an empty file went silently, where /file says "(empty)"
        if not a.text.strip():
            render.notice(f"{shown(a.name, 200)} is {'empty' if not a.text else 'blank'}: attached as it is")
    try:
        if prompt is None and not tty and (head := stdin_file_head()) is not None:  # said as run_pipe says it
            if refused := not_lines(head):
                render.error(refused)
                return 1
            if not head and not attachments:  # (an attachment left unsent is run_pipe's line, exit 1)
                render.notice("stdin is empty: nothing to do")
                return 0
        if interactive and getattr(render, "keys", None) is not None:  # until the first prompt (KeyHold.pin): a
            render.keys.drain()  # paste longer than the terminal's queue while the model loads holds up no Ctrl-C
        engine = make_engine(args, top, render, endpoint_from)
        attach.check_tokens(engine, settings, attachments, prompt or "", system=session.system if session else None)
        overflow = args.overflow or top.get("overflow", "drop")
        options = Options(
            overflow=overflow, setting_sources=sources, one_shot=prompt is not None, batch=not interactive
        )
        mode = "one-shot" if prompt is not None else "interactive" if interactive else "pipe"
        autosave = store.autosave_for(resume, data, mode)
        chat = Chat(engine, render, settings, session, options, on_turn=autosave)
        chat.attachments = attachments
        chat.source = None if args.endpoint else model_source(args.model)
        if chat.session.system and getattr(engine.template, "plain", False):  # taken, and never sent
            render.notice("the system prompt is not sent: this model runs as plain completion (--raw, or a base model)")
        elif interactive and not args.raw and getattr(engine.template, "plain", False):  # a base model, unsaid
            render.notice(
                f"{engine.name} has no chat template (a base model): each message is continued as plain text, not "
                "answered"
            )
        if data is not None and data.get("_passed"):  # newer files damaged, or a newer yi-chat's: -c opened an older
            render.notice(store.left_out(data["_passed"]))  # one without a word (a script too: it is a warning)
        if data is not None and interactive:  # a script's stderr keeps to errors: -c -p and pipes say nothing
            render.notice(resumed(args.resume if resume != "last" else None, data, chat.session.exchanges))
            if isinstance(data.get("model"), str) and data["model"] != engine.name:
                how = "-m chooses" if data.get("source") else "-m or --endpoint chooses"  # a remote session's
                render.notice(f"it was with {shown(data['model'], 200)}; it goes on with {engine.name} ({how})")
        named = shown(os.path.basename(data["path"]), 200) if autosave.forked and data else ""  # one line, as typed
        if autosave.forked and autosave.refused:  # no lock to be had: two processes could write one file
            render.notice(
                f"{shown(autosave.refused, 200)}: this chat goes on from {named} in a new session file, which no "
                "other yi-chat can take"
            )
        elif autosave.forked and data.get("_unknown"):  # kept where they are: a resume in place dropped them
            unknown = data["_unknown"]
            fields = ", ".join(shown(k, 40) for k in unknown[:4]) + (", ..." if len(unknown) > 4 else "")
            render.notice(
                f"{named} holds fields this yi-chat does not know ({fields}): this chat goes "
                "on from it in a new session file, and that file stays as it is"
            )
        elif autosave.forked:
            render.notice(
                f"{named} is in use by another yi-chat (or was written by one since it "
                "was read): this chat goes on from it in a new session file, the other keeps its own"
            )
        if attachments and prompt is None:
            they = "they go" if len(attachments) > 1 else "it goes"
            render.notice(f"attached {attach.names(attachments)}: {they} with your first message")
        if interactive and endpoint_from.startswith("$"):  # a server chosen by the environment is said, not silent
            # its password and secret query values as ***, as /model shows it (they were in clear here)
            where = f"{shown_url(args.endpoint)} (set by {endpoint_from}; --endpoint '' runs the local model)"
            render.notice(f"streaming from {where}")
        _CHAT[:] = [chat]
        try:
            return _run(chat, prompt, interactive, render, args.verbatim)
        finally:
            autosave.close()
    except BaseException as e:  # Ctrl-C or a failed load before the first prompt: what was typed is not the shell's
        _keep_typed_ahead(render.take_keys)  # (a chat's own keys: a piped run's stay the shell's)
        if isinstance(e, KeyboardInterrupt):
            render.discard_keys()  # (not held: they are dropped all the same)
        raise
    finally:
        render.pin_keys(False)


def model_source(model: str) -> str:
    """What a session records as its model's source, for a resume to load it again: a directory as an absolute
    path (the session's `model` is only its name), a hub id or a demo name as given."""
    from ..checkpoint import demo
    from ..inputs import user_path

    if model in demo.NAMES:  # the demo whatever folder of that name is here, as loader.resolve takes it
        return model
    try:
        p = user_path(model)
        return str(p.resolve()) if p.is_dir() else model
    except (YiError, OSError, ValueError):
        return model


def resumed_model(data: dict | None) -> str | None:
    """The model a resumed session was with (its `source`) where no model is given, while it is still here: a
    demo name, a directory that is still there, a hub id (or Yi alias) whose snapshot is complete in the Hugging
    Face cache; None otherwise (the default applies, and the chat says the session was with another): a resume
    does not start a download of gigabytes nobody asked for, nor fail offline where the default would serve."""
    from ..checkpoint import demo
    from ..inputs import user_path

    source = (data or {}).get("source")
    if not isinstance(source, str) or not source.strip():
        return None
    if source in demo.NAMES:
        return source
    try:
        folder = user_path(source)
        if folder.is_dir():  # a checkpoint's absolute path, as a session records one (not `/tmp`, not `../..`)
            return source if folder.is_absolute() and (folder / "config.json").is_file() else None
        from ..checkpoint import family, hub  # a hub id's question only

        repo = family.expand(source)
        if source.startswith(("/", "~", ".")) or not hub.written_as_id(repo) or hub.malformed(repo, source):
            return None
        return source if hub.usable(repo, hub.cached_snapshot(repo)) else None
    except (YiError, OSError, ValueError):  # offline with a file of it gone, a name the checks refuse: not here
        return None


def resumed(given: str | None, data: dict, exchanges: int) -> str:
    """The line that says which session a resume opened (`-c` names none, and the banner is the same for every
    chat): its file (by name in the store, else as given), its exchanges, when it was last written."""
    from pathlib import Path

    from ..conversation import store
    from ..conversation.session import exchanges_said
    from ..errors import shown

    path = Path(data["path"])
    name = path.name if given is None or path.parent.resolve() == store.sessions_dir().resolve() else given
    line = f"resumed {exchanges_said(exchanges)} from {shown(name, 200)}"
    if updated := store.stamp(data.get("updated")):
        line += f" (updated {updated[:10]} {updated[11:16]} UTC)"  # as `yi-chat sessions` lists it
    return line


def _run(chat, prompt, interactive, render, verbatim: bool = False) -> int:
    early = False  # a Ctrl-C before the REPL's first prompt ends the chat
    try:
        if prompt is not None:
            chat.handle(prompt, verbatim)
            if chat.attachments and not (chat.ctrl_c or chat.terminated):  # `-f x -p /history`: no message took x
                chat.failures += 1
                from ..conversation.attach import names

                chat.render.error(
                    f"{names(chat.attachments)}: attached, but the prompt ran a command, not a message; not sent"
                )
            code = 130 if chat.ctrl_c else 1 if chat.failures else 0
        elif interactive:
            from . import repl

            code = repl.run(chat)
        else:
            code = run_pipe(chat)
    except KeyboardInterrupt:
        _DONE.append(True)  # the chat has ended: a signal from here on is recorded, not raised into its saves
        if chat.terminated:
            pass
        elif interactive:  # before the REPL's first prompt (it takes its own Ctrl-C)
            early = True
            raise
        else:  # a batch's Ctrl-C between replies (waiting on stdin, or held through an autosave): as inside one
            chat.ctrl_c += 1
            code = 130
    except BrokenPipeError:
        if not (chat.ctrl_c or chat.terminated):  # the reader left on its own (| head): cli's quiet exit 0
            raise
        # Ctrl-C reached the reader too (| cat): the run was interrupted all the same
        to_null(sys.stdout.fileno())
        code = 130
    except StdoutFailed as e:  # > /dev/full: the run stops at the reply it could not write, that reply kept
        to_null(sys.stdout.fileno())
        code = EXIT_CHAT
        if not chat.terminated:
            # the run's ending line: the one of a failed autosave below is not written again
            _said_end(f"stdout failed ({e.strerror}); " + (chat.on_turn.where() or "no turn was saved"), code)
    finally:
        _DONE.append(True)
        ahead = "".join(getattr(sys.modules.get(f"{__package__}.repl"), "AHEAD", ()))  # /exit, Ctrl-D, a signal
        if (chat.terminated or early or ahead) and interactive:  # no prompt comes for the keys typed ahead
            _keep_typed_ahead(render.take_keys, ahead)  # (pin_keys would drop them)
            if _KEPT and not (chat.terminated or early):  # no ending line to say it
                render.notice(_KEPT[0])
        render.pin_keys(False)  # unpinned and echo back on, however the chat ended
        _CHAT.clear()
    if not interactive and chat.ctrl_c:  # what was typed ahead of a batch's Ctrl-C is not the shell's
        render.discard_keys()
    if chat.terminated:
        exit_code, what = LEAVE[_LEAVING[0]]
        if chat.session.turns:  # again: the signal may have cut the autosave of the turn before it
            chat.on_turn(chat)
        saved = chat.on_turn.where()
        if chat.attachments:  # as Ctrl-D or the input's end says them: they went without a word
            from ..conversation.attach import names

            what += f"; {names(chat.attachments)}: attached, not sent"
        return _said_end(f"{what}; {saved}" if saved else what, exit_code)
    if not interactive and chat.ctrl_c:  # a batch stops at Ctrl-C, as a pipeline does; the REPL goes on
        saved = chat.on_turn.where()
        return _said_end(f"interrupted; {saved}" if saved else "interrupted", 130)
    if not interactive and chat.on_turn.failing:  # a script is told its turns are not all saved: exit 1 and the
        return _said_end(chat.on_turn.where(), code or EXIT_CHAT)  # ending line (the notice spoke of next turns)
    return code


def check_model_name(model: str, given: str = "--model ") -> None:
    """A `demo-...` name that is neither a demo model nor a directory is a typo: say which demos exist (given: where
    the name came from, as the line names it)."""
    from ..checkpoint import demo

    # os.path.exists: False where the lookup fails (a name over 255 bytes: Path.exists raised ENAMETOOLONG)
    if model.startswith("demo") and model not in demo.NAMES and not os.path.exists(os.path.expanduser(model)):
        raise LoadError(
            f"{given}{shown(model, 200)}: no such demo model or directory (the demo models are {', '.join(demo.NAMES)})"
        )


def not_lines(first: bytes) -> str | None:
    """Why a piped chat's stdin, whose first read is `first`, is read as no lines at all, else None."""
    from .. import inputs

    if wide := inputs.wide_encoding(first):  # as -f and -p - tell it (UTF-32 was called UTF-16)
        # (PowerShell's `>` writes it): each line was "not valid UTF-8" or "contains a NUL byte", its CRs lines
        return f"stdin is {wide} text, not UTF-8; nothing read ({inputs.convert('stdin', wide)})"
    if binary_data(first):  # an ELF, a gzip: 167 lines of "skipped", and its fragments sent as turns
        return "stdin is binary data (it contains NUL bytes), not text; nothing read"
    return None


def stdin_file_head() -> bytes | None:
    """The start of stdin where it is a regular file (`yi-chat < prompts.txt`), read without moving its offset, so
    that a piped chat's stdin that is empty or no text is said before the model loads (it was after 10 s of
    loading); None where stdin is anything else (a pipe's bytes can only be read once)."""
    try:
        if not stat.S_ISREG(os.fstat(0).st_mode):
            return None
        return os.pread(0, BINARY_PEEK, os.lseek(0, 0, os.SEEK_CUR))
    except OSError:  # closed, or not seekable after all: read as it comes
        return None


def run_pipe(chat) -> int:
    """Each non-empty stdin line is one user turn (or command) of one session; bad lines are skipped loudly."""
    import itertools

    from .. import inputs, pipes
    from ..conversation import attach
    from . import stdin_lines

    n = asked = 0
    with contextlib.closing(pipes.chunks(sys.stdin.buffer)) as reads:
        first = next(reads, b"")
        while first[:2] in inputs.UTF16_BOMS and len(first) < 4 and (more := next(reads, b"")):
            first += more  # a mark in a read of its own (a slow writer): the text after it says what it is
        if refused := not_lines(first):
            chat.render.error(refused)
            return 1
        # a line is at most what an attachment can be (64 MiB: far beyond any context)
        every = stdin_lines.lines(itertools.chain([first] if first else [], reads), attach.MAX_BYTES)
        for n, raw in enumerate(every, 1):
            if chat.render.keys is None and pipes.ended(sys.stdin):  # its writer is done with it (and with the
                hold_piped(chat.render)  # terminal, where it used it): the keys typed from now on are held
            went = _one_line(chat, n, raw)
            asked += went is not None
            if went is False:
                break
    unsent = chat.attachments and not chat.ctrl_c  # `/file x` last, or `-f x < /dev/null`: no message took them
    if unsent:  # one line that is true of both (an empty stdin is said by it, not by a second notice)
        chat.failures += 1
        waiting = attach.names(chat.attachments)
        ended = "the input ended" if chat.running else "the chat ended (/exit)"
        chat.render.error(f"{waiting}: attached, but {ended} before a message took it; not sent")
    elif n == 0:
        chat.render.notice("stdin is empty: nothing to do")
    elif not asked and not chat.failures:  # as quiet as an empty one was not: the same word for it
        chat.render.notice("stdin has only blank lines: nothing to do")
    return 130 if chat.ctrl_c else 1 if chat.failures else 0


def _one_line(chat, n: int, raw: bytes) -> bool | None:
    """Line n of a piped run: run (whether the run goes on), or skipped (None: blank, or not text, said)."""
    from .stdin_lines import TooLong

    if isinstance(raw, TooLong):
        chat.failures += 1
        chat.render.error(f"stdin line {n} is too long (over {raw.limit >> 20} MiB); skipped")
        return None
    try:
        # utf-8-sig: a file saved "UTF-8 with BOM" (Notepad, PowerShell) began its first line with U+FEFF,
        # which made a first `/system ...` a message to the model
        line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
    except UnicodeDecodeError:
        from ..conversation.attach import legacy_chinese
        from ..inputs import convert

        chat.failures += 1
        # a prompt file in GBK or Big5: every line of it is skipped, and the line says how to convert it
        hint = f" (Chinese saved as GBK? {convert('stdin', 'GBK')})" if legacy_chinese(raw, 2) else ""
        chat.render.error(f"stdin line {n} is not valid UTF-8; skipped{hint}")
        return None
    if "\x00" in line:
        chat.failures += 1
        chat.render.error(f"stdin line {n} contains a NUL byte; skipped")
        return None
    if not line.strip():
        return None
    return chat.handle(line) and not chat.ctrl_c


def _screen():
    """The terminal stream a run is drawn on: stdout, or stderr when stdout goes to a file or a pipe; None."""
    return sys.stdout if terminal.isatty(sys.stdout) else sys.stderr if terminal.isatty(sys.stderr) else None


def make_renderer(args, interactive: bool, prompt: str | None, screen=None):
    """screen: the terminal stream the REPL draws on (interactive), stdout or stderr."""
    from . import streams
    from .keys import KeyHold, from_a_file
    from .render import JsonRenderer, PlainRenderer, TerminalRenderer, make_console

    err = make_console(stderr=True)
    if interactive and screen is not sys.stdout:  # the chat on stderr; to stdout the replies alone, or JSON lines
        keys = _EARLY[0] if _EARLY else KeyHold(sys.stdin.fileno())
        keys.prompt_follows = True
        copy = JsonRenderer(make_console(), err) if args.json else PlainRenderer(make_console(), err, say_cuts=False)
        render = TerminalRenderer(make_console(file=screen), err, keys=keys, transcript=copy)
    elif args.json:
        out = streams.GuardedStdout(sys.stdout)  # the replies and a command's output: a write that fails ends the run
        render = JsonRenderer(make_console(file=out), err, out=out)
    elif interactive or (sys.stdout.isatty() and prompt is not None):
        keys = (_EARLY[0] if _EARLY and interactive else KeyHold(sys.stdin.fileno())) if sys.stdin.isatty() else None
        if keys is not None:
            keys.prompt_follows = interactive  # a Ctrl-Z keeps the keys typed ahead for the prompt (keys.py)
        render = TerminalRenderer(make_console(), err, keys=keys)
    else:
        out = streams.GuardedStdout(sys.stdout)
        render = PlainRenderer(make_console(file=out), err, out=out, show_stats=args.stats)
    if from_a_file() or prompt is not None:  # a one-shot's piped stdin is read to its end (attach.gather)
        hold_piped(render)
    render.screen = screen if interactive else None
    return render


def hold_piped(render) -> None:
    """A run whose input is not a terminal, drawn on one: the keys typed meanwhile were echoed into its replies.
    Held on the terminal it is drawn on (keys.piped_hold), pinned for the whole run (main unpins it as it ends; the
    keys stay queued for the shell, and a Ctrl-C drops them as it did). Only once nothing upstream may be using the
    terminal (keys.from_a_file): stdin a file, or a pipe that has ended (a one-shot's, run_pipe's); and nothing
    downstream (keys.to_a_pipe: stdout not a pipe)."""
    from .keys import piped_hold, to_a_pipe

    screen = _screen()
    if render.keys is not None or screen is None or terminal.isatty(sys.stdin) or to_a_pipe():
        return
    early = [k for k in _EARLY if not k.waits]  # taken so in entry(), before the imports and the model load
    try:
        render.keys = early[0] if early else piped_hold(screen.fileno())
        render.pin_keys(True)
    except OSError:  # no descriptor left: its keys echo, as they did
        pass


def make_engine(args, top: dict, render, endpoint_from: str = ""):
    if args.endpoint:
        from ..engines.remote import RemoteEngine
        from ..engines.remote_http import Limits
        from . import config, remote_env

        key, key_from = remote_env.api_key(args.api_key, top)
        limits = Limits.from_config(top.get("remote") or {}, str(config.path()))
        for name in ("connect_timeout", "idle_timeout", "deadline"):
            if getattr(args, name) is not None:
                setattr(limits, name, getattr(args, name))
        local = [("--context", args.context), ("--device", args.device), ("--dtype", args.dtype)]
        local += [("--engine", args.engine), ("--raw", args.raw), ("--speculate", args.speculate)]
        local += [("--allow-pickle", args.allow_pickle), ("--trust-remote-code", args.trust_remote_code)]
        if ignored := [flag for flag, value in local if value not in (None, False)]:  # accepted, and did nothing
            render.notice(f"{', '.join(ignored)}: a local model's; the server at --endpoint decides (ignored)")
        try:
            with _asking_for_models(render, args):
                engine = RemoteEngine(args.endpoint, key, model=args.model, limits=limits, notify=render.notice)
        except (LoadError, UsageError) as e:  # a server nobody named on this command line: where it came from
            if endpoint_from in ("", "--endpoint"):  # (an OPENAI_BASE_URL set for another tool made yi-chat fail
                raise  # "cannot connect" with no word of why it had asked a server at all)
            raise type(e)(f"{e} (set by {endpoint_from}; --endpoint '' runs the local model)") from None
        engine.origin = f"endpoint from {endpoint_from}\n" + (
            f"API key from {key_from} (not shown)" if key else "no API key"
        )
        return engine
    remote = [("--api-key", args.api_key), ("--connect-timeout", args.connect_timeout)]
    remote += [("--idle-timeout", args.idle_timeout), ("--deadline", args.deadline)]
    if ignored := [flag for flag, value in remote if value is not None]:  # accepted, and did nothing
        render.notice(f"{', '.join(ignored)}: a server's (--endpoint); the local model has none (ignored)")
    from rich.text import Text

    from ..checkpoint.files import with_remedy
    from ..checkpoint.loader import open_checkpoint, pick_device, resolve
    from ..engines.local import LocalEngine
    from ..safe_text import safe
    from .config import as_alias

    # A hub id not cached is fetched here, and the demo converted on its first run, each with its own progress
    # display: before the spinner.
    # a target's error names the alias it stands for, or the setting that named it
    with as_alias(getattr(args, "alias", None), args.model, getattr(args, "model_from", None)):
        path = resolve(args.model, args.allow_pickle)
    # a Text, not a str: rich reads a str as markup (a folder named `m[/x]` raised MarkupError, `[b]` vanished)
    loading = Text(safe(f"loading {args.model} ..."))
    with progress.spinner(render.err, loading) if render.err.is_terminal else _nullctx():
        # torch's import (1-2 s, the first thing the load does) holds the signals off: a KeyboardInterrupt raised
        # inside its native init aborted the process (pybind11's terminate, exit 134), left numpy half loaded (a
        # traceback at the next import) or was swallowed (the signal lost). Held, it comes as the import returns.
        # torch's import in a folder deleted under the shell died in MKL ("Intel oneMKL FATAL ERROR: Cannot load
        # .../libtorch_cpu.so"), exit 2, before a line of yi-chat's
        try:
            os.getcwd()
        except FileNotFoundError:
            raise LoadError("the current folder no longer exists (deleted); cd to one that does") from None
        with signals_held():
            import torch  # noqa: F401
        setting = "--device" if args.device else "config.toml: device ="
        context = args.context or top.get("context")  # config.read made it tokens (an int)
        try:
            ckpt = open_checkpoint(
                path,
                device=pick_device(args.device or top.get("device"), setting),
                dtype=args.dtype or top.get("dtype"),
                allow_pickle=args.allow_pickle,
                trust_remote_code=args.trust_remote_code,
                context=context,
            )
            engine = LocalEngine(ckpt, backend=args.engine or top.get("engine", "auto"), raw=args.raw, context=context)
        except LoadError as e:  # a damaged file in the demo's cache: how to make it again
            raise with_remedy(e, path) from None
    engine.progress = render.progress
    if args.speculate == "lookup" and engine.backend == "generate":  # it took the flag and drafted nothing
        render.notice("--speculate lookup: the generate engine does not speculate (the fast engine does)")
    if context and context > engine.context_length:  # the model's, or what the free GPU memory holds, is less
        said = getattr(context, "given", context)  # as written: 300K, not 307200
        given = f"--context {said}" if args.context else f"config.toml: context = {said}"
        render.notice(f"context {engine.context_length} tokens: the most this model takes here ({given})")
    return engine


def _unhold_early() -> None:
    """The terminal as entry() found it, unless the chat's renderer has taken the hold over (then it is given
    back when the chat ends)."""
    for keys in _EARLY:
        keys.unpin()
    _EARLY.clear()


_INFO = ("-h", "--help", "--version")  # what a chat's flags print instead of chatting


def _info_asked(argv: list[str]) -> str | None:
    """The flag among argv that prints instead of chatting (--help, --version), as argparse reads it: a long flag's
    unambiguous start names it too (`--vers` is --version)."""
    longs = [o for o in parser()._option_string_actions if o.startswith("--")]
    for word in _flags(argv):
        name = word.split("=", 1)[0]
        hits = [name] if name in _INFO else [o for o in longs if name.startswith("--") and o.startswith(name)]
        if len(hits) == 1 and hits[0] in _INFO:
            return hits[0]
    return None


def _asking_for_models(render, args):
    """A spinner while the server is asked for its models (no --model): the screen stayed blank until the idle
    timeout (60 s) where the server accepted and did not answer, where a local model's load shows its own."""
    if args.model or not render.err.is_terminal:
        return _nullctx()
    from rich.text import Text

    from ..engines.remote_endpoint import Endpoint
    from ..safe_text import safe

    try:
        where = Endpoint(args.endpoint).shown()  # credentials as ***
    except YiError:  # said by the engine's own construction, where it came from too
        return _nullctx()
    return progress.spinner(render.err, Text(safe(f"asking {where} for its models ...")))


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def entry() -> None:
    from . import streams

    if "stdout" in streams.repair():  # nothing could be shown: say so instead of chatting into the void
        argv = sys.argv[1:]
        asked = _info_asked(argv)
        if argv and argv[0] in SUBCOMMANDS:
            what = f"the output of yi-chat {argv[0]}"
        else:  # `yi-chat --help >&-` was told its replies would be lost
            what = f"the output of yi-chat {asked}" if asked else "replies"
        _err(f"stdout is closed; {what} would be lost (redirect it to /dev/null to discard it)")
        sys.exit(2)
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # libgomp spinning makes small CPU ops ~100x slower
    # huggingface_hub's import warns of HF_HUB_ENABLE_HF_TRANSFER (older docs set it) in two lines with its path, and
    # fails at HF_HUB_DOWNLOAD_TIMEOUT=abc
    warnings.filterwarnings("ignore", message=".*HF_HUB_ENABLE_HF_TRANSFER", category=FutureWarning)
    env_files.hub_ints()
    # The terminal is held from here, before the imports and the model load: keys typed meanwhile were echoed raw
    # above the banner, then again by the prompt that reads them. SIGTERM, SIGHUP and SIGQUIT are caught first, so
    # that every way out (an error, --help, Ctrl-C, a signal) passes the finally that gives the echo back.
    _catch_leave()
    try:
        try:
            if not (sys.argv[1:] and sys.argv[1] in SUBCOMMANDS):
                with signals_held():  # cut between taking the terminal's echo and recording it, echo stayed off
                    from .keys import hold_early

                    _EARLY[:] = [k for k in [hold_early()] if k]
            code = main()
        except KeyboardInterrupt:  # one in start-up (before main's own handlers), or a second while the first was
            _keep_early()  # handled: one line, the first's exit code
            code = _said_end(_leaving()[1], _leaving()[0])
        except SystemExit as e:  # argparse's --help, --version and usage errors: the terminal given back too
            code = e.code
        except Exception as e:  # a bug: one line, and the terminal's echo given back (a traceback had left it off)
            _err(f"internal error ({failure(e)}); please report it with the command that gave it")
            code = EXIT_CHAT
        finally:
            _DONE.append(True)  # from here a signal (its handler) raises nothing: main's code stands
    except KeyboardInterrupt:  # one in the instant between main's end and the line above (soak_signals.py met it)
        code = _said_end(_leaving()[1], _leaving()[0])
    _unhold_early()
    # Ignored from here: Python's finalization puts a Python-level handler back to the default action before it
    # tears the modules down (~0.3 s with torch loaded), where a signal then killed yi-chat (-15, -1; SIGQUIT a core)
    # after its chat had ended and saved; an ignored one it leaves ignored.
    for s in ENDING:
        signal.signal(s, signal.SIG_IGN)
    # A KeyboardInterrupt (Ctrl-C, or SIGTERM's handler) raised while code compiled from a string ran (exec of a
    # string: dataclasses' and namedtuple's generated methods, at import) leaves CPython's "unhandled interrupt" flag
    # set though it was caught here; `python -m yi_cli` then died by SIGINT after its exit (-2, not the exit code
    # with its line). Running a string resets that flag.
    exec("")
    sys.exit(code)


def _leaving() -> tuple[int, str]:
    """(exit code, word) of the first signal that ended the run, or Ctrl-C's."""
    return ENDING[_LEAVING[0] if _LEAVING else signal.SIGINT]


if __name__ == "__main__":
    entry()

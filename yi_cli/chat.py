"""Chat: one conversation driven by lines of input — a turn or a slash command — for the REPL and pipes (no torch)."""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

from . import attach, commands
from .errors import YiError, failure, first_line
from .events import FINISH_ERROR, Finish, Stats, Text
from .session import ChatSession
from .settings import GenSettings


@dataclass
class Options:
    overflow: str = "drop"  # what a turn that overflows the context does: drop oldest exchanges, or refuse
    setting_sources: dict = field(default_factory=dict)  # setting name -> "flag" | "config" | "command"


class Chat:
    def __init__(self, engine, renderer, settings: GenSettings | None = None, session: ChatSession | None = None,
                 options: Options | None = None, on_turn=None):
        self.engine = engine
        self.render = renderer
        self.settings = settings or GenSettings()
        self.session = session or ChatSession()
        self.options = options or Options()
        self.on_turn = on_turn  # called with the Chat after each recorded turn (autosave)
        self.history: list[Stats] = []  # stats of every finished reply, for /stats
        self.failures = 0
        self.running = True
        self.terminated = False  # SIGTERM: finish the reply in flight, record it, then leave
        self.editor = None  # callable(old text) -> new text, for /edit; set by the interactive REPL
        self.attachments: list = []  # files for the next message (-f, /file): attach.take prepends them
        self._counted: tuple = (None, 0)  # (conversation, its token count) last measured for the context meter

    def handle(self, line: str) -> bool:
        """Process one line of input; returns False once the chat should end (/exit)."""
        try:
            if any("\ud800" <= c <= "\udfff" for c in line):  # undecodable bytes (surrogateescape)
                raise YiError("the input is not valid UTF-8; line ignored")
            cmd = commands.parse(line)
            if cmd is None:
                text = line.strip()[1:] if line.strip().startswith("//") else line  # "//x" sends "/x"
                if text.strip():
                    self.turn(attach.take(self, text))
                return self.running
            before = self.session.to_dict()
            commands.run(self, *cmd)
            self.render.command_done(cmd[0].name)
            if self.on_turn and self.session.to_dict() != before:  # /undo, /clear, /load...: autosave follows
                self.on_turn(self)
        except YiError as e:
            self.failures += 1
            self.render.error(str(e))
        except BrokenPipeError:  # the reader of stdout is gone: nothing more to say (cli exits quietly)
            raise
        except Exception as e:  # a bug in a command must not end the chat: one line, and the REPL lives on
            if self.session.turns and self.session.turns[-1].role == "user":
                self.session.pop_user()  # a turn cut short by the bug: keep the roles alternating
            self.failures += 1
            self.render.error(f"{line.strip()[:40]!r} failed ({failure(e)})")
        return self.running

    def context_used(self) -> int:
        """Tokens the conversation takes: counted locally, or as the server last reported (remote engines)."""
        if not self.session.turns:
            return 0
        count = getattr(self.engine, "count", None)
        if count is not None:
            # The toolbar asks on every redraw; re-tokenize only when the conversation changed.
            msgs = self.session.messages()
            key = tuple((m["role"], m["content"]) for m in msgs)
            if self._counted[0] != key:
                self._counted = (key, count(msgs))
            return self._counted[1]
        last = self.history[-1] if self.history else None
        return last.prompt_tokens + last.new_tokens if last else 0

    def turn(self, text: str) -> Stats | None:
        """Send one user message and stream the reply; the session keeps the user turn only with its reply."""
        self.session.add_user(text)
        try:
            msgs, dropped = self._fit()
        except YiError as e:
            self.session.pop_user()
            self.failures += 1
            self.render.error(str(e))
            return None
        return self.reply(msgs, text, dropped=dropped)

    def reply(self, msgs: list[dict], prompt: str, prefix: str = "", dropped: int = 0) -> Stats | None:
        """Stream a reply to `msgs` and record it; `dropped` oldest turns are forgotten only once it is recorded."""
        self.render.reply_start(prompt)
        text, stats, error = self._stream(msgs)
        self.render.reply_end(text, stats)
        if error is not None:
            if not prefix:
                self.session.pop_user()
            self.failures += 1
            self.render.error(error)
            return None
        if prefix:  # /continue: the reply extends the last assistant turn
            last = self.session.turns.pop()
            text, stats.new_tokens = last.content + text, last.tokens + stats.new_tokens
        count_text = getattr(self.engine, "count_text", None)
        if count_text and not prefix:
            self.session.turns[-1].tokens = count_text(self.session.turns[-1].content)
        self.session.add_assistant(text, stats.new_tokens, stats.finish_reason, stats.to_dict())
        if dropped:
            self.session.drop_oldest(dropped)
        self.history.append(stats)
        if self.on_turn:
            self.on_turn(self)
        return stats

    def _fit(self) -> tuple[list[dict], int]:
        msgs = self.session.messages()
        count = getattr(self.engine, "count", None)
        ctx = getattr(self.engine, "context_length", None)
        if count is None or ctx is None:
            return msgs, 0
        from .prompt import fit

        budget = ctx - min(self.settings.max_new_tokens, ctx // 4)
        msgs, dropped = fit(count, msgs, budget, self.options.overflow)
        if dropped:
            self.render.notice(f"context full ({ctx} tokens): dropped the {dropped // 2} oldest exchange(s) "
                               f"to fit; the system prompt is kept")
        return msgs, dropped

    def _stream(self, msgs: list[dict]) -> tuple[str, Stats | None, str | None]:
        """Run engine.stream in a worker thread so Ctrl-C here only sets `cancel`; the stream ends itself."""
        events: queue.Queue = queue.Queue()
        cancel = threading.Event()

        def pump():
            try:
                for ev in self.engine.stream(msgs, self.settings, cancel):
                    events.put(ev)
            except BaseException as e:  # noqa: BLE001 - reported below, the REPL lives on
                events.put(e)
            events.put(None)

        worker = threading.Thread(target=pump, name="yi-stream", daemon=True)
        acc = {"text": [], "stats": None, "error": None}
        try:
            self._drain(worker, events, cancel, acc)
        except BaseException:  # e.g. BrokenPipeError from the renderer: stop the model before leaving
            cancel.set()
            if worker.is_alive():
                worker.join(timeout=30)  # bounded: a third Ctrl-C during a stuck prefill must still return
            raise
        worker.join()
        text, stats, error = acc["text"], acc["stats"], acc["error"]
        if error is None and stats is None:
            error = "the engine ended without finishing the reply"
        if error is not None and stats is None:
            stats = Stats(finish_reason=FINISH_ERROR)
        return "".join(text), stats, error

    def _drain(self, worker, events, cancel, acc) -> None:
        interrupts = 0
        started = False
        while True:
            try:
                if not started:
                    started = True
                    worker.start()
                ev = events.get(timeout=0.1)
                if ev is None:
                    break
                self._on_event(ev, acc)
            except queue.Empty:
                continue
            except KeyboardInterrupt:  # Ctrl-C can land anywhere in this loop: it only ever sets cancel
                interrupts += 1
                cancel.set()
                if interrupts >= 3:  # the engine does not answer cancel (e.g. a long prefill): give up
                    raise

    def _on_event(self, ev, acc: dict) -> None:
        if isinstance(ev, Text):
            acc["text"].append(ev.text)
            self.render.reply_text(ev.text)
        elif isinstance(ev, Finish):
            acc["stats"] = ev.stats
        elif isinstance(ev, BaseException):
            acc["error"] = first_line(ev) if isinstance(ev, YiError) else f"generation failed ({failure(ev)})"

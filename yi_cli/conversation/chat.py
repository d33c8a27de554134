"""Chat: one conversation driven by lines of input — a turn or a slash command — for the REPL and pipes (no torch).

A reply is pending until its Finish arrives: only then does `Pending.commit` change the session (user turn and reply
together, or a regenerated / extended reply), and the autosave follows. A failure leaves the session as it was; a
cancel commits the partial reply marked interrupted.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from .. import clock
from ..engines.events import FINISH_ERROR, FINISH_INTERRUPTED, FINISH_LENGTH, FINISH_STOP, Finish, Stats, Text
from ..engines.settings import GenSettings
from ..engines.template import Prompt
from ..errors import ENDING, ReplyCut, StdoutFailed, YiError, failure, first_line
from ..held import signals_held
from . import attach, commands, context, meter
from .session import ChatSession, exchanges_said


@dataclass
class Options:
    overflow: str = "drop"  # what a turn that overflows the context does: drop oldest exchanges, or refuse
    setting_sources: dict = field(default_factory=dict)  # name -> "flag" | "config" | "session" | "command"
    one_shot: bool = False  # -p / PROMPT: one reply, no commands (a refusal's remedy names flags, not /clear)
    batch: bool = False  # a piped or one-shot run: Ctrl-C ends it (in the REPL it stops what runs, the chat goes on)


RETRY_STOPPED = "retry stopped: the previous reply is kept (/retry again for another)"


@dataclass
class Pending:
    """A reply in the making: the messages it answers, and how it lands in the session once it has finished."""

    messages: list[dict]
    commit: Callable[[str, Stats], None]  # (reply text, stats) -> change the session
    label: str  # what the renderer shows as the request (the user's text, or the command)
    continue_final: bool = False  # the last message is a cut reply to extend (/continue)
    resume_ids: list[int] | None = None  # /continue: the exact ids of the prompt + cut reply, where known
    after: str = ""  # /continue: the cut reply's text, which the new text goes on from (the tint's state)
    settings: GenSettings | None = None  # this reply's own settings (/retry SEED), else the chat's
    # /retry of a reply that ended by itself: stopped (Ctrl-C), the new one does not take its place (it did, and the
    # whole reply was lost for the part of another)
    keeps_old: bool = False
    # /retry of a cut reply: stopped before its first word, the cut one stays (an empty reply took its place, and
    # /continue then had nothing to go on from)
    keeps_cut: bool = False
    clearable: bool = True  # /clear would leave what is answered (not /retry's, /edit's or /continue's exchange)
    # what the session holds while the reply streams, as its file has it then: the message said, its reply empty and
    # interrupted (a SIGKILL, the OOM killer mid-reply lost the message with the reply); None: nothing new is said
    asked: Callable[[ChatSession], None] | None = None

    def keeps_previous(self, text: str) -> bool:
        """A /retry stopped with `text` so far leaves the reply it was retrying (keeps_old, keeps_cut)."""
        return self.keeps_old or (self.keeps_cut and not text)


class Chat:
    def __init__(
        self,
        engine,
        renderer,
        settings: GenSettings | None = None,
        session: ChatSession | None = None,
        options: Options | None = None,
        on_turn=None,
    ):
        self.engine = engine
        self.render = renderer
        self.settings = settings or GenSettings()
        self.session = session or ChatSession()
        self.options = options or Options()
        self.on_turn = on_turn  # called with the Chat after each change of the session (autosave)
        self.history: list[Stats] = []  # stats of every finished reply, for /stats
        self.failures = 0
        self.ctrl_c = 0  # replies Ctrl-C cut short (a piped or one-shot run stops at the first)
        self.interrupts = 0  # Ctrl-C and signals during the last reply
        self.interrupt_next = False  # a Ctrl-C typed with the Enter that sent the line (the REPL's typeahead)
        self.running = True
        self.terminated = False  # SIGTERM, SIGHUP, SIGQUIT: finish the reply in flight, record it, then leave
        # callable(old text, head=its attached files' text) -> new text or None (given up), for /edit; by the REPL
        self.editor = None
        self.meter = meter.Meter()  # the toolbar's context used: /prompt's count, kept in step with each reply
        self._resume: tuple = (None, None, None)  # (last reply Turn, ids of its prompt + reply, system prompt then)
        self._early: list[bool] = []  # Ctrl-C (True) or an ending signal that came before the reply's stream began
        self._on_signal = self._ended  # what a Ctrl-C or an ending signal does while reply() holds them
        self.attachments: list = []  # files for the next message (-f, /file): attach.take prepends them
        self.source: str | None = None  # the local model's source as given (a directory's absolute path), saved
        self.unsent: str | None = None  # the last message, where its send failed or was refused: /retry sends it
        # An /edit's new text (and the files it keeps) whose reply failed or was refused: the exchange before it
        # stays, and /retry sends the edit again, /edit rewrites it (it was lost, and /retry answered the old one).
        self.unsent_edit: tuple[str, int | None] | None = None

    def handle(self, line: str, verbatim: bool = False) -> bool:
        """Process one line of input; returns False once the chat should end (/exit). verbatim: a message as typed,
        whatever it starts with (a prompt after `--`)."""
        started = None  # a command begun and not done: a failed one ends too (--json writes its object)
        before = None  # what a command's autosave would write, as it was before the command
        try:
            line = commands.utf8(line)
            try:
                cmd = None if verbatim else commands.parse(line)
            except commands.Misused as e:  # a command all the same: its --json object names it
                self.render.command_start(started := e.command)
                raise
            if cmd is None:
                text = line if verbatim else commands.message_text(line)
                if text.strip():
                    self.send(text)
                return self.running
            before = self.saved_state()
            self.render.command_start(started := cmd[0].name)
            commands.run(self, *cmd)
            started = None
            self.render.command_done(cmd[0].name)
            after = self.saved_state()
            if _turns(after) != _turns(before):  # /undo, /clear, /load, /continue: a failed message is no longer
                self.unsent = self.unsent_edit = None  # the last (not /system, which may make room for it)
            if self.on_turn and after != before:  # /undo, /clear, /set, /load...: autosave follows
                self.on_turn(self)
        except YiError as e:
            self.failures += 1
            self.render.error(str(e))
        except (BrokenPipeError, StdoutFailed):  # the reader of stdout is gone, or it failed: cli ends the run
            raise
        except KeyboardInterrupt:  # the line abandoned (the REPL goes on): the renderer has no line in hand
            with contextlib.suppress(Exception):
                self.render.line_done()
            if before is not None and self.on_turn and self.saved_state() != before:
                # a Ctrl-C as the command's change was autosaved (the JSON of a long session takes a while): the
                # screen said `removed the last exchange`, the file kept it, and -c brought it back
                with signals_held(), contextlib.suppress(Exception):
                    self.on_turn(self)
            raise
        except Exception as e:  # a bug in a command must not end the chat: one line, and the REPL lives on
            self.failures += 1
            self.render.error(f"{line.strip()[:40]!r} failed ({failure(e)})")
        if started is not None:
            self.render.command_done(started)
        return self.running

    def send(self, text: str, settings: GenSettings | None = None) -> Stats | None:
        """One message, with the files attached for it; one that is refused or fails is not recorded: its files
        stay attached, and /retry or /edit sends it again (unsent), also where its length alone refused it."""
        self.unsent = text  # until its exchange is recorded
        self.unsent_edit = None  # a new message: the exchange an edit would have replaced is no longer the last
        self.render.message_start(text)
        try:
            self._fits_untokenized(text)
        except YiError as e:  # its files wait for the next message, said as for any refusal (they waited unsaid)
            self.failures += 1
            self.render.error(str(e))
            if self.attachments:
                self._still_attached(self.attachments)
            return None
        waiting = self.attachments = attach.fresh(self.attachments, self.render.notice)
        if waiting:  # the files as they go now: one grown since /file (checked then) was tokenized whole
            try:
                self._fits_untokenized(attach.compose(waiting, text), attached=True)
            except YiError as e:  # refused as the tokenizer refuses one: its error, then that its files wait
                self.failures += 1
                self.render.error(str(e))
                self._still_attached(waiting)
                return None

        def newest():
            return self.session.turns[-1] if self.session.turns else None

        last = newest()
        try:
            sent = self.turn(attach.take(self, text), settings, files=len(waiting))
        except BaseException:  # (a Ctrl-C before the reply's signals were taken): unrecorded, its files wait again
            if waiting and newest() is last:
                self.attachments = waiting + self.attachments
            raise
        finally:  # recorded, a reply or a part of one (also where the stream was abandoned): no longer unsent
            if newest() is not last:
                self.unsent = None
        if sent is None and waiting and not self.options.one_shot:
            self.attachments = waiting + self.attachments
            self._still_attached(waiting)
        return sent

    def _still_attached(self, waiting: list) -> None:
        """The notice that a message's files wait for the next one (a one-shot run has no next one)."""
        if not self.options.one_shot:
            self.render.notice(f"still attached for the next message: {attach.names(waiting)} (/detach drops them)")

    def _fits_untokenized(self, text: str, attached: bool = False) -> None:
        """YiError for a message its length alone shows too long for the context, before it is tokenized: 50 MB of
        text piped in took a minute and 4.7 GB to tokenize, or ended in the tokenizer's panic (a traceback)."""
        tpl, ctx = self.engine.template, self.engine.context_length
        if tpl is not None and ctx is not None and tpl.surely_over(text, ctx):
            what = ("the prompt" if self.options.one_shot else "the message") + (" with its files" if attached else "")
            raise YiError(f"{what} is {len(text)} characters, more than the {ctx}-token context can hold; shorten it")

    def saved_state(self) -> tuple[tuple, dict]:
        """What the autosave writes that a command may change: the conversation and the settings."""
        return self.session.state(), self.settings.to_dict()

    def context_used(self) -> int | None:
        """Tokens the conversation takes: as /prompt counts it, each turn closed (meter.py: in full only when the
        conversation changed otherwise than by a reply), or as the server last reported (remote engines; None
        while it has reported none for a conversation that has turns: a first reply cut before the server's
        usage came, a resumed session)."""
        tpl = self.engine.template
        if not self.session.turns and (tpl is None or not self.session.system):  # a system prompt alone counts
            return 0
        if tpl is None:  # as of the last reply of this conversation the server reported its usage for (it read 0)
            # from the session's turns, not from every reply this run made: /undo and /clear left the count of
            # the conversation before them on the toolbar
            counts = ((t.stats.get("prompt_tokens"), t.stats.get("new_tokens")) for t in reversed(self.session.turns))
            known = (p + n for p, n in counts if type(p) is int and type(n) is int)
            return next(known, None)
        messages = self.session.messages()
        sent = messages[1:] if getattr(tpl, "plain", False) and self.session.system else messages  # as rendered
        if meter.surely_over(tpl, sent, self.engine.context_length):
            return meter.Over(self.engine.context_length)
        return self.meter.used(tpl, messages)

    def turn(self, text: str, settings: GenSettings | None = None, files: int = 0) -> Stats | None:
        """Send one user message (led by `files` attached files' blocks) and stream the reply; the session gets both
        once the reply has finished."""

        def commit(reply: str, stats: Stats) -> None:
            self.session.add_exchange(
                text, self._count(text), reply, stats.new_tokens, stats.finish_reason, stats.to_dict(), files
            )

        def asked(session: ChatSession) -> None:
            session.add_exchange(text, 0, "", 0, FINISH_INTERRUPTED, {}, files)

        msgs = self.session.messages() + [{"role": "user", "content": text}]
        return self.reply(Pending(msgs, commit, text, settings=settings, asked=asked))

    def regenerate(self, text: str, settings: GenSettings | None = None, files: int | None = None) -> Stats | None:
        """A new reply to `text` (led by `files` attached files' blocks; None: not known, an editor's rewrite) in
        place of the last exchange (/retry, /edit); the old one stays if it fails."""
        self._fits_untokenized(text)  # an /edit's new text (or its editor's file, up to 64 MiB), as a message's

        def commit(reply: str, stats: Stats) -> None:
            self.session.replace_last_exchange(
                text, self._count(text), reply, stats.new_tokens, stats.finish_reason, stats.to_dict(), files
            )

        def asked(session: ChatSession) -> None:  # an /edit's new text
            session.replace_last_exchange(text, 0, "", 0, FINISH_INTERRUPTED, {}, files)

        msgs = self.session.messages()[:-2] + [{"role": "user", "content": text}]
        old = self.session.turns[-1]
        retry = text == self.session.turns[-2].content  # /retry (an /edit changes the message: it goes in)
        whole = retry and old.finish_reason == FINISH_STOP
        return self.reply(
            Pending(
                msgs,
                commit,
                text,
                settings=settings,
                keeps_old=whole,
                keeps_cut=retry,
                clearable=False,
                asked=None if retry else asked,
            )
        )

    def extend(self) -> Stats | None:
        """/continue: generate more of the last (cut) reply, in place."""
        last = self.session.last_assistant()
        turn, ids, system = self._resume
        same = turn is last and system == self.session.system  # a /system since: the prompt is built anew

        def commit(more: str, stats: Stats) -> None:
            self.session.extend_last_reply(more, stats.new_tokens, stats.finish_reason, stats.to_dict())

        return self.reply(
            Pending(
                self.session.messages(),
                commit,
                "/continue",
                continue_final=True,
                resume_ids=ids if same else None,
                after=last.content,
                clearable=False,
            )
        )

    def reply(self, pending: Pending) -> Stats | None:
        """Stream the reply of `pending` and commit it; the oldest exchanges dropped to fit go only then."""
        # Ctrl-C and the signals that end the chat are taken from here until the reply is saved and its end shown:
        # one that came as the stream ended (Ctrl-C twice quickly) raised a KeyboardInterrupt in the autosave or in
        # the drawing of the reply's end. Before the stream starts (the prompt built: seconds for a long session)
        # it stops the reply as soon as it starts: raised there, it lost the message and the files taken for it;
        # after it ends it stops nothing more (the reply has stopped); the ending signals' own handlers still run.
        self._early = []
        self._on_signal = self._early.append
        self._asked = None  # the autosave's state before it wrote `pending.asked`'s exchange: put back if nothing lands
        with _cancelling_signals(lambda sigint: self._on_signal(sigint)) as wrapped:
            try:
                prompt, dropped = self._prompt(pending)
            except YiError as e:
                self.failures += 1
                self.render.error(str(e))
                self.interrupts = 0  # no reply to stop: counted as after one (a piped run stops at it)
                for sigint in self._early:
                    self._ended(sigint)
                return None
            settings = asked = pending.settings or self.settings
            if prompt.ids is not None:
                settings = replace(
                    settings,
                    max_new_tokens=min(settings.max_new_tokens, self.engine.context_length - len(prompt.ids)),
                )
            self.render.reply_start(pending.label, pending.after)
            return self._streamed(pending, prompt, dropped, settings, asked, wrapped)

    def _streamed(self, pending: Pending, prompt, dropped: int, settings, asked, wrapped: bool) -> Stats | None:
        """reply()'s stream, its commit and its end shown, under its signals' handlers."""
        try:
            text, stats, error, ids = self._stream(prompt, settings, wrapped, lambda: self._save_asked(pending))
        except BaseException:  # abandoned (a third Ctrl-C, stdout gone): what was said stays, marked interrupted
            text, stats, error, ids = self._abandoned
            kept_old = pending.keeps_previous(text)  # a /retry given up on
            if not kept_old:
                self._commit(pending, prompt, text, stats, dropped, ids)
            elif self._asked is not None:
                self.on_turn.unasked(self, self._asked)
            try:  # the reply ends on screen too (its marker; a terminal renderer stops holding notices)
                self.render.reply_end(text, stats)
                if kept_old:
                    self.render.notice(RETRY_STOPPED)
            except Exception:  # noqa: BLE001 - stdout gone: nothing more can be shown
                pass
            raise
        if stats.finish_reason == FINISH_LENGTH and settings.max_new_tokens < asked.max_new_tokens:
            stats.at_context = stats.new_tokens >= settings.max_new_tokens  # not the limit asked for: the context
        keep = error is None or bool(text and stats.finish_reason == FINISH_INTERRUPTED)  # else nothing to keep
        stopped = keep and stats.finish_reason == FINISH_INTERRUPTED
        kept_old = stopped and pending.keeps_previous(text)
        if keep and not kept_old:  # on disk before it is reported finished: a signal after it loses nothing
            self._commit(pending, prompt, text, stats, dropped, ids)
        elif self._asked is not None:  # failed: the files as they were before the message
            self.on_turn.unasked(self, self._asked)
        self.render.reply_end(text, stats, error)
        if kept_old:
            self.render.notice(RETRY_STOPPED)
        if error is not None:
            self.failures += 1
            self.render.error(error)
        return stats if keep else None

    def _commit(self, pending: Pending, prompt: Prompt, text: str, stats: Stats, dropped: int, ids) -> Stats:
        pending.commit(text, stats)
        if dropped:
            self.session.drop_oldest(dropped)
        resume = prompt.ids + ids if prompt.ids is not None and ids is not None else None
        self._resume = (self.session.last_assistant(), resume, self.session.system)
        if prompt.ids is not None:  # the context meter from this turn's own prompt, no re-tokenizing
            self.meter.replied(self.engine.template, prompt, self.session.messages())
        self.history.append(stats)
        if self.on_turn:
            self.on_turn(self)
        return stats

    def _save_asked(self, pending: Pending) -> None:
        """The session's file as it is with `pending`'s message said and its reply to come (empty, interrupted), as
        the reply starts streaming: a process killed outright (SIGKILL, the OOM killer) before it ends leaves the
        message in the file, where -c brings it back (/retry or /continue answers it). Written while the engine
        reads the prompt; the reply's own write replaces it."""
        write = getattr(self.on_turn, "asked", None)  # the autosave's (store.Autosave)
        if write is None or pending.asked is None:
            return
        real = self.session
        self.session = replace(real, turns=list(real.turns))  # the session as it will be; the real one unchanged
        try:
            pending.asked(self.session)
            self._asked = write(self)
        finally:
            self.session = real

    def _count(self, text: str) -> int:
        tpl = self.engine.template
        return tpl.count(text) if tpl is not None else 0

    def _prompt(self, p: Pending) -> tuple[Prompt, int]:
        """The prompt of `p`, built once; when it overflows, the oldest exchanges are dropped (or the turn is
        refused) by the overflow policy. Returns (prompt, number of messages dropped)."""
        tpl, ctx = self.engine.template, self.engine.context_length
        if tpl is None:
            return Prompt(p.messages, continue_final=p.continue_final), 0
        budget = context.budget(ctx, self.settings.max_new_tokens)
        policy = self.options.overflow
        first = 1 if p.messages and p.messages[0]["role"] == "system" else 0
        last = 2 if p.continue_final else 1  # the message answered, and the reply /continue extends
        # Exchanges past what any context holds go before the template sees them: a loaded session of 50,000
        # exchanges (or one 30 MB message) was refused by the template's own bounds at every message, "the chat
        # template failed", where the oldest exchanges are dropped to fit (a sessions hunt)
        ahead = 0
        if policy != "refuse":
            ahead = context.past_any(p.messages[first : len(p.messages) - last], ctx, tpl.most_chars_per_token())
        if ahead:
            p = replace(p, messages=p.messages[:first] + p.messages[first + ahead :], resume_ids=None)
        if p.resume_ids is not None:
            prompt = Prompt(p.messages, p.resume_ids, tpl.render(p.messages, True), True)
        else:
            prompt = tpl.build(p.messages, p.continue_final)
        if len(prompt.ids) <= budget and not ahead:
            return prompt, 0
        turns = self.session.turns[self.session.start + ahead :]  # the context's, as p.messages holds them
        sizes = [self.tokens_of(turns[i]) for i in range(len(p.messages) - first - last)]
        one_shot = self.options.one_shot

        def fit(room: int, clearable: bool) -> int:
            """How many of the oldest exchanges go for the prompt to take `room` tokens at most (context.fit)."""
            return context.fit(
                lambda n: self._rebuild(p, first, n),
                len(prompt.ids),
                sizes,
                room,
                policy,
                one_shot,
                system=bool(first),
                clearable=clearable,
                context=ctx,
                more=self._more_context(),
            )

        dropped = 0
        if len(prompt.ids) > budget:
            try:
                dropped = fit(budget, p.clearable)
            except YiError:
                least = self._rebuild(p, first, len(sizes)) if sizes else len(prompt.ids)  # all else dropped
                if p.continue_final and least >= ctx:
                    # the reply cut at the end of the context: no max_new_tokens makes room ("lower it" was said)
                    raise YiError(
                        f"the reply has reached the end of the context ({least} of {ctx} tokens with the message it "
                        "answers): it cannot go on; /retry asks again, or send a new message"
                    ) from None
                if not p.continue_final:
                    raise
                # /continue with less room than a whole reply's: it goes on into the room there is and stops at the
                # context's end (it was refused: "shorten it", of a reply that cannot be)
                if len(prompt.ids) > ctx - 1:
                    dropped = fit(ctx - 1, False)
                elif not ahead:
                    return prompt, 0
        msgs = p.messages[:first] + p.messages[first + dropped :]
        dropped += ahead
        kept = "; the system prompt is kept" if first else ""  # none set: none to keep
        gone = exchanges_said(dropped // 2)
        self.render.notice(f"context full ({ctx} tokens): dropped the oldest {gone} to fit{kept}")
        return tpl.build(msgs, p.continue_final), dropped

    def _more_context(self) -> bool:
        """Whether a larger --context could be given: the model (its checkpoint) takes more than the context is; a
        server's is not known."""
        most = getattr(getattr(self.engine, "ckpt", None), "context_length", None)
        return not isinstance(most, int) or most > (self.engine.context_length or 0)

    def _rebuild(self, p: Pending, first: int, n: int) -> int:
        return len(self.engine.template.build(p.messages[:first] + p.messages[first + n :], p.continue_final).ids)

    def tokens_of(self, turn) -> int:
        """A turn's tokens as counted when it was committed, else as this chat's tokenizer counts them now (a turn
        loaded from a remote chat's session has none of its own); 0 where nothing can count them."""
        return turn.tokens or self._count(turn.content)

    def _stream(self, prompt: Prompt, settings: GenSettings, wrapped: bool = False, started=None):
        """Run engine.stream in a worker thread so Ctrl-C here only sets `cancel`; the stream ends itself. started:
        called once the worker runs."""
        events: queue.Queue = queue.Queue()
        cancel = threading.Event()

        def pump():
            try:
                for ev in self.engine.stream(prompt, settings, cancel):
                    events.put(ev)
            except BaseException as e:  # noqa: BLE001 - reported below, the REPL lives on
                events.put(e)
            events.put(None)

        worker = threading.Thread(target=pump, name="yi-stream", daemon=True)
        acc = {"text": [], "finish": None, "error": None}
        try:
            self._drain(worker, events, cancel, acc, wrapped, started)
        except BaseException as e:  # e.g. BrokenPipeError from the renderer: stop the model before leaving
            cancel.set()
            if worker.is_alive():
                worker.join(timeout=30)  # bounded: a third Ctrl-C during a stuck prefill must still return
            finish = self._leftover(events, acc, shown=isinstance(e, KeyboardInterrupt))
            self._abandoned = (
                "".join(acc["text"]),
                finish.stats if finish is not None else Stats(prompt_tokens=None, finish_reason=FINISH_INTERRUPTED),
                None,
                finish.token_ids if finish is not None else None,
            )
            raise
        worker.join()
        finish, error = acc["finish"], acc["error"]
        if error is None and finish is None:
            error = "the engine ended without finishing the reply"
        # no Finish: nothing was counted or timed (--json says null, not 0)
        stats = finish.stats if finish is not None else Stats(prompt_tokens=None, finish_reason=FINISH_ERROR)
        return "".join(acc["text"]), stats, error, finish.token_ids if finish is not None else None

    @staticmethod
    def _leftover(events, acc, shown: bool = False) -> Finish | None:
        """What an abandoned reply's engine said after the renderer stopped taking it (stdout closed, | head): its
        text is kept, unshown, and its Finish gives the real count of the tokens that text is (it was recorded as 0,
        as if none had been generated). None where the engine has not finished (it did not answer cancel). shown:
        given up on by a third Ctrl-C, which stops the drawing too: the reply is what was shown, its text not yet
        drawn dropped (with the Finish that counted it: the reply was stopped, not whole)."""
        left = {"text": [] if shown else acc["text"], "finish": None, "error": None}  # its end alone goes on acc
        while True:
            try:
                _record(events.get_nowait(), left)
            except queue.Empty:
                return None if shown and left["text"] else left["finish"]

    def _drain(self, worker, events, cancel, acc, wrapped: bool, started=None) -> None:
        """The reply's events until its end. wrapped: Ctrl-C's handler is reply()'s (_cancelling_signals), which
        calls `interrupted` while the stream runs."""
        self.interrupts = 0

        def interrupted(sigint: bool) -> None:
            self.interrupts += 1
            self.ctrl_c += sigint and self.interrupts == 1
            cancel.set()
            if self.interrupts >= 3:  # the engine does not answer cancel (e.g. a long prefill): give up
                raise KeyboardInterrupt

        with _timed_stops():
            early, self._early = self._early, []
            self._on_signal = interrupted
            try:
                if self.interrupt_next:  # stopped as soon as it starts, as a Ctrl-C then would stop it
                    self.interrupt_next = False
                    interrupted(True)
                for sigint in early:  # a Ctrl-C or a signal as the reply started
                    interrupted(sigint)
                self._events(worker, events, acc, interrupted, wrapped, started)
            finally:
                self._on_signal = self._ended

    def _events(self, worker, events, acc, interrupted, wrapped: bool, started=None) -> None:
        running = False
        while True:
            try:
                if not running:
                    running = True
                    worker.start()
                    if started is not None:
                        started()
                ev = events.get(timeout=0.1)
                if ev is None:
                    break
                self._on_event(ev, acc)
            except queue.Empty:
                continue
            except KeyboardInterrupt:
                if wrapped:  # the handler's own, at the third: give up
                    raise
                interrupted(True)  # Ctrl-C as Python raises it (handlers not ours): it only sets cancel

    def _ended(self, sigint: bool) -> None:
        """A Ctrl-C or an ending signal after the reply's stream ended, while it is saved and its end shown: the
        reply has stopped, there is nothing more to stop (an ending signal's own handler has marked the chat to
        end). A Ctrl-C after a reply that ended by itself is counted: a piped or one-shot run stops at it."""
        if sigint and not self.interrupts:
            self.interrupts = 1
            self.ctrl_c += 1

    def _on_event(self, ev, acc: dict) -> None:
        _record(ev, acc)
        if isinstance(ev, Text):
            self.render.reply_text(ev.text)


def _record(ev, acc: dict) -> None:
    """An engine event into the reply's record `acc`: its text, its Finish, its error."""
    if isinstance(ev, Text):
        acc["text"].append(ev.text)
    elif isinstance(ev, Finish):
        acc["finish"] = ev
    elif isinstance(ev, BaseException):
        acc["error"] = first_line(ev) if isinstance(ev, YiError) else f"generation failed ({failure(ev)})"
        if isinstance(ev, ReplyCut):  # the text so far is kept, marked interrupted, with the count the server gave
            acc["finish"] = Finish(ev.stats)


def _turns(saved: tuple) -> tuple:
    """A saved state's conversation but its system prompt (session.state(): id, system, start, turns): what a command
    changed when it changed the turns (/undo, /clear, /load, /continue's reply), not /system."""
    conv, _, start, turns = saved[0]
    return conv, start, turns


@contextmanager
def _timed_stops():
    """While a reply streams, a Ctrl-Z stop (SIGTSTP, to `fg`) is left out of its timing (clock.suspend) where no
    handler of the terminal's hold (ui/keys.py) takes the signal: a piped or redirected run. Left to the default
    action, the stopped time counted as decode time and the tok/s fell. Main thread only, as any handler."""
    tstp = getattr(signal, "SIGTSTP", None)
    if (
        tstp is None
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(tstp) != signal.SIG_DFL
    ):
        yield
        return

    def stop(signum, frame):
        clock.suspend(stop)

    signal.signal(tstp, stop)
    try:
        yield
    finally:
        signal.signal(tstp, signal.SIG_DFL)


_SIGNALS = tuple(ENDING)


@contextmanager
def _cancelling_signals(interrupted):
    """While a reply streams, Ctrl-C, SIGTERM, SIGHUP and SIGQUIT set its cancel from their handler instead of
    raising in the main thread: a KeyboardInterrupt raised inside queue.get's lock handling surfaced as
    "RuntimeError: release unlocked lock" (a reply failed instead of ending as interrupted). The others' own handlers
    (the CLI's: mark the chat terminated, point a dead terminal at /dev/null) still run at once, their exception
    dropped: the reply's end is what they ask for. Only Python-level handlers are wrapped, on the main thread;
    yields whether Ctrl-C's was."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    old = {s: signal.getsignal(s) for s in _SIGNALS}

    def handler(signum, frame):
        before = old[signum]
        if signum != signal.SIGINT and callable(before):
            try:
                before(signum, frame)
            except KeyboardInterrupt:
                pass
        interrupted(signum == signal.SIGINT)

    wrapped = [s for s, h in old.items() if callable(h)]
    for s in wrapped:
        signal.signal(s, handler)
    try:
        yield signal.SIGINT in wrapped
    finally:
        for s in wrapped:
            signal.signal(s, old[s])

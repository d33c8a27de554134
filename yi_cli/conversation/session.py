"""ChatSession: the system prompt and the turns of one conversation (no torch)."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field

MAX_TURN_TOKENS = 2**31 - 1  # as a context is at most (config.MAX_TOKENS)
MAX_FILES = 1 << 20  # attached files a message leads with: past any context


def new_id() -> str:
    return secrets.token_hex(8)


def exchanges_said(n: int) -> str:
    """`n` exchanges as a line says it: "1 exchange", "0 exchanges", "3 exchanges"."""
    return f"{n} exchange{'s' * (n != 1)}"


@dataclass
class Turn:
    role: str  # "user" | "assistant"
    content: str
    tokens: int = 0  # prompt tokens for a user turn's reply context; new tokens for an assistant turn
    finish_reason: str = ""  # assistant only: stop / length / interrupted
    stats: dict = field(default_factory=dict)
    # user only: how many attached files' blocks lead its content (attach.compose); None where not recorded (files
    # before 0.2), where they are told from the text, which took a code block typed first for a file
    files: int | None = None

    @property
    def interrupted(self) -> bool:
        return self.finish_reason == "interrupted"


@dataclass
class ChatSession:
    system: str | None = None
    turns: list[Turn] = field(default_factory=list)
    # Which conversation this is, kept in its files: /save PATH replaces a file only when it holds this same one.
    id: str = field(default_factory=new_id)
    # The files this chat read or wrote the conversation from / to, as it left them (real path -> digest, not saved):
    # two yi-chats going on from one file share its id, and /save PATH replaces another's continuation only with !.
    known: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    # The first turn still in the context: the exchanges before it were dropped to fit (overflow) and stay in the
    # session and its file. Deleted, one -c of a long session with a smaller context rewrote its file without them.
    start: int = 0
    # (turns when it went, start before) of each overflow drop this process made, for /undo to bring them back
    drops: list[tuple[int, int]] = field(default_factory=list, compare=False, repr=False)

    def messages(self) -> list[dict]:
        """The conversation as chat-template messages, system prompt first when set."""
        out = [{"role": "system", "content": self.system}] if self.system else []
        out += [{"role": t.role, "content": t.content} for t in self.turns[self.start :]]
        return out

    def add_exchange(
        self,
        user: str,
        user_tokens: int,
        reply: str,
        tokens: int = 0,
        finish_reason: str = "stop",
        stats: dict | None = None,
        files: int | None = None,
    ) -> None:
        """A user message and its finished reply, recorded together; `files`: the attached files leading it."""
        assert not self.turns or self.turns[-1].role == "assistant", "roles must alternate"
        self.turns += [
            Turn("user", user, user_tokens, files=files),
            Turn("assistant", reply, tokens, finish_reason, dict(stats or {})),
        ]

    def replace_last_exchange(self, *exchange, **kw) -> None:
        """/retry and /edit: a new reply (to a possibly edited message) in place of the last exchange; the
        arguments are add_exchange's."""
        assert len(self.turns) >= 2, "there is an exchange to replace"
        del self.turns[-2:]
        self.add_exchange(*exchange, **kw)

    def extend_last_reply(self, more: str, tokens: int, finish_reason: str, stats: dict | None = None) -> None:
        """/continue: the last reply goes on where it was cut."""
        last = self.last_assistant()
        assert last is not None, "there is a reply to extend"
        last.content += more
        last.tokens = min(MAX_TURN_TOKENS, last.tokens + tokens)  # a count its session file can hold (from_dict)
        last.finish_reason = finish_reason
        last.stats = dict(stats or {})

    def undo(self) -> tuple[str, str] | None:
        """Remove the last exchange; returns (user, assistant) texts, or None when there is none."""
        if len(self.turns) < 2:
            return None
        a, u = self.turns.pop(), self.turns.pop()
        while self.drops and self.drops[-1][0] > len(self.turns):  # the exchanges its message pushed out come back
            _, self.start = self.drops.pop()  # (a big file sent, then undone: the chat before it was left out)
        self.start = min(self.start, max(0, len(self.turns) - 2))  # an exchange stays in the context, if any
        return u.content, a.content

    def clear(self) -> None:
        """/clear: a new conversation (the system prompt is kept), so a new id: its /save PATH does not replace the
        snapshot of the one before."""
        self.turns.clear()
        self.start = 0
        self.drops.clear()
        self.id = new_id()

    def goes_on_from(self, other: ChatSession) -> bool:
        """`other` is an earlier state of this conversation: the same one, system prompt, and turns this one
        starts with (what /save PATH may replace without ! in a file another yi-chat wrote)."""
        n = len(other.turns)
        return (
            other.id == self.id
            and other.system == self.system
            and [(t.role, t.content) for t in other.turns] == [(t.role, t.content) for t in self.turns[:n]]
        )

    @property
    def exchanges(self) -> int:
        return sum(1 for t in self.turns if t.role == "assistant")

    def last_assistant(self) -> Turn | None:
        return self.turns[-1] if self.turns and self.turns[-1].role == "assistant" else None

    def drop_oldest(self, n_messages: int) -> None:
        """Leave the oldest `n_messages` turns of the context out of it (overflow); they stay in the session."""
        assert n_messages % 2 == 0 or n_messages == len(self.turns) - self.start, "drop whole exchanges"
        self.drops.append((len(self.turns), self.start))
        self.start += n_messages

    def to_dict(self) -> dict:
        start = {"context_start": self.start} if self.start else {}
        turns = [{k: v for k, v in asdict(t).items() if k != "files" or v is not None} for t in self.turns]
        return {"id": self.id, "system": self.system, "turns": turns, **start}

    def state(self) -> tuple:
        """A value that changes exactly when to_dict's would, without copying each turn as it does: what a command
        compares before and after it ran (to_dict's copies took ~0.3 s at 10,000 exchanges, twice a command)."""
        turns = tuple((t.role, t.content, t.tokens, t.finish_reason, dict(t.stats), t.files) for t in self.turns)
        return self.id, self.system, self.start, turns

    @classmethod
    def from_dict(cls, data: dict) -> ChatSession:
        if not isinstance(data, dict) or not isinstance(data.get("turns", []), list):
            raise ValueError("not a chat session")
        system = data.get("system")
        if system is not None and not isinstance(system, str):
            raise ValueError("system prompt must be text")
        sid = data.get("id")  # absent from files before ids were kept: a new one (store.read: one from the path)
        if sid is not None and (not isinstance(sid, str) or not sid):
            raise ValueError("the session id must be text")
        s = cls(system=system, **({"id": sid} if sid else {}))
        for i, t in enumerate(data.get("turns", [])):
            if not isinstance(t, dict) or not isinstance(t.get("content"), str):
                raise ValueError(f"turn {i} has no text content")
            expected = "user" if i % 2 == 0 else "assistant"
            if t.get("role") != expected:
                article = "an" if expected == "assistant" else "a"  # a user turn
                raise ValueError(f"turn {i} should be {article} {expected} turn (roles alternate)")
            tokens, reason, stats = t.get("tokens", 0) or 0, t.get("finish_reason", "") or "", t.get("stats") or {}
            if type(tokens) is not int or not isinstance(reason, str) or not isinstance(stats, dict):
                raise ValueError(f"turn {i}: tokens must be an integer, finish_reason text, stats an object")
            if not 0 <= tokens <= MAX_TURN_TOKENS:  # /history showed -5 and a 31-digit count as they were
                raise ValueError(f"turn {i}: tokens {tokens} is not a count of tokens (0 to {MAX_TURN_TOKENS})")
            files = t.get("files")
            if files is not None and (type(files) is not int or not 0 <= files <= MAX_FILES or i % 2):
                raise ValueError(f"turn {i}: files must be a count of attached files, in a user turn")
            s.turns.append(Turn(t["role"], t["content"], tokens, reason, dict(stats), files))
        if len(s.turns) % 2:
            raise ValueError("the last turn is a user message without a reply")
        start = data.get("context_start", 0)
        if type(start) is not int or start % 2 or not 0 <= start <= max(0, len(s.turns) - 2):
            raise ValueError("context_start must be an even turn number before the last exchange")
        s.start = start
        return s

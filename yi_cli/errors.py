"""The one error type for user-facing failures; cli.py prints it as a single line."""

import signal

from .safe_text import visible

EXIT_OK = 0
EXIT_CHAT = 1
EXIT_USAGE = 2
EXIT_LOAD = 3
EXIT_HANGUP = 129  # SIGHUP, 128 + 1 as shells report it
EXIT_INTERRUPTED = 130
EXIT_QUIT = 131  # SIGQUIT (Ctrl-\ during a reply, kill -QUIT), 128 + 3

# The line of a turn whose first logits are not numbers (NaN or infinite weights), whichever engine computed them
NOT_NUMBERS = (
    "the model computed logits that are not numbers (NaN or infinity): its weights hold such values (a damaged "
    "checkpoint)"
)

# The signals that end a run (Ctrl-C: a reply, or a piped or one-shot run), each with its exit code and the word of
# the one line on stderr: the one list the CLI's handlers, the chat's, the autosave's and the compile children's use.
ENDING = {
    signal.SIGINT: (EXIT_INTERRUPTED, "interrupted"),
    signal.SIGTERM: (EXIT_INTERRUPTED, "terminated"),
    signal.SIGHUP: (EXIT_HANGUP, "hung up"),
    signal.SIGQUIT: (EXIT_QUIT, "quit"),
}


def catch(signums, handler) -> None:
    """`handler` for each of `signums`, but one ignored at start stays ignored (SIGHUP under nohup, SIGQUIT after
    `trap '' QUIT`, SIGINT in a script's background job)."""
    for signum in signums:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, handler)


def shown(text: str, limit: int = 60) -> str:
    """User text echoed in a message: control characters made visible, long text cut, so the message stays one line.
    The ideographic space (U+3000, a Chinese or Japanese input method's space: `笔记　副本.md`) is shown as typed;
    other spaces that are not ASCII's (a no-break space) as escapes, where they pass for it; a byte that is not UTF-8
    (surrogateescape's U+DC80..U+DCFF, from a file name or argv) as that byte, `\\xe9`, as the listings show it."""
    out = "".join(
        c if c.isprintable() or c == "\u3000" else visible(c) if "\udc80" <= c <= "\udcff" else repr(c)[1:-1]
        for c in text[:limit]
    )
    return out + ("..." if len(text) > limit else "")


def first_line(e: BaseException, limit: int = 300) -> str:
    """An exception's message cut to its first line (library messages run on for pages), or its type's name. A
    first line that ends at a colon keeps the line after it: there is the reason (huggingface_hub's "Validation
    error for field 'bos_token_id':" then "TypeError: Field 'bos_token_id' expected int, got str")."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    if not lines:
        return e.__class__.__name__
    return (f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0])[:limit]


def failure(e: BaseException) -> str:
    """'Type: first line of the message' for a one-line report of an unexpected exception."""
    name = e.__class__.__name__
    return f"{name}: {first_line(e)}" if str(e).strip() else name


def failed(e: BaseException) -> bool:
    """An Exception, or a Rust panic inside `tokenizers` (a tokenizer.json whose merges name a token missing from its
    vocabulary, a normalizer's regex past its backtracking limit): pyo3 raises that as PanicException, a
    BaseException that `except Exception` passes over, so it ended the run in a traceback. Not Ctrl-C or an exit."""
    return isinstance(e, Exception) or panicked(e)


def panicked(e: BaseException) -> bool:
    """A Rust panic raised by pyo3 (PanicException, whose class no module of ours can import to name)."""
    return type(e).__name__ == "PanicException"


class StdoutFailed(OSError):
    """Writing to stdout failed (a full disk, an I/O error; not a reader gone, which is a BrokenPipeError): the run
    stops there, the turn in flight kept, rather than report each later turn as failed."""


class YiError(Exception):
    """A failure the user can act on. `str(err)` is the whole message: one line, no traceback."""

    exit_code = EXIT_CHAT


class LoadError(YiError):
    """The model could not be loaded: missing path, corrupt config or weights, unsupported format."""

    exit_code = EXIT_LOAD


class UsageError(YiError):
    exit_code = EXIT_USAGE


class ReplyCut(YiError):
    """A reply that failed after some of its text was shown (the connection dropped, a timeout, a limit):
    `stats` describe the part shown, which the chat keeps, marked interrupted, besides reporting the error."""

    def __init__(self, message: str, stats):
        super().__init__(message)
        self.stats = stats

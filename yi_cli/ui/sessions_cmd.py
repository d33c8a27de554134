"""`yi-chat sessions`: the saved conversations, newest first, as a table or as JSON (no torch)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from rich.cells import cell_len, set_cell_size

from ..conversation import store
from ..errors import shown
from ..safe_text import json_line, safe


def parser() -> argparse.ArgumentParser:
    from .args import Parser

    p = Parser(
        prog="yi-chat sessions",
        description="List the saved conversations, newest first. "
        "`yi-chat --resume FILE` reopens one; `yi-chat -c` the newest interactive one.",
    )
    p.add_argument(
        "--json", action="store_true", help="one JSON array: path, name, mode, model, updated, exchanges, first_line"
    )
    p.add_argument("-n", "--limit", type=_count, metavar="N", help="show the newest N only (1 or more)")
    return p


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"-n wants a number of sessions, not {shown(text, 40)!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"-n wants 1 or more sessions, not {n}")
    return n


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    passed: list[str] = []
    found = store.entries(args.limit, passed=passed)
    rows = [{**r, "path": printable(r["path"]), "name": printable(r["name"])} for r in found]
    where = visible(printable(str(store.sessions_dir())))  # YI_CHAT_HOME's name is as hostile as a file's
    if args.json:  # as the chat's --json: C1 controls and bidi marks as JSON escapes, inert in a terminal
        print(json_line(json.dumps(rows, ensure_ascii=False, indent=1)))
        _say_passed(passed, where)
        return 0
    if not rows:  # one line, with what was left out
        left = f" ({_passed(passed, where)})" if passed else ""
        print(f"no saved sessions in {where}{left}", file=sys.stderr)
        return 0
    print(f"{'updated (UTC)':20}  {'mode':11}  {'model':20}  {'exchanges':>9}  first line  (in {where})")
    for r in rows:
        when = fit(r["updated"].replace("T", " ").removesuffix("Z")[:19], 19)
        model, mode = fit(r["model"], 20), fit(str(r["mode"] or "-"), 11)  # a file's: as hostile as its text
        print(
            f"{when:20}  {mode}{' ' * (11 - cell_len(mode))}  {model}{' ' * (20 - cell_len(model))}  "
            f"{r['exchanges']:>9}  {fit(r['first_line'], 50)}  {visible(r['name'])}"
        )
    _say_passed(passed, where)
    return 0


def _say_passed(names: list[str], where: str) -> None:
    """One line on stderr naming the store's files the listing left out: no session yi-chat can read (malformed,
    of another format, permission denied). Left out without a word, a session damaged by hand looked deleted."""
    if names:
        print(_passed(names, where), file=sys.stderr)


def _passed(names: list[str], where: str) -> str:
    shown_names = ", ".join(visible(printable(n)) for n in sorted(names)[:3])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    files = "file" if len(names) == 1 else "files"
    return f"left out {len(names)} {files} in {where} that yi-chat cannot read as sessions: {shown_names}{more}"


def printable(path: str) -> str:
    """A file's name or path as UTF-8 can write it: a byte that is not UTF-8 in a name (`\\xff`, a file copied from a
    Latin-1 system) is written as that escape. Kept as Python's surrogate, the listing (table or --json) ended in a
    traceback on a UTF-8 terminal."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def fit(text: str, cells: int) -> str:
    """A cell of the table: `text` in at most `cells` columns of the terminal, "..." after it where it was cut.
    Counted in columns, not characters: a Chinese first line (two columns a character) cut at 50 characters took
    100, and padded by characters a model's column went out of line. Control characters are made visible, tabs
    and line breaks as \\t and \\n; the rest is kept as typed (shown() writes a ZWJ of an emoji sequence, an
    ideographic space, as escapes)."""
    text = visible(text)
    if cell_len(text) <= cells:
        return text
    return set_cell_size(text, cells).rstrip() + "..."


def visible(text: str) -> str:
    """`text` on one line of the table: safe(), and its tabs and line breaks as \\t and \\n (a file's name holding a
    newline broke its row in two)."""
    return safe(text).replace("\t", "\\t").replace("\n", "\\n")

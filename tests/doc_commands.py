"""The script command lines that BENCHMARKS.md, DEVELOPERS.md and README.md show (`python3 scripts/bench.py --quant
awq --peer`, `scripts/bench_parts.py --timeline`, `python3 -m yi_cli ... --stats`), and whether today's scripts
parse them: tests/test_bench_commands.py. Parse only: each script's main() is run up to its parser and no further.

Run as a program it is the child that parses (JSON lines in, JSON lines out): a script that imports Triton at its top
(bench_floor.py, sass.py, ...) is imported there with a stand-in Triton where none is installed, which must not leak
into the tests' own process.

A paragraph of BENCHMARKS.md whose commands ran in a patched tree (a throwaway change not in the repository) starts
with the marker `<!-- commands: not in the repository -->` (BENCHMARKS.md, "Reading this file"), on a line of its own
just before the paragraph or the fenced block: its commands (up to the next blank line, or the end of that block) are
`skipped`, and must be ones today's scripts refuse (a line that parses needs no marker)."""

from __future__ import annotations

import bisect
import itertools
import json
import re
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
DOCS = ("BENCHMARKS.md", "DEVELOPERS.md", "README.md")
NOT_IN_REPO = "<!-- commands: not in the repository -->"
_PLACEHOLDER = re.compile(r"\.\.\.|<[^>]*>?|[A-Z][A-Z0-9_]*")  # `...`, `<613600f tree>`, `--format F`, `REV`


@dataclass(frozen=True)
class Command:
    doc: str  # BENCHMARKS.md
    line: int  # where the command (or its span) starts
    script: str  # "bench" for scripts/bench.py, "yi_cli" for python -m yi_cli / yi-chat
    argv: tuple[str, ...]
    mention: bool  # a span naming the script and some flags (`scripts/bench_parts.py --timeline`), not a whole command
    skipped: bool  # in a paragraph marked NOT_IN_REPO
    text: str  # as the document shows it

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def _script_names() -> set[str]:
    return {p.stem for p in SCRIPTS.glob("*.py")}


def _pieces(text: str):
    """(line, in a fenced block, code, under NOT_IN_REPO) for each logical line of a fenced block (`\\` continued) and
    each inline code span (which may run over lines) of the prose."""
    lines = text.split("\n")
    marked = False
    prose: list[tuple[int, str, bool]] = []
    out = []

    def spans():
        if not prose:
            return
        joined = "\n".join(t for _, t, _ in prose)
        offsets = list(itertools.accumulate((len(t) + 1 for _, t, _ in prose[:-1]), initial=0))
        for m in re.finditer(r"`([^`]+)`", joined):
            line, _, marked = prose[bisect.bisect_right(offsets, m.start()) - 1]
            out.append((line, False, m.group(1).replace("\n", " "), marked))
        prose.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") or not line.strip():  # a heading or a blank line ends a marked paragraph
            spans()
            marked = False
        if NOT_IN_REPO in line:
            marked = True
        if line.startswith("```"):
            spans()
            i += 1
            held, start = "", None
            while i < len(lines) and not lines[i].startswith("```"):
                start = start or i + 1
                if lines[i].endswith("\\"):
                    held += lines[i][:-1] + " "
                else:
                    out.append((start, True, held + lines[i], marked))
                    held, start = "", None
                i += 1
            marked = False  # a marker's fenced block ends with it
        else:
            prose.append((i + 1, line, marked))
        i += 1
    spans()
    return out


def _optional_forms(code: str) -> list[str]:
    """`sass.py [--against REV]` as written without and with each bracketed group of flags."""
    parts = re.split(r"\[(--[^\[\]]*)\]", code)  # text, group, text, group, ..., text
    forms = []
    for keep in itertools.product((False, True), repeat=len(parts) // 2):
        words = [p if i % 2 == 0 or keep[i // 2] else "" for i, p in enumerate(parts)]
        forms.append("".join(words))
    return forms


def _simple_commands(code: str) -> list[list[str]]:
    """The shell line's simple commands as words, `for V in A B; do ...$V...; done` once per value."""
    lex = shlex.shlex(code, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    try:
        words = list(lex)
    except ValueError:  # an unclosed quote: prose, not a command
        return []
    loops: dict[str, list[str]] = {}
    commands: list[list[str]] = [[]]
    i = 0
    while i < len(words):
        w = words[i]
        if w == "for" and i + 2 < len(words) and words[i + 2] == "in":
            j = i + 3
            while j < len(words) and words[j] not in (";", "do"):
                j += 1
            loops[words[i + 1]] = words[i + 3 : j]
            i = j
            continue
        if not set(w) - set("();<>|&"):  # an operator (`&&`, `);`, `>`): the next simple command
            commands.append([])
            if "<" in w or ">" in w:
                i += 1  # the redirection's file
        elif not (w == "do" and not commands[-1]):
            commands[-1].append(w)
        i += 1
    out = []
    for words in filter(None, commands):
        names = [v for v in loops if any(f"${v}" in w or f"${{{v}}}" in w for w in words)]
        for values in itertools.product(*(loops[v] for v in names)):
            sub = words
            for v, value in zip(names, values, strict=True):
                sub = [w.replace(f"${{{v}}}", value).replace(f"${v}", value) for w in sub]
            out.append(sub)
    return out


def _command(words: list[str], scripts: set[str], chat: bool):
    """(script, argv, whether a python command runs it) where these words run one of scripts/ (or, with `chat`,
    yi-chat), else None."""
    for i, w in enumerate(words):
        m = re.fullmatch(r"(?:.*/)?(?:scripts/)?(\w+)\.py", w)
        if m and m.group(1) in scripts and (i == 0 or "/" in w or words[i - 1].startswith("python")):
            return m.group(1), words[i + 1 :], i > 0 and words[i - 1].startswith("python")
        if not chat:
            continue
        if w == "-m" and i + 1 < len(words) and words[i + 1] == "yi_cli":
            return "yi_cli", words[i + 2 :], True
        if w == "yi-chat" and i + 1 < len(words) and words[i + 1].startswith("-"):
            return "yi_cli", words[i + 1 :], True
    return None


def commands(docs=DOCS, root: Path = ROOT) -> list[Command]:
    scripts = _script_names()
    out = []
    for doc in docs:
        for line, block, code, marked in _pieces((root / doc).read_text(encoding="utf-8")):
            for form in _optional_forms(code):
                for words in _simple_commands(form):
                    found = _command(words, scripts, chat=doc != "README.md")  # README's yi-chat: test_cli
                    if found is None:
                        continue
                    script, argv, run = found
                    if not block and not run and not argv:
                        continue  # a span naming a script, no flags
                    text = " ".join(code.split())
                    out.append(Command(doc, line, script, tuple(argv), not (block or run), marked, text))
    return list(dict.fromkeys(out))


def parse(cmds: list[Command]) -> list[str | None]:
    """For each command the usage error today's script gives it (None: it parses), from one child process."""
    lines = "".join(json.dumps(asdict(c)) + "\n" for c in cmds)
    done = subprocess.run(
        [sys.executable, __file__], input=lines, capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"the parsing child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return [json.loads(line) for line in done.stdout.splitlines()]


# The child.


def _stand_in_triton() -> None:
    """Where no Triton is installed, `import triton...` gives modules whose every attribute is a MagicMock: enough
    for a script's top (kernels decorated, constants named) to run; nothing here launches one."""
    import importlib.abc
    import importlib.machinery
    import importlib.util
    import types
    from unittest import mock

    if importlib.util.find_spec("triton") is not None:
        return

    class Module(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            value = mock.MagicMock(name=f"{self.__name__}.{name}")
            setattr(self, name, value)
            return value

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            if name == "triton" or name.startswith("triton."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            return Module(spec.name)

        def exec_module(self, module):
            module.__path__ = []

    sys.meta_path.insert(0, Finder())


class _Built(Exception):
    def __init__(self, parser):
        self.parser = parser


def _parser(script: str):
    """A fresh parser of scripts/<script>.py: its main() run until it asks the parser for its arguments."""
    import argparse
    import importlib
    import inspect

    if script == "yi_cli":
        from yi_cli.ui import args

        return args.parser()
    module = importlib.import_module(script)
    if "argparse" not in inspect.getsource(module):
        return None
    names = ("parse_args", "parse_known_args", "parse_intermixed_args", "parse_known_intermixed_args")
    real = {name: getattr(argparse.ArgumentParser, name) for name in names}

    def stop(self, *args, **kwargs):
        raise _Built(self)

    for name in names:
        setattr(argparse.ArgumentParser, name, stop)
    try:
        module.main(*([[]] if inspect.signature(module.main).parameters else []))
    except _Built as built:
        return built.parser
    finally:
        for name, method in real.items():
            setattr(argparse.ArgumentParser, name, method)
    raise RuntimeError(f"scripts/{script}.py's main() returned before it parsed its arguments")


def _fill(parser, argv: list[str]) -> list[str]:
    """Placeholders (`--format F`, `--against REV`, `...`) as a value that option takes; a bare `...` dropped."""
    out: list[str] = []
    for word in argv:
        if not _PLACEHOLDER.fullmatch(word):
            out.append(word)
            continue
        action = parser._option_string_actions.get(out[-1]) if out else None
        if action is None or action.nargs == 0:
            continue
        if action.choices:
            out.append(str(next(iter(action.choices))))
        else:
            out.append({int: "1", float: "1.0"}.get(action.type, "x"))
    return out


def _error(c: dict) -> str | None:
    import contextlib
    import io

    try:
        parser = _parser(c["script"])
    except Exception as e:  # an import or a main() that fails before its parser: as bad as a usage error
        return f"scripts/{c['script']}.py did not build its parser: {type(e).__name__}: {e}"
    if parser is None:
        return (
            f"scripts/{c['script']}.py takes no flags (no argparse parser), but got {c['argv']}" if c["argv"] else None
        )
    parser.allow_abbrev = False  # each flag as the document spells it, not a prefix of one renamed since
    if c["mention"]:  # `scripts/bench_parts.py --timeline`: the flags named, the rest of the line left out
        for action in parser._actions:
            action.required = False
    argv = _fill(parser, list(c["argv"]))
    last = parser._option_string_actions.get(argv[-1]) if argv else None
    if c["mention"] and last is not None and last.nargs != 0:  # `bench_speculate.py --verify-threads`: the flag named
        argv += _fill(parser, [argv[-1], "N"])[1:]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            if c["script"] == "yi_cli":  # as args.parse_args: the words after `--` are the prompt's
                parser.parse_intermixed_args(argv[: argv.index("--")] if "--" in argv else argv)
            else:
                parser.parse_args(argv)
    except SystemExit as e:
        if e.code:
            said = err.getvalue().strip().splitlines() or [f"exit {e.code}"]
            return said[-1].partition("error: ")[2] or said[-1]  # argparse's line, less the child's own name
    return None


def main() -> int:
    sys.path[:0] = [str(SCRIPTS), str(ROOT)]
    _stand_in_triton()
    for line in sys.stdin:
        print(json.dumps(_error(json.loads(line))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

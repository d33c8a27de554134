"""`yi-chat completion bash|zsh|fish`: a completion script generated from the argument parser (no torch).

Flags, their fixed values (--dtype, --engine, ...), files for --file/--resume, directories and model names for
--model, the store's sessions and `last` for --resume, the subcommands, and the REPL's slash commands for a prompt
word that starts with `/` (`yi-chat /help` runs a command like `-p /help`). Model and session names come from
`yi-chat completion --list-models` / `--list-sessions` at completion time, so the script stays right when checkpoints
and sessions come and go.
"""

from __future__ import annotations

import argparse

SHELLS = ("bash", "zsh", "fish")
DEVICES = ("auto", "cpu", "cuda", "cuda:0", "cuda:1")
FILE_FLAGS = ("--file", "--resume")


def model_names() -> list[str]:
    """The demo models, and the ones a `models` subcommand lists when it has a names() function."""
    import importlib

    from ..checkpoint import demo
    from .args import SUBCOMMANDS

    names = list(demo.NAMES)
    module = SUBCOMMANDS["models"][0]
    lister = getattr(importlib.import_module(f".{module}", __package__), "names", None) if module else None
    if lister is not None:
        names += [n for n in lister() if n not in names]
    return names


SESSIONS_LISTED = 100  # the newest; older ones by their file name, as `yi-chat sessions -n N` lists them


def session_names() -> list[str]:
    """The store's sessions, newest first, as `yi-chat sessions` names them and --resume takes them back; a name
    with a control character (which a shell's completion cannot insert as one word) left out."""
    from ..conversation import store
    from ..errors import YiError

    try:
        listed = store.entries(limit=SESSIONS_LISTED)
    except (YiError, OSError):  # a store that cannot be read: nothing to offer (completion prints no errors)
        return []
    return [e["name"] for e in listed if e["name"].isprintable()]


def options():
    """(option strings, takes a value, fixed values or kind, help) for each visible flag of the main parser."""
    from .args import parser

    out = []
    for act in parser()._actions:
        if not act.option_strings or act.help == argparse.SUPPRESS:
            continue
        takes = act.nargs != 0
        long = max(act.option_strings, key=len)
        if act.choices:
            values = " ".join(act.choices)
        elif long == "--device":
            values = " ".join(DEVICES)
        elif long == "--model":
            values = "@model"
        elif long == "--resume":
            values = "@session"
        elif long in FILE_FLAGS:
            values = "@file"
        else:
            values = ""
        out.append((act.option_strings, takes, values, _one_line(act.help or "")))
    return out


def sub_options() -> dict[str, list[tuple[list[str], bool, str]]]:
    """Each subcommand's flags, from its own parser: (option strings, takes a value, help). The chat's flags were
    offered after `models` and `pull` (`models --temperature` is an error there), and neither's own."""
    import importlib

    from .args import SUBCOMMANDS

    out = {}
    for name, (module, _) in SUBCOMMANDS.items():
        if not module:
            continue
        p = importlib.import_module(f".{module}", __package__).parser()
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        p = subs[0].choices[name] if subs else p  # models_cmd's parser holds both `pull` and `models`
        out[name] = [
            (act.option_strings, act.nargs != 0, _one_line(act.help or ""))
            for act in p._actions
            if act.option_strings and act.help != argparse.SUPPRESS
        ]
    return out


# The subcommand whose one positional argument is a model name (`pull REPO`); `completion`'s is the shell
POSITIONAL_MODEL = ("pull",)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def subcommands() -> dict[str, str]:
    from .args import SUBCOMMANDS

    return {name: help for name, (module, help) in SUBCOMMANDS.items() if module}


def slash_commands() -> dict[str, str]:
    from ..conversation import commands

    return {"/" + c.name: c.help for c in commands.TABLE.values()}


def bash() -> str:
    flags = " ".join(s for strings, *_ in options() for s in strings)
    valued = [(strings, values) for strings, takes, values, _ in options() if takes]
    cases = []
    for strings, values in valued:
        pat = "|".join(strings)
        if values == "@model":
            body = "_yi_chat_models"
        elif values in ("@file", "@session"):
            # one name a line, quoted as a file name where it is inserted, a folder ending in / (a name with a
            # space completed as two words; one with a quote left the shell an open quote)
            whole = "local IFS=$'\\n'; compopt -o filenames 2>/dev/null; "
            body = f'{whole}COMPREPLY=($(compgen -f -- "$cur"))'
            if values == "@session":
                body = f'_yi_chat_sessions; {whole}COMPREPLY+=($(compgen -f -- "$cur"))'
        elif values:
            body = f'COMPREPLY=($(compgen -W "{values}" -- "$cur"))'
        elif "--prompt" in strings:
            body = 'COMPREPLY=($(compgen -W "$slash" -- "$cur"))'
        else:
            body = "COMPREPLY=()"
        cases.append(f"        {pat}) {body}; return ;;")
    case_block = "\n".join(cases)
    subs = " ".join(subcommands())
    slash = " ".join(slash_commands())
    subs_flags = []
    for name, opts in sub_options().items():
        if name == "completion":
            continue
        every = " ".join(x for strings, _, _ in opts for x in strings)
        valued = " ".join(x for strings, takes, _ in opts if takes for x in strings)
        model = "1" if name in POSITIONAL_MODEL else ""
        subs_flags.append(f'            {name}) _yi_chat_sub "{every}" "{valued}" "{model}"; return ;;')
    sub_block = "\n".join(subs_flags)
    return f"""# bash completion for yi-chat. Load it with:  source <(yi-chat completion bash)
# or install it:  yi-chat completion bash > ~/.local/share/bash-completion/completions/yi-chat
_yi_chat_models() {{
    # one name a line (a config alias may hold a space), quoted as a file name is where it is inserted; matched
    # here, not by compgen -W, which expands each word: an alias named x$(cmd) ran cmd, `bob's` lost its quote
    local IFS=$'\\n' name
    compopt -o filenames 2>/dev/null
    COMPREPLY=()
    while IFS= read -r name; do
        [[ "$name" == "$cur"* ]] && COMPREPLY+=("$name")
    done < <("${{COMP_WORDS[0]}}" completion --list-models 2>/dev/null)
    COMPREPLY+=($(compgen -d -- "$cur"))
}}
_yi_chat_sessions() {{
    # `last` and the store's sessions, newest first, matched as the model names are
    local name
    COMPREPLY=()
    while IFS= read -r name; do
        [[ "$name" == "$cur"* ]] && COMPREPLY+=("$name")
    done < <(echo last; "${{COMP_WORDS[0]}}" completion --list-sessions 2>/dev/null)
}}
_yi_chat_sub() {{
    # a subcommand's words: $1 its flags, $2 those that take a value, $3 set where its argument is a model name
    if [[ " $2 " == *" $prev "* ]]; then
        COMPREPLY=()
    elif [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$1" -- "$cur"))
    elif [[ -n "$3" ]]; then
        _yi_chat_models
    fi
}}
_yi_chat() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local slash="{slash}"
    COMPREPLY=()
    # `--device cuda:1`: bash splits the word at the colon (COMP_WORDBREAKS), as `cuda` `:` `1`: the value is
    # completed whole, and each match given back less the word's text up to its colon (bash replaces what follows)
    local flag="" word="" strip=""
    if [[ $COMP_CWORD -ge 3 && "$prev" == ":" ]]; then
        strip="${{COMP_WORDS[COMP_CWORD-2]}}:"
        flag="${{COMP_WORDS[COMP_CWORD-3]}}" word="$strip$cur"
    elif [[ $COMP_CWORD -ge 2 && "$cur" == ":" ]]; then
        flag="${{COMP_WORDS[COMP_CWORD-2]}}" word="$prev:" strip="$prev:"
    fi
    if [[ "$flag" == --device ]]; then
        COMPREPLY=($(compgen -W "{" ".join(DEVICES)}" -- "$word"))
        COMPREPLY=("${{COMPREPLY[@]#"$strip"}}")
        return
    fi
    if [[ $COMP_CWORD -gt 1 ]]; then
        case "${{COMP_WORDS[1]}}" in
{sub_block}
            completion) [[ $COMP_CWORD -eq 2 ]] && COMPREPLY=($(compgen -W "{" ".join(SHELLS)}" -- "$cur")); return ;;
        esac
    fi
    case "$prev" in
{case_block}
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "{flags}" -- "$cur"))
    elif [[ "$cur" == /* ]]; then
        COMPREPLY=($(compgen -W "$slash" -- "$cur"))
    elif [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "{subs}" -- "$cur"))
    fi
}}
complete -F _yi_chat yi-chat
"""


def _zq(text: str) -> str:
    """Text inside a zsh _arguments description: no brackets or colons, single quotes escaped."""
    return text.replace("[", "(").replace("]", ")").replace(":", " -").replace("'", "'\\''")


def _zsh_spec(strings, takes: bool, values: str, help: str) -> str:
    """One flag as an _arguments spec."""
    excl = f"({' '.join(strings)})" if len(strings) > 1 else ""
    names = "{" + ",".join(strings) + "}" if len(strings) > 1 else strings[0]
    if not takes:
        action = ""
    elif values == "@model":
        action = ":model:_yi_chat_models"
    elif values == "@file":
        action = ":file:_files"
    elif values == "@session":
        action = ":session:_yi_chat_sessions"
    elif values:
        action = f":value:({values.replace(':', chr(92) + ':')})"
    else:
        action = ":text: "
    if strings[0] in ("-f", "--file"):  # repeatable: no exclusion list ("*(-f --file)" broke every flag's
        excl = "*"  # completion: "_arguments: invalid rest argument definition")
    return f"'{excl}'{names}'[{_zq(help)}]{action}'"


def zsh() -> str:
    spec_block = " \\\n".join(f"    {_zsh_spec(*o)}" for o in options())
    cases = []
    for name, opts in sub_options().items():
        if name == "completion":
            continue
        specs = [f"'1: :({name})'"] + [_zsh_spec(strings, takes, "", help) for strings, takes, help in opts]
        if name in POSITIONAL_MODEL:
            specs.append("'2:model:_yi_chat_models'")
        cases.append(f"        {name}) _arguments {' '.join(specs)}; return ;;")
    sub_block = "\n".join(cases)
    subs = " ".join(f"'{n}:{_zq(h)}'" for n, h in subcommands().items())
    slash = " ".join(f"'{n[1:]}:{_zq(h)}'" for n, h in slash_commands().items())
    return f"""#compdef yi-chat
# zsh completion for yi-chat. Load it with:  source <(yi-chat completion zsh)
# or install it as _yi-chat in a directory of your $fpath.
_yi_chat_models() {{
    local -a names
    names=(${{(f)"$(${{words[1]}} completion --list-models 2>/dev/null)"}})
    # each name as one word (compadd -a: a config alias may hold a space; a (...) list split it again)
    _alternative 'models:model:compadd -a names' 'dirs:directory:_files -/'
}}
_yi_chat_sessions() {{
    local -a names
    names=(last ${{(f)"$(${{words[1]}} completion --list-sessions 2>/dev/null)"}})
    _alternative 'sessions:session:compadd -a names' 'files:file:_files'
}}
_yi_chat_prompt() {{
    local -a slash
    slash=({slash})
    if [[ $PREFIX == /* ]]; then
        compset -P '/'
        _describe -t commands 'slash command' slash
    elif (( CURRENT == 2 )); then
        local -a subs
        subs=({subs})
        _describe -t subcommands 'subcommand' subs
    fi
}}
_yi_chat() {{
    if (( CURRENT > 2 )); then  # a subcommand's own flags and argument
        case $words[2] in
{sub_block}
        completion) _arguments '1: :(completion)' '2:shell:({" ".join(SHELLS)})'; return ;;
        esac
    fi
    _arguments -s \\
{spec_block} \\
    '*:prompt:_yi_chat_prompt'
}}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _yi_chat "$@"
else
    compdef _yi_chat yi-chat
fi
"""


def _fq(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_flags(strings) -> list[str]:
    """A flag's option strings as `complete`'s -s / -l arguments."""
    return [f"-s {s[1:]}" if len(s) == 2 else f"-l {s[2:]}" for s in strings]


def fish() -> str:
    subs = " ".join(subcommands())
    lines = [
        "# fish completion for yi-chat. Load it with:  yi-chat completion fish | source",
        "# or install it:  yi-chat completion fish > ~/.config/fish/completions/yi-chat.fish",
        "complete -c yi-chat -f",
        "# whether the word after yi-chat is one of the arguments (a subcommand: the chat's flags are not its own)",
        "function __yi_chat_sub",
        "    set -l w (commandline -opc)",
        "    test (count $w) -ge 2; and contains -- $w[2] $argv",
        "end",
    ]
    for name, help in subcommands().items():
        lines.append(f"complete -c yi-chat -n __fish_use_subcommand -a {name} -d {_fq(help)}")
    for name, opts in sub_options().items():
        for strings, takes, help in opts:
            flags = " ".join(_fish_flags(strings))
            lines.append(
                f"complete -c yi-chat -n '__yi_chat_sub {name}' {flags}{' -x' if takes else ''} -d {_fq(help)}"
            )
    for name in POSITIONAL_MODEL:
        cond = f"'__yi_chat_sub {name}; and not string match -q -- \"-*\" (commandline -ct)'"
        lines.append(f"complete -c yi-chat -n {cond} -a '(yi-chat completion --list-models 2>/dev/null)'")
    lines.append(f"complete -c yi-chat -n '__yi_chat_sub completion' -x -a '{' '.join(SHELLS)}'")
    chat = f"-n 'not __yi_chat_sub {subs}'"  # the chat's flags and slash commands
    for strings, takes, values, help in options():
        parts = [f"complete -c yi-chat {chat}"]
        parts += _fish_flags(strings)
        if values == "@model":
            parts.append("-x -a '(__fish_complete_directories; yi-chat completion --list-models 2>/dev/null)'")
        elif values == "@file":
            parts.append("-r -F")
        elif values == "@session":
            parts.append("-r -F -a 'last (yi-chat completion --list-sessions 2>/dev/null)'")
        elif values:
            parts.append(f"-x -a '{values}'")
        elif takes:
            parts.append("-x")
        parts.append(f"-d {_fq(help)}")
        lines.append(" ".join(parts))
    for name, help in slash_commands().items():
        cond = f"'not __yi_chat_sub {subs}; and string match -q -- \"/*\" (commandline -ct)'"
        lines.append(f"complete -c yi-chat -n {cond} -a {name} -d {_fq(help)}")
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    from .args import Parser

    p = Parser(
        prog="yi-chat completion",
        usage="yi-chat completion [-h] {bash,zsh,fish}",  # the shell is needed (optional only for --list-*)
        description="Print a shell completion script: "
        "bash: source <(yi-chat completion bash); zsh: source <(yi-chat completion zsh); "
        "fish: yi-chat completion fish | source.",
    )
    p.add_argument("shell", nargs="?", choices=SHELLS)
    p.add_argument("--list-models", action="store_true", help=argparse.SUPPRESS)  # what the scripts call
    p.add_argument("--list-sessions", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.list_models or args.list_sessions:
        print("\n".join(model_names() if args.list_models else session_names()))
        return 0
    if args.shell is None:
        parser().error("which shell? (bash, zsh or fish)")
    print({"bash": bash, "zsh": zsh, "fish": fish}[args.shell](), end="")
    return 0

"""`yi-chat completion bash|zsh|fish`: a completion script generated from the argument parser (no torch).

Flags, their fixed values (--dtype, --engine, ...), files for --file/--resume, directories and model names for
--model, the subcommands, and the REPL's slash commands for a prompt word that starts with `/` (`yi-chat /help`
runs a command like `-p /help`). Model names come from `yi-chat completion --list-models` at completion time, so
the script stays right when checkpoints come and go.
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
        elif long in FILE_FLAGS:
            values = "@file"
        else:
            values = ""
        out.append((act.option_strings, takes, values, _one_line(act.help or "")))
    return out


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
            body = (
                'COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" completion --list-models 2>/dev/null)" '
                '-- "$cur") $(compgen -d -- "$cur"))'
            )
        elif values == "@file":
            extra = ' $(compgen -W "last" -- "$cur")' if "--resume" in strings else ""
            body = f'COMPREPLY=($(compgen -f -- "$cur"){extra})'
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
    return f"""# bash completion for yi-chat. Load it with:  source <(yi-chat completion bash)
# or install it:  yi-chat completion bash > ~/.local/share/bash-completion/completions/yi-chat
_yi_chat() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local slash="{slash}"
    COMPREPLY=()
    case "${{COMP_WORDS[1]}}" in
        sessions) [[ $COMP_CWORD -gt 1 ]] && COMPREPLY=($(compgen -W "--json --limit -n --help" -- "$cur")) \\
            && return ;;
        completion) [[ $COMP_CWORD -eq 2 ]] && COMPREPLY=($(compgen -W "{" ".join(SHELLS)}" -- "$cur")); return ;;
    esac
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


def zsh() -> str:
    specs = []
    for strings, takes, values, help in options():
        excl = f"({' '.join(strings)})" if len(strings) > 1 else ""
        names = "{" + ",".join(strings) + "}" if len(strings) > 1 else strings[0]
        if not takes:
            action = ""
        elif values == "@model":
            action = ":model:_yi_chat_models"
        elif values == "@file":
            action = ":file:_files"
        elif values:
            action = f":value:({values.replace(':', chr(92) + ':')})"
        else:
            action = ":text: "
        many = "*" if strings[0] in ("-f", "--file") else ""
        specs.append(f"    '{many}{excl}'{names}'[{_zq(help)}]{action}'")
    spec_block = " \\\n".join(specs)
    subs = " ".join(f"'{n}:{_zq(h)}'" for n, h in subcommands().items())
    slash = " ".join(f"'{n[1:]}:{_zq(h)}'" for n, h in slash_commands().items())
    return f"""#compdef yi-chat
# zsh completion for yi-chat. Load it with:  source <(yi-chat completion zsh)
# or install it as _yi-chat in a directory of your $fpath.
_yi_chat_models() {{
    local -a names
    names=(${{(f)"$(${{words[1]}} completion --list-models 2>/dev/null)"}})
    _alternative "models:model:(${{names[*]}})" 'dirs:directory:_files -/'
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
    case $words[2] in
        sessions) _arguments '--json[as JSON]' '(-n --limit)'{{-n,--limit}}'[newest N only]:N: '; return ;;
        completion) _arguments '2:shell:({" ".join(SHELLS)})'; return ;;
    esac
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


def fish() -> str:
    lines = [
        "# fish completion for yi-chat. Load it with:  yi-chat completion fish | source",
        "# or install it:  yi-chat completion fish > ~/.config/fish/completions/yi-chat.fish",
        "complete -c yi-chat -f",
    ]
    for name, help in subcommands().items():
        lines.append(f"complete -c yi-chat -n __fish_use_subcommand -a {name} -d {_fq(help)}")
    lines.append("complete -c yi-chat -n '__fish_seen_subcommand_from sessions' -l json -d 'as JSON'")
    lines.append("complete -c yi-chat -n '__fish_seen_subcommand_from sessions' -s n -l limit -x -d 'newest N only'")
    lines.append(f"complete -c yi-chat -n '__fish_seen_subcommand_from completion' -x -a '{' '.join(SHELLS)}'")
    for strings, takes, values, help in options():
        parts = ["complete -c yi-chat"]
        parts += [f"-s {s[1:]}" if len(s) == 2 else f"-l {s[2:]}" for s in strings]
        if values == "@model":
            parts.append("-x -a '(__fish_complete_directories; yi-chat completion --list-models 2>/dev/null)'")
        elif values == "@file":
            parts.append("-r -F" + (" -a last" if "--resume" in strings else ""))
        elif values:
            parts.append(f"-x -a '{values}'")
        elif takes:
            parts.append("-x")
        parts.append(f"-d {_fq(help)}")
        lines.append(" ".join(parts))
    for name, help in slash_commands().items():
        lines.append(f"complete -c yi-chat -n 'string match -q -- \"/*\" (commandline -ct)' -a {name} -d {_fq(help)}")
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    from .args import Parser

    p = Parser(
        prog="yi-chat completion",
        usage="yi-chat completion [-h] {bash,zsh,fish}",  # the shell is needed (optional only for --list-models)
        description="Print a shell completion script: "
        "bash: source <(yi-chat completion bash); zsh: source <(yi-chat completion zsh); "
        "fish: yi-chat completion fish | source.",
    )
    p.add_argument("shell", nargs="?", choices=SHELLS)
    p.add_argument("--list-models", action="store_true", help=argparse.SUPPRESS)  # what the scripts call
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.list_models:
        print("\n".join(model_names()))
        return 0
    if args.shell is None:
        parser().error("which shell? (bash, zsh or fish)")
    print({"bash": bash, "zsh": zsh, "fish": fish}[args.shell](), end="")
    return 0

"""Every command line that BENCHMARKS.md, DEVELOPERS.md and README.md show for a script of scripts/ (and the
`python -m yi_cli` / `yi-chat` lines of the first two) parses with today's scripts: a flag renamed or removed, a value
a choice no longer has, a variant name a script no longer knows fails here. Parse only, on the CPU, in one child
process (tests/doc_commands.py). A paragraph marked `<!-- commands: not in the repository -->` (a throwaway patch's
lines) is held to the opposite: its lines must fail."""

from __future__ import annotations

from dataclasses import replace

import doc_commands
import pytest

COMMANDS = doc_commands.commands()
CHECKED = [c for c in COMMANDS if not c.skipped]
BASE = doc_commands.Command("-", 0, "bench", (), False, False, "")


MARKED = [c for c in COMMANDS if c.skipped]


@pytest.fixture(scope="module")
def errors():
    return dict(zip(COMMANDS, doc_commands.parse(COMMANDS), strict=True))


@pytest.mark.parametrize("command", CHECKED, ids=[f"{c.doc}:{c.line}:{c.script}" for c in CHECKED])
def test_a_documented_command_parses(command, errors):
    assert errors[command] is None, f"{command.where}\n  {errors[command]}"


@pytest.mark.parametrize("command", MARKED, ids=[f"{c.doc}:{c.line}:{c.script}" for c in MARKED])
def test_a_marked_command_is_one_the_scripts_refuse(command, errors):
    """The marker is for lines a throwaway patch's flags or variants made: one that parses today needs none (and,
    marked, would hide a later break)."""
    assert errors[command] is not None, f"{command.where}\n  parses today: drop its {doc_commands.NOT_IN_REPO}"


def test_what_the_parser_refuses_fails_the_test():
    """The same child, on lines the scripts refuse: an unknown flag, a value outside the choices, a variant name the
    script does not know, a subcommand word, a flag's prefix, yi-chat's own flags."""
    bad = [
        ("bench", ("--quant", "awq", "--no-such-flag")),
        ("bench", ("--quant", "awq4")),
        ("bench", ("--quant", "awq", "--peer-w", "60")),  # a prefix of a flag: a rename to --peer-wait-s kept it
        ("bench_parts", ("--path", "x", "--time-line")),
        ("bench_floor", ("--sweep", "--only", "persistant")),
        ("bench_attention", ("--path", "x", "--variants", "tile,merge2")),
        ("bench_step_variants", ("--path", "x", "--variant", "up=1,4,3,1,2")),
        ("bench_persistent", ("--cfg", "qkv=2,3,1")),
        ("bench_ring", ("--ring", "12,32,8")),
        ("bench_ring_gemv", ("--unit", "48")),
        ("sass", ("--mma", "--unroll", "0")),
        ("ncu_gemv", ("summarise", "o.csv")),
        ("tried_gemv_tma", ("steps", "/tmp/yi-bench/yi-6b-awq")),
        ("tried_sampler_layout", ("--rounds", "2")),
        ("yi_cli", ("--model", "demo", "--engine", "turbo")),
    ]
    cmds = [replace(BASE, script=s, argv=argv, mention=False, text=" ".join(argv)) for s, argv in bad]
    got = doc_commands.parse(cmds)
    assert [c.argv for c, e in zip(cmds, got, strict=True) if e is None] == []
    assert "unrecognized arguments: --no-such-flag" in got[0]
    assert "invalid choice: 'persistant'" in got[4]
    assert "unknown variant 'merge2'" in got[5]


def test_commands_are_read_from_blocks_spans_loops_and_optional_flags(tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(
        "# A\n\n"
        "```\n"
        "export D=/tmp/x; for f in awq fp16; do python3 scripts/make_checkpoint.py --format $f --out $D/$f & done\n"
        "python3 scripts/bench_step_variants.py --path $D/awq \\\n"
        "    --variant down=1,4,3,1,2   # a comment\n"
        '{"decode_tok_s": 1.0}\n'
        "```\n\n"
        "Prose with `scripts/bench_parts.py\n--timeline` and `python scripts/sass.py [--against REV]`, then\n"
        "`bench.py` alone and `python -m yi_cli --stats`.\n\n"
        f"{doc_commands.NOT_IN_REPO}\n"
        "A patched tree: `scripts/bench_attention.py --path P --variants tile,merge2`.\n\n"
        "After it: `python3 scripts/bench.py --skip-seed`.\n"
    )
    got = [(c.line, c.script, c.argv, c.mention, c.skipped) for c in doc_commands.commands(["BENCHMARKS.md"], tmp_path)]
    assert got == [
        (4, "make_checkpoint", ("--format", "awq", "--out", "$D/awq"), False, False),
        (4, "make_checkpoint", ("--format", "fp16", "--out", "$D/fp16"), False, False),
        (5, "bench_step_variants", ("--path", "$D/awq", "--variant", "down=1,4,3,1,2"), False, False),
        (10, "bench_parts", ("--timeline",), True, False),
        (11, "sass", (), False, False),
        (11, "sass", ("--against", "REV"), False, False),
        (12, "yi_cli", ("--stats",), False, False),
        (15, "bench_attention", ("--path", "P", "--variants", "tile,merge2"), True, True),
        (17, "bench", ("--skip-seed",), False, False),
    ]

"""The scripts' parsers refuse what they do not know (a flag, a choice, a variant name, a subcommand word) before
anything loads: parse only, on the CPU, in one child process (tests/doc_commands.py)."""

from __future__ import annotations

from dataclasses import replace

import doc_commands

BASE = doc_commands.Command("-", 0, "bench", (), False, False, "")


def test_what_the_parser_refuses_fails_the_test():
    """The same child, on lines the scripts refuse: an unknown flag, a value outside the choices, a variant name the
    script does not know, a subcommand word, yi-chat's own flags."""
    bad = [
        ("bench", ("--quant", "awq", "--no-such-flag")),
        ("bench", ("--quant", "awq4")),
        ("bench_parts", ("--path", "x", "--time-line")),
        ("bench_floor", ("--sweep", "--only", "persistant")),
        ("bench_attention", ("--path", "x", "--variants", "tile,merge2")),
        ("bench_step_variants", ("--path", "x", "--variant", "up=1,4,3,1,2")),
        ("bench_persistent", ("--cfg", "qkv=2,3,1")),
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
    assert "invalid choice: 'persistant'" in got[3]
    assert "unknown variant 'merge2'" in got[4]

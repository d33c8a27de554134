"""yi-chat's own progress display (progress.py): one line per stage when piped; other libraries' bars silenced."""

import io
import re
import sys

from yi_cli.progress import Stages


def test_piped_stages_are_one_line_each_and_third_party_output_is_silenced(capsys):
    err = io.StringIO()
    with Stages("demo model, first run", 3, stream=err) as st:
        st.stage("reading model.gguf")
        from tqdm.auto import tqdm

        for _ in tqdm(range(3), desc="Converting and de-quantizing GGUF tensors"):
            pass
        print("chatter on stdout")
        print("chatter on stderr", file=sys.stderr)
        st.stage("writing the fp32 checkpoint")
        st.stage("quantizing to AWQ int4")
    lines = err.getvalue().splitlines()
    assert lines[:3] == [
        "yi-chat: demo model, first run: reading model.gguf (1/3)",
        "yi-chat: demo model, first run: writing the fp32 checkpoint (2/3)",
        "yi-chat: demo model, first run: quantizing to AWQ int4 (3/3)",
    ]
    assert len(lines) == 4 and lines[3].startswith("yi-chat: demo model, first run: ready in ")
    assert capsys.readouterr() == ("", "")  # nothing reached the real stdout / stderr


def test_a_failed_stage_says_nothing_more_and_restores_the_streams():
    err = io.StringIO()
    out, stderr = sys.stdout, sys.stderr
    try:
        with Stages("work", 2, stream=err) as st:
            st.stage("one")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert err.getvalue() == "yi-chat: work: one (1/2)\n"  # the error itself is cli.py's one line
    assert (sys.stdout, sys.stderr) == (out, stderr)


def test_a_terminal_narrower_than_the_line_keeps_the_spinner_count_and_time(monkeypatch):
    """At 60 columns the first run's line was its text alone, cut ("demo model, first run: reading
    SmolLM2-135M-Instruct.Q4_1.…"): rich left the spinner, the bar, the count and the elapsed time out, and the line
    stood still for the minute of the conversion, as if hung (a run-through in a split pane). The text gives way."""
    from rich.console import Console

    class Tty(io.StringIO):
        def isatty(self):
            return True

    with Stages("demo model, first run", 3, stream=Tty()) as st:
        st.stage("reading SmolLM2-135M-Instruct.Q4_1.gguf")
        for width in (100, 60, 40):
            shown = Console(file=io.StringIO(), width=width, color_system=None)
            shown.print(st.progress.get_renderable())
            line = shown.file.getvalue().rstrip("\n")
            assert "\n" not in line and len(line) <= width, line
            assert line[0] in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏" and line.startswith(line[0] + " demo model"), line  # the spinner, the text
            assert re.search(r" 0/3 \d:\d\d:\d\d$", line.rstrip()), line  # the count and the time
            if width == 100:
                assert "reading SmolLM2-135M-Instruct.Q4_1.gguf" in line
            else:
                assert "…" in line


def test_the_download_line_stays_one_row_in_a_narrow_terminal():
    """`yi-chat pull` at 60 columns: a shard's name kept its whole width and the line wrapped, its size's unit on a
    second row ("1.0/3.5 \\n GB"), a live display of two rows that a resize leaves behind. The name gives way."""
    from rich.console import Console

    from yi_cli.checkpoint.hub import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    shard = "model-00001-of-00002.safetensors"
    p = Progress(stream=Tty())
    p.start("acme/tiny-chat", [(shard, 3_500_000_000, 1_000_000_000)])
    try:
        p.file(shard, 3_500_000_000, 1_000_000_000)
        for width in (100, 60, 45):
            shown = Console(file=io.StringIO(), width=width, color_system=None)
            shown.print(p.live.get_renderable())
            line = shown.file.getvalue().rstrip("\n")
            assert "\n" not in line and len(line) <= width, line
            assert "1.0/3.5 GB" in line and line.startswith("model-0"), line
    finally:
        p.stop()

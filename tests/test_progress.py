"""yi-chat's own progress display (progress.py): one line per stage when piped; other libraries' bars silenced."""

import io
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

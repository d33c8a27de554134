"""scripts/soak.py end to end, shortened, on a tiny random checkpoint with the demo's tokenizer: its checks pass
(every turn in the transcript in order, the autosave holding the last one, old exchanges dropped so that each prompt
fits, RSS flat)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tests.test_bad_input import make_tiny

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "soak.py"


def test_a_short_soak_passes_its_checks(tmp_path, demo_fp32_dir, monkeypatch, capsys):
    model = make_tiny(tmp_path / "tiny", demo_fp32_dir)
    spec = importlib.util.spec_from_file_location("soak", SCRIPT)
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))  # soak moves it to a scratch home: put back after
    # 12 turns into 90 tokens: the last prompt is 88 tokens (its budget: 90 less 2 for the reply), the conversation
    # with the reply 94, past the context as the policy allows
    argv = ["--model", str(model), "--turns", "12", "--early", "4", "--context", "90", "--max-new-tokens", "2"]
    code = soak.main(argv)
    row = json.loads(capsys.readouterr().out)
    assert (code, row["ok"]) == (0, True), row
    assert row["transcript_turns"] == 12 and row["overflow_drop_notices"] > 0

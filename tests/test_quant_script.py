"""scripts/make_checkpoint.py: random packed checkpoints in each format load and give finite logits."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import yi_cli
from yi_cli.runtime.qlinear import DequantLinear, Int4Linear

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_checkpoint.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("make_checkpoint", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    "fmt,kind,shard_gb",
    [("awq", Int4Linear, 4), ("gptq8", DequantLinear, 0.0005), ("gptq4", Int4Linear, 4), ("fp16", torch.nn.Linear, 4)],
)
def test_random_checkpoint_loads(script, tmp_path, fmt, kind, shard_gb):
    out = tmp_path / fmt
    assert script.main(["--format", fmt, "--shape", "tiny", "--out", str(out), "--max-shard-gb", str(shard_gb)]) == 0
    sharded = (out / "model.safetensors.index.json").is_file()
    assert sharded == (shard_gb < 1)
    if fmt.startswith("gptq") and not sharded:
        assert (out / f"gptq_model-{fmt[-1]}bit-64g.safetensors").is_file()
    got = yi_cli.load(out, device="cpu", dtype="fp32")
    assert isinstance(got.model.model.layers[1].mlp.down_proj, kind)
    assert json.loads((out / "config.json").read_text())["rope_parameters"]["rope_theta"] == 5e6
    ids = got.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    assert ids[0, 0].item() == 6  # <|im_start|> has Yi's id
    with torch.no_grad():
        logits = got.model(ids).logits
    assert torch.isfinite(logits).all() and 0.1 < logits.std() < 100

"""Whole tiny quantized models through yi_cli.load: logits vs the reference-dequantized model, detection,
refusals with one-line messages, memory (4-bit stays 4-bit), CUDA (marker `gpu`), optional GPTQModel cross-check."""

import importlib.util
import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import yi_cli
from yi_cli.checkpoint import formats as Q
from yi_cli.checkpoint import quantized, writer
from yi_cli.errors import LoadError
from yi_cli.runtime.qlinear import DequantLinear, Int4Linear

TINY = dict(
    vocab_size=320,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    initializer_range=0.1,
)
IDS = torch.tensor([[1, 6, 40, 41, 42, 100, 7, 9, 200, 300, 11, 12]])
# (name, maker kwargs, config extras); each becomes a checkpoint built once per session
FORMATS = {
    "awq": ("awq", dict(group_size=64), dict(tie_word_embeddings=True)),
    "gptq8": ("gptq", dict(bits=8, group_size=32), dict(tie_word_embeddings=False)),
    "gptq4-desc-asym-bias": (
        "gptq",
        dict(bits=4, group_size=32, desc_act=True, sym=False),
        dict(attention_bias=True, mlp_bias=True),
    ),
    "gptq8-desc-asym": ("gptq", dict(bits=8, group_size=64, desc_act=True, sym=False), {}),
}


def fp_checkpoint(root, name, extras):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY, **extras))
    for n, p in model.named_parameters():
        if n.endswith(".bias"):
            torch.nn.init.normal_(p, std=0.1)  # non-zero biases, so a dropped bias shows in the logits
    d = root / f"{name}-fp32"
    model.save_pretrained(d)
    writer.write_byte_tokenizer(d)
    return d


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("quant")
    out = {}
    for name, (method, kw, extras) in FORMATS.items():
        src = fp_checkpoint(root, name, extras)
        make = writer.make_awq if method == "awq" else writer.make_gptq
        out[name] = make(src, root / name, **kw)
    return out


def reference_model(path):
    """Plain transformers model whose Linear weights are quant.dequantize() of the checkpoint's packed tensors."""
    from transformers import AutoConfig, AutoModelForCausalLM

    quant = quantized.detect(path, json.loads((path / "config.json").read_text()))
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.float32)
    raw = {}
    for f in quant["files"]:
        with safe_open(str(path / f), "pt") as h:
            raw.update({k: h.get_tensor(k) for k in h.keys()})
    sd = {k: v.float() for k, v in raw.items() if k.rsplit(".", 1)[-1] not in ("qweight", "qzeros", "scales", "g_idx")}
    for k in [k for k in raw if k.endswith(".qweight")]:
        p = k[: -len(".qweight")]
        if quant["method"] == "awq":
            w = Q.from_awq(raw[k], raw[p + ".qzeros"], raw[p + ".scales"], quant["group_size"])
        else:
            w = Q.from_gptq(
                raw[k], raw[p + ".qzeros"], raw[p + ".scales"], raw[p + ".g_idx"], quant["bits"], quant["group_size"]
            )
        sd[p + ".weight"] = Q.dequantize(w)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert set(missing) <= {"lm_head.weight"} and (not missing or model.config.tie_word_embeddings)
    assert all(k.endswith(".bias") and not sd[k].any() for k in unexpected)  # AutoGPTQ's zero bias
    return model.eval()


def logits(model, device="cpu"):
    with torch.no_grad():
        return model(IDS.to(device)).logits.float().cpu()


@pytest.mark.parametrize("name", list(FORMATS))
def test_logits_match_reference_cpu(ckpts, name):
    got = yi_cli.load(ckpts[name], device="cpu", dtype="fp32")
    assert got.quant["method"] == FORMATS[name][0]
    ref = logits(reference_model(ckpts[name]))
    out = logits(got.model)
    assert (out - ref).abs().max() < 1e-2
    assert torch.equal(out.argmax(-1), ref.argmax(-1))
    text = got.tokenizer.decode(got.model.generate(IDS, max_new_tokens=4, do_sample=False)[0])
    assert isinstance(text, str)


def test_awq_stays_packed_in_memory(ckpts):
    model = yi_cli.load(ckpts["awq"], device="cpu", dtype="fp32").model
    quant = [m for m in model.modules() if isinstance(m, (Int4Linear, DequantLinear))]
    assert len(quant) == 7 * TINY["num_hidden_layers"] and all(isinstance(m, Int4Linear) for m in quant)
    for m in quant:
        for t in list(m.parameters()) + list(m.buffers()):
            assert not (t.is_floating_point() and t.numel() >= m.in_features * m.out_features)
        assert m.weight.numel() * m.weight.element_size() == m.in_features * m.out_features // 2
    assert not any(isinstance(m, torch.nn.Linear) and m is not model.lm_head for m in model.modules())


def test_sharded_checkpoint_loads(ckpts, tmp_path):
    src = ckpts["gptq8"]
    dst = tmp_path / "sharded"
    shutil.copytree(src, dst)
    (weights,) = dst.glob("*.safetensors")
    with safe_open(str(weights), "pt") as h:
        tensors = {k: h.get_tensor(k) for k in h.keys()}
    weights.unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for f, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(dst / f), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (dst / "model.safetensors.index.json").write_text(json.dumps(index))
    got = logits(yi_cli.load(dst, device="cpu", dtype="fp32").model)
    assert (got - logits(yi_cli.load(src, device="cpu", dtype="fp32").model)).abs().max() == 0


def test_detect(ckpts, tmp_path):
    fp = ckpts["awq"].parent / "awq-fp32"
    assert quantized.detect(fp, json.loads((fp / "config.json").read_text())) is None
    q = quantized.detect(ckpts["awq"], json.loads((ckpts["awq"] / "config.json").read_text()))
    assert {k: q[k] for k in ("method", "bits", "group_size", "version", "zero_point")} == {
        "method": "awq",
        "bits": 4,
        "group_size": 64,
        "version": "gemm",
        "zero_point": True,
    }
    # AutoGPTQ before optimum: only quantize_config.json says the model is quantized
    d = copy_with(ckpts["gptq8-desc-asym"], tmp_path / "old", drop_qc=True)
    q = quantized.detect(d, json.loads((d / "config.json").read_text()))
    assert (q["method"], q["bits"], q["group_size"], q["desc_act"], q["sym"]) == ("gptq", 8, 64, True, False)
    assert q["files"] == ["gptq_model-8bit-64g.safetensors"]


def copy_with(src, dst, qc=None, drop_qc=False, **cfg_changes):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(cfg_changes)
    if drop_qc:
        del cfg["quantization_config"]
    if qc:
        cfg["quantization_config"].update(qc)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def load_error(path) -> str:
    with pytest.raises(LoadError) as e:
        yi_cli.load(path, device="cpu", dtype="fp32")
    msg = str(e.value)
    assert "\n" not in msg and e.value.exit_code == 3
    return msg


@pytest.mark.parametrize(
    "base,qc,needle",
    [
        ("awq", {"bits": 3}, "AWQ with bits=3"),
        ("awq", {"version": "gemv"}, "AWQ version 'gemv'"),
        ("awq", {"zero_point": False}, "zero_point false"),
        ("awq", {"quant_method": "bitsandbytes"}, "'bitsandbytes' is not supported"),
        ("gptq8", {"bits": 2}, "GPTQ with bits=2"),
        ("gptq8", {"checkpoint_format": "gptq_v2"}, "'gptq_v2' is not supported"),
    ],
)
def test_refuses_unsupported_config(ckpts, tmp_path, base, qc, needle):
    d = copy_with(ckpts[base], tmp_path / "bad", qc=qc)
    msg = load_error(d)
    assert msg.startswith(str(d / "config.json")) and needle in msg


def test_refuses_file_name_mismatch(ckpts, tmp_path):
    d = copy_with(ckpts["gptq8"], tmp_path / "bad", qc={"group_size": 64})
    msg = load_error(d)
    assert "gptq_model-8bit-32g.safetensors" in msg and "group 32" in msg and "group 64" in msg


def rewrite_weights(src, dst, change):
    shutil.copytree(src, dst)
    (f,) = dst.glob("*.safetensors")
    with safe_open(str(f), "pt") as h:
        tensors = {k: h.get_tensor(k) for k in h.keys()}
    change(tensors)
    save_file(tensors, str(f), metadata={"format": "pt"})
    return f


def test_refuses_missing_tensor(ckpts, tmp_path):
    f = rewrite_weights(ckpts["awq"], tmp_path / "bad", lambda t: t.pop("model.layers.1.mlp.up_proj.qzeros"))
    msg = load_error(f.parent)
    assert msg.startswith(str(f)) and "missing tensor model.layers.1.mlp.up_proj.qzeros" in msg


def test_refuses_missing_plain_tensor(ckpts, tmp_path):
    f = rewrite_weights(ckpts["gptq8"], tmp_path / "bad", lambda t: t.pop("model.norm.weight"))
    assert "missing tensor model.norm.weight" in load_error(f.parent)


@pytest.mark.parametrize(
    "base,tensor", [("awq", "qweight"), ("awq", "qzeros"), ("gptq8", "qweight"), ("gptq4-desc-asym-bias", "g_idx")]
)
def test_refuses_packed_tensor_of_a_float_dtype(ckpts, tmp_path, base, tensor):
    """Packed codes stored as floats (same shape, same bytes) reached the unpacking's shifts: a NotImplementedError
    traceback ("rshift_cpu" not implemented for 'Float'). Refused with the file, the tensor and the dtype."""
    name = f"model.layers.0.self_attn.q_proj.{tensor}"

    def change(t):
        t[name] = t[name].view(torch.float32) if t[name].dtype == torch.int32 else t[name].float()

    f = rewrite_weights(ckpts[base], tmp_path / "bad", change)
    msg = load_error(f.parent)
    assert msg.startswith(str(f)) and f"tensor {name} is float32, expected int32" in msg, msg


def test_refuses_shape_mismatch(ckpts, tmp_path):
    d = copy_with(ckpts["gptq8"], tmp_path / "bad", intermediate_size=512)
    msg = load_error(d)
    assert "gptq_model-8bit-32g.safetensors" in msg
    assert "gate_proj.qweight has shape [32, 256], expected [32, 512]" in msg


def test_refuses_truncated_file(ckpts, tmp_path):
    shutil.copytree(ckpts["awq"], tmp_path / "bad")
    f = tmp_path / "bad" / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 1000])
    msg = load_error(f.parent)
    assert msg.startswith(str(f)) and "truncated" in msg


def test_demo_output_is_atomic_and_complete(ckpts):
    d = ckpts["gptq8"]
    assert sorted(p.name for p in d.iterdir()) == sorted(
        [
            "config.json",
            "quantize_config.json",
            "gptq_model-8bit-32g.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "chat_template.jinja",
            "generation_config.json",
        ]
    )
    assert not [p for p in d.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    qc = json.loads((d / "quantize_config.json").read_text())
    assert json.loads((d / "config.json").read_text())["quantization_config"] == qc
    with safe_open(str(d / "gptq_model-8bit-32g.safetensors"), "pt") as h:
        bias = h.get_tensor("model.layers.0.self_attn.q_proj.bias")
        assert bias.dtype == torch.float16 and not bias.any()
        assert h.get_tensor("model.layers.0.self_attn.q_proj.g_idx").dtype == torch.int32


def check_low_precision(path, device, dtype):
    """bf16/fp16 activations. Tolerance: the quantized model may be off the fp32 reference by at most twice what the
    reference itself loses when run in bf16 (the CUDA int4 op computes in bf16 whatever the model dtype) or in
    `dtype`, whichever is more, + 0.02; with logits of about ±4 here that is ~0.15 (measured on an H100: 0.01-0.12).
    Argmax must agree wherever the reference's top-2 margin exceeds the tolerance."""
    got = yi_cli.load(path, device=device, dtype=dtype)
    out = logits(got.model, device)
    ref_model = reference_model(path)
    ref = logits(ref_model)
    lost = [
        (logits(ref_model.to(device, t), device) - ref).abs().max().item()
        for t in {torch.bfloat16, {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]}
    ]
    tol = 2 * max(lost) + 0.02
    err = (out - ref).abs().max().item()
    print(f"{path.name} {device} {dtype}: max |logit - fp32 reference| = {err:.4f} (tolerance {tol:.4f})")
    assert err <= tol
    top2 = ref.topk(2, -1).values
    clear = (top2[..., 0] - top2[..., 1]) > tol
    assert torch.equal(out.argmax(-1)[clear], ref.argmax(-1)[clear])
    return got


@pytest.mark.parametrize("name", ["awq", "gptq4-desc-asym-bias"])
def test_low_precision_cpu(ckpts, name):
    check_low_precision(ckpts[name], "cpu", "bf16")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("name", list(FORMATS))
def test_logits_match_reference_cuda(ckpts, name, dtype):
    got = check_low_precision(ckpts[name], "cuda", dtype)
    for m in got.model.modules():
        if isinstance(m, Int4Linear):  # dequantize() on CUDA is the weight the kernel uses (for engines' prefill)
            assert m.weight.is_cuda and m.cpu_layout is None
            x = torch.randn(3, m.in_features, device="cuda", dtype=torch.bfloat16)
            want = x.float() @ m.dequantize().t() + (0 if m.bias is None else m.bias.float())
            assert (m(x).float() - want).abs().max() <= 0.02 * want.abs().max()  # bf16 rounding of x·W
    kinds = {type(m) for m in got.model.modules() if isinstance(m, (Int4Linear, DequantLinear))}
    assert kinds == ({DequantLinear} if FORMATS[name][1].get("bits") == 8 else {Int4Linear})


@pytest.mark.skipif(
    importlib.util.find_spec("gptqmodel") is None or importlib.util.find_spec("optimum") is None,
    reason="GPTQModel and optimum are not installed",
)
@pytest.mark.parametrize("name", ["awq", "gptq8"])
def test_cross_check_with_gptqmodel(ckpts, name):
    from transformers import AutoModelForCausalLM

    theirs = AutoModelForCausalLM.from_pretrained(ckpts[name], device_map="cpu", dtype=torch.float16)
    ours = yi_cli.load(ckpts[name], device="cpu", dtype="fp16").model
    assert (logits(theirs) - logits(ours)).abs().max() < 5e-2

"""The transformers model of a checkpoint, for the `generate` engine and the Python API (`yi_cli.load`).

Plain checkpoints load through transformers. AWQ / GPTQ ones are built from their config on the meta device (no
full-precision linear is ever materialised); each packed projection becomes a qlinear module made from its QWeight,
the rest is read from safetensors in the checkpoint's dtype.
"""

from __future__ import annotations

from ..errors import LoadError, failure, first_line
from .heap import trim_heap


def build_model(ckpt):
    """The checkpoint as a transformers model in eval mode, with its generation config."""
    model = _quantized(ckpt) if ckpt.quant is not None else _plain(ckpt)
    if ckpt.generation_config is not None:
        model.generation_config = ckpt.hf_generation_config
    return model.eval()


def _plain(ckpt):
    import pickle
    import warnings

    from transformers import AutoModelForCausalLM

    try:
        with warnings.catch_warnings():  # torch.load's about a pickle's protocol: two lines more on stderr
            warnings.simplefilter("ignore", UserWarning)
            model, info = AutoModelForCausalLM.from_pretrained(
                str(ckpt.path),
                config=ckpt.hf_config,
                **_generation_config(ckpt),
                dtype=ckpt.dtype,
                device_map=ckpt.device if ckpt.device != "cpu" else None,
                use_safetensors=ckpt.safetensors or None,
                trust_remote_code=ckpt.trust_remote_code,
                output_loading_info=True,
            )
    except pickle.UnpicklingError as e:  # torch's own words were cut mid-sentence, advising what no flag of ours does
        said = str(e).partition("WeightsUnpickler error:")[2].partition("Check the documentation")[0]
        why = f": {first_line(said.strip())}" if said.strip() else ""
        raise LoadError(
            f"{ckpt.path}: cannot load weights (torch's weights-only loader, which --allow-pickle uses, refuses the "
            f".bin file{why}; it reads pickles of tensors and plain containers)"
        ) from None
    except Exception as e:
        raise LoadError(f"{ckpt.path}: cannot load weights ({failure(e)})") from None
    # transformers fills missing tensors with random values and only warns: a model that would talk nonsense.
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise LoadError(f"{ckpt.files[0] if len(ckpt.files) == 1 else ckpt.path}: missing tensor {missing[0]}{more}")
    return model


def _generation_config(ckpt) -> dict:
    """from_pretrained's generation_config where config.json has a byte-order mark: without one given, transformers
    reads generation_config.json itself, and where that is missing or refused (a BOM too), config.json, which it
    refuses ("is not a valid JSON file": every such checkpoint failed on the generate engine, exit 3). yi-chat read
    both already (configs.bom); the model's config is then the generation config's source, as in transformers.
    A generation_config.json yi-chat read is given as it read it (its ids, where transformers refuses a field such as
    max_new_tokens 0: transformers reading the file again failed the load, where the fast engine chatted)."""
    from ..checkpoint import configs

    if ckpt.trust_remote_code:
        return {}  # a remote-code model's own generate function loads only on transformers' path
    if ckpt.generation_config is not None:
        return {"generation_config": ckpt.hf_generation_config}
    if not configs.bom(ckpt.path / "config.json"):
        return {}
    from transformers import GenerationConfig

    return {"generation_config": GenerationConfig.from_model_config(ckpt.hf_config)}


def meta_model(config, dtype=None):
    """The model's modules with shapes only (no memory): for building, and for /model's tree and counts."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def _quantized(ckpt):
    from torch import nn

    from .qlinear import make_linear

    device, dtype = ckpt.device, ckpt.dtype
    try:
        model = meta_model(ckpt.hf_config, dtype)
    except Exception as e:
        raise LoadError(f"{ckpt.path / 'config.json'}: cannot build the model ({first_line(e)})") from None
    head = model.get_output_embeddings()
    with ckpt.weights() as w:
        for name, lin in list(model.named_modules()):
            if isinstance(lin, nn.Linear) and lin is not head and ckpt.is_quantized(name):
                q = w.qweight(name, lin.in_features, lin.out_features, lin.bias is not None)
                parent, leaf = name.rsplit(".", 1)
                setattr(model.get_submodule(parent), leaf, make_linear(q, device, dtype))
        tied = bool(getattr(ckpt.config, "tie_word_embeddings", False))
        # tied, yet the file has a head of its own: transformers reads it (it "will NOT tie them")
        head_name = next((f"{n}.weight" for n, m in model.named_modules() if m is head), None)
        own_head = tied and head_name is not None and head_name in w
        for name, p in list(model.named_parameters(remove_duplicate=False)):
            if tied and head is not None and name == head_name and not own_head:
                continue  # tied below
            t = w.tensor(name, list(p.shape), dtype)
            parent, leaf = name.rsplit(".", 1) if "." in name else ("", name)
            setattr(model.get_submodule(parent), leaf, nn.Parameter(t, requires_grad=False))
    if tied and head is not None and not own_head:
        head.weight = model.get_input_embeddings().weight
    _init_meta_buffers(model, device)
    trim_heap()
    for name, x in list(model.named_parameters()) + list(model.named_buffers()):
        if x.is_meta:
            raise LoadError(f"{ckpt.path}: {name} was not loaded (not in the checkpoint)")
    return model


def _init_meta_buffers(model, device: str) -> None:
    """Non-persistent buffers (rotary inv_freq) are computed in __init__, so on meta they are empty: rebuild."""
    import torch

    for name, m in list(model.named_modules()):
        if any(b.is_meta for b in m.buffers(recurse=False)) and hasattr(m, "config"):
            with torch.device("cpu"):
                fresh = type(m)(m.config).to(device)
            parent, leaf = name.rsplit(".", 1) if "." in name else ("", name)
            setattr(model.get_submodule(parent), leaf, fresh)


class Loaded:
    """What `yi_cli.load` returns: the transformers model with its checkpoint's tokenizer, config and settings."""

    def __init__(self, model, ckpt):
        self.model, self.checkpoint = model, ckpt
        self.tokenizer, self.config, self.quant = ckpt.hf_tokenizer, ckpt.hf_config, ckpt.quant
        self.device, self.dtype, self.path, self.name = ckpt.device, ckpt.dtype, ckpt.path, ckpt.name

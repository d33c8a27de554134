"""yi-chat: a terminal chat REPL for the Yi chat models."""

__version__ = "0.2.0.dev0"  # main between releases: the next one's .dev0 (CHANGELOG: Unreleased)


def load(path, device=None, dtype=None, **kw):
    """Load a checkpoint (directory, cached hub id, or 'demo') as a transformers model: returns an object with
    .model, .tokenizer, .config, .device, .dtype, .quant and .checkpoint. device: a name, a torch.device or a CUDA
    index; a checkpoint that cannot be loaded raises yi_cli.errors.LoadError."""
    from .checkpoint.loader import DTYPES, LoadError, device_name, open_checkpoint, pick_device
    from .errors import shown
    from .runtime.hf import Loaded, build_model

    device = pick_device(device_name(device), "device =")  # its errors name the argument, not a CLI flag
    import torch

    named = isinstance(dtype, str) and dtype in ("", "auto", *DTYPES)
    if not (dtype is None or named or isinstance(dtype, torch.dtype)):  # dtype=32 said --dtype, ['fp32'] TypeError
        raise LoadError(
            f"dtype = {shown(repr(dtype), 40)}: unknown dtype (use auto, fp32, fp16, bf16 or a torch.dtype)"
        )
    context = kw.get("context")  # as --context takes it: context=0 loaded, and the cache had no room for a token
    if context is not None and (type(context) is not int or not 0 < context < 2**31):
        raise LoadError(f"context = {shown(repr(context), 40)}: not a positive number of tokens under 2**31")
    ckpt = open_checkpoint(path, device=device, dtype=dtype, **kw)
    return Loaded(build_model(ckpt), ckpt)

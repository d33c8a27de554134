"""yi-chat: a terminal chat REPL for the Yi chat models."""

__version__ = "0.2.0.dev0"  # main between releases: the next one's .dev0 (CHANGELOG: Unreleased)


def load(path, device=None, dtype=None, **kw):
    """Load a checkpoint (directory, cached hub id, or 'demo') as a transformers model: returns an object with
    .model, .tokenizer, .config, .device, .dtype, .quant and .checkpoint."""
    from .checkpoint.loader import open_checkpoint
    from .runtime.hf import Loaded, build_model

    ckpt = open_checkpoint(path, device=device, dtype=dtype, **kw)
    return Loaded(build_model(ckpt), ckpt)

"""yi-chat: a terminal chat REPL for the Yi chat models."""

__version__ = "0.1.0"


def load(path, device=None, dtype=None, **kw):
    """Load a checkpoint (directory, cached hub id, or 'demo'): returns Loaded with .model and .tokenizer."""
    from .loader import load as _load

    return _load(path, device=device, dtype=dtype, **kw)

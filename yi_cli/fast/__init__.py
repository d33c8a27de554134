"""Fast decode engine for Llama-architecture models: static KV cache, CUDA-graph decode steps, int4 kernels."""
from .decoder import FastDecoder, supports

__all__ = ["FastDecoder", "supports"]

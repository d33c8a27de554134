"""The KV cache's size: it grows with the conversation instead of holding the whole context from the start.

A session may use the model's context (max_position_embeddings, 200K for Yi-*-200K), capped by --context and by
the GPU memory free after the weights. The cache starts at START slots (256 MiB
for Yi-6B: a chat of a few thousand tokens never reallocates it, nor recaptures its decode graphs mid-reply) and is
reallocated to the next capacity when a turn needs more (the filled prefix copied: ~3 ms for 12 GB on an H200), so
a short chat on a 200K model holds megabytes, not the 12.8 GB a Yi-6B-200K cache takes at full length.
"""

from __future__ import annotations

import torch

SMALLEST = 256
START = 4096  # slots held from the start, and the decode-graph buckets captured at load (runtime.graph)
STEP = 8192  # capacities double up to 2·STEP, then grow by STEP: a 128K prompt takes ~128K slots, not 256K
RESERVE = 2 << 30  # GPU bytes left free for prefill activations, dequantized weights and graphs


def capacity(n: int, limit: int) -> int:
    """The cache slots that hold n tokens: SMALLEST, doubling to 2·STEP, then multiples of STEP; at most limit."""
    c = SMALLEST
    while c < n:
        c = c * 2 if c < 2 * STEP else c + STEP
    return min(c, limit)


def token_bytes(model) -> int:
    """K and V of one token over all layers (Yi-6B in bf16: 64 KiB)."""
    return 2 * len(model.layers) * model.n_kv * model.hd * model.dtype.itemsize


def fit(model, limit: int) -> int:
    """The context the free memory holds: limit, or fewer tokens when the GPU cannot hold their cache."""
    dev = model.embed.device
    if dev.type != "cuda":
        return limit
    free, _ = torch.cuda.mem_get_info(dev)
    held = sum(c.numel() * c.element_size() for c in model.k_cache + model.v_cache)
    return min(limit, max(SMALLEST, (free + held - RESERVE) // token_bytes(model)))  # never past the limit


@torch.inference_mode()
def grow(model, n: int) -> bool:
    """Make room for n tokens (n <= model.max_seq); True when the caches were reallocated (CUDA graphs captured on
    the old ones are then stale)."""
    old = model.k_cache[0].shape[2]
    cap = capacity(n, model.max_seq)
    if cap <= old:
        return False
    for caches in (model.k_cache, model.v_cache):
        for i, c in enumerate(caches):  # one layer at a time: the transient is one old layer, not the old cache
            new = c.new_zeros(c.shape[0], c.shape[1], cap, c.shape[3])
            new[:, :, :old] = c
            caches[i] = new
    if model.embed.is_cuda:
        torch.cuda.empty_cache()  # the old blocks are too small for the next growth: give them back
    return True

"""Causal attention aligned bottom-right (a prompt chunk after cached tokens), computed exactly as torch's
`causal_lower_right` bias computes it, without importing torch.nn.attention.bias: that module's body calls
torch._dynamo.allow_in_graph, which imports all of torch._dynamo (0.9 s of a 3.8 s fresh start on the CPU here).

This mirrors CausalBias._dispatch of torch 2.13 branch for branch (same ops, same arguments), so the bits are the
same; tests/test_start.py compares the two on CPU and, on a GPU, on the flash and efficient kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOWER_RIGHT = 2  # int(torch.nn.attention.bias.CausalVariant.LOWER_RIGHT): the efficient kernel's custom_mask_type


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / √hd) v, query row i of T attending to key slots [0, L - T + i]: q [B, H, T, hd], k and v
    [B, H, L, hd] with L >= T. The enabled SDPA backends (sdpa_kernel) choose the kernel, as for the bias."""
    from torch.backends.cuda import SDPAParams, can_use_efficient_attention, can_use_flash_attention
    from torch.nn.attention._utils import _input_requires_grad, _validate_sdpa_input

    t, length = q.shape[-2], k.shape[-2]
    if t == length:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=True)
    _validate_sdpa_input(q, k, v, None, 0.0, False, None)
    params = SDPAParams(q, k, v, None, 0.0, False, False)
    if can_use_flash_attention(params):
        return _flash(q, k, v)
    if can_use_efficient_attention(params):
        return torch.ops.aten._efficient_attention_forward(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            bias=None,
            cu_seqlens_q=None,
            cu_seqlens_k=None,
            max_seqlen_q=None,
            max_seqlen_k=None,
            dropout_p=0.0,
            custom_mask_type=LOWER_RIGHT,
            compute_log_sumexp=_input_requires_grad(q, k, v),
            scale=None,
            seqlen_k=None,
        )[0].transpose(1, 2)
    mask = torch.tril(torch.ones(t, length, device=q.device, dtype=torch.bool), diagonal=length - t)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)


def grouped(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
    """attention for grouped queries: q [B, H, T, hd] with H a multiple of k's and v's KV heads, head h attending
    through KV head h // (H / KV), in one flash-attention call (its kernel reads each KV head for all of its query
    heads: no copies); None where flash attention cannot run these inputs (the caller then goes group by group)."""
    from torch.backends.cuda import SDPAParams, can_use_flash_attention

    if not (q.is_cuda and q.shape[1] % k.shape[1] == 0 and k.shape[-2] >= q.shape[-2]):
        return None
    if not can_use_flash_attention(SDPAParams(q, k, v, None, 0.0, False, True)):
        return None
    return _flash(q, k, v)


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """flash attention's is_causal=True, which aligns bottom-right (T == L: the plain causal mask); its head size
    must be a multiple of 8."""
    from torch.nn.attention._utils import _calculate_scale, _postprocess_flash_output

    head = q.size(-1)
    scale = _calculate_scale(head, None)
    if head % 8:
        pad = 8 - head % 8
        q, k, v = (F.pad(x, (0, pad)) for x in (q, k, v))
    out = torch.ops.aten._scaled_dot_product_flash_attention(
        q, k, v, 0.0, is_causal=True, return_debug_mask=False, scale=scale
    )[0]
    return _postprocess_flash_output(out, head)

"""A compact Llama forward (gpt-fast style) over a static KV cache, built from a transformers LlamaForCausalLM.

Every shape in a decode step is fixed for a given attended length L, so the step can be captured in a CUDA graph.
Numerics follow transformers' Llama: RMSNorm in fp32 then cast, rotary tables in fp32 cast to the compute dtype,
logits in the compute dtype then fp32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import kernels
from .kernels import add_rmsnorm, rope_cache, silu_mul
from .weights import convert

PREFILL_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


class Layer:
    def __init__(self, hf, dtype):
        a, m = hf.self_attn, hf.mlp
        self.ln1 = hf.input_layernorm.weight.detach().to(dtype)
        self.ln2 = hf.post_attention_layernorm.weight.detach().to(dtype)
        self.qkv = convert([a.q_proj, a.k_proj, a.v_proj], dtype)
        self.o = convert([a.o_proj], dtype)
        self.gate_up = convert([m.gate_proj, m.up_proj], dtype)
        self.down = convert([m.down_proj], dtype)


class FastLlama:
    def __init__(self, hf, max_seq: int, dtype: torch.dtype):
        cfg = hf.config
        self.dtype, self.max_seq = dtype, max_seq
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.eps = cfg.rms_norm_eps
        self.inter = cfg.intermediate_size
        body = hf.model
        self.embed = body.embed_tokens.weight.detach().to(dtype)  # [V, D]
        self.norm = body.norm.weight.detach().to(dtype)
        head = hf.lm_head.weight.detach()  # [V, D]
        tied = head.data_ptr() == body.embed_tokens.weight.data_ptr()
        self.lm_head = self.embed if tied else head.to(dtype)
        if not self.lm_head.is_cuda and dtype == torch.float32 and torch.equal(self.lm_head.half().float(),
                                                                                self.lm_head):
            # fp16 checkpoints loaded as fp32 on CPU: the same weights in half the bytes (lm_head is the largest
            # matmul of a small model; the CPU reads it at memory speed)
            self.lm_head = self.lm_head.half()
        self.layers = [Layer(layer, dtype) for layer in body.layers]
        dev = self.embed.device
        rot = body.rotary_emb  # inv_freq already carries any rope scaling (llama3, linear, ...)
        freqs = torch.outer(torch.arange(max_seq, device=dev, dtype=torch.float32), rot.inv_freq.float().to(dev))
        emb = torch.cat((freqs, freqs), -1)  # [S, hd]
        scale = getattr(rot, "attention_scaling", 1.0)
        self.cos, self.sin = (emb.cos() * scale).to(dtype), (emb.sin() * scale).to(dtype)
        shape = (1, self.n_kv, max_seq, self.hd)
        self.k_cache = [torch.zeros(shape, dtype=dtype, device=dev) for _ in self.layers]
        self.v_cache = [torch.zeros(shape, dtype=dtype, device=dev) for _ in self.layers]
        self.arange = torch.arange(max_seq, device=dev)
        self.fused = kernels.available(self.embed, self.hd)  # Triton kernels for the glue (CUDA)

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, length: int, last: bool = True,
                prefill: bool = False, exact: bool = False) -> torch.Tensor:
        """tokens, pos [T] (positions of the new tokens); attends to cache slots [0, length).
        exact: one token whose position is length - 1, so no slot needs masking.
        Returns fp32 logits [1, V] for the last token, or [T, V] with last=False."""
        t, g = tokens.shape[0], self.n_heads // self.n_kv
        fused, decode = self.fused, self.fused and t == 1
        x = F.embedding(tokens, self.embed)  # [T, D]
        cos, sin = (self.cos, self.sin) if fused else (self.cos[pos].unsqueeze(1), self.sin[pos].unsqueeze(1))
        # Grouped-query attention without repeating K/V: the g query heads of one KV head become g·T query rows,
        # row j·T + t being head kv·g + j at token t (transformers' repeat_kv order); mask [g·T, length].
        mask = None if exact or decode else (self.arange[:length].unsqueeze(0) <= pos.unsqueeze(1)).repeat(g, 1)

        def mm(lin, v):
            return lin.prefill_mm(v) if prefill else lin.mm(v)

        delta = None  # the residual branch not yet added to x: the add is fused into the next norm
        for layer, kc, vc in zip(self.layers, self.k_cache, self.v_cache):
            x, h = add_rmsnorm(x, delta, layer.ln1, self.eps, fused)
            qg = rope_cache(mm(layer.qkv, h), cos, sin, pos, kc, vc, self.n_heads, self.n_kv, self.hd, fused)
            if decode:
                o = kernels.decode_attention(qg, kc, vc, pos, length)
            else:
                # Not cuDNN: it builds an execution plan per new prompt length, ~1 s each (measured on the H200),
                # which every chat turn would pay in its time to first token.
                with sdpa_kernel(PREFILL_ATTENTION):
                    o = F.scaled_dot_product_attention(qg, kc[:, :, :length], vc[:, :, :length], attn_mask=mask)
            # reshape, not view: the flash / efficient SDPA kernels may return a non-contiguous [n_kv, g·T, hd]
            o = o.reshape(self.n_heads, t, self.hd).transpose(0, 1).reshape(t, self.n_heads * self.hd)
            x, h = add_rmsnorm(x, mm(layer.o, o), layer.ln2, self.eps, fused)
            a = silu_mul(layer.gate_up.prefill_mm(h), fused) if prefill else layer.gate_up.silu_mm(h, fused)
            delta = mm(layer.down, a)
        if last:
            x, delta = x[-1:], delta[-1:]
        _, x = add_rmsnorm(x, delta, self.norm, self.eps, fused)
        return F.linear(x.to(self.lm_head.dtype), self.lm_head).float()

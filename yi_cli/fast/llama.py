"""A compact Llama forward (gpt-fast style) over a static KV cache, built from a transformers LlamaForCausalLM.

Every shape in a decode step is fixed for a given attended length L, so the step can be captured in a CUDA graph.
Numerics follow transformers' Llama: RMSNorm in fp32 then cast, rotary tables in fp32 cast to the compute dtype,
logits in the compute dtype then fp32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .weights import convert


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, hd]; cos / sin [T, 1, hd] (transformers' rotate_half convention)."""
    x1, x2 = x.chunk(2, -1)
    return x * cos + torch.cat((-x2, x1), -1) * sin


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

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, length: int, last: bool = True,
                prefill: bool = False, exact: bool = False) -> torch.Tensor:
        """tokens, pos [T] (positions of the new tokens); attends to cache slots [0, length).
        exact: one token whose position is length - 1, so no slot needs masking.
        Returns fp32 logits [1, V] for the last token, or [T, V] with last=False."""
        t, g = tokens.shape[0], self.n_heads // self.n_kv
        x = F.embedding(tokens, self.embed)  # [T, D]
        cos, sin = self.cos[pos].unsqueeze(1), self.sin[pos].unsqueeze(1)  # [T, 1, hd]
        # Grouped-query attention without repeating K/V: the g query heads of one KV head become g·T query rows,
        # row j·T + t being head kv·g + j at token t (transformers' repeat_kv order); mask [g·T, length].
        mask = None if exact else (self.arange[:length].unsqueeze(0) <= pos.unsqueeze(1)).repeat(g, 1)
        sizes = [self.n_heads * self.hd, self.n_kv * self.hd, self.n_kv * self.hd]
        def mm(lin, v):
            return lin.prefill_mm(v) if prefill else lin.mm(v)

        for layer, kc, vc in zip(self.layers, self.k_cache, self.v_cache):
            h = rms_norm(x, layer.ln1, self.eps)
            q, k, v = mm(layer.qkv, h).split(sizes, -1)
            q = rope(q.view(t, self.n_heads, self.hd), cos, sin)
            k = rope(k.view(t, self.n_kv, self.hd), cos, sin)
            kc.index_copy_(2, pos, k.transpose(0, 1).unsqueeze(0))  # cache [1, n_kv, S, hd]
            vc.index_copy_(2, pos, v.view(t, self.n_kv, self.hd).transpose(0, 1).unsqueeze(0))
            qg = q.transpose(0, 1).reshape(1, self.n_kv, g * t, self.hd)
            o = F.scaled_dot_product_attention(qg, kc[:, :, :length], vc[:, :, :length], attn_mask=mask)
            o = o.view(self.n_heads, t, self.hd).transpose(0, 1).reshape(t, self.n_heads * self.hd)
            x = x + mm(layer.o, o)
            gate, up = mm(layer.gate_up, rms_norm(x, layer.ln2, self.eps)).split([self.inter, self.inter], -1)
            x = x + mm(layer.down, F.silu(gate) * up)
        if last:
            x = x[-1:]
        x = rms_norm(x, self.norm, self.eps)
        return F.linear(x.to(self.lm_head.dtype), self.lm_head).float()

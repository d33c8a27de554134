"""A compact Llama forward (gpt-fast style) over a static KV cache, built from a checkpoint's tensors.

Every shape in a decode step is fixed for a given attended length L, so the step can be captured in a CUDA graph.
Numerics follow transformers' Llama: RMSNorm in fp32 then cast, rotary tables in fp32 cast to the compute dtype,
logits in the compute dtype then fp32. The chained CUDA step folds each RMSNorm into the GEMV after it, which scales
its fp32 sums by 1 / rms instead of multiplying an input already normalized and rounded (the same noise floor:
tests/test_fast_gpu.py's teacher-forced steps).
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..kernels import decode_attn, gemv, glue
from ..kernels.glue import add_rmsnorm, embed_rmsnorm, rope_cache, silu_mul
from . import causal, kvcache, projections
from .heap import trim_heap
from .qlinear import KEEP_DENSE_BYTES

DENSE_PREFILL_MIN = {"cuda": 64, "cpu": 256}  # fewer new tokens: the int4 kernel beats dequantize + GEMM
PREFILL_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
# CUDA: the lm_head multiplies HEAD_ROWS rows at every call up to that many (see FastLlama.head): always where the
# int4 projections run the tensor-core GEMV (FastLlama.exact_rows), else with YI_CHAT_EXACT_HEAD=1.
EXACT_HEAD = os.environ.get("YI_CHAT_EXACT_HEAD") == "1"
HEAD_ROWS = 8  # decoder.VERIFY_ROWS[-1]
# A chained decode step's lm_head on the tensor-core GEMV (FastLlama.head_gemv), the final RMSNorm folded into it;
# YI_CHAT_HEAD_GEMV=0: cuBLAS after the norm's launch, as a prompt's last token gets it.
HEAD_GEMV = os.environ.get("YI_CHAT_HEAD_GEMV", "1") != "0"


def supports(config) -> bool:
    """Llama-architecture models (Yi, SmolLM2, Llama 2/3); others stay on transformers' generate, as do those of a
    sliding window (transformers attends to the last sliding_window positions only; the fast engine to all)."""
    return (
        getattr(config, "model_type", None) == "llama"
        and getattr(config, "hidden_act", "silu") == "silu"
        and not getattr(config, "mlp_bias", False)
        and getattr(config, "sliding_window", None) is None
    )


def rotary(config, device, src="config.json") -> tuple[torch.Tensor, float]:
    """(inv_freq [hd/2] fp32, attention scaling) exactly as transformers' LlamaRotaryEmbedding computes them, without
    importing its modeling module (seconds of a fresh start): the original RoPE is its
    compute_default_rope_parameters, op for op; scaled kinds (llama3, linear, dynamic's base table, yarn) go through
    transformers' own rope functions. A rope_type it does not know, a factor that is no number or frequencies that
    are not finite are LoadError naming src (they were an internal error, KeyError or TypeError, as the model
    loaded; the generate engine refused them)."""
    from ..errors import LoadError, failure

    rope = config.rope_parameters
    kind = rope.get("rope_type") if isinstance(rope, dict) else None
    try:
        with torch.device("cpu"):
            if kind == "default":
                dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
                inv_freq, scale = 1.0 / (rope["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float) / dim)), 1.0
            else:
                from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

                if not isinstance(kind, str) or kind not in ROPE_INIT_FUNCTIONS:
                    known = ", ".join(sorted({"default", *ROPE_INIT_FUNCTIONS}))
                    raise LoadError(f"{src}: rope_type {kind!r:.40} is not one yi-chat knows ({known})")
                inv_freq, scale = ROPE_INIT_FUNCTIONS[kind](config)
            scale = float(scale)
    except LoadError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers' functions on hostile numbers: TypeError, ZeroDivision...
        raise LoadError(f"{src}: rope_parameters cannot be computed ({failure(e)})") from None
    if not (torch.isfinite(inv_freq).all() and math.isfinite(scale)):
        raise LoadError(f"{src}: rope_parameters give frequencies that are not finite numbers")
    return inv_freq.float().to(device), scale


def attention(qg: torch.Tensor, k: torch.Tensor, v: torch.Tensor, t: int, mask) -> torch.Tensor:
    """Grouped-query attention without repeating K/V: qg [1, KV, G·T, hd] holds the G query heads of each KV head
    as G·T rows, row j·T + t being head kv·G + j at token t (transformers' repeat_kv order); k, v [1, KV, L, hd].
    Tokens are the last T positions: causal, aligned bottom-right. With no explicit mask (a prompt chunk's) no
    [G·T, L] mask is built (1 GB for a 1024-token chunk at 128K of context): on CUDA all heads go through one
    flash-attention call (the [KV, G, T] rows are its [H, T] heads as they lie), elsewhere each head group j runs
    as its own call. Returns [1, KV, G·T, hd]."""
    # Not cuDNN: it builds an execution plan per new prompt length, ~1 s each (measured on the H200), which every
    # chat turn would pay in its time to first token.
    with sdpa_kernel(PREFILL_ATTENTION):
        if t == 1 or mask is not None:
            return F.scaled_dot_product_attention(qg, k, v, attn_mask=mask)
        kv, groups, hd = qg.shape[1], qg.shape[2] // t, qg.shape[3]
        # One call for all heads: a group per call left flash with 4 heads x 16 query blocks for Yi-6B, which it ran
        # split over the keys (TTFT(2k) on the H200: attention 10.3 of 70.8 ms; BENCHMARKS.md)
        out = causal.grouped(qg.reshape(1, kv * groups, t, hd), k, v)
        if out is not None:
            return out.view(1, kv, groups * t, hd)
        return torch.cat([causal.attention(qg[:, :, j * t : (j + 1) * t], k, v) for j in range(groups)], 2)


class Layer:
    def __init__(self, ckpt, w, i: int, dtype):
        cfg = ckpt.config
        d, hd = cfg.hidden_size, getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        inter, p = cfg.intermediate_size, f"model.layers.{i}."
        self.ln1 = w.tensor(p + "input_layernorm.weight", [d], dtype)
        self.ln2 = w.tensor(p + "post_attention_layernorm.weight", [d], dtype)
        a, m = p + "self_attn.", p + "mlp."
        q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
        qkv = [a + "q_proj", a + "k_proj", a + "v_proj"]
        biased = bool(getattr(cfg, "attention_bias", False))  # Llama's q, k, v and o: biases where the config says
        self.qkv = projections.build(ckpt, w, qkv, d, [q, kv, kv], dtype, halves=hd, bias=biased)
        self.o = projections.build(ckpt, w, [a + "o_proj"], q, [d], dtype, bias=biased)
        self.gate_up = projections.build(ckpt, w, [m + "gate_proj", m + "up_proj"], d, [inter, inter], dtype)
        self.down = projections.build(ckpt, w, [m + "down_proj"], inter, [d], dtype)


class FastLlama:
    def __init__(self, ckpt, max_seq: int, dtype: torch.dtype, padded: bool):
        """padded: decode steps attend to a fixed bucket of cache slots (CUDA graphs), not exactly pos + 1."""
        cfg = ckpt.config
        inv_freq, scale = rotary(cfg, "cpu", ckpt.path / "config.json")  # a config it refuses: before the weights
        self.dtype, self.max_seq, self.padded = dtype, max_seq, padded
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.eps = cfg.rms_norm_eps
        self.inter = cfg.intermediate_size
        v, d = cfg.vocab_size, cfg.hidden_size
        with ckpt.weights() as w:
            self.embed = w.tensor("model.embed_tokens.weight", [v, d], dtype)  # [V, D]
            self.norm = w.tensor("model.norm.weight", [d], dtype)
            # tied, yet with a head of its own in the file: that head, as transformers reads it (the generate
            # engine answered otherwise than this one)
            tied = bool(getattr(cfg, "tie_word_embeddings", False)) and "lm_head.weight" not in w
            head = self.embed if tied else w.tensor("lm_head.weight", [v, d], dtype)
            if not head.is_cuda and dtype == torch.float32 and torch.equal(head.half().float(), head):
                # fp16 checkpoints loaded as fp32 on CPU: the same weights in half the bytes (lm_head is the
                # largest matmul of a small model; the CPU reads it at memory speed)
                head = head.half()
            self.lm_head = head
            self.layers = [Layer(ckpt, w, i, dtype) for i in range(cfg.num_hidden_layers)]
        dev = self.embed.device
        inv_freq = inv_freq.to(dev)
        freqs = torch.outer(torch.arange(max_seq, device=dev, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), -1)  # [S, hd]
        self.cos, self.sin = (emb.cos() * scale).to(dtype), (emb.sin() * scale).to(dtype)
        shape = (1, self.n_kv, kvcache.capacity(kvcache.START, max_seq), self.hd)  # grown by kvcache.grow
        self.k_cache = [torch.zeros(shape, dtype=dtype, device=dev) for _ in self.layers]
        self.v_cache = [torch.zeros(shape, dtype=dtype, device=dev) for _ in self.layers]
        self.arange = torch.arange(max_seq, device=dev)
        self.fused = glue.available(self.embed, self.hd)  # Triton kernels for the glue (CUDA)
        projs = [p for layer in self.layers for p in (layer.qkv, layer.o, layer.gate_up, layer.down)]
        # Every projection on the tensor-core GEMV (gemv_mma: int4 / int8 codes, bf16 / fp16 weights), whose rows of x
        # each get the same bits for any row count: with the lm_head padded to HEAD_ROWS rows a speculative verify's
        # rows are decode steps bit for bit (attention, norms, rope and silu already compute each row alone), so
        # speculation keeps the tokens.
        mma = [getattr(p, "mma", False) for p in projs]
        self.exact_rows = self.fused and all(mma)
        # A decode step's RMSNorms, residual adds and rotary embedding run inside the GEMVs: o and down add
        # their output to the residual stream and write the next norm's input times its weight with partial sums
        # of squares, qkv and gate_up scale their output by the norm's 1 / rms, and qkv ropes q and k and writes
        # the cache (a Yi-6B step: 62 of 65 norm launches and all 32 rope launches gone). On the tensor-core GEMV
        # a verify's rows chain too, each as its decode step (exact_rows). Not on a mix of the two GEMVs (their
        # partial sums differ in shape), nor with the CUDA-core multi-row opt-in YI_CHAT_GEMV_ROWS (a verify's
        # rows are then a decode step's bits, which the unchained step computes). Only where every projection's GEMV
        # takes x in the model's dtype (int4 codes: bf16; int8 codes: bf16 or fp16; a dense W: its own).
        self.chained = (
            self.fused
            and (self.exact_rows or (not gemv.MAX_X and not any(mma)))
            and all(p.op_dtype == dtype for p in projs)
            and all(p.chains for p in projs)
            and all(layer.gate_up.gemv_silu and layer.qkv.rope_fits(self.hd) for layer in self.layers)
        )
        # The chained step's last down adds to the residual stream and writes the final norm's input times its
        # weight, and the lm_head's GEMV scales each row of logits by the norm's 1 / rms: no norm launch, no padded
        # copy for cuBLAS, and the head's weights stream while the last layer drains (programmatic dependent launch).
        # Each row its own bits for any row count, as every other GEMV: a verify's logits are its decode steps'.
        self.head_proj = projections.Dense(self.lm_head) if self.chained and self.exact_rows else None
        self.head_gemv = HEAD_GEMV and self.head_proj is not None and self.head_proj.chains
        self.dense_min = DENSE_PREFILL_MIN["cuda" if dev.type == "cuda" else "cpu"]
        self.dense_bytes = sum(p.dense_numel() for p in projs) * dtype.itemsize  # the int4 projections dequantized
        self.kept: dict | None = None  # dequantized weights reused across a prompt's chunks (keep_dense)

    @contextmanager
    def keep_dense(self, on: bool = True):
        """Within it (on, on the CPU, where they fit in KEEP_DENSE_BYTES) the dense prefill dequantizes each int4
        projection once and reuses it: the same weights, so the same bits as dequantizing per chunk."""
        if not on or self.embed.is_cuda or self.kept is not None or not 0 < self.dense_bytes <= KEEP_DENSE_BYTES:
            yield
            return
        self.kept = {}
        try:
            yield
        finally:
            self.kept = None
            trim_heap()

    @contextmanager
    def wide(self, threads: int):
        """Within it (CPU) each projection of more than projections.WIDE_BYTES runs its matmul on `threads`
        intra-op threads, whatever the caller holds the rest of the step to (the decode loop: one)."""
        projs = [p for layer in self.layers for p in (layer.qkv, layer.o, layer.gate_up, layer.down)]
        big = [p for p in projs if p.nbytes() > projections.WIDE_BYTES] if not self.embed.is_cuda else []
        for p in big:
            p.threads = threads
        try:
            yield
        finally:
            for p in big:
                p.threads = 0

    def weight_bytes(self) -> int:
        """Bytes of the weights (the KV cache aside), a tied lm_head counted once."""
        ts = [self.embed, self.norm] + ([] if self.lm_head is self.embed else [self.lm_head])
        total = sum(t.numel() * t.element_size() for t in ts)
        for layer in self.layers:
            total += sum(t.numel() * t.element_size() for t in (layer.ln1, layer.ln2))
            total += sum(p.nbytes() for p in (layer.qkv, layer.o, layer.gate_up, layer.down))
        return total

    def prefill(
        self, tokens: torch.Tensor, start: int, dense: bool | None = None, all_logits: bool = False
    ) -> torch.Tensor:
        """tokens [T] at positions start .. start + T - 1, cache slots before `start` already filled. Many tokens
        dequantize int4 weights for one dense GEMM (`dense`, default: T >= dense_min). Returns fp32 logits [1, V]
        for the last token, or [T, V] with all_logits."""
        t = tokens.shape[0]
        length = start + t
        assert length <= self.k_cache[0].shape[2], "kvcache.grow makes room before a prefill"
        pos = self.arange[start:length]
        return self._forward(tokens, pos, length, None, t >= self.dense_min if dense is None else dense, not all_logits)

    def decode_step(self, tok: torch.Tensor, pos: torch.Tensor, length: int, fp32: bool = True) -> torch.Tensor:
        """One token tok [1] at position pos [1] (device tensors, so the step can be graphed), attending to cache
        slots [0, length); with padded steps length may exceed pos + 1 (a graph bucket). Logits [1, V], fp32 (not
        fp32: in the model's dtype where the lm_head's GEMV computes them, saving the copy a sampler that reads
        them as they are does not need)."""
        mask = None
        if self.padded and not self.fused:  # the fused decode attention masks by pos itself
            mask = (self.arange[:length] <= pos).unsqueeze(0).repeat(self.n_heads // self.n_kv, 1)
        return self._forward(tok, pos, length, mask, False, True, fp32=fp32)

    def verify(self, tokens: torch.Tensor, pos: torch.Tensor, length: int, logits: bool = False) -> torch.Tensor:
        """The speculative verify step: tokens [T] at consecutive positions pos [T] (device tensors, graphable),
        through the same int4 kernels as a decode step (few rows: weights read once). Returns the final hidden
        states [T, D] for `head`: the CPU computes a row's logits only if the draft before it was accepted (its
        fp16 lm_head costs as much per row as for one). Each token attends as its own decode step would (slots
        [0, pos[t]] only), so on CPU, where the matmuls give every row the bits of a one-row matmul, head(h[t:t+1])
        is bit for bit decode_step's logits. logits: fp32 logits [T, V] instead, each row decode_step's bits where the
        rows chain (exact_rows: the lm_head's GEMV, or cuBLAS on HEAD_ROWS padded rows)."""
        return self._forward(tokens, pos, length, None, False, False, rows=True, head=logits)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Final hidden states [T, D] -> fp32 logits [T, V]. With exact_rows or EXACT_HEAD on CUDA, up to HEAD_ROWS
        rows are zero-padded to HEAD_ROWS: cuBLAS then runs the same GEMM for a decode step and a verify, whose rows are
        each computed alone, so a verify row's logits are the decode step's bits (its hidden state already is)
        and greedy speculation keeps exactly the tokens decoding without it picks."""
        x, t = h.to(self.lm_head.dtype), h.shape[0]
        if (EXACT_HEAD or self.exact_rows) and x.is_cuda and t < HEAD_ROWS:
            return F.linear(F.pad(x, (0, 0, 0, HEAD_ROWS - t)), self.lm_head)[:t].float()
        return F.linear(x, self.lm_head).float()

    def _row_attention(self, qg, kc, vc, pos, length: int) -> torch.Tensor:
        """qg [1, KV, G·T, hd] (row j·T + t) -> the same shape, token t attending like decode_step at pos[t]
        (unfused: one SDPA call per token; the fused path runs decode_attn.decode_attention once for all tokens)."""
        t, g = pos.shape[0], self.n_heads // self.n_kv
        q = qg.view(1, self.n_kv, g, t, self.hd)
        outs = []
        for i in range(t):
            qi = q[:, :, :, i].contiguous()  # [1, KV, G, hd], the shape of a decode step's query
            n, mask = int(pos[i]) + 1, None  # CPU: exactly the slots [0, pos], as an unpadded step
            if self.padded:
                n, mask = length, (self.arange[:length] <= pos[i]).unsqueeze(0).repeat(g, 1)
            outs.append(F.scaled_dot_product_attention(qi, kc[:, :, :n], vc[:, :, :n], attn_mask=mask))
        return torch.stack(outs, 3).view(1, self.n_kv, g * t, self.hd)

    def _forward(
        self,
        tokens,
        pos,
        length: int,
        mask,
        dense: bool,
        last: bool,
        rows: bool = False,
        head: bool = True,
        fp32: bool = True,
    ) -> torch.Tensor:
        t = tokens.shape[0]
        fused, decode = self.fused, self.fused and t == 1
        x = None if fused else F.embedding(tokens, self.embed)  # [T, D]; fused: in the first norm's launch
        cos, sin = (self.cos, self.sin) if fused else (self.cos[pos].unsqueeze(1), self.sin[pos].unsqueeze(1))

        def mm(lin, v):
            return lin.prefill_mm(v, self.kept) if dense else lin.mm(v)

        # norms, residual adds and rope inside the GEMVs (see __init__): a decode step, and a verify's rows where
        # they are its decode steps
        chain = self.chained and (decode or (rows and fused and self.exact_rows))
        delta = None  # the residual branch not yet added to x: the add is fused into the next norm
        norm = None  # chain: h is x·w of the next RMSNorm, and this its (partial sums of squares of x, eps)
        for i, (layer, kc, vc) in enumerate(zip(self.layers, self.k_cache, self.v_cache, strict=False)):
            if x is None:
                x, h = embed_rmsnorm(tokens, self.embed, layer.ln1, self.eps)
            elif norm is None:
                x, h = add_rmsnorm(x, delta, layer.ln1, self.eps, fused)
            if chain:
                rope = (cos, sin, pos, kc, vc, self.n_heads, self.n_kv, self.hd)
                qg = layer.qkv.rope_mm(h, norm, rope).view(1, self.n_kv, -1, self.hd)
            else:
                qg = rope_cache(mm(layer.qkv, h), cos, sin, pos, kc, vc, self.n_heads, self.n_kv, self.hd, fused)
            if decode or (rows and fused):  # a verify's tokens: one split + one merge launch for all rows
                o = decode_attn.decode_attention(qg, kc, vc, pos, length)
            elif rows:
                o = self._row_attention(qg, kc, vc, pos, length)
            else:
                o = attention(qg, kc[:, :, :length], vc[:, :, :length], t, mask)
            # reshape, not view: the flash / efficient SDPA kernels may return a non-contiguous [n_kv, g·T, hd]
            o = o.reshape(self.n_heads, t, self.hd).transpose(0, 1).reshape(t, self.n_heads * self.hd)
            if chain:
                h, part = layer.o.residual_mm(o, x, layer.ln2)
                a = layer.gate_up.silu_mm(h, fused, (part, self.eps))
                if i + 1 < len(self.layers):
                    h, part = layer.down.residual_mm(a, x, self.layers[i + 1].ln1)
                    norm = (part, self.eps)
                elif head and self.head_gemv:  # the final norm inside the lm_head's GEMV
                    h, part = layer.down.residual_mm(a, x, self.norm)
                    logits = self.head_proj.mm(h, norm=(part, self.eps))
                    logits = logits[-1:] if last else logits
                    return logits.float() if fp32 else logits
                else:  # the final norm: add_rmsnorm below
                    delta = layer.down.mm(a)
                continue
            x, h = add_rmsnorm(x, mm(layer.o, o), layer.ln2, self.eps, fused)
            a = silu_mul(layer.gate_up.prefill_mm(h, self.kept), fused) if dense else layer.gate_up.silu_mm(h, fused)
            delta = mm(layer.down, a)
        if last:
            x, delta = x[-1:], delta[-1:]
        _, x = add_rmsnorm(x, delta, self.norm, self.eps, fused)
        return self.head(x) if head else x

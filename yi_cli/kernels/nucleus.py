"""The sampler's graphed step on CUDA in three launches: penalize + scale, torch.sort, pick (for the T rows of a
speculative verify, the same three launches over all rows at once, or one argmax launch when greedy).

sampling.Sampler spells a step as ~25 torch ops over the vocabulary (penalty, temperature, sort, top-k, softmax,
cumsum, the Gumbel hash, argmax, bookkeeping); in a CUDA graph each is a kernel of its own, run one after
another. Here the elementwise work before the sort is one kernel, and everything after it one program that walks
the sorted scores in chunks and stops at the top-p edge (with the GEMV changes of the same session, the Yi-6B AWQ
step went from 2.52 to 2.36 ms: BENCHMARKS.md).
Same choice as Sampler's full-sort path: the same order of operations, the same hash, and tl.log is libdevice's logf
(as torch's CUDA log).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

BLOCK = 4096  # vocabulary entries per program (scale) and per chunk (pick)


def available(x: torch.Tensor) -> bool:
    return triton is not None and x.is_cuda


if triton is not None:

    @triton.jit
    def _mix(x):
        """sampling._mix on uint32."""
        x = x ^ (x >> 16)
        x = x * 0x7FEB352D
        x = x ^ (x >> 15)
        x = x * 0x2C1B3C6D
        return x ^ (x >> 16)

    @triton.jit
    def _penalized(L, SEEN, TOK, PRM, offs, m, t):
        """Row t's logits at offs with the repetition penalty over `seen` plus TOK[1..t]: a verify row's sampler
        has seen the drafts before it (it only counts if the rows before it chose them)."""
        lg = tl.load(L + offs, mask=m, other=0.0)
        seen = tl.load(SEEN + offs, mask=m, other=0).to(tl.int1)
        for i in range(1, t + 1):
            seen = seen | (offs == tl.load(TOK + i))
        pen = tl.load(PRM + 3)
        return tl.where(seen, tl.where(lg < 0, lg * pen, tl.math.div_rn(lg, pen)), lg)

    @triton.jit
    def _scale(L, SEEN, TOK, PRM, S, V, BLOCK: tl.constexpr):
        """S = penalized logits / temperature (1 when the temperature is 0: then S's argmax is the greedy pick),
        row program_id(1) of L / S [T, V]."""
        t = tl.program_id(1)
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < V
        lg = _penalized(L + t * V, SEEN, TOK, PRM, offs, m, t)
        temp = tl.load(PRM)
        tl.store(S + t * V + offs, tl.math.div_rn(lg, tl.where(temp > 0, temp, 1.0)), mask=m)

    @triton.jit
    def _argmax(L, SEEN, TOK, PRM, OUT, V, BLOCK: tl.constexpr):
        """Greedy rows: OUT[t] = the first maximum of row t's penalized logits, the token the sort-based pick
        takes at temperature 0 (its stable descending sort puts the first maximum first)."""
        t = tl.program_id(0)
        best = -float("inf")
        best_i = 0
        for c in range(0, V, BLOCK):
            offs = c + tl.arange(0, BLOCK)
            m = offs < V
            lg = tl.where(m, _penalized(L + t * V, SEEN, TOK, PRM, offs, m, t), -float("inf"))
            bv = tl.max(lg, 0)
            if bv > best:  # strictly: the first maximum wins
                best = bv
                best_i = c + tl.argmax(lg, 0)
        tl.store(OUT + t, best_i)

    @triton.jit
    def _pick(SC, ORD, PRM, RNG, SEEN, TOK, V: tl.constexpr, BLOCK: tl.constexpr, UPDATE: tl.constexpr):
        """One program per row over its scores sorted descending (ids ORD): top-k, top-p, Gumbel-max with the
        noise of step + row; writes the token, and with UPDATE (one row) marks it seen and advances the step."""
        row = tl.program_id(0)
        SC += row * V
        ORD += row * V
        temp, top_p, top_k = tl.load(PRM), tl.load(PRM + 1), tl.load(PRM + 2)
        k = top_k.to(tl.int32)
        k = tl.where((k > 0) & (k < V), k, V)
        thr = tl.load(SC + k - 1)  # top-k keeps scores >= the k-th
        s0 = tl.load(SC)
        z = tl.zeros([BLOCK], tl.float32)
        for c in range(0, V, BLOCK):
            offs = c + tl.arange(0, BLOCK)
            s = tl.load(SC + offs, mask=offs < V, other=-float("inf"))
            z += tl.where(s >= thr, tl.exp(s - s0), 0.0)
        z_all = tl.sum(z, 0)
        seed, step = tl.load(RNG).to(tl.uint32), (tl.load(RNG + 1) + row).to(tl.uint32)
        key = _mix(_mix(seed) + step)
        best = -float("inf")
        best_i = 0
        carry = 0.0
        c = 0
        while (c < V) & (carry < top_p):  # past the top-p edge every token is dropped
            offs = c + tl.arange(0, BLOCK)
            s = tl.load(SC + offs, mask=offs < V, other=-float("inf"))
            ids = tl.load(ORD + offs, mask=offs < V, other=0)
            p = tl.where(s >= thr, tl.exp(s - s0) / z_all, 0.0)
            cum = carry + tl.cumsum(p, 0)
            # transformers drops every token whose higher-ranked mass (cum - p) is >= top_p; rank 0 stays
            keep = (s >= thr) & (cum - p < top_p)
            h = _mix(_mix(ids.to(tl.uint32) ^ key) + key) >> 8
            u = (h.to(tl.float32) + 0.5) * 5.9604644775390625e-08  # 2^-24: (0, 1)
            v = tl.where(keep, s - tl.log(-tl.log(u)), -float("inf"))
            bv = tl.max(v, 0)
            bi = tl.argmax(v, 0)
            if bv > best:  # strictly: the first maximum wins, as torch's argmax
                best = bv
                best_i = c + bi
            carry = carry + tl.sum(p, 0)
            c += BLOCK
        tok = tl.where(temp > 0, tl.load(ORD + best_i), tl.load(ORD))
        tl.store(TOK + row, tok)
        if UPDATE:
            tl.store(SEEN + tok, 1)
            tl.store(RNG + 1, step.to(tl.int64) + 1)


def sample(
    logits: torch.Tensor, seen: torch.Tensor, params: torch.Tensor, rng: torch.Tensor, out: torch.Tensor
) -> None:
    """Sampler's full-sort step for logits fp32 [1, V]: the token into out [1], `seen` and `rng` updated."""
    v = logits.shape[-1]
    scaled = torch.empty(v, dtype=torch.float32, device=logits.device)
    _scale[(triton.cdiv(v, BLOCK), 1)](logits, seen.view(torch.uint8), logits, params, scaled, v, BLOCK=BLOCK)
    scores, order = torch.sort(scaled, descending=True, stable=True)  # stable: order[0] is the first maximum
    _pick[(1,)](scores, order, params, rng, seen.view(torch.uint8), out, V=v, BLOCK=BLOCK, UPDATE=True, num_warps=16)


def sample_rows(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    seen: torch.Tensor,
    params: torch.Tensor,
    rng: torch.Tensor,
    out: torch.Tensor,
    greedy: bool,
) -> None:
    """A speculative verify's choices for logits fp32 [T, V] fed `tokens` [T] (the last token, then the drafts):
    out[t] = what `sample` picks after rows < t chose tokens[1..t], i.e. with those ids seen and the step
    advanced by t; `seen` and `rng` are left as they are. Three launches for all rows (scale, one batched sort,
    pick), or with `greedy` (temperature 0) one: the penalized argmax, no sort."""
    t, v = logits.shape
    if greedy:
        _argmax[(t,)](logits, seen.view(torch.uint8), tokens, params, out, v, BLOCK=BLOCK, num_warps=16)
        return
    scaled = torch.empty(t, v, dtype=torch.float32, device=logits.device)
    _scale[(triton.cdiv(v, BLOCK), t)](logits, seen.view(torch.uint8), tokens, params, scaled, v, BLOCK=BLOCK)
    scores, order = torch.sort(scaled, dim=-1, descending=True, stable=True)  # each row as sample's 1-D sort
    _pick[(t,)](scores, order, params, rng, seen.view(torch.uint8), out, V=v, BLOCK=BLOCK, UPDATE=False, num_warps=16)

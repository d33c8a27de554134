"""FastDecoder: prefill in chunks, then one token per decode step (a CUDA graph replay on GPU, eager on CPU).

The KV cache lives for the whole session: a new prompt that starts with the previous prompt + reply only
prefills the new tail, so the time to first token stays flat as a conversation grows.
With settings.speculate on, a step instead feeds the last token plus the drafts prompt lookup finds and keeps what
the sampler would have chosen anyway (speculate.py): same tokens, fewer forward passes.
"""

from __future__ import annotations

import hashlib
import math
import threading
from array import array
from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch

from .. import clock
from ..checkpoint.loader import quant_kind
from ..errors import NOT_NUMBERS, YiError
from ..kernels import precompile, tinygemm
from . import kvcache, llama, sampling, speculate
from .graph import GraphedStep, buckets
from .heap import trim_heap
from .sampling import Sampler

PREFILL_CHUNK = {"cuda": 1024, "cpu": 256}  # tokens per prefill forward (bounds the transient memory)
BEGAN_KEPT = 32  # prompts whose first prefill start is kept: a /retry a few commands later prefills as it did
PIPELINE = 2  # decode steps queued on the GPU ahead of the token the host is reading
# the steps queued or read fit the sampler's host ring: none overwrites a slot not yet read
assert PIPELINE < sampling.HOSTS
# settings.speculate "auto": prompt-lookup speculation where scripts/bench_speculate.py measured a gain
# (BENCHMARKS.md) and the verify rows are decode steps bit for bit (the reply keeps its tokens). CPU (demo model):
# 1.12-1.38x on document work (mean 1.22), about even on chat. CUDA, int4 on the tensor-core GEMV (exact_rows):
# a Yi-6B AWQ verify of 2 / 4 / 8 rows costs 1.10 / 1.15 / 1.28 decode steps on the H200, and the demo model on
# real text ran 1.34-2.15x on documents (mean 1.65), 1.04x on plain chat. Off on the other CUDA paths
# (YI_CHAT_MMA=0: tinygemm's verify rows round differently from a decode step; `lookup` still turns it on).
SPECULATE_AUTO = {"cpu": True, "cuda": True}  # CUDA: only where verify rows are decode steps (exact_rows)
# prompt lengths FastDecoder._compile_ahead runs besides a dense one: through the tensor-core GEMV's rows (<= 8), and
# more (not a multiple of 16: Triton specializes integer arguments on it)
PRECOMPILE_PROMPTS = (5, 17)
VERIFY_ROWS = (2, 4, 8)  # CUDA: one verify graph per row count (k + 1 rounded up; extra rows are padding)
# What a verify of T rows costs in decode steps (speculate.Costs), the rows it really runs, and what one more row's
# logits cost: scripts/bench_speculate.py's verify_cost_ratio and head_cost_ratio (CPU: the demo model on 2 cores,
# where rows 5-8 cost a jump: the CPU int4 kernel dequantizes its weights once per 4 rows; CUDA: Yi-6B AWQ, whose
# verify graph computes every row's logits). The CPU then times its own steps as the reply goes (its verify rows
# are decode steps bit for bit, so however many drafts the clock picks, the tokens are the same); CUDA keeps the
# prior: a verify there rounds differently with its row count, and the same prompt and seed must give the same
# reply every time.
VERIFY_COST = {  # speculate.Costs(prior, bucket, timed, head); CUDA's prior: cuda_verify_prior
    "cpu": ({2: 1.29, 3: 1.52, 4: 1.76, 5: 2.26, 6: 2.49, 7: 2.73, 8: 3.0}, lambda t: t, True, 0.11),
    "cuda": (None, lambda t: next(r for r in VERIFY_ROWS if r >= t), False, 0.0),
}
# CUDA's prior by the model's size: a small model's step is launch-bound, so extra rows cost it little, while a
# large one's rows add to every weight read (tinygemm). Measured on the H200: the demo model (0.12 GB of weights)
# 1.34 / 1.36 / 1.46 decode steps for 2 / 4 / 8 rows, Yi-6B AWQ (4.0 GB) 1.27 / 1.56 / 2.32; interpolated in
# log(bytes) between them and held past either end. (With Yi-6B's prior for the demo, documents ran 1.24x.)
CUDA_VERIFY_ANCHORS = ((0.12e9, {2: 1.34, 4: 1.36, 8: 1.46}), (4.0e9, {2: 1.27, 4: 1.56, 8: 2.32}))
# The same where the int4 projections run the tensor-core GEMV (FastLlama.exact_rows), whose verify reads each
# weight once for all rows (H200, scripts/bench_speculate.py): Yi-6B AWQ 1.10 / 1.15 / 1.28 decode steps; the
# demo 1.07 / 1.09 / 1.15 greedy and 1.17 / 1.20 / 1.28 sampling, its prior between the two.
CUDA_EXACT_ANCHORS = ((0.12e9, {2: 1.1, 4: 1.12, 8: 1.18}), (4.0e9, {2: 1.1, 4: 1.149, 8: 1.277}))


def cuda_verify_prior(weight_bytes: int, exact: bool = False) -> dict[int, float]:
    (b0, c0), (b1, c1) = CUDA_EXACT_ANCHORS if exact else CUDA_VERIFY_ANCHORS
    f = min(1.0, max(0.0, math.log(max(weight_bytes, 1) / b0) / math.log(b1 / b0)))
    return {rows: c0[rows] + (c1[rows] - c0[rows]) * f for rows in c0}


def supports(ckpt) -> bool:
    """Llama-architecture checkpoints in safetensors; others stay on transformers' generate."""
    return ckpt.safetensors and llama.supports(ckpt.config)


def prompt_key(ids: list[int]) -> bytes:
    """A prompt's ids as a short key (FastDecoder.began keeps the last BEGAN_KEPT)."""
    return hashlib.blake2b(array("q", ids).tobytes(), digest_size=16).digest()


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class FastDecoder:
    def __init__(self, ckpt, max_seq_len: int | None = None):
        self.device = torch.device(ckpt.device)
        self.cuda = self.device.type == "cuda"
        self.max_seq = min(max_seq_len or ckpt.context_length, ckpt.context_length)
        self.cached: list[int] = []  # ids whose K/V sit in cache slots [0, len)
        self.last_prefill: tuple[int, list[int]] = (0, [])  # (first slot computed, prompt) of the last prefill
        self.began: OrderedDict[bytes, int] = OrderedDict()  # prompt_key -> the slot its first prefill began at
        self.steps = 0  # forward steps of the last generate after its first token (tokens per step = tokens / steps)
        self.on_chunk = None  # called (tokens done, tokens to do) after each prefill chunk: progress of long prompts
        self.threads = torch.get_num_threads()  # CPU: _head's threads while a decode loop holds the layers to one
        dtype = tinygemm.compute_dtype(self.device, ckpt.dtype, *quant_kind(ckpt.quant))
        with torch.inference_mode():
            self.model = llama.FastLlama(ckpt, self.max_seq, dtype, padded=self.cuda)
            trim_heap()
            self.max_seq = self.model.max_seq = kvcache.fit(self.model, self.max_seq)
            self.sampler = Sampler(self.model.lm_head.shape[0], self.device)
            self.tok = torch.zeros(1, dtype=torch.long, device=self.device)  # the token the next step feeds
            self.pos = torch.zeros(1, dtype=torch.long, device=self.device)  # its position
            if self.cuda:  # the verify graphs' inputs and scratch state (speculate.py), captured on first use
                rows = VERIFY_ROWS[-1]
                self.vin = torch.zeros(2, rows, dtype=torch.long, device=self.device)  # tokens; positions
                self.vout = torch.zeros(rows, dtype=torch.long, device=self.device)
                self.vgraphs: dict[tuple[int, int, bool], GraphedStep] = {}  # (rows, length, greedy)
                self.compiled = self._compile_ahead()
            self.graphs = self._graphed()
        prior, bucket, timed, head = VERIFY_COST["cuda" if self.cuda else "cpu"]
        prior = cuda_verify_prior(self.model.weight_bytes(), self.model.exact_rows) if self.cuda else prior
        self.verify_cost = (prior, bucket, timed, head)  # speculate.Costs' arguments, a reply's fresh Costs
        self.exact = not self.cuda or self.model.exact_rows  # verify rows are decode steps bit for bit
        if self.cuda:
            self.host = torch.zeros(PIPELINE + 1, dtype=torch.long, pin_memory=True)
            self.events = [torch.cuda.Event() for _ in range(PIPELINE + 1)]

    def _state(self) -> list[torch.Tensor]:
        """The tensors a step advances: token, position, sampler."""
        return [self.tok, self.pos, self.sampler.rng, self.sampler.seen]

    @torch.inference_mode()  # captures steps that advance the inference tensors tok and pos
    def _graphed(self) -> GraphedStep | None:
        """Decode-step graphs over the cache as it is now (its capacity is the largest bucket)."""
        if not self.cuda:
            return None
        return GraphedStep(
            self._graph_step, buckets(self.model.k_cache[0].shape[2]), self._state(), eager=kvcache.START
        )

    @torch.inference_mode()
    def _compile_ahead(self) -> dict:
        """The Triton kernels of a short and a dense prompt's prefill, of the decode steps captured at load and of
        every verify they may run, compiled in parallel processes where the on-disk cache lacks them
        (kernels.precompile). The first decode step alone where it finds them all there (a warm start). The prefill
        writes cache slots the first prompt then writes again; the step state is put back."""
        saved = [t.clone() for t in self._state()]
        lengths = [n for n in buckets(self.model.k_cache[0].shape[2]) if n <= kvcache.START]

        def rest():
            for t in sorted({*PRECOMPILE_PROMPTS, self.model.dense_min + 1}):  # int4 kernels / dequantize + GEMM
                for start in (0, PRECOMPILE_PROMPTS[-1]):  # a first prompt, a later turn's
                    self.model.prefill(torch.zeros(t, dtype=torch.long, device=self.device), start)
            for n in lengths:
                if n != lengths[0]:
                    self._graph_step(n)
                for rows in VERIFY_ROWS if self.model.exact_rows else ():
                    for greedy in (True, False):
                        self._verify_step(rows, n, greedy)

        try:
            return precompile.ahead([lambda: self._graph_step(lengths[0]), rest])
        finally:
            for t, s in zip(self._state(), saved, strict=True):
                t.copy_(s)

    def _graph_step(self, length: int) -> torch.Tensor:
        """The captured step: feed self.tok at self.pos, attend to `length` slots, sample into self.tok."""
        logits = self.model.decode_step(self.tok, self.pos, length, fp32=not self.sampler.fused)
        self.sampler.step(logits, self.tok, self.pos)  # the sampler's kernel reads them as they come
        return logits

    @torch.inference_mode()
    def _prefill(self, ids: list[int], settings, cancel: threading.Event) -> int | None:
        """Run the prompt's uncached tail in chunks (checking `cancel` between them); the first reply token, or
        None when cancelled."""
        n = len(ids)
        start = min(common_prefix(self.cached, ids), n - 1)  # at least one token runs, for its logits
        key = prompt_key(ids)
        if ids == self.last_prefill[1]:
            # The same prompt again (/retry): redo the same prefill, so the same kernels see the same shapes and a
            # greedy reply repeats exactly (a one-token prefill rounds differently and flips near-ties).
            start = self.last_prefill[0]
        elif (began := self.began.get(key)) is not None and began <= start:
            # One prefilled before another (/retry after /continue or /undo): the cache holds it whole, and its last
            # token alone gave another reply. From where its first prefill began, where the cache still holds it.
            start = began
        self.began[key] = self.began.pop(key, start)  # the first prefill's start, the newest prompt last
        while len(self.began) > BEGAN_KEPT:
            self.began.popitem(last=False)
        self.last_prefill = (start, list(ids))
        self.cached = ids[:start]
        self.sampler.reset(settings, ids)
        chunk = PREFILL_CHUNK["cuda" if self.cuda else "cpu"]
        with self.model.keep_dense(n - start > chunk):  # CPU: each projection dequantized once for every chunk
            for s in range(start, n, chunk):
                if cancel.is_set():
                    # sent again (after Ctrl-C), the prompt resumes here: same chunk bounds, same result as one run
                    self.last_prefill = (s, list(ids))
                    return None
                e = min(s + chunk, n)
                logits = self.model.prefill(torch.tensor(ids[s:e], device=self.device), s)
                self.cached = ids[:e]
                if self.on_chunk is not None:
                    self.on_chunk(e - start, n - start)
        finite = torch.isfinite(logits).all()  # read with the token: no sync of its own
        tok = self.sampler.eager(logits, greedy=settings.temperature == 0)
        self.tok.copy_(tok)
        self.pos.fill_(n)
        first = int(tok.item())
        if not finite.item():  # NaN or inf weights: "ringingringing…" or an empty reply, exit 0
            raise YiError(NOT_NUMBERS)
        return first

    @torch.inference_mode()
    def _eager(self, length: int, greedy: bool) -> int:
        """A CPU decode step: FastLlama.verify of one token is decode_step without its lm_head (the same bits),
        which then runs on every thread (_head)."""
        logits = self._head(self.model.verify(self.tok, self.pos, length))
        self.tok.copy_(self.sampler.eager(logits, greedy))
        self.pos.add_(1)
        return int(self.tok.item())

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        """CPU: logits of hidden states h [T, D] with every thread, while the layers' small ops run on one (see
        _steps). The [V, D] lm_head is the one matmul of a step that a second core speeds up (demo, 2 cores: 3.4 ->
        1.8 ms of a 18.4 ms step); each logit is still one thread's dot product, the bits of the one-thread run."""
        torch.set_num_threads(self.threads)
        try:
            return self.model.head(h)
        finally:
            torch.set_num_threads(1)

    @torch.inference_mode()
    def _launch(self, length: int, slot: int) -> None:
        self.graphs.replay(length)
        if self.sampler.host is None:  # else the step's sampler wrote its token into pinned memory (posted)
            self.host[slot].copy_(self.tok[0], non_blocking=True)
        self.events[slot].record()

    def speculating(self, settings) -> bool:
        mode = settings.speculate
        if mode == "off" or (self.cuda and not (self.sampler.fused and self.model.fused)):
            return False  # CUDA without Triton: the verify graph's sampler needs the nucleus kernels
        # auto on CUDA only where speculation keeps the tokens bit for bit (exact_rows)
        return mode == "lookup" or (SPECULATE_AUTO["cuda" if self.cuda else "cpu"] and self.exact)

    def _verify_step(self, rows: int, length: int, greedy: bool) -> torch.Tensor:
        """The captured verify: rows tokens of self.vin, attending to `length` slots, choices into self.vout."""
        logits = self.model.verify(self.vin[0, :rows], self.vin[1, :rows], length, logits=True)
        self.sampler.step_rows(logits, self.vin[0, :rows], self.vout[:rows], greedy)
        return logits

    @torch.inference_mode()
    def _verify(self, tok: int, pos: int, drafts: list[int], greedy: bool) -> list[int]:
        """Feed [tok] + drafts at positions pos.. in one forward; the tokens kept (speculate.accept). Rejected
        drafts' K/V stay in their slots, outside self.cached, until later steps overwrite them."""
        t = len(drafts) + 1
        if not self.cuda:
            h = self.model.verify(torch.tensor([tok] + drafts), torch.arange(pos, pos + t), pos + t)
            out = speculate.accept(drafts, lambda i: int(self.sampler.eager(self._head(h[i : i + 1]), greedy)))
        else:
            rows = next(r for r in VERIFY_ROWS if r >= t)
            length = self.graphs.bucket(pos + rows)
            self.vin.copy_(
                torch.tensor(
                    [[tok] + drafts + drafts[-1:] * (VERIFY_ROWS[-1] - t), list(range(pos, pos + VERIFY_ROWS[-1]))]
                ),
                non_blocking=True,
            )
            key = (rows, length, greedy)
            if key not in self.vgraphs:
                self.vgraphs[key] = GraphedStep(lambda n: self._verify_step(rows, n, greedy), [length])
            self.vgraphs[key].replay(length)
            chosen = self.vout[:rows].tolist()
            out = speculate.accept(drafts, chosen.__getitem__)
            self.sampler.commit(out)
        self.tok.fill_(out[-1])
        self.pos.fill_(pos + len(out))
        return out

    def _plain(self, pos: int, greedy: bool) -> int:
        """One decode step, its token read back at once (the next draft is looked up from it)."""
        if not self.cuda:
            return self._eager(pos + 1, greedy)
        with torch.inference_mode():
            self.graphs.replay(pos + 1)
        return int(self.tok)

    @contextmanager
    def _one_thread(self):
        """CPU decode: one intra-op thread for the layers (a one-token step is ~40 small ops a layer: a second
        thread costs more than it gives, demo on 2 cores 55 vs 46 tok/s); _head and the large projections
        (FastLlama.wide: a Yi-6B's) take them all (self.threads). Prefill keeps every thread."""
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with self.model.wide(self.threads):
                yield
        finally:
            torch.set_num_threads(self.threads)

    def _spec_steps(self, ids: list[int], first: int, limit: int, greedy: bool) -> Iterator[int]:
        """Tokens 2..limit, each step feeding the last token plus the drafts prompt lookup finds (speculate.py)."""
        costs = speculate.Costs(*self.verify_cost)
        look, adapt = speculate.Lookup(ids + [first]), speculate.Adapt(costs.ratio, costs.head)
        made, tok = 1, first  # reply tokens so far; the last, fed next at position len(ids) + made - 1
        cap = VERIFY_ROWS[-1] if self.cuda else 0  # CUDA verify rows past the drafts still write K/V slots
        with nullcontext() if self.cuda else self._one_thread():  # CPU: as _steps, so verify rows are its bits
            while made < limit:
                pos = len(ids) + made - 1
                drafts, run = look.draft(max(0, min(speculate.K_MAX, limit - made - 1, self.max_seq - pos - cap)))
                drafts = drafts[: adapt.k(run, len(drafts))]
                t0 = clock.now()  # a Ctrl-Z stop inside a step is not its cost: it would set the drafts back
                if drafts:
                    out = self._verify(tok, pos, drafts, greedy)
                    costs.observe(len(drafts) + 1, clock.now() - t0, len(out))
                    adapt.update(run, len(drafts), len(out) - 1)
                else:
                    out = [self._plain(pos, greedy)]
                    costs.observe(1, clock.now() - t0)
                self.steps += 1
                for t in out:
                    look.append(t)
                    yield t
                made, tok = made + len(out), out[-1]

    def _steps(self, n: int, limit: int, greedy_only: bool) -> Iterator[int]:
        """Tokens 2..limit after a prompt of n tokens; step j feeds token j at position n + j - 1."""
        if not self.cuda:
            with self._one_thread():
                for j in range(1, limit):
                    self.steps += 1
                    yield self._eager(n + j, greedy_only)
            return
        pending: deque[tuple[int, int]] = deque()  # (event slot, step)
        j = 1
        while True:
            while len(pending) < PIPELINE and j < limit:
                self._launch(n + j, j % len(self.events))
                pending.append((j % len(self.events), j))
                j += 1
            if not pending:
                return
            slot, k = pending.popleft()
            self.events[slot].synchronize()
            self.steps += 1
            # step k ran with the sampler's counter at k (the prefill's choice, token 1, left it at 1)
            yield int(self.host[slot]) if self.sampler.host is None else self.sampler.posted(k)

    def generate(self, prompt_ids: list[int], settings, cancel: threading.Event, stop_ids: set[int]) -> Iterator[int]:
        """Yield generated ids one by one; the last may be a stop id. Ends at a stop id, when `cancel` is set,
        after settings.max_new_tokens, or when the cache (max_seq_len) is full."""
        ids = list(prompt_ids)
        n = len(ids)
        if not 0 < n < self.max_seq:
            raise YiError(f"the prompt is {n} tokens; the fast decoder holds 1 to {self.max_seq - 1}")
        self.steps = 0
        if cancel.is_set():
            return
        # verify (speculate.py) writes K/V up to VERIFY_ROWS[-1] slots past a position: room for them too
        if kvcache.grow(self.model, min(n + settings.max_new_tokens + VERIFY_ROWS[-1], self.max_seq)):
            self.graphs = self._graphed()
            if self.cuda:
                self.vgraphs = {}  # captured on the old cache's addresses
        first = self._prefill(ids, settings, cancel)
        if first is None:
            return
        out = [first]
        try:
            yield out[0]
            if out[0] in stop_ids:
                return
            limit, greedy = min(settings.max_new_tokens, self.max_seq - n), settings.temperature == 0
            if self.speculating(settings):
                steps = self._spec_steps(ids, out[0], limit, greedy)
            else:
                steps = self._steps(n, limit, greedy)
            kept = 0  # steps whose tokens the reply has: a step whose token a cancel drops is not counted (a reply
            for tok in steps:  # cut after 5 tokens said 0.8 tokens a step)
                if cancel.is_set():
                    self.steps = kept
                    return
                kept = self.steps
                out.append(tok)
                yield tok
                if tok in stop_ids:
                    return
        finally:
            self.cached = ids + out[:-1]  # every yielded token but the last has been fed through a step

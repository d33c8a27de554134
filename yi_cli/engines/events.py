"""The events of a reply stream (engines/base.py): Text deltas, then one Finish with the stats (no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field

FINISH_STOP = "stop"  # an end-of-turn / eos token was generated
FINISH_LENGTH = "length"  # max_new_tokens reached
FINISH_INTERRUPTED = "interrupted"  # cancel was set (Ctrl-C)
FINISH_ERROR = "error"


@dataclass
class Text:
    text: str


@dataclass
class Stats:
    prompt_tokens: int | None = 0  # None: not known (a server that did not report its usage)
    new_tokens: int = 0
    ttft_s: float = 0.0  # time from request to first generated token
    decode_s: float = 0.0  # time from first to last generated token
    finish_reason: str = FINISH_STOP
    # fast engine: tokens per decode forward after the first (> 1: speculation); None: none ran (a one-token reply);
    # 0: an engine that has no such count
    tokens_per_step: float | None = 0.0
    at_context: bool = False  # a "length" finish at the end of the context, short of max_new_tokens (not saved)

    @property
    def decode_tok_s(self) -> float:
        return (self.new_tokens - 1) / self.decode_s if self.new_tokens > 1 and self.decode_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            # a reply with no first token was never timed: one that failed, or that stopped with none (a remote
            # stream whose every chunk was bad, Ctrl-C before the first) read "ttft_s": 0.0, as if instant
            "ttft_s": round(self.ttft_s, 4)
            if self.new_tokens or (self.ttft_s and self.finish_reason != FINISH_ERROR)
            else None,
            "decode_tok_s": round(self.decode_tok_s, 2) or None,  # none measured (one token, one chunk): null
            "finish_reason": self.finish_reason,
            **(
                {"tokens_per_step": self.tokens_per_step and round(self.tokens_per_step, 2)}
                if self.tokens_per_step != 0
                else {}
            ),
        }


@dataclass
class Finish:
    stats: Stats = field(default_factory=Stats)
    token_ids: list[int] | None = None  # the reply's ids where the engine knows them (local): /continue resumes on them

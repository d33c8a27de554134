"""Generation settings: one validated dataclass shared by the CLI flags, /set, session files and engines."""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, fields

from ..errors import UsageError, shown


@dataclass
class GenSettings:
    # The seed recipe's defaults for the Yi chat models (Yi's own web demo).
    temperature: float = 0.6  # 0 means greedy
    top_p: float = 0.8
    top_k: int = 0  # 0 means off
    repetition_penalty: float = 1.2
    max_new_tokens: int = 512
    speculate: str = "auto"  # prompt-lookup speculative decoding: auto (where it pays), lookup, off
    seed: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GenSettings:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UsageError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        out = cls()
        for name, value in data.items():
            setattr(out, name, parse(name, value))
        return out


NAMES = tuple(f.name for f in fields(GenSettings))
SPECULATE = ("auto", "lookup", "off")
# Any top_k from the vocabulary size up keeps every token (off); the bound is int32's, which servers and the
# sampling kernels take: past it a top_k is a typo, and 10**39 overflowed the sampler (float32 infinity).
TOP_K_MAX = 2**31 - 1


def _finite(name: str, v: float) -> float:
    if not math.isfinite(v):
        raise UsageError(f"{name} must be a finite number, got {v!r}")
    return v


# The least temperature (above 0, greedy) and repetition penalty taken as given: logits divided by 1e-40 overflowed
# float32 to inf, and the reply was garbage, empty, or every turn failed ("probability tensor contains either inf,
# nan"). Below it a temperature is greedy (0, the limit it approaches) and a penalty this least one (FLOORS): read
# so, not refused, as a session or config file written before holds them.
LEAST = 0.01
FLOORS = {"temperature": 0.0, "repetition_penalty": LEAST}


def check(name: str, v) -> None:
    if name == "temperature" and not (0 <= _finite(name, v) <= 5):
        raise UsageError(f"temperature must be between 0 and 5, got {v}")
    if name == "top_p" and not (0 < _finite(name, v) <= 1):
        raise UsageError(f"top_p must be in (0, 1], got {v}")
    if name == "top_k" and not (0 <= v <= TOP_K_MAX):
        raise UsageError(
            f"top_k must be >= 0 (0 = off) and at most {TOP_K_MAX} (2**31 - 1; any value >= the vocabulary size is "
            f"off too), got {shown(str(v), 40)}"
        )
    if name == "repetition_penalty" and not (0 < _finite(name, v) <= 10):
        raise UsageError(f"repetition_penalty must be in (0, 10], got {v}")
    if name == "max_new_tokens" and not (1 <= v <= 1_000_000):
        raise UsageError(f"max_new_tokens must be between 1 and 1000000, got {shown(str(v), 40)}")
    if name == "seed" and v is not None and not (0 <= v < 2**63):
        raise UsageError(f"seed must be an integer from 0 to 2**63 - 1, got {shown(str(v), 40)}")


def parse(name: str, value) -> object:
    """Parse a setting from text (as typed in /set or a TOML/JSON file) and validate it."""
    if name not in NAMES:
        raise UsageError(f"unknown setting {shown(name, 40)!r}; known: {', '.join(NAMES)}")
    kind = {"top_k": int, "max_new_tokens": int, "seed": int}.get(name, float)
    if name == "speculate":
        v = str(value).strip().lower()
        if v not in SPECULATE:
            near = difflib.get_close_matches(v, list(SPECULATE), n=1, cutoff=0.6)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise UsageError(f"speculate must be one of {', '.join(SPECULATE)}, got {shown(repr(value), 40)}{hint}")
        return v
    if name == "seed" and (value is None or str(value).lower() in ("none", "off", "random")):
        return None
    if isinstance(value, bool) or (kind is int and isinstance(value, float)):  # TOML / JSON 1.5: not 1
        raise UsageError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    try:
        v = kind(value) if not isinstance(value, str) else kind(value.strip())
    except (TypeError, ValueError):
        raise UsageError(
            f"{name} must be {'an integer' if kind is int else 'a number'}, got {shown(repr(value), 40)}"
        ) from None
    except OverflowError:  # a TOML integer of 400 digits is past any float
        raise UsageError(f"{name} is out of range, got {shown(str(value), 40)}") from None
    check(name, v)
    return FLOORS[name] if name in FLOORS and v < LEAST else v

"""The bounds of a remote engine's requests, from config.toml's [remote] table (no httpx: config.toml is checked
at every start, local or remote)."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields

from ..errors import UsageError, shown

# The most seconds a time bound may be (about 11.6 days): past it the number is a typo, and a socket refuses a
# timeout past time_t's range (--connect-timeout 1e12 ended in an OverflowError traceback).
MAX_SECONDS = 1_000_000


@dataclass
class Limits:
    """Bounds of one request. Seconds are floats; sizes are bytes. Tests shrink them to keep the hostile cases fast."""

    connect_timeout: float = 10.0  # TCP + TLS handshake
    idle_timeout: float = 60.0  # no data event for this long (waiting for the first token counts)
    deadline: float = 900.0  # one whole request, first byte to last
    max_line_bytes: int = 1 << 20  # one line of the event stream
    max_stream_bytes: int = 64 << 20  # one whole streamed reply
    max_json_bytes: int = 8 << 20  # a JSON answer: the model list, a non-streamed reply
    max_error_bytes: int = 64 << 10  # the body of an HTTP error (only its first line is shown)
    max_redirects: int = 5

    @classmethod
    def from_config(cls, values: dict, where: str) -> Limits:
        """The [remote] table of config.toml: known keys, positive finite numbers (whole numbers for sizes; seconds
        at most MAX_SECONDS)."""
        limits, known = cls(), {f.name: f.type for f in fields(cls)}
        for k, v in values.items():
            if k not in known:
                near = difflib.get_close_matches(k.lower(), list(known), n=1, cutoff=0.6)  # as other tables get
                hint = f" (did you mean remote.{near[0]}?)" if near else ""
                raise UsageError(
                    f"{where}: unknown key remote.{shown(k, 40)}{hint} (known: {', '.join(sorted(known))})"
                )
            whole = known[k] == "int"
            if isinstance(v, bool) or not isinstance(v, int if whole else (int, float)) or not 0 < v < math.inf:
                raise UsageError(f"{where}: remote.{k} must be a positive {'whole ' if whole else ''}number")
            if not whole and v > MAX_SECONDS:  # compared as is: math.isfinite(10**400) raises OverflowError
                raise UsageError(f"{where}: remote.{k} must be at most {MAX_SECONDS} seconds, got {shown(str(v), 40)}")
            setattr(limits, k, v)
        return limits

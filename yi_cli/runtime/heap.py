"""The process heap: the memory freed temporaries leave resident, handed back to the OS (no torch)."""

from __future__ import annotations


def trim_heap() -> None:
    """Unpacking leaves ~2x the model in freed temporaries that glibc keeps resident; hand them back to the OS."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass

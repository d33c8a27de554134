"""The Engine protocol: everything the conversation layer may ask of a model, local or remote (no torch here).

    stream(prompt, settings, cancel) -> Iterator[Text | Finish]

`prompt` is a template.Prompt built once per turn (by `template.build` where the engine has a template, else just the
messages); `settings` a GenSettings whose max_new_tokens already fits the context; `cancel` a threading.Event the
caller sets to stop early. The iterator yields Text events and ends with exactly one Finish (finish reason, stats and,
for local engines, the generated token ids). Failures are raised from the iterator as YiError.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from .events import Finish, Text
from .settings import GenSettings
from .template import Prompt, Template


@runtime_checkable
class Engine(Protocol):
    name: str  # the model's name, for the banner, the toolbar and session files
    quant: dict | None  # quantization settings of a local checkpoint, else None
    context_length: int | None  # None: unknown here (a server enforces its own)
    template: Template | None  # None: the server applies the chat template and tokenizes

    def describe(self) -> list:
        """What /model prints: lines, rich tables or trees."""
        ...

    def stream(self, prompt: Prompt, settings: GenSettings, cancel: threading.Event) -> Iterator[Text | Finish]: ...

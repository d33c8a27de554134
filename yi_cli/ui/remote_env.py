"""Which OpenAI-compatible server and which API key, and where each was named: a flag, the environment or the
config file (no torch). yi-chat never writes a key anywhere; /model names the key's source, never the key."""

from __future__ import annotations

import os

from ..errors import UsageError
from . import config


def endpoint(flag: str | None, top: dict) -> tuple[str | None, str]:
    """(URL, source): --endpoint ('' = the local model, whatever the environment says), $YI_CHAT_ENDPOINT, the
    config file's `endpoint`, $OPENAI_BASE_URL; (None, "") for the local model."""
    if flag is not None:
        return flag.strip() or None, "--endpoint"
    if os.environ.get("YI_CHAT_ENDPOINT"):
        return os.environ["YI_CHAT_ENDPOINT"], "$YI_CHAT_ENDPOINT"
    if top.get("endpoint"):
        return top["endpoint"], str(config.path())
    if os.environ.get("OPENAI_BASE_URL"):
        return os.environ["OPENAI_BASE_URL"], "$OPENAI_BASE_URL"
    return None, ""


def api_key(flag: str | None, top: dict) -> tuple[str | None, str]:
    """(key, source): --api-key ('' = none, whatever the environment says: OPENAI_API_KEY went to the server
    named), the variable that the config's `api_key_env` names, $OPENAI_API_KEY."""
    if flag is not None:
        return flag.strip() or None, "--api-key"
    var = top.get("api_key_env")
    if var:
        if not os.environ.get(var):
            raise UsageError(f"{config.path()}: api_key_env names ${var}, which is not set")
        return os.environ[var], f"${var}"
    if os.environ.get("OPENAI_API_KEY"):
        return os.environ["OPENAI_API_KEY"], "$OPENAI_API_KEY"
    return None, ""

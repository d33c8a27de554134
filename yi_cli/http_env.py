"""The environment's TLS and proxy settings (SSL_CERT_FILE / SSL_CERT_DIR, *_PROXY, NO_PROXY), checked as an HTTP
client is made from them, for the remote engine and the hub alike: one line naming the variable, exit 2. The hub's
client met them inside its first request, and a CA folder or a socks5:// proxy read "cannot download into the cache
(Is a directory)" or "download failed (ImportError ...)", exit 3 (no torch)."""

from __future__ import annotations

import os

from . import env_files
from .errors import UsageError, failure, shown

PROXY_VARS = ("ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


def tls_context(httpx_mod, verify=True):
    """The TLS context the environment's CA settings make (httpx_mod: httpx, or huggingface_hub's httpx2), or
    False where verification is off."""
    env_files.ca_files()  # a FIFO there was read until its writer closed it: a hang
    if verify is False:
        return False
    try:
        return httpx_mod.create_ssl_context(verify=verify, trust_env=True)
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
        cafile = os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR")
        where = f"SSL_CERT_FILE / SSL_CERT_DIR ({shown(cafile, 300)})" if cafile else "the CA certificates"
        raise UsageError(f"{where}: cannot be read as CA certificates ({failure(e)})") from None


def client(make, httpx_mod, redact=lambda text: text):
    """make(): a client that takes its proxies from the environment; a proxy setting it cannot use as UsageError
    (redact: what hides a secret the setting's words may hold)."""
    try:
        return make()
    except (ImportError, ValueError):  # socks5:// without socksio, a scheme httpx does not know
        name = next((k for k in PROXY_VARS if foreign_scheme(os.environ.get(k, ""))), "the proxy")
        url = redact(env_files.hidden_userinfo(os.environ.get(name, "")))
        raise UsageError(
            f"{name}={shown(url)}: yi-chat goes through http:// and https:// proxies only; unset {name} for yi-chat"
        ) from None
    except httpx_mod.InvalidURL as e:  # NO_PROXY='[::1]', a proxy URL past its port: an internal error
        named = [k for k in (*PROXY_VARS, "NO_PROXY", "no_proxy") if os.environ.get(k)]
        # httpx's words quote the URL's parts: a password's start, where one is in a proxy URL
        why = "" if any("@" in os.environ[k] for k in named) else f" ({shown(str(e), 100)})"
        raise UsageError(
            f"the environment's proxy settings ({', '.join(named)}) cannot be used{why}; fix or unset them"
        ) from None


def foreign_scheme(url: str) -> bool:
    """A proxy URL of a scheme other than http's (httpx takes one without a scheme as http://)."""
    return "://" in url and url.split("://", 1)[0].lower() not in ("http", "https")


def check_for_hub() -> None:
    """The settings huggingface_hub's client will be made from, checked before its first request."""
    import httpx2

    verify = tls_context(httpx2)  # (given to the client: the CA bundle read once)
    client(lambda: httpx2.Client(trust_env=True, verify=verify), httpx2).close()

"""What the libraries read from the environment on their own, checked before they read it (no torch): huggingface_hub's
integers and token file, and the CA certificates the TLS context loads. Each was a hang, an unbounded read or an
internal error where yi-chat had its one line to say.
"""

from __future__ import annotations

import os
import re
import stat

from .errors import LoadError, UsageError, shown
from .inputs import kind_of, kind_of_mode

# The integers huggingface_hub.constants parses with int() as it is imported (by any of its modules): `abc` was an
# internal error (ValueError: invalid literal for int()) at `yi-chat models`, `pull` and -m of a hub model.
HUB_INTS = ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT")
TOKEN_LIMIT = 64 << 10  # a token is ~40 characters; a link to /dev/zero was read until memory ran out


# (huggingface_hub's HF_HOME defaults to $XDG_CACHE_HOME/huggingface: an empty one was the current folder's too)
HUB_PATHS = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE", "HF_TOKEN_PATH", "HF_XET_CACHE")
HUB_PATHS += ("XDG_CACHE_HOME",)


def hub_ints() -> None:
    """Each of HUB_INTS that is no whole number, and each of HUB_PATHS that is empty, reads as unset
    (huggingface_hub's default), as the environment's numbers of yi-chat's own do (env.py): taken out of the
    environment before anything imports huggingface_hub."""
    for name in HUB_INTS:
        try:
            int(os.environ.get(name, "0"))
        except ValueError:
            del os.environ[name]
    for name in HUB_PATHS:  # empty: unset too (huggingface_hub took "" for the current folder: `HF_HUB_CACHE= yi-chat
        if name in os.environ and not os.environ[name].strip():  # pull` fetched into it, and said a relative path)
            del os.environ[name]


def hub_constants():
    """huggingface_hub.constants (HUB_INTS made readable first: hub_ints)."""
    hub_ints()
    from huggingface_hub import constants

    return constants


def hf_token() -> None:
    """The token huggingface_hub sends: HF_TOKEN, else the file HF_TOKEN_PATH (HF_HOME/token) names. That file read
    as a FIFO hung every hub request, as /dev/zero it took all memory, as a folder (or under an HF_HOME that is a
    file) it was an internal error; a character that cannot go in an HTTP header (a pasted smart quote) was blamed on
    HF_ENDPOINT ("does not answer as a Hugging Face Hub does")."""
    name = "HF_TOKEN" if os.environ.get("HF_TOKEN") else "HUGGING_FACE_HUB_TOKEN"  # as huggingface_hub takes them:
    value = (os.environ.get(name) or "").strip()  # the first set, blanks cut; a blank one is none (the file's read)
    if value:
        if not header_text(value):
            raise UsageError(f"{name} has a character that cannot go in an HTTP header (only printable ASCII)")
        return
    path = hub_constants().HF_TOKEN_PATH
    said = shown(str(path), 200)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise LoadError(f"{said}: the Hugging Face token file is a {kind_of_mode(st.st_mode)}, not a regular file")
        if st.st_size > TOKEN_LIMIT:
            raise LoadError(f"{said}: the Hugging Face token file is {st.st_size} bytes, not a token")
        with open(path, "rb") as f:
            data = f.read(TOKEN_LIMIT + 1)
    except FileNotFoundError:
        return
    except (OSError, ValueError) as e:  # a part of the path that is no folder, no permission, a NUL
        why = getattr(e, "strerror", None) or e
        raise LoadError(f"{said}: the Hugging Face token file cannot be read ({why}); check HF_HOME") from None
    if not header_text(data.strip().decode("latin-1")):
        raise LoadError(f"{said}: the Hugging Face token has a character that cannot go in an HTTP header")


def header_text(text: str) -> bool:
    """Text an HTTP header can carry as a credential: printable ASCII, no blank."""
    return all(33 <= ord(c) < 127 for c in text)


def ca_files() -> None:
    """SSL_CERT_FILE no FIFO, device or socket: the TLS context read one until its writer closed it (a hang, for
    --endpoint and the hub alike), or /dev/zero without end. What cannot be read otherwise (missing, a folder, no
    certificates) is said by the one who loads it; SSL_CERT_DIR is only looked into, by hashed names."""
    value = os.environ.get("SSL_CERT_FILE")
    if not value:
        return
    try:
        kind = kind_of(value)
    except OSError:  # a folder above it that cannot be searched: the loader says it
        return
    if kind not in (None, "regular file", "directory"):
        raise UsageError(f"SSL_CERT_FILE={shown(value, 200)}: a {kind}, not a file of CA certificates; unset it")


def proxy_for(url: str) -> str | None:
    """The environment's proxy a request to `url` goes through, as "NAME=VALUE" (http_proxy, https_proxy, all_proxy
    in either case, NO_PROXY honoured), its user info hidden; None where it goes straight. A failure to connect named
    the server alone: `cannot connect ([Errno -2] Name or service not known)` of 127.0.0.1, the proxy's name failing."""
    found = proxy_setting(url)
    return None if found is None else f"{found[0]}={shown(hidden_userinfo(found[1]), 120)}"


def proxy_setting(url: str) -> tuple[str, str] | None:
    """(variable, value) of the environment's proxy a request to `url` goes through; None where it goes straight."""
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if urllib.request.proxy_bypass_environment(host if parts.port is None else f"{host}:{parts.port}"):
        return None
    for name in (f"{parts.scheme}_proxy", "all_proxy"):
        for var in (name, name.upper()):
            value = os.environ.get(var)
            if value:
                return var, value
    return None


def hidden_login(url: str) -> str:
    """A valid URL (its authority as the HTTP client reads it) with its user and password as ***: hidden_userinfo's
    guess, up to the last `@`, hid the host of `http://host/hf@mirror`."""
    from urllib.parse import urlsplit

    netloc = urlsplit(url).netloc
    return url.replace(netloc, "***@" + netloc.rpartition("@")[2], 1) if "@" in netloc else url


def hidden_userinfo(url: str) -> str:
    """`url` with what stands between `//` and its last `@` as ***: user and password, also where the password holds
    `/`, `?` or `#` (typed unencoded, the URL parser ends the host there, and the password was shown)."""
    return re.sub(r"(//)[^@]*@", r"\1***@", url) if "//" in url else re.sub(r"^[^@]*@", "***@", url)

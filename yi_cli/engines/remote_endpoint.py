"""Endpoints as users write them, and credentials kept out of every message: URLs shown with user info and
secret query values as ***, and any credential in text bound for the user (errors, notes, the reply) replaced
by *** (no torch, no httpx)."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlsplit

from ..env_files import hidden_userinfo as hide_userinfo
from ..errors import UsageError, shown

# Query parameters that carry credentials in the services people use (Azure Functions ?code=, Google ?key=,
# signed URLs ?sig=): their values are shown as *** like a password.
SECRET_PARAM = re.compile(r"key|token|secret|passw|sig|auth|credential|^code$", re.IGNORECASE)


class Endpoint:
    """An OpenAI-compatible base URL as a user writes it: `host:8000`, `http://host:8000`, `.../v1`,
    `.../v1/chat/completions`, an OPENAI_BASE_URL value, a proxy's own prefix, `user:password@`, and a query
    string (`?api-version=...`) that every request keeps."""

    def __init__(self, value: str):
        raw = value.strip()
        if "://" not in raw:
            raw = "http://" + raw
        try:
            parts = urlsplit(raw)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError:
            parts = None
        # A host with a space or a control character (`--endpoint 'not a url'`) was looked up in DNS and said as
        # "cannot connect", exit 3; port 0 (which no server listens on) was taken as none: port 80
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or not all(c.isprintable() and not c.isspace() for c in parts.hostname)
            or parts.port == 0
            or not _internet_name(parts.hostname)
            or not _well_formed(raw, parts.netloc.rpartition("@")[2], parts.hostname)
        ):
            named = shown(shown_url(value.strip()), 200) or repr(value)  # ' ' said as ": not an http(s) URL"
            raise UsageError(f"{named}: not an http(s) URL of an OpenAI-compatible server")
        self.scheme = parts.scheme
        self.hostport = parts.netloc.rpartition("@")[2]  # as written: [v6]:port stays bracketed
        self.host = parts.hostname.lower()
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.user = unquote(parts.username) if parts.username is not None else None
        self.password = unquote(parts.password) if parts.password is not None else None
        self.userinfo = parts.netloc.rpartition("@")[0]  # as written (`p%C3%A4ss`): a server may echo it so
        path = parts.path.rstrip("/")
        for route in ("/chat/completions", "/models"):
            path = path.removesuffix(route)
        # A bare host gets the usual /v1; any other path (a proxy's prefix, /v1beta/openai) is kept as given.
        self.path = path or "/v1"
        self.query = parts.query

    @property
    def deployment(self) -> str | None:
        """Azure-style `/openai/deployments/NAME`: the deployment names the model (such endpoints list none)."""
        m = re.search(r"/deployments/([^/]+)$", self.path)
        return unquote(m.group(1)) if m else None

    def url(self, route: str = "") -> str:
        """The URL requests go to: credentials travel in headers, never in the URL."""
        return f"{self.scheme}://{self.hostport}{self.path}{route}" + (f"?{self.query}" if self.query else "")

    def shown(self, route: str = "") -> str:
        """The URL as messages show it: user info and secret query values as ***."""
        userinfo = "***@" if self.user is not None else ""
        return f"{self.scheme}://{userinfo}{self.hostport}{self.path}{route}" + shown_query(self.query)

    def secrets(self) -> list[str]:
        """The credentials, decoded and as written in the URL (a server that echoes its request line shows
        `sig=Ab+Cd` and `%2f` as they were sent, not as parse_qsl decodes them)."""
        out = [s for s in (self.user, self.password, *self.userinfo.split(":", 1)) if s]
        if self.user is not None:
            out.append(base64.b64encode(f"{self.user}:{self.password or ''}".encode()).decode())
        written = (pair.partition("=") for pair in self.query.split("&"))
        written_values = [v for k, _, v in written if SECRET_PARAM.search(unquote_plus(k)) and v]
        return out + [v for k, v in parse_qsl(self.query) if SECRET_PARAM.search(k) and v] + written_values

    def moved(self, url: str, route: str) -> Endpoint | None:
        """The endpoint a same-host redirect of `route` points at, so later requests go there directly."""
        parts = urlsplit(url)
        if not parts.path.rstrip("/").endswith(route):
            return None
        new = Endpoint(url)
        new.user, new.password = self.user, self.password
        return new


def _internet_name(host: str) -> bool:
    """A host name DNS can be asked for: no empty label (`a..b`) or one past 63 characters, and each `xn--` label
    valid Punycode (`xn--`). Such hosts got as far as the lookup, whose UnicodeError was an internal error."""
    if ":" in host:  # an IPv6 literal, checked by urlsplit
        return True
    try:
        labels = host.encode("idna").decode("ascii").split(".")
        # Punycode alone, not Python's IDNA 2003 round trip, which refuses IDNA 2008 names (xn--fa-hia: faß)
        return all(label[4:].encode("ascii").decode("punycode") for label in labels if label[:4].lower() == "xn--")
    except UnicodeError:
        return False


def _well_formed(raw: str, hostport: str, host: str) -> bool:
    """What urlsplit lets through and the HTTP client refuses at the first request (exit 3 or 1, its InvalidURL
    said raw): a control character anywhere (`/v\x7f1`), a dotted-quad host that is no IPv4 address
    (`256.1.1.1`), and text between an IPv6 literal's bracket and its port (`[::1]x:1`)."""
    if not raw.isprintable():
        return False
    if re.fullmatch(r"[0-9]+(\.[0-9]+){3}", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
    return not hostport.startswith("[") or re.fullmatch(r"\[[^\]]*\](:[0-9]*)?", hostport) is not None


def shown_url(url: str) -> str:
    """A URL as written (one yi-chat may refuse), for a message: user info and secret query values as ***."""
    base, mark, rest = hide_userinfo(url).partition("?")
    query, hash_, fragment = rest.partition("#")
    return base + (shown_query(query) or mark) + hash_ + fragment


def shown_query(query: str) -> str:
    if not query:
        return ""
    pairs = [  # surrogateescape: a byte that is not UTF-8 (argv's, the environment's) as its %XX
        f"{quote(k, safe='', errors='surrogateescape')}="
        f"{'***' if SECRET_PARAM.search(k) else quote(v, safe='', errors='surrogateescape')}"
        for k, v in parse_qsl(query, keep_blank_values=True)
    ]
    return "?" + "&".join(pairs)


def _forms(secret: str) -> tuple[str, ...]:
    """The ways a secret may come back in a server's words: plain, URL-encoded (upper- or lower-case hex, `+` for
    a space), base64, in a JSON string (`\\u00e4`, `\\\\` as json.dumps escapes them), and as Python shows its
    UTF-8 bytes (a chunk that was not UTF-8: `p\\xc3\\xa4ss`)."""
    encoded = (quote(secret, safe=""), quote(secret), quote_plus(secret, safe=""))
    lower = (re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), f) for f in encoded)
    as_json = (json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1])
    return (secret, *encoded, *lower, *_base64(secret), *as_json, repr(secret.encode())[2:-1])


def _base64(secret: str) -> tuple[str, str]:
    """A secret's base64 forms, standard and URL-safe, without the padding (a server that echoed an API key
    base64-encoded showed it: only user:password's was masked)."""
    raw = secret.encode()
    return base64.b64encode(raw).decode().rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("=")


# The shortest secret masked, and the fewest first characters of one masked where text is cut within it.
PARTIAL = 4


class Redactor:
    """Replaces every secret (its URL-encoded and base64 forms too) with *** in text bound for a message or a note."""

    def __init__(self, secrets: list[str]):
        self.secrets = [s for s in secrets if s]
        forms = {f for s in self.secrets for f in _forms(s)}
        # Very short "secrets" (a user name "a") would mangle every message; they never reach one anyway,
        # since URLs are built without user info.
        self.forms = sorted((f for f in forms if len(f) >= PARTIAL), key=len, reverse=True)
        self.longest = max(map(len, self.forms), default=0)
        # every PARTIAL characters of a form: text whose last ones are none of them ends in no secret's start
        self.grams = {f[j : j + PARTIAL] for f in self.forms for j in range(len(f) - PARTIAL + 1)}

    def __call__(self, text: str) -> str:
        for f in self.forms:
            text = text.replace(f, "***")
        if "…" not in text or not self.forms:
            return text
        # Text cut short before it came here (one_line's "…": a server's words, a bad chunk) may end a part in a
        # secret's first characters: 44 of an API key's 51 were shown so. Each "…" looks back a secret's length at
        # most, and only where its last characters occur in one: a reply of a million "…" took a minute.
        out, last = [], 0
        for i in (m.start() for m in re.finditer("…", text)):
            if text[max(last, i - PARTIAL) : i] in self.grams:
                if (k := self.held(text[max(last, i - self.longest) : i])) >= PARTIAL:
                    out += [text[last : i - k], "***"]
                    last = i
        return "".join(out) + text[last:]

    def held(self, text: str) -> int:
        """How many characters at the end of `text` could be the start of a secret (held back from a stream)."""
        for k in range(min(len(text), max(map(len, self.forms), default=1) - 1), 0, -1):
            if any(f.startswith(text[-k:]) for f in self.forms):
                return k
        return 0


class StreamRedactor:
    """Redaction of text that arrives in pieces: a secret split across two chunks is still caught, because the
    end of a piece that could begin one waits for the next piece (or the end of the reply)."""

    def __init__(self, redact: Redactor):
        self.redact, self.tail = redact, ""

    def feed(self, piece: str) -> str:
        text = self.redact(self.tail + piece)
        keep = self.redact.held(text)
        self.tail = text[len(text) - keep :]
        return text[: len(text) - keep]

    def flush(self, cut: bool = False) -> str:
        """The held-back end: as it is where the reply ended (it was no secret), "***" where the reply was cut
        there (a token limit, a dropped stream, Ctrl-C) and it is a secret's first characters: a reply that echoed
        an API key and hit --max-new-tokens showed 39 of its 51 characters, and the session kept them."""
        text, self.tail = self.tail, ""
        return "***" if cut and len(text) >= PARTIAL else text

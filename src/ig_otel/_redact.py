"""Secrets IG traffic carries, and how ig-otel keeps them out of telemetry.

IG authenticates with an API key header, CST and X-SECURITY-TOKEN session
tokens (also inside the Lightstreamer password), OAuth bearer tokens and
account ids. ig-otel never reads request bodies of session calls and never
puts these headers on spans; this module is the single list of what counts
as secret, used to scrub what other instrumentations capture.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "REDACTED",
    "SECRET_HEADERS",
    "extend_sanitize_fields",
    "is_secret_header",
    "redact_url",
]

REDACTED = "[REDACTED]"

#: Header names (lower case) whose values are credentials or account ids.
SECRET_HEADERS = frozenset({
    "x-ig-api-key",
    "cst",
    "x-security-token",
    "authorization",
    "ig-account-id",
    "cookie",
    "set-cookie",
})

SANITIZE_VARIABLE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"


def is_secret_header(name: str) -> bool:
    """True when a header (any case, ``_`` or ``-``) carries a secret."""
    return name.lower().replace("_", "-") in SECRET_HEADERS


def redact_url(url: str) -> str:
    """The URL without user info (IG URLs carry no other secret)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


def extend_sanitize_fields(environ: dict[str, str] | None = None) -> None:
    """Add IG's secret headers to the contrib header-capture sanitize list.

    The contrib httpx and requests instrumentations read this variable when
    they instrument; extending it before they do means a user who turns on
    header capture gets ``[REDACTED]`` instead of tokens.
    """
    env = os.environ if environ is None else environ
    present = [f.strip() for f in env.get(SANITIZE_VARIABLE, "").split(",")]
    wanted = [h for h in sorted(SECRET_HEADERS) if h not in present]
    if wanted:
        env[SANITIZE_VARIABLE] = ",".join([p for p in present if p] + wanted)

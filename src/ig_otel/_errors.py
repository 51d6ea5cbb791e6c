"""IG error bodies: reading ``errorCode`` and telling allowance errors apart.

IG answers failures with a JSON body ``{"errorCode": "..."}``. Codes are a
bounded vocabulary (``error.security.client-token-invalid``,
``invalid.request.<field>``...), so they may be metric attributes once
checked against a strict shape; anything else becomes ``_OTHER``.
"""

from __future__ import annotations

import json
import re

from ig_otel._telemetry import Allowance

__all__ = [
    "ALLOWANCE_ERRORS",
    "allowance_exceeded",
    "parse_error_code",
]

OTHER_CODE = "_OTHER"
MAX_BODY = 4096

_CODE_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

#: IG's 403 codes for a spent allowance, and the allowance each one names.
ALLOWANCE_ERRORS: dict[str, tuple[Allowance, str]] = {
    "error.public-api.exceeded-api-key-allowance": (Allowance.NON_TRADING, "app"),
    "error.public-api.exceeded-account-allowance": (
        Allowance.NON_TRADING, "account",
    ),
    "error.public-api.exceeded-account-trading-allowance": (
        Allowance.TRADING, "account",
    ),
    "error.public-api.exceeded-account-historical-data-allowance": (
        Allowance.HISTORICAL, "account",
    ),
}


def parse_error_code(body: bytes | str | None) -> str | None:
    """The ``errorCode`` of an IG error body, or None when there is none.

    Bodies that are not JSON objects, or too large to be an IG error, give
    None; a code of unexpected shape gives ``_OTHER`` so it stays bounded.
    """
    if not body or len(body) > MAX_BODY:
        return None
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(document, dict):
        return None
    code = document.get("errorCode")
    if not isinstance(code, str):
        return None
    return code if _CODE_SHAPE.fullmatch(code) else OTHER_CODE


def allowance_exceeded(code: str | None) -> tuple[Allowance, str] | None:
    """The allowance and scope (``app``/``account``) an error code says is spent."""
    if code is None:
        return None
    return ALLOWANCE_ERRORS.get(code)

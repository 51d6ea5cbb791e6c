"""IG REST routes: path templates, allowance classes and the effective method.

Pure functions over strings. A path is matched after removing the
``/gateway/deal`` prefix, the query string and any trailing slash; each
variable segment becomes ``{name}`` so no epic, deal id or reference ever
reaches a metric attribute. A path that matches no known shape keeps only
its first segment when that is a known IG resource (``/markets/*``), else
becomes ``/*``: the set of templates stays bounded whatever the caller sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from ig_otel._telemetry import Allowance

__all__ = ["Route", "effective_method", "match_route", "split_path"]

GATEWAY_PREFIX = "/gateway/deal"
METHOD_OVERRIDE_HEADER = "_method"

_TRADING_ROOTS = ("positions/otc", "workingorders/otc")
_SESSION_ROOTS = ("session", "operations")

# Templates by first segment; order matters within a root (most specific first).
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "session": (
        "/session", "/session/encryptionKey", "/session/refresh-token",
    ),
    "operations": ("/operations/application", "/operations/application/disable"),
    "accounts": ("/accounts", "/accounts/preferences"),
    "history": (
        "/history/activity",
        "/history/activity/{lastPeriodMs}",
        "/history/activity/{fromDate}/{toDate}",
        "/history/transactions",
        "/history/transactions/{transactionType}/{lastPeriodMs}",
    ),
    "confirms": ("/confirms/{dealReference}",),
    "positions": (
        "/positions", "/positions/otc", "/positions/otc/{dealId}",
        "/positions/{dealId}",
    ),
    "workingorders": (
        "/workingorders", "/workingorders/otc", "/workingorders/otc/{dealId}",
    ),
    "markets": ("/markets", "/markets/{epic}"),
    "marketnavigation": ("/marketnavigation", "/marketnavigation/{nodeId}"),
    "prices": (
        "/prices/{epic}",
        "/prices/{epic}/{resolution}",
        "/prices/{epic}/{resolution}/{numPoints}",
        "/prices/{epic}/{resolution}/{startDate}/{endDate}",
    ),
    "watchlists": (
        "/watchlists", "/watchlists/{watchlistId}",
        "/watchlists/{watchlistId}/{epic}",
    ),
    "clientsentiment": (
        "/clientsentiment", "/clientsentiment/related/{marketId}",
        "/clientsentiment/{marketId}",
    ),
    "repeat-dealing-window": ("/repeat-dealing-window",),
}


@dataclass(frozen=True)
class Route:
    """The template of one IG REST path and the allowance it spends.

    Attributes:
        template: Low-cardinality path template, e.g. ``/positions/otc/{dealId}``.
        allowance: The IG allowance class the call counts against.
        variables: Values of the template's variables, by name (may hold an
            epic or deal id: for spans only, never for metrics).
    """

    template: str
    allowance: Allowance
    variables: tuple[tuple[str, str], ...] = ()

    def variable(self, name: str) -> str | None:
        for key, value in self.variables:
            if key == name:
                return value
        return None


def split_path(path: str) -> tuple[str, ...]:
    """Segments of an IG path, without gateway prefix, query or empty parts."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    if path.startswith(GATEWAY_PREFIX):
        path = path[len(GATEWAY_PREFIX):]
    return tuple(segment for segment in path.split("/") if segment)


@lru_cache(maxsize=4096)
def match_route(method: str, path: str) -> Route:
    """Template and allowance class of an IG REST call.

    Args:
        method: The effective HTTP method (see :func:`effective_method`).
        path: The URL path, with or without the gateway prefix and query.
    """
    segments = split_path(path)
    template, variables = _match_segments(segments)
    return Route(template, allowance_of(method, template), variables)


def allowance_of(method: str, template: str) -> Allowance:
    """The IG allowance a call spends, from its method and template."""
    trimmed = template.lstrip("/")
    if trimmed.startswith(_SESSION_ROOTS):
        return Allowance.SESSION
    if trimmed.startswith("prices"):
        return Allowance.HISTORICAL
    if method.upper() != "GET" and trimmed.startswith(_TRADING_ROOTS):
        return Allowance.TRADING
    return Allowance.NON_TRADING


def effective_method(method: str | bytes, headers: Mapping[str, str]) -> str:
    """The method IG acts on: the ``_method`` header overrides the verb.

    IG clients send DELETE-with-body as POST plus ``_method: DELETE``.
    """
    if isinstance(method, bytes):
        method = method.decode("ascii", "replace")
    override = headers.get(METHOD_OVERRIDE_HEADER) if headers else None
    if override and override.strip():
        return override.strip().upper()
    return method.upper()


def _match_segments(
    segments: tuple[str, ...],
) -> tuple[str, tuple[tuple[str, str], ...]]:
    if not segments:
        return "/", ()
    candidates = _TEMPLATES.get(segments[0])
    if candidates is None:
        return "/*", ()
    for template in candidates:
        variables = _bind(template, segments)
        if variables is not None:
            return template, variables
    return f"/{segments[0]}/*", ()


def _bind(
    template: str, segments: tuple[str, ...]
) -> tuple[tuple[str, str], ...] | None:
    parts = template.strip("/").split("/")
    if len(parts) != len(segments):
        return None
    variables = []
    for part, segment in zip(parts, segments, strict=True):
        if part.startswith("{"):
            variables.append((part[1:-1], segment))
        elif part != segment:
            return None
    return tuple(variables)

from __future__ import annotations

import pytest

from ig_otel._routes import effective_method, match_route, split_path
from ig_otel._telemetry import Allowance

TEMPLATES = [
    ("POST", "/gateway/deal/session", "/session", Allowance.SESSION),
    ("GET", "/gateway/deal/session/encryptionKey", "/session/encryptionKey",
     Allowance.SESSION),
    ("GET", "/gateway/deal/operations/application", "/operations/application",
     Allowance.SESSION),
    ("GET", "/gateway/deal/accounts", "/accounts", Allowance.NON_TRADING),
    ("GET", "/gateway/deal/positions", "/positions", Allowance.NON_TRADING),
    ("GET", "/gateway/deal/positions/DIAAAAE6FQKP3AV", "/positions/{dealId}",
     Allowance.NON_TRADING),
    ("POST", "/gateway/deal/positions/otc", "/positions/otc", Allowance.TRADING),
    ("DELETE", "/gateway/deal/positions/otc", "/positions/otc", Allowance.TRADING),
    ("PUT", "/gateway/deal/positions/otc/DIAAAAE6FQKP3AV", "/positions/otc/{dealId}",
     Allowance.TRADING),
    ("POST", "/gateway/deal/workingorders/otc", "/workingorders/otc",
     Allowance.TRADING),
    ("DELETE", "/gateway/deal/workingorders/otc/DIAAAA1", "/workingorders/otc/{dealId}",
     Allowance.TRADING),
    ("GET", "/gateway/deal/workingorders", "/workingorders", Allowance.NON_TRADING),
    ("GET", "/gateway/deal/confirms/LHVRB3J6S8N44TD", "/confirms/{dealReference}",
     Allowance.NON_TRADING),
    ("GET", "/gateway/deal/markets/CS.D.EURUSD.MINI.IP", "/markets/{epic}",
     Allowance.NON_TRADING),
    ("GET", "/gateway/deal/markets?epics=A,B", "/markets", Allowance.NON_TRADING),
    ("GET", "/gateway/deal/prices/CS.D.EURUSD.MINI.IP?resolution=MINUTE",
     "/prices/{epic}", Allowance.HISTORICAL),
    ("GET", "/gateway/deal/prices/CS.D.EURUSD.MINI.IP/MINUTE/10",
     "/prices/{epic}/{resolution}/{numPoints}", Allowance.HISTORICAL),
    ("GET", "/gateway/deal/prices/EP/DAY/2024-01-01%2000:00:00/2024-01-02%2000:00:00",
     "/prices/{epic}/{resolution}/{startDate}/{endDate}", Allowance.HISTORICAL),
    ("GET", "/gateway/deal/prices/EP/DAY?startdate=x", "/prices/{epic}/{resolution}",
     Allowance.HISTORICAL),
    ("GET", "/gateway/deal/history/activity/", "/history/activity",
     Allowance.NON_TRADING),
    ("GET", "/gateway/deal/history/activity/86400000",
     "/history/activity/{lastPeriodMs}",
     Allowance.NON_TRADING),
    ("GET", "/gateway/deal/clientsentiment/?marketIds=A,B", "/clientsentiment",
     Allowance.NON_TRADING),
    ("GET", "/gateway/deal/clientsentiment/related/EURUSD",
     "/clientsentiment/related/{marketId}", Allowance.NON_TRADING),
    ("GET", "/gateway/deal/clientsentiment/EURUSD", "/clientsentiment/{marketId}",
     Allowance.NON_TRADING),
    ("DELETE", "/gateway/deal/watchlists/123/CS.D.X.IP",
     "/watchlists/{watchlistId}/{epic}",
     Allowance.NON_TRADING),
    ("GET", "/gateway/deal/marketnavigation/264134", "/marketnavigation/{nodeId}",
     Allowance.NON_TRADING),
]


@pytest.mark.parametrize(("method", "path", "template", "allowance"), TEMPLATES)
def test_match_route_templates_every_trading_ig_endpoint(
    method, path, template, allowance
):
    route = match_route(method, path)
    assert route.template == template
    assert route.allowance is allowance


def test_match_route_keeps_variables_for_spans_only():
    route = match_route("GET", "/gateway/deal/markets/CS.D.EURUSD.MINI.IP")
    assert route.variable("epic") == "CS.D.EURUSD.MINI.IP"
    assert route.variable("dealId") is None


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/gateway/deal/markets/a/b/c/d", "/markets/*"),
        ("/gateway/deal/ACC-123/secret", "/*"),
        ("/gateway/deal/", "/"),
        ("/something/else", "/*"),
    ],
)
def test_unknown_paths_get_bounded_templates(path, template):
    assert match_route("GET", path).template == template


def test_get_under_positions_otc_is_not_trading():
    assert match_route("GET", "/positions/otc").allowance is Allowance.NON_TRADING


def test_effective_method_honours_method_override_header():
    assert effective_method("POST", {"_method": "DELETE"}) == "DELETE"
    assert effective_method(b"post", {}) == "POST"
    assert effective_method("POST", {"_method": "  "}) == "POST"


def test_split_path_drops_prefix_query_and_trailing_slash():
    assert split_path("/gateway/deal/history/activity/?from=x") == (
        "history", "activity",
    )

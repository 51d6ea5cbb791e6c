"""The unmodified trading-ig against the simulator, with ig-otel instrumenting.

Run in the tig environment: ``.venv-tig/bin/pytest -m tig tests/rest``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ig_otel import IGInstrumentor
from ig_otel.simulator import Simulator

pytestmark = pytest.mark.tig

EPIC = "CS.D.EURUSD.MINI.IP"


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with Simulator(seed=3) as sim:
        yield sim


@pytest.fixture(params=["ig-only", "with-contrib-requests"])
def traced(request, telemetry, fresh_metrics):
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    contrib = RequestsInstrumentor()
    if request.param == "with-contrib-requests":
        contrib.instrument(tracer_provider=telemetry.tracer_provider)
    ig = IGInstrumentor()
    ig.instrument(
        hosts=("127.0.0.1",), tracer_provider=telemetry.tracer_provider,
        meter_provider=fresh_metrics.provider,
    )
    yield request.param
    ig.uninstrument()
    if contrib.is_instrumented_by_opentelemetry:
        contrib.uninstrument()


@pytest.fixture
def service(simulator: Simulator, monkeypatch: pytest.MonkeyPatch):
    from trading_ig import IGService, rest

    monkeypatch.setitem(rest.D_BASE_URL, "demo", simulator.rest_url)
    ig = IGService(simulator.username, simulator.password, simulator.api_key,
                   acc_type="demo", acc_number=simulator.account_id)
    yield ig
    ig.session.close()


def _open_position(service) -> dict:
    return service.create_open_position(
        currency_code="GBP", direction="BUY", epic=EPIC, expiry="-",
        force_open=False, guaranteed_stop=False, level=None, limit_distance=None,
        limit_level=None, order_type="MARKET", quote_id=None, size=1,
        stop_distance=None, stop_level=None, trailing_stop=False,
        trailing_stop_increment=None,
    )


def test_trading_ig_flow_gives_ig_spans_and_metrics(
    traced, service, telemetry, fresh_metrics
):
    service.create_session()
    tokens = (service.session.headers["CST"],
              service.session.headers["X-SECURITY-TOKEN"])
    service.fetch_accounts()
    opened = _open_position(service)
    assert opened["dealStatus"] == "ACCEPTED"
    closed = service.close_open_position(
        deal_id=opened["dealId"], direction="SELL", epic=None, expiry=None,
        level=None, order_type="MARKET", quote_id=None, size=1,
    )
    assert closed["dealStatus"] == "ACCEPTED"
    service.logout()

    names = [span.name for span in telemetry.finished_spans()]
    assert names == [
        "POST /session", "GET /accounts", "POST /positions/otc",
        "GET /confirms/{dealReference}", "DELETE /positions/otc",
        "GET /confirms/{dealReference}", "DELETE /session",
    ]
    spans = telemetry.finished_spans()
    assert spans[2].attributes["ig.deal.reference"] == opened["dealReference"]
    assert spans[3].attributes["ig.deal.id"] == opened["dealId"]
    assert spans[4].attributes["http.request.method_original"] == "POST"
    assert spans[2].attributes["ig.allowance"] == "trading"

    confirmations = fresh_metrics.points("ig.deal.confirmations")
    assert sum(point.value for point in confirmations) == 2
    latency = fresh_metrics.points("ig.deal.confirmation.latency")
    assert sum(point.count for point in latency) == 2
    templates = {
        point.attributes["url.template"]
        for point in fresh_metrics.points("ig.rest.request.duration")
    }
    assert "/positions/otc" in templates

    dumped = "\n".join(span.to_json() for span in spans)
    data = fresh_metrics.reader.get_metrics_data()
    dumped += data.to_json() if data else ""
    for secret in (*tokens, service.API_KEY, service.IG_PASSWORD):
        assert secret not in dumped


def test_trading_ig_allowance_403_is_counted(
    traced, service, simulator, telemetry, fresh_metrics
):
    from trading_ig.rest import ApiExceededException

    simulator.set_scenario("allowance-exhaustion")
    service.create_session()
    with pytest.raises(ApiExceededException):
        for _ in range(200):
            service.fetch_accounts()
    exceeded = fresh_metrics.points("ig.allowance.exceeded")
    assert exceeded and exceeded[0].attributes["ig.allowance"] == "non_trading"
    assert telemetry.events("ig.allowance.exceeded")

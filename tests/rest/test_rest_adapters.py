"""httpx (sync and async) and requests calls to IG, with and without contrib."""

from __future__ import annotations

import json

import httpx
import pytest
import requests
from ig_stub import API_KEY, CST, XST

SECRETS = (CST, XST, API_KEY)
HEADERS = {"X-IG-API-KEY": API_KEY, "VERSION": "2", "CST": CST,
           "X-SECURITY-TOKEN": XST}


def _only_span(telemetry):
    spans = telemetry.finished_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def _duration_points(fresh_metrics):
    return fresh_metrics.points("ig.rest.request.duration")


def _point_with(points, **attributes):
    for point in points:
        if all(point.attributes.get(k) == v for k, v in attributes.items()):
            return point
    raise AssertionError(f"no point with {attributes} in {points}")


def _send(client_kind, method, url, **kwargs):
    if client_kind == "requests":
        with requests.Session() as session:
            return session.request(method, url, **kwargs)
    if client_kind == "httpx":
        if "data" in kwargs:
            kwargs["content"] = kwargs.pop("data")
        with httpx.Client() as client:
            return client.request(method, url, **kwargs)
    raise AssertionError(client_kind)


CLIENTS = ["requests", "httpx"]


@pytest.mark.parametrize("client_kind", CLIENTS)
def test_ig_call_gives_one_enriched_span(
    instrumented, client_kind, ig_stub, telemetry, fresh_metrics
):
    response = _send(client_kind, "GET", f"{ig_stub}/accounts", headers=HEADERS)
    assert response.status_code == 200

    span = _only_span(telemetry)
    assert span.name == "GET /accounts"
    assert span.attributes["url.template"] == "/accounts"
    assert span.attributes["ig.allowance"] == "non_trading"
    assert span.attributes["ig.environment"] == "other"
    assert span.attributes["ig.api.version"] == "2"
    points = _duration_points(fresh_metrics)
    point = _point_with(points, **{"url.template": "/accounts"})
    assert point.count == 1
    assert point.attributes["http.response.status_code"] == 200
    assert point.explicit_bounds[0] < 0.01


@pytest.mark.parametrize("client_kind", CLIENTS)
def test_method_override_makes_a_delete(
    instrumented, client_kind, ig_stub, telemetry, fresh_metrics
):
    headers = {**HEADERS, "_method": "DELETE"}
    response = _send(
        client_kind, "POST", f"{ig_stub}/positions/otc", headers=headers, data=b"{}"
    )
    assert response.json() == {"dealReference": "REF43"}

    span = _only_span(telemetry)
    assert span.name == "DELETE /positions/otc"
    assert span.attributes["http.request.method"] == "DELETE"
    assert span.attributes["http.request.method_original"] == "POST"
    assert span.attributes["ig.allowance"] == "trading"
    assert span.attributes["ig.deal.reference"] == "REF43"


@pytest.mark.parametrize("client_kind", CLIENTS)
def test_deal_and_confirm_record_latency_and_status(
    instrumented, client_kind, ig_stub, telemetry, fresh_metrics
):
    body = json.dumps({"epic": "CS.D.EURUSD.MINI.IP", "direction": "BUY"})
    opened = _send(client_kind, "POST", f"{ig_stub}/positions/otc",
                   headers=HEADERS, data=body)
    assert opened.json()["dealReference"] == "REF42"
    confirm = _send(client_kind, "GET", f"{ig_stub}/confirms/REF42", headers=HEADERS)
    assert confirm.json()["dealStatus"] == "ACCEPTED"

    deal_span, confirm_span = telemetry.finished_spans()
    assert deal_span.attributes["ig.epic"] == "CS.D.EURUSD.MINI.IP"
    assert confirm_span.name == "GET /confirms/{dealReference}"
    assert confirm_span.attributes["ig.deal.id"] == "DIAAAA42"
    assert confirm_span.attributes["ig.deal.status"] == "ACCEPTED"
    count = _point_with(fresh_metrics.points("ig.deal.confirmations"),
                        **{"ig.deal.status": "ACCEPTED"})
    assert count.attributes["ig.confirmation.source"] == "rest"
    latency = fresh_metrics.points("ig.deal.confirmation.latency")
    assert sum(point.count for point in latency) >= 1


@pytest.mark.parametrize("client_kind", CLIENTS)
def test_rejected_confirm_emits_deal_rejected_event(
    instrumented, client_kind, ig_stub, telemetry, fresh_metrics
):
    _send(client_kind, "GET", f"{ig_stub}/confirms/REF43", headers=HEADERS)
    events = telemetry.events("ig.deal.rejected")
    assert len(events) == 1
    assert events[0].attributes["ig.deal.reason"] == "MARKET_CLOSED"


@pytest.mark.parametrize("client_kind", CLIENTS)
def test_allowance_error_is_counted_and_body_still_readable(
    instrumented, client_kind, ig_stub, telemetry, fresh_metrics
):
    response = _send(client_kind, "GET", f"{ig_stub}/markets/LIMITED.EPIC",
                     headers=HEADERS)
    assert response.status_code == 403
    assert response.json()["errorCode"].endswith("exceeded-account-allowance")

    span = _only_span(telemetry)
    assert span.attributes["ig.error_code"].endswith("exceeded-account-allowance")
    assert span.status.status_code.name == "ERROR"
    exceeded = fresh_metrics.points("ig.allowance.exceeded")
    assert exceeded[0].attributes["ig.allowance"] == "non_trading"
    assert telemetry.events("ig.allowance.exceeded")
    point = _point_with(_duration_points(fresh_metrics), **{"error.type": "403"})
    assert point.attributes["ig.error_code"].endswith("exceeded-account-allowance")


@pytest.mark.parametrize("client_kind", CLIENTS)
def test_historical_allowance_is_reported(
    instrumented, client_kind, ig_stub, fresh_metrics
):
    _send(client_kind, "GET", f"{ig_stub}/prices/CS.D.EURUSD.MINI.IP?max=10",
          headers=HEADERS)
    points = fresh_metrics.points("ig.allowance.historical.remaining")
    assert points[0].value == 9644


@pytest.mark.parametrize("client_kind", CLIENTS)
def test_connection_error_records_duration_and_passes_through(
    instrumented, client_kind, telemetry, fresh_metrics
):
    expected = requests.ConnectionError if client_kind == "requests" else (
        httpx.ConnectError)
    with pytest.raises(expected):
        _send(client_kind, "GET", "http://127.0.0.1:9/gateway/deal/accounts",
              headers=HEADERS)
    points = _duration_points(fresh_metrics)
    assert len(points) == 1
    assert points[0].attributes["error.type"]
    span = _only_span(telemetry)
    assert span.name == "GET /accounts"


@pytest.mark.parametrize("client_kind", CLIENTS)
def test_timeout_records_duration_and_passes_through(
    instrumented, client_kind, ig_stub, fresh_metrics
):
    expected = requests.Timeout if client_kind == "requests" else httpx.TimeoutException
    with pytest.raises(expected):
        _send(client_kind, "GET", f"{ig_stub}/slow", headers=HEADERS, timeout=0.2)
    point = _duration_points(fresh_metrics)[0]
    assert "Timeout" in point.attributes["error.type"]
    assert point.attributes["url.template"] == "/*"


@pytest.mark.parametrize("client_kind", CLIENTS)
def test_unknown_path_never_reaches_metrics_raw(
    instrumented, client_kind, ig_stub, fresh_metrics
):
    _send(client_kind, "GET", f"{ig_stub}/markets/A/B/C/ACCOUNT123", headers=HEADERS)
    point = _duration_points(fresh_metrics)[0]
    assert point.attributes["url.template"] == "/markets/*"
    assert point.attributes["ig.error_code"] == "invalid.url"


@pytest.mark.parametrize("client_kind", CLIENTS)
def test_non_ig_hosts_are_left_alone(
    instrumented, client_kind, ig_stub, telemetry, fresh_metrics
):
    other = ig_stub.replace("127.0.0.1", "localhost")
    _send(client_kind, "GET", f"{other}/accounts", headers=HEADERS)
    assert not _duration_points(fresh_metrics)
    for span in telemetry.finished_spans():
        assert "url.template" not in span.attributes


@pytest.mark.parametrize("client_kind", CLIENTS)
def test_session_tokens_never_leave(
    instrumented, client_kind, ig_stub, telemetry, fresh_metrics, monkeypatch
):
    response = _send(
        client_kind, "POST", f"{ig_stub}/session", headers=HEADERS,
        data=json.dumps({"identifier": "me", "password": "hunter2-password"}),
    )
    assert response.headers["CST"] == CST
    dumped = _dump(telemetry, fresh_metrics)
    for secret in (*SECRETS, "hunter2-password"):
        assert secret not in dumped


async def test_async_httpx_gives_one_enriched_span(
    instrumented, ig_stub, telemetry, fresh_metrics
):
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{ig_stub}/confirms/REF42", headers=HEADERS)
    assert response.json()["dealId"] == "DIAAAA42"
    span = _only_span(telemetry)
    assert span.name == "GET /confirms/{dealReference}"
    assert span.attributes["ig.deal.status"] == "ACCEPTED"
    assert _duration_points(fresh_metrics)[0].count == 1


async def test_async_httpx_error_passes_through(instrumented, fresh_metrics):
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://127.0.0.1:9/gateway/deal/positions")
    assert _duration_points(fresh_metrics)[0].attributes["error.type"]


def test_custom_httpx_transport_gets_a_span(
    instrumented, telemetry, fresh_metrics
):
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"errorCode": "error.position.notfound"})

    client = httpx.Client(transport=httpx.MockTransport(answer))
    response = client.get("http://127.0.0.1/gateway/deal/positions/DIAAAA1")
    assert response.json()["errorCode"] == "error.position.notfound"
    span = _only_span(telemetry)
    assert span.name == "GET /positions/{dealId}"
    assert span.attributes["ig.error_code"] == "error.position.notfound"
    assert "traceparent" in response.request.headers


def _dump(telemetry, fresh_metrics) -> str:
    parts = [span.to_json() for span in telemetry.finished_spans()]
    parts += [item.log_record.to_json() for item in telemetry.logs.get_finished_logs()]
    data = fresh_metrics.reader.get_metrics_data()
    parts.append(data.to_json() if data else "")
    return "\n".join(parts)


def test_user_hooks_on_contrib_instrumentors_keep_running(
    ig_stub, telemetry, fresh_metrics
):
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    from ig_otel import IGInstrumentor

    seen: list[str] = []

    def httpx_hook(span, request, response):
        seen.append("httpx")

    def requests_hook(span, request, response):
        seen.append("requests")

    httpx_contrib, requests_contrib = HTTPXClientInstrumentor(), RequestsInstrumentor()
    httpx_contrib.instrument(tracer_provider=telemetry.tracer_provider,
                             response_hook=httpx_hook)
    requests_contrib.instrument(tracer_provider=telemetry.tracer_provider,
                                response_hook=requests_hook)
    ig = IGInstrumentor()
    ig.instrument(hosts=("127.0.0.1",), meter_provider=fresh_metrics.provider,
                  tracer_provider=telemetry.tracer_provider)
    try:
        _send("httpx", "GET", f"{ig_stub}/accounts", headers=HEADERS)
        _send("requests", "GET", f"{ig_stub}/accounts", headers=HEADERS)
    finally:
        ig.uninstrument()
        httpx_contrib.uninstrument()
        requests_contrib.uninstrument()

    assert seen == ["httpx", "requests"]
    assert [span.name for span in telemetry.finished_spans()] == [
        "GET /accounts", "GET /accounts",
    ]


@pytest.mark.parametrize("client_kind", CLIENTS)
def test_an_instrumentation_bug_is_logged_once_and_calls_go_on(
    instrumented, client_kind, ig_stub, monkeypatch, caplog
):
    import ig_otel._rest as rest

    def broken(*args, **kwargs):
        raise RuntimeError("instrumentation bug")

    monkeypatch.setattr(rest, "_request_attributes", broken)
    monkeypatch.setattr(rest, "_metric_base", broken)
    caplog.set_level("DEBUG", logger="ig_otel")
    for _ in range(3):
        response = _send(client_kind, "GET", f"{ig_stub}/accounts", headers=HEADERS)
        assert response.status_code == 200
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) <= 2  # one per failing step, not one per call
    assert all("instrumentation failed" in r.getMessage() for r in warnings)


@pytest.mark.parametrize("client_kind", CLIENTS)
def test_the_callers_exception_object_passes_through_untouched(
    instrumented, client_kind
):
    def boom(*args, **kwargs):
        raise original

    original = ValueError("from the transport")
    if client_kind == "requests":
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        adapter = HTTPAdapter()
        adapter.get_connection_with_tls_context = boom
        session.mount("http://", adapter)
        with pytest.raises(ValueError) as caught:
            session.get("http://127.0.0.1/gateway/deal/accounts")
    else:
        transport = httpx.HTTPTransport()
        transport._pool.handle_request = boom
        client = httpx.Client(transport=transport)
        with client, pytest.raises(ValueError) as caught:
            client.get("http://127.0.0.1/gateway/deal/accounts")
    assert caught.value is original


def test_instrument_client_with_a_custom_transport_still_gives_one_span(
    telemetry, fresh_metrics
):
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    from ig_otel import IGInstrumentor

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"accounts": []})

    client = httpx.Client(transport=httpx.MockTransport(answer))
    HTTPXClientInstrumentor.instrument_client(
        client, tracer_provider=telemetry.tracer_provider
    )
    ig = IGInstrumentor()
    ig.instrument(hosts=("127.0.0.1",), meter_provider=fresh_metrics.provider,
                  tracer_provider=telemetry.tracer_provider)
    try:
        client.get("http://127.0.0.1/gateway/deal/accounts")
    finally:
        ig.uninstrument()
        HTTPXClientInstrumentor.uninstrument_client(client)
    assert [span.name for span in telemetry.finished_spans()] == ["GET /accounts"]

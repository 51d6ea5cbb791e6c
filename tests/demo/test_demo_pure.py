"""The pure parts of the demo and the load test: no I/O, no sleeps."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ig_otel._demo import (
    WEIGHTS,
    bucket_quantile,
    budgets,
    format_summary,
    otlp_protocol,
    otlp_wanted,
    summarize_events,
)
from ig_otel._loadtest import (
    NORMAL_PROFILE,
    LoadProfile,
    build_report,
    format_report,
    memory_growth,
    percentile,
    plan_actions,
)


def test_percentile_interpolates_between_ranks():
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0.0) == 1.0
    assert percentile(values, 1.0) == 4.0
    assert percentile(values, 0.5) == pytest.approx(2.5)
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([], 0.5) is None


def test_plan_spreads_polls_and_deals_at_the_profile_rate():
    profile = LoadProfile(polls_per_minute=12, deals_per_minute=3)
    plan = plan_actions(profile, rate=1.0, duration=60.0)
    kinds = [kind for _, kind in plan]
    assert kinds.count("poll") == 12 and kinds.count("deal") == 3
    assert [t for t, _ in plan] == sorted(t for t, _ in plan)


def test_plan_scales_with_rate_and_offsets_bots():
    profile = LoadProfile(polls_per_minute=6, deals_per_minute=0)
    fast = plan_actions(profile, rate=10.0, duration=60.0)
    assert len(fast) == 60
    shifted = plan_actions(profile, rate=1.0, duration=60.0, offset=0.5)
    assert shifted[0] == (5.0, "poll")
    assert plan_actions(profile, rate=0.0, duration=60.0) == []


def test_normal_profile_is_inside_ig_live_limits():
    per_minute = NORMAL_PROFILE.rest_calls_per_second() * 60
    assert NORMAL_PROFILE.polls_per_minute < 30
    assert per_minute == pytest.approx(21.0)
    assert NORMAL_PROFILE.updates_per_second(rate=2.0) == 40.0


def test_memory_growth_ignores_warm_up_and_fits_a_slope():
    samples = [(0.0, 10.0), (5.0, 50.0)] + [(10.0 + t, 60.0 + t / 60) for t in
                                            range(0, 120, 10)]
    growth = memory_growth(samples, warmup=10.0)
    assert growth["first_mb"] == 60.0
    assert growth["slope_mb_per_min"] == pytest.approx(1.0, abs=1e-6)
    assert growth["samples"] == 12
    flat = memory_growth([(t, 80.0) for t in range(20)], warmup=5.0)
    assert flat["growth_mb"] == 0.0 and flat["slope_mb_per_min"] == 0.0
    assert memory_growth([(1.0, 5.0)], warmup=5.0)["growth_mb"] is None


def phase(rest: float, p50: float, cpu: float) -> dict:
    return {"rest_per_s": rest, "updates_per_s": 100.0, "cpu_seconds": cpu,
            "latency_ms": {"p50": p50, "p95": p50 * 2, "p99": p50 * 3},
            "memory": {"last_mb": 60.0, "growth_mb": 0.1, "slope_mb_per_min": 0.0},
            "errors": {"HTTP 503": 2}, "error_count": 2}


def test_report_gives_on_off_ratios_and_readable_lines():
    settings = {"bots": 10, "rate": 2.0, "duration": 30.0, "warmup": 5.0,
                "scenario": None, "target_rest_per_s": 7.0,
                "target_updates_per_s": 800.0}
    report = build_report(settings, {"off": phase(7.0, 2.0, 10.0),
                                     "on": phase(7.0, 2.5, 12.0)})
    overhead = report["overhead_on_vs_off"]
    assert overhead["cpu_seconds"] == 1.2
    assert overhead["latency_p50"] == 1.25
    assert overhead["rest_throughput"] == 1.0
    text = "\n".join(format_report(report))
    assert "20x normal volume" in text
    assert "CPU x1.20" in text and "errors (on): HTTP 503 2" in text


def test_bucket_quantile_interpolates_inside_the_bucket():
    bounds = [0.1, 0.2, 0.5]
    assert bucket_quantile(bounds, [0, 10, 0, 0], 0.5) == pytest.approx(0.15)
    assert bucket_quantile(bounds, [0, 0, 0, 4], 0.5, high=2.0) == pytest.approx(1.25)
    assert bucket_quantile(bounds, [4, 0, 0, 0], 1.0, low=0.01, high=0.05) == 0.05
    assert bucket_quantile(bounds, [0, 0, 0, 0], 0.5) is None


def record(name: str | None, **attributes: object) -> SimpleNamespace:
    return SimpleNamespace(log_record=SimpleNamespace(event_name=name,
                                                      attributes=attributes))


def test_events_are_counted_by_name_and_telling_attribute():
    events = summarize_events([
        record("ig.circuit_breaker.state_change", **{"ig.circuit_breaker.to": "open"}),
        record("ig.circuit_breaker.state_change", **{"ig.circuit_breaker.to": "open"}),
        record("ig.stream.status_change", **{"ig.stream.status": "stalled"}),
        record(None),
    ])
    assert events == {"ig.circuit_breaker.state_change": {"to=open": 2},
                      "ig.stream.status_change": {"status=stalled": 1}}


def test_summary_lines_show_spans_metrics_and_events():
    summary = {
        "spans": {"GET /positions": {"count": 3, "errors": 1, "p50_ms": 1.0,
                                     "p95_ms": 9.0}},
        "metrics": {"ig.stream.reconnects": [{"attributes": {}, "value": 1}],
                    "ig.rest.request.duration": [{
                        "attributes": {"url.template": "/positions",
                                       "ig.environment": "other"},
                        "count": 3, "sum": 0.1, "p50": 0.002, "p95": 1.5}]},
        "events": {"ig.deal.rejected": {"reason=MARKET_CLOSED": 1}},
    }
    text = "\n".join(format_summary(summary))
    assert "GET /positions: 3, p50 1.0 ms, p95 9.0 ms, 1 with error status" in text
    assert "url.template=/positions: count=3 p50=2.0ms p95=1.50s" in text
    assert "ig.environment" not in text
    assert "(all): 1" in text and "reason=MARKET_CLOSED 1" in text


def test_otlp_follows_the_sdk_variables():
    assert not otlp_wanted({})
    assert otlp_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4317"})
    assert otlp_wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318"})
    assert otlp_protocol({}) == "grpc"
    assert otlp_protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}) == (
        "http/protobuf")


def test_phase_budgets_share_the_duration_by_weight():
    shares = budgets(24.0)
    assert set(shares) == set(WEIGHTS)
    assert sum(shares.values()) == pytest.approx(20.0)
    assert budgets(1.0) == dict.fromkeys(WEIGHTS, 0.0)

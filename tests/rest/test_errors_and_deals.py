from __future__ import annotations

import json

import pytest

from ig_otel._deals import DealTracker, confirmation_from, load_json_object
from ig_otel._errors import allowance_exceeded, parse_error_code
from ig_otel._telemetry import Allowance


def test_parse_error_code_reads_ig_error_bodies():
    body = json.dumps({"errorCode": "error.security.client-token-invalid"})
    assert parse_error_code(body.encode()) == "error.security.client-token-invalid"


def test_parse_error_code_ignores_non_ig_bodies():
    assert parse_error_code(b"<html>405</html>") is None
    assert parse_error_code(b"[1, 2]") is None
    assert parse_error_code(b"") is None
    assert parse_error_code(b'{"errorCode": 5}') is None


def test_parse_error_code_bounds_strange_codes():
    body = json.dumps({"errorCode": "has spaces and / slashes"}).encode()
    assert parse_error_code(body) == "_OTHER"


def test_allowance_errors_name_the_allowance_and_scope():
    code = "error.public-api.exceeded-account-trading-allowance"
    assert allowance_exceeded(code) == (Allowance.TRADING, "account")
    code = "error.public-api.exceeded-api-key-allowance"
    assert allowance_exceeded(code) == (Allowance.NON_TRADING, "app")
    assert allowance_exceeded("error.security.api-key-invalid") is None


def test_confirmation_from_reads_status_and_reason():
    document = load_json_object(json.dumps({
        "dealReference": "REF1", "dealId": "DIAAAA1", "dealStatus": "REJECTED",
        "reason": "INSUFFICIENT_FUNDS", "epic": "CS.D.EURUSD.MINI.IP",
    }))
    confirmation = confirmation_from(document)
    assert confirmation is not None
    assert confirmation.rejected
    assert confirmation.reason == "INSUFFICIENT_FUNDS"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tracker_times_first_confirmation_per_source():
    clock = FakeClock()
    tracker = DealTracker(clock=clock)
    tracker.sent("REF1")
    clock.now += 0.25
    assert tracker.confirmed("REF1", "rest") == 0.25
    assert tracker.confirmed("REF1", "rest") is None
    clock.now += 0.25
    assert tracker.confirmed("REF1", "stream") == 0.5
    assert tracker.confirmed("UNKNOWN", "rest") is None


def test_tracker_forgets_old_and_excess_references():
    clock = FakeClock()
    tracker = DealTracker(capacity=2, max_age=10, clock=clock)
    for reference in ("A", "B", "C"):
        tracker.sent(reference)
    assert tracker.confirmed("A", "rest") is None
    clock.now += 11
    tracker.sent("D")
    assert tracker.confirmed("B", "rest") is None
    assert tracker.confirmed("D", "rest") == 0.0


def test_a_confirmation_seen_before_the_dealing_response_counts_as_immediate():
    clock = FakeClock()
    tracker = DealTracker(clock=clock)
    assert tracker.confirmed("REF9", "stream") is None
    clock.now += 0.2
    assert tracker.sent("REF9") == [("stream", 0.0)]
    assert tracker.confirmed("REF9", "stream") is None
    clock.now += 0.1
    assert tracker.confirmed("REF9", "rest") == pytest.approx(0.1)


def test_early_confirmations_of_unknown_deals_are_bounded():
    clock = FakeClock()
    tracker = DealTracker(capacity=3, max_age=5, clock=clock)
    for number in range(10):
        tracker.confirmed(f"OTHER{number}", "stream")
    assert len(tracker._early) == 3
    clock.now += 6
    tracker.confirmed("LAST", "stream")
    assert list(tracker._early) == ["LAST"]

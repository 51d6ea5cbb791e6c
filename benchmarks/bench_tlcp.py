"""Throughput of the TLCP codec's hot path: ``U`` lines to events.

Run: ``pytest benchmarks/bench_tlcp.py --benchmark-enable``; the printed
``lines/s`` extra info is the figure to compare with the 500,000 target.
"""

from __future__ import annotations

import sys

from ig_otel._tlcp import NotificationReader, UpdateDecoder, join_lines

LINES = 10_000
_UPDATE_LINES = [
    f"U,{i % 5 + 1},{i % 3 + 1},1.{i % 997:04d}|1.{(i + 3) % 997:04d}||"
    f"{1700000000000 + i}|#"
    for i in range(LINES)
]
MESSAGES_OF_ONE = [line + "\r\n" for line in _UPDATE_LINES]
PACKED = [join_lines(_UPDATE_LINES[i : i + 10]) for i in range(0, LINES, 10)]


def _rate(benchmark) -> float:
    rate = LINES / benchmark.stats.stats.mean
    benchmark.extra_info["lines/s"] = round(rate)
    sys.stdout.write(f"\n{benchmark.name}: {rate:,.0f} U lines/s\n")
    return rate


def test_parse_one_update_per_message(benchmark):
    reader = NotificationReader()

    def run():
        for message in MESSAGES_OF_ONE:
            reader.feed(message)

    benchmark(run)
    _rate(benchmark)


def test_parse_ten_updates_per_message(benchmark):
    reader = NotificationReader()

    def run():
        for message in PACKED:
            reader.feed(message)

    benchmark(run)
    _rate(benchmark)


def test_parse_and_fully_decode(benchmark):
    reader = NotificationReader()
    decoders = {sub: UpdateDecoder(5) for sub in range(1, 6)}

    def run():
        for message in PACKED:
            for event in reader.feed(message):
                decoders[event.sub_id].decode(event.item, event.raw)

    benchmark(run)
    _rate(benchmark)

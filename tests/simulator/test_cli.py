"""``ig-otel simulate`` and ``ig-otel scenarios``."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest
import requests

from ig_otel._cli import COMMANDS, main
from ig_otel.simulator import SCENARIOS

FIRST_LINE = re.compile(
    r"IG simulator: REST (http://127\.0\.0\.1:(\d+)/gateway/deal)  "
    r"Lightstreamer (http://127\.0\.0\.1:\d+)$")


def test_scenarios_lists_one_line_per_scenario(capsys):
    assert main(["scenarios"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(SCENARIOS)
    assert all(SCENARIOS[line.split()[0]].description in line for line in lines)


@pytest.mark.parametrize("argv", [
    ["simulate", "--port", "http"],
    ["simulate", "--port", "70000"],
    ["simulate", "--scenario", "meteor-strike"],
    ["simulate", "--seed", "x"],
    ["nonsense"],
    [],
])
def test_bad_arguments_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_subcommands_are_registered_in_one_table():
    assert {"simulate", "scenarios"} <= set(COMMANDS)


def test_simulate_prints_urls_first_serves_and_stops_on_ctrl_c():
    process = subprocess.Popen(
        [sys.executable, "-m", "ig_otel._cli", "simulate", "--port", "0",
         "--seed", "3", "--scenario", "latency"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline().rstrip("\n")
        match = FIRST_LINE.match(first)
        assert match, first
        response = requests.post(match.group(1) + "/session", timeout=5,
                                 headers={"X-IG-API-KEY": "sim-api-key-0001"},
                                 json={"identifier": "sim_user",
                                       "password": "sim-password"})
        assert response.json()["lightstreamerEndpoint"] == match.group(3)
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_version_names_the_package_version(capsys):
    from ig_otel import __version__
    from ig_otel._cli import main

    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"ig-otel {__version__}"

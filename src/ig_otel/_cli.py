"""The ``ig-otel`` command line.

Each subcommand is a pair of functions registered in :data:`COMMANDS`: one
adds its arguments to an argparse sub-parser, the other runs it and answers
the exit status. Adding a subcommand is adding one entry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ig_otel._version import __version__

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, argument setup and runner."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"port must be an integer, got {text!r}"
        ) from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {port}")
    return port


def _scenario(text: str) -> str:
    from ig_otel.simulator import SCENARIOS

    if text not in SCENARIOS:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {text!r}; run 'ig-otel scenarios' to list them"
        )
    return text


def _configure_simulate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8080,
                        help="TCP port, 0 for any free one (default: 8080)")
    parser.add_argument("--scenario", type=_scenario, action="append", default=[],
                        metavar="NAME",
                        help="fault scenario active from the start (repeatable)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of prices, ids and faults (default: 0)")


def _run_simulate(args: argparse.Namespace) -> int:
    from ig_otel.simulator import Simulator

    simulator = Simulator(host=args.host, port=args.port,
                          scenarios=args.scenario, seed=args.seed)

    async def serve() -> None:
        async with simulator:
            print(f"IG simulator: REST {simulator.rest_url}  "
                  f"Lightstreamer {simulator.stream_url}", flush=True)
            if args.scenario:
                print(f"active scenarios: {', '.join(args.scenario)}", flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        print("IG simulator stopped", flush=True)
    except OSError as error:
        print(f"ig-otel simulate: cannot serve on {args.host}:{args.port}: {error}",
              file=sys.stderr)
        return 1
    return 0


def _configure_scenarios(parser: argparse.ArgumentParser) -> None:
    pass


def _run_scenarios(args: argparse.Namespace) -> int:
    from ig_otel.simulator import SCENARIOS

    width = max(len(name) for name in SCENARIOS)
    for name, spec in SCENARIOS.items():
        print(f"{name:<{width}}  {spec.description}")
    return 0


def _positive(kind: type) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
        return value
    return parse


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=_positive(float), default=24.0,
                        metavar="S",
                        help="seconds the sample bot runs (default: 24)")
    parser.add_argument("--json", metavar="PATH",
                        help="also write the summary as JSON to PATH")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the simulator (default: 0)")


def _run_demo(args: argparse.Namespace) -> int:
    from ig_otel._demo import DemoOptions, run_demo

    return run_demo(DemoOptions(duration=args.duration, json_path=args.json,
                                seed=args.seed, verbose=args.verbose))


def _configure_loadtest(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bots", type=_positive(int), default=10,
                        help="simulated bots (default: 10)")
    parser.add_argument("--duration", type=_positive(float), default=30.0,
                        metavar="S",
                        help="measured seconds per phase (default: 30)")
    parser.add_argument("--rate", type=_positive(float), default=1.0,
                        help="multiplier of each bot's normal trading volume "
                             "(default: 1)")
    parser.add_argument("--warmup", type=float, default=5.0, metavar="S",
                        help="seconds before measuring starts (default: 5)")
    parser.add_argument("--scenario", type=_scenario, metavar="NAME",
                        help="fault scenario active on the simulator throughout")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the simulator (default: 0)")
    parser.add_argument("--json", metavar="PATH",
                        help="also write every number as JSON to PATH")


def _run_loadtest(args: argparse.Namespace) -> int:
    from ig_otel._loadtest import LoadSettings, run_loadtest

    settings = LoadSettings(bots=args.bots, duration=args.duration, rate=args.rate,
                            warmup=max(args.warmup, 0.0), scenario=args.scenario,
                            seed=args.seed)
    try:
        return run_loadtest(settings, args.json)
    except KeyboardInterrupt:
        print("ig-otel loadtest: interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError, OSError) as error:
        print(f"ig-otel loadtest: {error}", file=sys.stderr)
        return 1


#: Subcommands by name.
COMMANDS: dict[str, Command] = {
    "simulate": Command("serve the IG simulator until interrupted",
                        _configure_simulate, _run_simulate),
    "scenarios": Command("list the simulator's fault scenarios",
                         _configure_scenarios, _run_scenarios),
    "demo": Command("run an instrumented sample bot against the embedded "
                    "simulator and summarize the telemetry",
                    _configure_demo, _run_demo),
    "loadtest": Command("drive many simulated bots, instrumentation off then on, "
                        "and report throughput, latency, overhead and memory",
                        _configure_loadtest, _run_loadtest),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="ig-otel",
        description="OpenTelemetry observability and resilience for IG trading bots.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v info, -vv debug)")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help,
                                    description=command.help)
        command.configure(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ig-otel`` command; answers the exit status."""
    args = build_parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(BrokenPipeError):
        return COMMANDS[args.command].run(args)
    return 1


if __name__ == "__main__":
    sys.exit(main())

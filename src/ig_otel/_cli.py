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


#: Subcommands by name.
COMMANDS: dict[str, Command] = {
    "simulate": Command("serve the IG simulator until interrupted",
                        _configure_simulate, _run_simulate),
    "scenarios": Command("list the simulator's fault scenarios",
                         _configure_scenarios, _run_scenarios),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="ig-otel",
        description="OpenTelemetry observability and resilience for IG trading bots.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v info, -vv debug)")
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

"""Fault scenarios: what each one does, its parameters, and the decisions.

Pure: a :class:`ScenarioBook` holds the active scenarios, a clock and a
seeded random generator, and answers the questions the REST and stream
adapters ask ("is the API down?", "reject this deal?", "garble this
frame?"). Scenarios combine freely; several active at once each apply.
Random decisions come from one generator seeded by the simulator seed, so a
run with a given seed and call sequence is reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "SCENARIOS",
    "ActiveScenario",
    "ScenarioBook",
    "ScenarioError",
    "ScenarioSpec",
]

ParamValue = float | int | str | bool


class ScenarioError(ValueError):
    """An unknown scenario name or a bad scenario parameter."""


@dataclass(frozen=True)
class ScenarioSpec:
    """A fault scenario: its name, a one-line description, its parameters.

    Attributes:
        name: Name used on the command line, the admin endpoint and the API.
        description: One line for ``ig-otel scenarios``.
        params: Parameter names and defaults (the default's type is the type).
    """

    name: str
    description: str
    params: Mapping[str, ParamValue]

    def resolve(self, given: Mapping[str, object]) -> dict[str, ParamValue]:
        """Defaults overlaid with ``given``, each coerced to its default's type."""
        unknown = set(given) - set(self.params)
        if unknown:
            raise ScenarioError(
                f"scenario {self.name!r} has no parameter {sorted(unknown)[0]!r}; "
                f"known: {', '.join(self.params) or 'none'}"
            )
        resolved = dict(self.params)
        for key, value in given.items():
            resolved[key] = _coerce(self.name, key, value, self.params[key])
        return resolved


def _coerce(scenario: str, key: str, value: object, default: ParamValue) -> ParamValue:
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if isinstance(default, int):
            return int(value)  # type: ignore[arg-type]
        if isinstance(default, float):
            return float(value)  # type: ignore[arg-type]
        return str(value)
    except (TypeError, ValueError):
        raise ScenarioError(
            f"parameter {key!r} of scenario {scenario!r} must be a "
            f"{type(default).__name__}, got {value!r}"
        ) from None


def _spec(name: str, description: str, **params: ParamValue) -> ScenarioSpec:
    return ScenarioSpec(name, description, MappingProxyType(params))


#: Every fault scenario, by name.
SCENARIOS: Mapping[str, ScenarioSpec] = MappingProxyType({
    spec.name: spec
    for spec in (
        _spec("latency", "adds REST latency with occasional spikes",
              mean_ms=80.0, jitter_ms=40.0, spike_ms=1500.0, spike_probability=0.05),
        _spec("outage", "REST answers 5xx system.error for a window, then recovers",
              seconds=10.0, status=503, error_code="system.error"),
        _spec("allowance-exhaustion",
              "lowers the IG allowances so 403 allowance errors come fast",
              app_non_trading=10, account_non_trading=5, account_trading=5,
              historical_points=200),
        _spec("slow-confirms",
              "deal confirms 404 for a while over REST and arrive late on TRADE",
              rest_seconds=3.0, stream_seconds=2.0),
        _spec("rejected-deals", "deals are REJECTED with IG reasons",
              probability=1.0, reasons="INSUFFICIENT_FUNDS,MARKET_CLOSED"),
        _spec("confirm-405", "GET /confirms sporadically answers 405 with an HTML body",
              probability=0.5),
        _spec("stream-stall",
              "the stream goes silent (no PROBE, no updates), socket left open",
              seconds=0.0),
        _spec("stream-disconnect",
              "stream sessions are cut after a while by close, END or LOOP",
              after_seconds=2.0, mode="end"),
        _spec("reconnect-storm",
              "new stream sessions get END 48 right after CONOK, several times",
              count=3, after_seconds=0.2),
        _spec("malformed-frames", "garbage lines are mixed into stream messages",
              probability=0.2),
        _spec("ig-rejects-tlcp-2.5",
              "TLCP-2.5.0 sessions get CONERR 65 as IG's server answers"),
    )
})

_STREAM_MODES = ("close", "end", "loop")

#: Lines a TLCP client must skip: no SDK dispatch prefix (``U,``, ``CONOK``,
#: ``CS``...) starts any of them, or the SDK would try to act on it.
GARBAGE_LINES = (
    "XGARBAGE,1,2,3",
    "~~~not-tlcp~~~",
    "U-NOT-AN-UPDATE",
    "NOISE,%ZZ,%",
    "ZZ,unknown,tag",
)


@dataclass
class ActiveScenario:
    """A scenario switched on: its resolved parameters and when it started."""

    spec: ScenarioSpec
    params: dict[str, ParamValue]
    started: float
    uses: int = 0

    def param(self, key: str) -> ParamValue:
        return self.params[key]

    def as_dict(self) -> dict[str, object]:
        return {"name": self.spec.name, "params": dict(self.params),
                "started": self.started}


class ScenarioBook:
    """The active fault scenarios and the decisions they imply.

    Args:
        clock: Monotonic seconds.
        rng: Random generator (seed it for reproducible runs).
    """

    def __init__(self, clock: Callable[[], float], rng: random.Random) -> None:
        self._clock = clock
        self._rng = rng
        self._active: dict[str, ActiveScenario] = {}

    # -- switching --------------------------------------------------------

    def activate(self, name: str, **params: object) -> ActiveScenario:
        """Switch a scenario on (again), replacing its parameters.

        Raises:
            ScenarioError: unknown name, parameter or parameter type.
        """
        spec = SCENARIOS.get(name)
        if spec is None:
            raise ScenarioError(
                f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}"
            )
        resolved = spec.resolve(params)
        if name == "stream-disconnect" and resolved["mode"] not in _STREAM_MODES:
            raise ScenarioError(
                f"stream-disconnect mode must be one of {', '.join(_STREAM_MODES)}"
            )
        active = ActiveScenario(spec, resolved, self._clock())
        self._active[name] = active
        return active

    def deactivate(self, name: str) -> bool:
        """Switch a scenario off; False if it was not on."""
        return self._active.pop(name, None) is not None

    def clear(self) -> None:
        """Switch every scenario off."""
        self._active.clear()

    def active(self) -> list[ActiveScenario]:
        """The active scenarios in activation order."""
        return list(self._active.values())

    def get(self, name: str) -> ActiveScenario | None:
        """The active scenario of that name, if any."""
        return self._active.get(name)

    def _within(self, name: str, seconds_key: str = "seconds") -> ActiveScenario | None:
        # A scenario with a positive duration ends by itself; 0 means "until
        # switched off".
        active = self._active.get(name)
        if active is None:
            return None
        seconds = float(active.params.get(seconds_key, 0.0))
        if seconds > 0 and self._clock() - active.started >= seconds:
            return None
        return active

    def _chance(self, probability: float) -> bool:
        return probability >= 1.0 or self._rng.random() < probability

    # -- REST -------------------------------------------------------------

    def rest_delay(self) -> float:
        """Seconds to hold a REST answer (``latency``)."""
        active = self._active.get("latency")
        if active is None:
            return 0.0
        mean = float(active.params["mean_ms"])
        jitter = float(active.params["jitter_ms"])
        delay = max(0.0, mean + self._rng.uniform(-jitter, jitter))
        if self._chance(float(active.params["spike_probability"])):
            delay += float(active.params["spike_ms"])
        return delay / 1000.0

    def rest_outage(self) -> tuple[int, str] | None:
        """``(status, errorCode)`` while ``outage`` lasts, else None."""
        active = self._within("outage")
        if active is None:
            return None
        return int(active.params["status"]), str(active.params["error_code"])

    def allowance_overrides(self) -> dict[str, int]:
        """Allowance limits lowered by ``allowance-exhaustion``."""
        active = self._active.get("allowance-exhaustion")
        if active is None:
            return {}
        return {key: int(value) for key, value in active.params.items()}

    def confirm_hidden(self, age: float) -> bool:
        """Whether a confirm this many seconds old is still "not found"."""
        active = self._active.get("slow-confirms")
        return active is not None and age < float(active.params["rest_seconds"])

    def confirm_stream_delay(self) -> float:
        """Seconds to hold a streamed CONFIRMS (``slow-confirms``)."""
        active = self._active.get("slow-confirms")
        return 0.0 if active is None else float(active.params["stream_seconds"])

    def reject_reason(self) -> str | None:
        """A rejection reason for the next deal (``rejected-deals``), or None."""
        active = self._active.get("rejected-deals")
        if active is None or not self._chance(float(active.params["probability"])):
            return None
        reasons = [r.strip() for r in str(active.params["reasons"]).split(",")]
        reasons = [r for r in reasons if r] or ["UNKNOWN"]
        return self._rng.choice(reasons)

    def confirm_405(self) -> bool:
        """Whether this confirm GET answers 405 (``confirm-405``)."""
        active = self._active.get("confirm-405")
        return active is not None and self._chance(float(active.params["probability"]))

    # -- stream -----------------------------------------------------------

    def stream_stalled(self) -> bool:
        """Whether the stream must stay silent now (``stream-stall``)."""
        return self._within("stream-stall") is not None

    def stream_cut(self, session_age: float) -> str | None:
        """How to cut a stream session of this age: close, end, loop or None."""
        active = self._active.get("stream-disconnect")
        if active is None or session_age < float(active.params["after_seconds"]):
            return None
        return str(active.params["mode"])

    def storm_end(self) -> float | None:
        """Delay before ending a new session (``reconnect-storm``), or None.

        Each call that answers a delay uses up one of the storm's ``count``.
        """
        active = self._active.get("reconnect-storm")
        if active is None or active.uses >= int(active.params["count"]):
            return None
        active.uses += 1
        return float(active.params["after_seconds"])

    def garbage_line(self) -> str | None:
        """A garbage line to slip into the next message (``malformed-frames``)."""
        active = self._active.get("malformed-frames")
        if active is None or not self._chance(float(active.params["probability"])):
            return None
        return self._rng.choice(GARBAGE_LINES)

    def rejects_protocol(self, protocol: str | None) -> bool:
        """Whether a session speaking ``protocol`` gets ``CONERR,65``."""
        return (
            "ig-rejects-tlcp-2.5" in self._active
            and protocol is not None
            and "2.5.0" in protocol
        )

"""Exceptions raised by ig-otel.

The tree::

    IGOtelError
    ├── ConfigError            a bad OTEL_PYTHON_IG_* value or argument
    ├── CircuitOpenError       a breaker refused the call (also a
    │                          pybreaker.CircuitBreakerError)
    └── AllowanceExhaustedError
                               the rate limiter refused the call, or would
                               have had to wait longer than allowed

Instrumentation never raises any of these into the host program: only the
opt-in resilience features do, and only by design.
"""

from __future__ import annotations

import pybreaker

__all__ = [
    "AllowanceExhaustedError",
    "CircuitOpenError",
    "ConfigError",
    "IGOtelError",
]


class IGOtelError(Exception):
    """Base class of every error ig-otel raises on purpose."""


class ConfigError(IGOtelError, ValueError):
    """A configuration value is invalid.

    Attributes:
        variable: The environment variable or keyword argument at fault.
        value: The rejected value (never a secret: secrets are not config).
    """

    def __init__(self, variable: str, value: object, expected: str) -> None:
        self.variable = variable
        self.value = value
        super().__init__(
            f"{variable}={value!r} is not valid: expected {expected}."
        )


class CircuitOpenError(IGOtelError, pybreaker.CircuitBreakerError):
    """The circuit breaker guarding this call is open.

    Attributes:
        breaker: Name of the breaker that refused the call.
        retry_after: Seconds until the breaker lets a trial call through.
    """

    def __init__(self, breaker: str, retry_after: float) -> None:
        self.breaker = breaker
        self.retry_after = retry_after
        super().__init__(
            f"Circuit breaker {breaker!r} is open; retry in {retry_after:.1f} s."
        )


class AllowanceExhaustedError(IGOtelError):
    """The IG allowance for this call is spent for now.

    Attributes:
        allowance: The allowance that is spent (``trading``, ...).
        retry_after: Seconds until the call would fit in the allowance.
    """

    def __init__(self, allowance: str, retry_after: float) -> None:
        self.allowance = allowance
        self.retry_after = retry_after
        super().__init__(
            f"The IG {allowance} allowance is spent; retry in {retry_after:.1f} s."
        )

"""A small harness around the Lightstreamer SDK for simulator tests.

Works with SDK 1.0.x and 2.x (same listener API). Records status changes,
server errors and, per subscription, updates, errors and end of snapshot.
"""

from __future__ import annotations

import threading
from typing import Any

from ig_otel.simulator import Simulator

from .conftest import wait_for


class Recorder:
    """Client and subscription listener that records what happens."""

    def __init__(self) -> None:
        self.statuses: list[str] = []
        self.server_errors: list[tuple[int, str]] = []
        self.updates: list[tuple[str, dict[str, Any], bool]] = []
        self.errors: list[tuple[int, str]] = []
        self.subscribed = threading.Event()
        self.unsubscribed = threading.Event()
        self.snapshot_ends: list[str] = []

    # ClientListener
    def onStatusChange(self, status: str) -> None:
        self.statuses.append(status)

    def onServerError(self, code: int, message: str) -> None:
        self.server_errors.append((code, message))

    # SubscriptionListener
    def onSubscription(self) -> None:
        self.subscribed.set()

    def onSubscriptionError(self, code: int, message: str) -> None:
        self.errors.append((code, message))

    def onUnsubscription(self) -> None:
        self.unsubscribed.set()

    def onEndOfSnapshot(self, item: str, position: int) -> None:
        self.snapshot_ends.append(item)

    def onItemUpdate(self, update: Any) -> None:
        self.updates.append((update.getItemName(), dict(update.getChangedFields()),
                             update.isSnapshot()))

    @property
    def status(self) -> str:
        return self.statuses[-1] if self.statuses else ""


def connect(sim: Simulator, password: str, *, fast_timeouts: bool = True) -> tuple[
        Any, Recorder]:
    """A connected ``LightstreamerClient`` and its recorder."""
    from lightstreamer.client import LightstreamerClient

    client = LightstreamerClient(sim.stream_url, None)
    client.connectionDetails.setPassword(password)
    if fast_timeouts:
        options = client.connectionOptions
        options.setStalledTimeout(300)
        options.setReconnectTimeout(300)
        options.setRetryDelay(300)
        options.setFirstRetryMaxDelay(100)
        options.setSessionRecoveryTimeout(1000)
    recorder = Recorder()
    client.addListener(recorder)
    client.connect()
    return client, recorder


def subscribe(client: Any, mode: str, items: list[str], fields: list[str],
              adapter: str | None = None) -> tuple[Any, Recorder]:
    """Subscribe and return the subscription with its recorder."""
    from lightstreamer.client import Subscription

    subscription = Subscription(mode, items, fields)
    if adapter:
        subscription.setDataAdapter(adapter)
    recorder = Recorder()
    subscription.addListener(recorder)
    client.subscribe(subscription)
    return subscription, recorder


def ls_password(session: Any) -> str:
    """``CST-..|XST-..`` from a logged-in requests session."""
    return f"CST-{session.headers['CST']}|XST-{session.headers['X-SECURITY-TOKEN']}"


def disconnect(client: Any, recorder: Recorder) -> None:
    """Disconnect and wait for the DISCONNECTED status."""
    client.disconnect()
    wait_for(lambda: recorder.status == "DISCONNECTED", timeout=5)

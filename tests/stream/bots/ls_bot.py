"""A tiny IG price bot: REST login with requests, prices over SDK 2.x.

It knows nothing of OpenTelemetry; the tests run it, unchanged, under
``opentelemetry-instrument``. Where IG is comes from ``IG_*`` variables.
"""

from __future__ import annotations

import json
import os
import sys
import threading

import requests
from lightstreamer.client import LightstreamerClient, Subscription

UPDATES = 5


class Prices:
    def __init__(self) -> None:
        self.count = 0
        self.enough = threading.Event()

    def onItemUpdate(self, update) -> None:
        self.count += 1
        if self.count >= UPDATES:
            self.enough.set()


def main() -> int:
    base = os.environ["IG_REST_URL"]
    session = requests.Session()
    session.headers.update({"X-IG-API-KEY": os.environ["IG_API_KEY"],
                            "Content-Type": "application/json", "VERSION": "2"})
    answer = session.post(base + "/session", timeout=5, data=json.dumps({
        "identifier": os.environ["IG_USERNAME"],
        "password": os.environ["IG_PASSWORD"]}))
    answer.raise_for_status()
    body = answer.json()
    cst, xst = answer.headers["CST"], answer.headers["X-SECURITY-TOKEN"]

    client = LightstreamerClient(body["lightstreamerEndpoint"], None)
    client.connectionDetails.setUser(body["currentAccountId"])
    client.connectionDetails.setPassword(f"CST-{cst}|XST-{xst}")
    client.connect()
    prices = Prices()
    subscription = Subscription("MERGE", [f"MARKET:{os.environ['IG_EPIC']}"],
                                ["BID", "OFFER", "UPDATE_TIME"])
    subscription.addListener(prices)
    client.subscribe(subscription)
    got = prices.enough.wait(10)
    client.unsubscribe(subscription)
    client.disconnect()
    session.close()
    sys.stderr.write(f"BOT prices={prices.count}\n")
    return 0 if got else 1


if __name__ == "__main__":
    sys.exit(main())

"""A plain bot with no OpenTelemetry code: run it under opentelemetry-instrument."""

import json
import os
import sys

import httpx
import requests
from opentelemetry.util._importlib_metadata import entry_points

base = os.environ["IG_BASE_URL"]
headers = {"X-IG-API-KEY": "bot-api-key-secret", "VERSION": "2"}

with requests.Session() as session:
    login = session.post(
        f"{base}/session", headers=headers,
        data=json.dumps({"identifier": "bot", "password": "bot-password-secret"}),
    )
    headers["CST"] = login.headers["CST"]
    headers["X-SECURITY-TOKEN"] = login.headers["X-SECURITY-TOKEN"]
    session.get(f"{base}/accounts", headers=headers)

with httpx.Client() as client:
    client.post(f"{base}/positions/otc", headers=headers,
                content=json.dumps({"epic": "CS.D.EURUSD.MINI.IP"}))
    client.get(f"{base}/confirms/REF42", headers=headers)

order = [ep.name for ep in entry_points(group="opentelemetry_instrumentor")]
sys.stderr.write("LOAD-ORDER " + json.dumps(order) + "\n")

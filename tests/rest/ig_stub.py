"""A small IG-shaped loopback server that misbehaves on purpose.

The simulator is the faithful IG; this stub exists to script exact answers
(slow replies, odd bodies, tokens in headers) for adapter tests and the
REST benchmark.
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler

CST = "cst-secret-token-123"
XST = "xst-secret-token-456"
API_KEY = "api-key-secret-789"


def _answer(path: str, method: str) -> tuple[int, dict, dict | bytes]:
    tokens = {"CST": CST, "X-SECURITY-TOKEN": XST}
    table = {
        ("POST", "/gateway/deal/session"): (
            200, tokens, {"currentAccountId": "ACC1"}),
        ("DELETE", "/gateway/deal/session"): (204, {}, b""),
        ("GET", "/gateway/deal/accounts"): (200, {}, {"accounts": []}),
        ("POST", "/gateway/deal/positions/otc"): (200, {}, {"dealReference": "REF42"}),
        ("DELETE", "/gateway/deal/positions/otc"): (
            200, {}, {"dealReference": "REF43"}),
        ("GET", "/gateway/deal/confirms/REF42"): (200, {}, {
            "dealReference": "REF42", "dealId": "DIAAAA42", "dealStatus": "ACCEPTED",
            "reason": "SUCCESS", "epic": "CS.D.EURUSD.MINI.IP", "status": "OPEN",
        }),
        ("GET", "/gateway/deal/confirms/REF43"): (200, {}, {
            "dealReference": "REF43", "dealStatus": "REJECTED",
            "reason": "MARKET_CLOSED",
        }),
        ("GET", "/gateway/deal/markets/LIMITED.EPIC"): (403, {}, {
            "errorCode": "error.public-api.exceeded-account-allowance"}),
        ("GET", "/gateway/deal/positions/BAD"): (404, {}, {
            "errorCode": "error.position.notfound"}),
        ("GET", "/gateway/deal/prices/CS.D.EURUSD.MINI.IP"): (200, {}, {
            "prices": [], "metadata": {"allowance": {
                "remainingAllowance": 9644, "totalAllowance": 10000,
                "allowanceExpiry": 69976}}}),
        ("GET", "/gateway/deal/fail"): (500, {}, {"errorCode": "system.error"}),
    }
    return table.get((method, path.split("?")[0]), (404, {}, {
        "errorCode": "invalid.url"}))


class StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per answer and no Nagle delay, so keep-alive calls are fast.
    disable_nagle_algorithm = True
    wbufsize = 1 << 16

    def log_message(self, *args) -> None:
        return

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path.startswith("/gateway/deal/slow"):
            time.sleep(1.0)
        method = self.headers.get("_method", self.command).upper()
        status, headers, body = _answer(self.path, method)
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _handle

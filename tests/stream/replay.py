"""A minimal TLCP server that plays canned notification lines, fast.

Two uses the simulator cannot serve:

* ``OV`` (lost updates): the simulator never drops updates, so it never
  sends ``OV``; the lost-updates test plays one from here.
* The stream benchmark: the simulator paces its ticks, and a server that
  encodes each update while the client waits measures the server. Here every
  update is encoded into WebSocket frames before the client connects, and the
  whole script goes out in one ``sendall`` (run from its own process in the
  benchmark), so the client is the only thing being timed.

It speaks just enough TLCP for the Python SDKs and raw clients: ``wsok``,
``create_session`` (``CONOK``), ``control`` ``add`` (``REQOK`` + ``SUBOK``,
then the script, after every ``add``) and ``destroy``. The WebSocket side
is websockets' sans-I/O :class:`~websockets.server.ServerProtocol`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterable, Sequence

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from ig_otel import _tlcp as tlcp

__all__ = ["ReplayServer", "encode_frames", "price_updates"]


def encode_frames(messages: Iterable[str]) -> bytes:
    """Server-to-client text frames (unmasked) for ``messages``, concatenated."""
    return b"".join(
        Frame(Opcode.TEXT, message.encode()).serialize(mask=False)
        for message in messages
    )


def price_updates(count: int, sub_id: int = 1, stamp_ms: int = 0) -> list[str]:
    """``count`` PRICE updates (BIDPRICE1, ASKPRICE1, TIMESTAMP), one a message.

    Prices move every update and the timestamp always changes, as on IG.
    """
    messages = []
    previous = None
    for index in range(count):
        values = [f"1.{1000 + index % 500}", f"1.{1002 + index % 500}",
                  str(stamp_ms + index)]
        messages.append(tlcp.join_lines(
            [tlcp.encode_update(sub_id, 1, previous, values)]))
        previous = values
    return messages


class ReplayServer:
    """Serves connections on 127.0.0.1 (a thread each) until :meth:`stop`.

    Args:
        script: Messages sent once the first subscription is added, as
            pre-encoded frames (see :func:`encode_frames`) or as text.
        items, fields: The counts ``SUBOK`` announces.
    """

    def __init__(self, script: bytes | Sequence[str], items: int = 1,
                 fields: int = 3) -> None:
        self.script = script if isinstance(script, bytes) else encode_frames(script)
        self.items = items
        self.fields = fields
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ReplayServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        # shutdown() wakes a thread blocked in accept(); close() alone does not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        if self._thread is not None:
            self._thread.join(5)

    def serve_forever(self) -> None:
        while not self._stopping:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_one, args=(connection,),
                             daemon=True).start()

    def _serve_one(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(30)
            with contextlib.suppress(OSError):
                self._serve(connection)

    def _serve(self, connection: socket.socket) -> None:
        protocol = ServerProtocol(
            subprotocols=list(tlcp.SUBPROTOCOLS),
            select_subprotocol=_first_offered,
        )
        while True:
            data = connection.recv(65536)
            if not data:
                return
            protocol.receive_data(data)
            replies: list[str] = []
            for event in protocol.events_received():
                if isinstance(event, Request):
                    protocol.send_response(protocol.accept(event))
                elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    replies.extend(self._answer(event.data.decode()))
                elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                    return
            for reply in replies:
                if reply == "":
                    connection.sendall(b"".join(protocol.data_to_send()))
                    connection.sendall(self.script)
                else:
                    protocol.send_text(reply.encode())
            connection.sendall(b"".join(protocol.data_to_send()))

    def _answer(self, message: str) -> list[str]:
        replies = []
        for request in tlcp.parse_requests(message):
            if not isinstance(request, tlcp.Request):
                continue
            if request.name == "wsok":
                replies.append(tlcp.join_lines([tlcp.encode_wsok()]))
            elif request.name == "create_session":
                replies.append(tlcp.join_lines(
                    [tlcp.encode_conok("S1", 50000, 5000), tlcp.encode_cons()]))
            elif request.name == "control" and request.params.get("LS_op") == "add":
                sub_id = int(request.params.get("LS_subId", "1"))
                request_id = int(request.params.get("LS_reqId", "0"))
                replies.append(tlcp.join_lines([
                    tlcp.encode_reqok(request_id),
                    tlcp.encode_subok(sub_id, self.items, self.fields),
                ]))
                replies.append("")  # marker: the script goes here
        return replies


def _first_offered(protocol: ServerProtocol, offered: Sequence[str]) -> str | None:
    return offered[0] if offered else None

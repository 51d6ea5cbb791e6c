"""Sans-I/O codec for TLCP, the Lightstreamer text protocol, over WebSocket.

Shared by the simulator (server side) and the stream instrumentation (client
side). Strings in, events and strings out: no sockets, no asyncio, no clock.

Client to server, one WebSocket text message is ``<name>`` optionally followed
by CRLF-separated parameter lines (``control`` may batch several); each line is
``key=value`` pairs joined by ``&``, both sides form-encoded the way the SDK
does it (``urllib.parse.quote(s, safe="")``). :func:`parse_requests` and
:func:`encode_request` cover that direction.

Server to client, one message carries one or more notification lines separated
by CRLF (a bare LF is *not* a separator, exactly as the SDK splits). The
``encode_*`` functions build lines, :func:`join_lines` frames them,
:func:`parse_notification` turns one line into an event and
:class:`NotificationReader` turns whole messages into events. Malformed input
becomes a :class:`Malformed` value, never an exception.

``U`` lines are the hot path: :func:`parse_notification` stops at
``subId``/``itemIdx``/raw values and leaves field decoding to a per
subscription :class:`UpdateDecoder`, which callers run only when they need the
values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import quote, unquote, unquote_plus

__all__ = [
    "Malformed",
    "Notification",
    "NotificationReader",
    "Request",
    "UNCHANGED",
    "UnsupportedDiff",
    "Update",
    "UpdateDecoder",
    "encode_conerr",
    "encode_conf",
    "encode_conok",
    "encode_cons",
    "encode_clientip",
    "encode_cs",
    "encode_end",
    "encode_eos",
    "encode_error",
    "encode_loop",
    "encode_msgdone",
    "encode_msgfail",
    "encode_noop",
    "encode_ov",
    "encode_params",
    "encode_probe",
    "encode_prog",
    "encode_reqerr",
    "encode_reqok",
    "encode_request",
    "encode_servname",
    "encode_subcmd",
    "encode_subok",
    "encode_sync",
    "encode_unsub",
    "encode_update",
    "encode_value",
    "encode_wsok",
    "join_lines",
    "parse_notification",
    "parse_requests",
    "split_message",
]

CRLF = "\r\n"

#: Subprotocols the Python SDKs offer (1.0.x and 2.x).
SUBPROTOCOLS = ("TLCP-2.4.0.lightstreamer.com", "TLCP-2.5.0.lightstreamer.com")

# -- client to server -------------------------------------------------------


class Request:
    """One client request: its name and decoded parameters.

    A ``control`` message with several parameter lines yields one request per
    line, all named ``control``.
    """

    __slots__ = ("name", "params")

    def __init__(self, name: str, params: dict[str, str]) -> None:
        self.name = name
        self.params = params

    def __repr__(self) -> str:
        shown = {
            k: ("***" if k == "LS_password" else v) for k, v in self.params.items()
        }
        return f"Request({self.name!r}, {shown!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return self.name == other.name and self.params == other.params

    __hash__ = None  # type: ignore[assignment]


class Malformed:
    """A line (or message) that does not follow TLCP, and why."""

    __slots__ = ("line", "reason")
    tag = "MALFORMED"

    def __init__(self, line: str, reason: str) -> None:
        self.line = line
        self.reason = reason

    def __repr__(self) -> str:
        return f"Malformed({self.line[:60]!r}, {self.reason!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Malformed):
            return NotImplemented
        return self.line == other.line and self.reason == other.reason

    __hash__ = None  # type: ignore[assignment]


_REQUEST_NAMES = frozenset(
    ("wsok", "create_session", "bind_session", "control", "heartbeat", "msg")
)


def encode_params(params: Mapping[str, object]) -> str:
    """Form-encode one parameter line exactly as the SDK does."""
    return "&".join(
        quote(str(key), safe="") + "=" + quote(str(value), safe="")
        for key, value in params.items()
    )


def encode_request(name: str, *param_lines: Mapping[str, object]) -> str:
    """Build one client message: the request name, then one line per mapping.

    ``encode_request("wsok")`` gives ``wsok``; a batched control message is
    ``encode_request("control", add1, add2)``. No trailing CRLF, as the SDK.
    """
    return CRLF.join([name, *(encode_params(line) for line in param_lines)])


def _decode_params(line: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in line.split("&"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"parameter without a name=value form: {pair[:40]!r}")
        params[unquote_plus(key, errors="strict")] = unquote_plus(
            value, errors="strict"
        )
    return params


def parse_requests(message: str) -> list[Request | Malformed]:
    """Parse one client WebSocket text message into requests.

    Never raises: an unknown request name or an undecodable parameter line
    becomes a :class:`Malformed` in the list (the server answers ``ERROR``).
    """
    name, _, rest = message.partition(CRLF)
    if name not in _REQUEST_NAMES:
        return [Malformed(name[:40], "unknown request name")]
    lines = [line for line in rest.split(CRLF) if line] if rest else []
    if not lines:
        return [Request(name, {})]
    if name != "control" and len(lines) > 1:
        return [Malformed(name, "only control may carry several parameter lines")]

    requests: list[Request | Malformed] = []
    for line in lines:
        try:
            requests.append(Request(name, _decode_params(line)))
        except (ValueError, UnicodeDecodeError) as error:
            requests.append(Malformed(name, str(error)))
    return requests


# -- server to client: encoding --------------------------------------------

# Characters left literal in textual arguments: everything printable that
# cannot be confused with a separator or an escape.
_TEXT_SAFE = "!\"#$&'()*+-./:;<=>?@[\\]^_`{|}~"


def _text(value: object) -> str:
    # The SDK splits notification arguments on every comma and percent-decodes
    # messages, so commas, % and line breaks must travel encoded.
    return quote(str(value), safe=_TEXT_SAFE)


def encode_wsok() -> str:
    """``WSOK``: answer to ``wsok``; must precede ``CONOK``."""
    return "WSOK"


def encode_conok(
    session_id: str, request_limit: int, keepalive_ms: int, control_link: str = "*"
) -> str:
    """``CONOK``: session created or bound."""
    return f"CONOK,{session_id},{int(request_limit)},{int(keepalive_ms)},{control_link}"


def encode_conerr(code: int, message: str) -> str:
    """``CONERR``: session creation or bind refused."""
    return f"CONERR,{int(code)},{_text(message)}"


def encode_servname(name: str) -> str:
    """``SERVNAME``: server name (the SDK does not decode it)."""
    return f"SERVNAME,{_text(name)}"


def encode_clientip(address: str) -> str:
    """``CLIENTIP``: client address as the server sees it."""
    return f"CLIENTIP,{_text(address)}"


def encode_cons(bandwidth: float | str = "unlimited") -> str:
    """``CONS``: bandwidth constraint in kbps, ``unlimited`` or ``unmanaged``."""
    return f"CONS,{_text(bandwidth)}"


def encode_probe() -> str:
    """``PROBE``: keepalive."""
    return "PROBE"


def encode_noop(text: str = "") -> str:
    """``NOOP``: filler that restarts the client's keepalive timer."""
    return f"NOOP,{_text(text)}"


def encode_loop(expected_delay_ms: int = 0) -> str:
    """``LOOP``: the client must rebind the same session on a new connection."""
    return f"LOOP,{int(expected_delay_ms)}"


def encode_end(code: int, message: str) -> str:
    """``END``: the server closed the session."""
    return f"END,{int(code)},{_text(message)}"


def encode_reqok(request_id: int | None = None) -> str:
    """``REQOK`` (with the request id, or bare as a heartbeat reply)."""
    return "REQOK" if request_id is None else f"REQOK,{int(request_id)}"


def encode_reqerr(request_id: int, code: int, message: str) -> str:
    """``REQERR``: a control request failed."""
    return f"REQERR,{int(request_id)},{int(code)},{_text(message)}"


def encode_error(code: int, message: str) -> str:
    """``ERROR``: a request was not understood; the session ends."""
    return f"ERROR,{int(code)},{_text(message)}"


def encode_subok(sub_id: int, items: int, fields: int) -> str:
    """``SUBOK``: subscription active; counts must match the request."""
    return f"SUBOK,{int(sub_id)},{int(items)},{int(fields)}"


def encode_subcmd(
    sub_id: int, items: int, fields: int, key_field: int, command_field: int
) -> str:
    """``SUBCMD``: COMMAND-mode subscription active (1-based key/command)."""
    return (
        f"SUBCMD,{int(sub_id)},{int(items)},{int(fields)},"
        f"{int(key_field)},{int(command_field)}"
    )


def encode_conf(
    sub_id: int, max_frequency: float | str = "unlimited", filtered: bool = True
) -> str:
    """``CONF``: frequency configuration of a subscription."""
    mode = "filtered" if filtered else "unfiltered"
    return f"CONF,{int(sub_id)},{_text(max_frequency)},{mode}"


def encode_eos(sub_id: int, item: int) -> str:
    """``EOS``: end of snapshot of one item (DISTINCT and COMMAND only)."""
    return f"EOS,{int(sub_id)},{int(item)}"


def encode_cs(sub_id: int, item: int) -> str:
    """``CS``: snapshot of one item cleared."""
    return f"CS,{int(sub_id)},{int(item)}"


def encode_ov(sub_id: int, item: int, lost: int) -> str:
    """``OV``: the server dropped ``lost`` updates of one item."""
    return f"OV,{int(sub_id)},{int(item)},{int(lost)}"


def encode_unsub(sub_id: int) -> str:
    """``UNSUB``: unsubscription done."""
    return f"UNSUB,{int(sub_id)}"


def encode_sync(seconds_since_bind: int) -> str:
    """``SYNC``: server clock since bind."""
    return f"SYNC,{int(seconds_since_bind)}"


def encode_prog(progressive: int) -> str:
    """``PROG``: first data progressive on a recovery bind."""
    return f"PROG,{int(progressive)}"


def encode_msgdone(
    sequence: str, progressive: int, response: str | None = ""
) -> str:
    """``MSGDONE``; pass ``response=None`` for the 3-argument TLCP 2.4 form."""
    line = f"MSGDONE,{sequence},{int(progressive)}"
    return line if response is None else f"{line},{_text(response)}"


def encode_msgfail(sequence: str, progressive: int, code: int, message: str) -> str:
    """``MSGFAIL``: a client message failed."""
    return f"MSGFAIL,{sequence},{int(progressive)},{int(code)},{_text(message)}"


_VALUE_SPECIALS = re.compile("[|%\r\n]")
_VALUE_ESCAPES = {"|": "%7C", "%": "%25", "\r": "%0D", "\n": "%0A"}
_LEADING_ESCAPES = {"#": "%23", "$": "%24", "^": "%5E"}


def encode_value(value: str | None) -> str:
    """Encode one field value as a ``U`` token (never the "unchanged" form)."""
    if value is None:
        return "#"
    if value == "":
        return "$"
    if _VALUE_SPECIALS.search(value):
        value = _VALUE_SPECIALS.sub(lambda m: _VALUE_ESCAPES[m.group()], value)
    first = value[0]
    if first in _LEADING_ESCAPES:
        value = _LEADING_ESCAPES[first] + value[1:]
    return value


#: Shortest run of unchanged fields written as ``^n`` instead of empty tokens.
MIN_RUN = 4


def encode_update(
    sub_id: int,
    item: int,
    previous: Sequence[str | None] | None,
    current: Sequence[str | None],
    *,
    runs: bool = True,
) -> str:
    """Build a ``U`` line in compact form.

    Args:
        sub_id: Subscription id.
        item: 1-based item index.
        previous: Values last sent for this item, or None for a first update
            (which then carries every field).
        current: Values to send now; ``None`` is null.
        runs: Write runs of at least :data:`MIN_RUN` unchanged fields as
            ``^n`` (otherwise one empty token per unchanged field).
    """
    if previous is None or len(previous) != len(current):
        tokens = [encode_value(value) for value in current]
        return f"U,{int(sub_id)},{int(item)},{'|'.join(tokens)}"

    tokens = []
    run = 0
    for old, new in zip(previous, current, strict=True):
        if old == new:
            run += 1
            continue
        if run:
            tokens.extend(_unchanged(run, runs))
            run = 0
        tokens.append(encode_value(new))
    if run:
        tokens.extend(_unchanged(run, runs))
    return f"U,{int(sub_id)},{int(item)},{'|'.join(tokens)}"


def _unchanged(run: int, runs: bool) -> list[str]:
    if runs and run >= MIN_RUN:
        return [f"^{run}"]
    return [""] * run


def join_lines(lines: Iterable[str]) -> str:
    """Frame notification lines as one WebSocket message (CRLF after each)."""
    return "".join(line + CRLF for line in lines)


# -- server to client: parsing ---------------------------------------------


class Notification:
    """A non-``U`` notification: its tag and raw (still encoded) arguments."""

    __slots__ = ("tag", "args")

    def __init__(self, tag: str, args: tuple[str, ...]) -> None:
        self.tag = tag
        self.args = args

    def int_arg(self, index: int) -> int:
        """An argument as an integer (validated at parse time for known tags)."""
        return int(self.args[index])

    def text_arg(self, index: int, default: str = "") -> str:
        """A textual argument, percent-decoded; ``default`` when absent."""
        if index >= len(self.args):
            return default
        return unquote(self.args[index], errors="replace")

    def __repr__(self) -> str:
        return f"Notification({self.tag!r}, {self.args!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Notification):
            return NotImplemented
        return self.tag == other.tag and self.args == other.args

    __hash__ = None  # type: ignore[assignment]


class Update:
    """A ``U`` line: subscription id, 1-based item index and raw values."""

    __slots__ = ("sub_id", "item", "raw")
    tag = "U"

    def __init__(self, sub_id: int, item: int, raw: str) -> None:
        self.sub_id = sub_id
        self.item = item
        self.raw = raw

    def __repr__(self) -> str:
        return f"Update({self.sub_id}, {self.item}, {self.raw!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Update):
            return NotImplemented
        return (self.sub_id, self.item, self.raw) == (
            other.sub_id,
            other.item,
            other.raw,
        )

    __hash__ = None  # type: ignore[assignment]


Event = Notification | Update | Malformed

# tag -> (minimum args, maximum args or None, indexes that must be integers,
# whether the last argument is free text that may hold a raw comma).
_SHAPES: dict[str, tuple[int, int | None, tuple[int, ...], bool]] = {
    "WSOK": (0, 0, (), False),
    "PROBE": (0, 0, (), False),
    "CONOK": (4, 4, (1, 2), False),
    "CONERR": (1, 2, (0,), True),
    "END": (1, 2, (0,), True),
    "ERROR": (1, 2, (0,), True),
    "REQERR": (2, 3, (0, 1), True),
    "REQOK": (0, 1, (0,), False),
    "LOOP": (0, 1, (0,), False),
    "SERVNAME": (1, 1, (), True),
    "CLIENTIP": (1, 1, (), False),
    "CONS": (1, 1, (), False),
    "NOOP": (0, 1, (), True),
    "SYNC": (1, 1, (0,), False),
    "PROG": (1, 1, (0,), False),
    "SUBOK": (3, 3, (0, 1, 2), False),
    "SUBCMD": (5, 5, (0, 1, 2, 3, 4), False),
    "CONF": (3, 3, (0,), False),
    "EOS": (2, 2, (0, 1), False),
    "CS": (2, 2, (0, 1), False),
    "OV": (3, 3, (0, 1, 2), False),
    "UNSUB": (1, 1, (0,), False),
    "MSGDONE": (2, 3, (1,), True),
    "MSGFAIL": (3, 4, (1, 2), True),
}


def parse_notification(line: str) -> Event:
    """Parse one notification line (no CRLF); never raises."""
    if line.startswith("U,"):
        return _parse_update(line)
    tag, sep, rest = line.partition(",")
    shape = _SHAPES.get(tag)
    if shape is None:
        # Unknown tags (MPN and future ones) are ignored by the SDK; keep them.
        if not tag or not tag.isalnum():
            return Malformed(line, "not a notification")
        return Notification(tag, tuple(rest.split(",")) if sep else ())
    return _parse_shaped(line, tag, sep, rest, shape)


def _parse_update(line: str) -> Update | Malformed:
    parts = line.split(",", 3)
    if len(parts) != 4:
        return Malformed(line, "U needs subscription, item and values")
    try:
        return Update(int(parts[1]), int(parts[2]), parts[3])
    except ValueError:
        return Malformed(line, "U subscription and item must be integers")


def _parse_shaped(
    line: str,
    tag: str,
    sep: str,
    rest: str,
    shape: tuple[int, int | None, tuple[int, ...], bool],
) -> Notification | Malformed:
    low, high, int_indexes, free_text = shape
    if not sep:
        args: tuple[str, ...] = ()
    elif free_text and high is not None:
        args = tuple(rest.split(",", high - 1))
    else:
        args = tuple(rest.split(","))

    if len(args) < low or (high is not None and len(args) > high):
        return Malformed(line, f"{tag} takes {low} to {high} arguments")
    for index in int_indexes:
        if index < len(args) and not _is_int(args[index]):
            return Malformed(line, f"{tag} argument {index + 1} must be an integer")
    return Notification(tag, args)


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def split_message(message: str) -> list[str]:
    """Split a server message on CRLF, dropping empty pieces (as the SDK)."""
    return [line for line in message.split(CRLF) if line]


class NotificationReader:
    """Turns server WebSocket messages into events; never raises.

    Binary frames and anything that is not text become :class:`Malformed`.
    """

    __slots__ = ()

    def feed(self, message: str | bytes) -> list[Event]:
        """Parse every line of one message, in order."""
        if not isinstance(message, str):
            return [Malformed("<binary>", "TLCP messages are text")]
        try:
            return [parse_notification(line) for line in message.split(CRLF) if line]
        except Exception as error:  # a codec bug must not reach the caller
            return [Malformed(message[:200], f"parser failure: {error!r}")]


# -- U value decoding -------------------------------------------------------


class _Unchanged:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"


#: Marker for a field an update left unchanged (before any value was known).
UNCHANGED = _Unchanged()


class UnsupportedDiff:
    """A ``^P`` (JSON patch) or ``^T`` (TLCP diff) token, passed through."""

    __slots__ = ("kind", "diff")

    def __init__(self, kind: str, diff: str) -> None:
        self.kind = kind
        self.diff = diff

    def __repr__(self) -> str:
        return f"UnsupportedDiff({self.kind!r}, {self.diff!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UnsupportedDiff):
            return NotImplemented
        return (self.kind, self.diff) == (other.kind, other.diff)

    __hash__ = None  # type: ignore[assignment]


FieldValue = str | None | UnsupportedDiff
_BAD_PERCENT = re.compile("%(?![0-9A-Fa-f]{2})")


def decode_token(token: str) -> str:
    """Percent-decode one literal token strictly (UTF-8 ``%XX``).

    Raises:
        ValueError: a ``%`` not followed by two hex digits, or bad UTF-8.
    """
    if "%" not in token:
        return token
    if _BAD_PERCENT.search(token):
        raise ValueError("% not followed by two hex digits")
    return unquote(token, errors="strict")


class DecodedUpdate:
    """Full field values of one item after an update, and which changed."""

    __slots__ = ("item", "values", "changed")

    def __init__(
        self, item: int, values: tuple[FieldValue, ...], changed: tuple[int, ...]
    ) -> None:
        self.item = item
        self.values = values
        self.changed = changed

    def __repr__(self) -> str:
        return f"DecodedUpdate({self.item}, {self.values!r}, {self.changed!r})"


class UpdateDecoder:
    """Rebuilds full field values of one subscription from compact ``U`` lines.

    Keeps the last values of each item. A field never set is ``None`` (as the
    SDK reports it); a ``^P``/``^T`` diff yields :class:`UnsupportedDiff`.
    """

    __slots__ = ("fields", "_last")

    def __init__(self, fields: int) -> None:
        self.fields = fields
        self._last: dict[int, list[FieldValue]] = {}

    def decode(self, item: int, raw: str) -> DecodedUpdate | Malformed:
        """Apply one update's raw values; never raises."""
        try:
            return self._decode(item, raw)
        except (ValueError, UnicodeDecodeError) as error:
            return Malformed(raw[:200], str(error))

    def clear(self, item: int | None = None) -> None:
        """Forget the values of one item (``CS``) or of every item."""
        if item is None:
            self._last.clear()
        else:
            self._last.pop(item, None)

    def _decode(self, item: int, raw: str) -> DecodedUpdate | Malformed:
        last = self._last.get(item)
        values: list[FieldValue] = list(last) if last else [None] * self.fields
        changed: list[int] = []
        index = 0
        for token in raw.split("|"):
            if index >= self.fields:
                return Malformed(raw[:200], "more values than fields")
            if not token:
                index += 1
                continue
            first = token[0]
            if first == "^":
                skip = _run_length(token)
                if skip is None:
                    diff = decode_token(token[2:])
                    values[index] = UnsupportedDiff(token[1], diff)
                    changed.append(index)
                    index += 1
                    continue
                index += skip
                continue
            if token == "#":
                values[index] = None
            elif token == "$":
                values[index] = ""
            else:
                values[index] = decode_token(token)
            changed.append(index)
            index += 1
        if index > self.fields:
            return Malformed(raw[:200], "unchanged run past the last field")
        self._last[item] = values
        return DecodedUpdate(item, tuple(values), tuple(changed))


def _run_length(token: str) -> int | None:
    body = token[1:]
    if body.isdigit():
        count = int(body)
        if count < 1:
            raise ValueError("^0 is not a run")
        return count
    if body[:1] in ("P", "T"):
        return None
    raise ValueError(f"unknown ^ token {token[:20]!r}")

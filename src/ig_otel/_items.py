"""IG Lightstreamer item names turned into bounded metric attributes.

IG item names carry account ids (``PRICE:{accountId}:{epic}``,
``ACCOUNT:{accountId}``, ``TRADE:{accountId}``) and epics. Only the item
*kind* reaches a metric attribute, plus the epic when the configuration
allows it (``stream_epics``: ``*`` or a list) and the cap
(``stream_epic_limit``) is not reached; everything else becomes ``_OTHER``.
An account id or a raw item name never leaves this module.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import NamedTuple

__all__ = ["OTHER", "EpicPolicy", "ItemInfo", "classify"]

#: Label for anything outside the bounded sets (unknown kind, capped epic).
OTHER = "_OTHER"

_EPIC = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
_CHART_SCALES = frozenset(("SECOND", "1MINUTE", "5MINUTE", "HOUR"))


class ItemInfo(NamedTuple):
    """Kind of an item (``PRICE``, ``MARKET``, ...) and its epic, if any."""

    kind: str
    epic: str | None


_UNKNOWN = ItemInfo(OTHER, None)


def classify(item_name: object) -> ItemInfo:
    """Kind and epic of an IG item name; ``_OTHER`` when it is not IG's."""
    if not isinstance(item_name, str):
        return _UNKNOWN
    parts = item_name.split(":")
    head = parts[0]
    count = len(parts)
    if head == "PRICE" and count == 3:
        return _with_epic("PRICE", parts[2])
    if head in ("MARKET", "L1") and count == 2:
        return _with_epic("MARKET", parts[1])
    if head == "CHART" and count == 3:
        if parts[2] == "TICK":
            return _with_epic("CHART_TICK", parts[1])
        if parts[2] in _CHART_SCALES:
            return _with_epic("CHART", parts[1])
        return _UNKNOWN
    if head in ("ACCOUNT", "TRADE") and count == 2 and parts[1]:
        return ItemInfo(head, None)
    return _UNKNOWN


def _with_epic(kind: str, epic: str) -> ItemInfo:
    return ItemInfo(kind, epic if _EPIC.match(epic) else None)


class EpicPolicy:
    """Decides which epics may appear as the ``ig.stream.epic`` attribute.

    Thread-safe; the set of admitted epics only grows, up to ``limit``.
    """

    def __init__(self, allowed: Iterable[str] = (), limit: int = 20) -> None:
        allowed = tuple(allowed)
        self.enabled = bool(allowed)
        self._any = "*" in allowed
        self._allowed = frozenset(allowed) - {"*"}
        self._limit = limit
        self._admitted: set[str] = set()
        self._lock = threading.Lock()

    def label(self, epic: str | None) -> str | None:
        """The attribute value for ``epic``: itself, ``_OTHER``, or None.

        None means no epic attribute: epics are not configured, or the item
        has no epic (``ACCOUNT``, ``TRADE``).
        """
        if not self.enabled or epic is None:
            return None
        if not (self._any or epic in self._allowed):
            return OTHER
        if epic in self._admitted:
            return epic
        with self._lock:
            if epic in self._admitted:
                return epic
            if len(self._admitted) >= self._limit:
                return OTHER
            self._admitted.add(epic)
            return epic

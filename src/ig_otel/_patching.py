"""Class patches an adapter applies to a client library, and takes back.

The stream adapters patch classes of libraries that may be imported before
or after instrumentation: :meth:`Patches.when_imported` patches a module at
once when it is loaded, otherwise from an import hook. Every replacement is
recorded so :meth:`Patches.undo` restores the classes exactly (an inherited
method is restored by deleting the override). Failures are logged once per
step and never reach the host program.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import wrapt

__all__ = ["Patches"]


class Patches:
    """The patches of one adapter (``label`` names it in log lines)."""

    def __init__(self, label: str, logger: logging.Logger) -> None:
        self.label = label
        self.lock = threading.RLock()
        self._log = logger
        self._undo: list[tuple[type, str, Any]] = []
        self._hooked: set[str] = set()
        self._warned: set[str] = set()

    def warn_once(self, step: str) -> None:
        """Log a failed step with its traceback, the first time only."""
        if step in self._warned:
            return
        self._warned.add(step)
        self._log.warning(
            "ig-otel %s %s failed; continuing", self.label, step, exc_info=True
        )

    def when_imported(
        self, module_names: Iterable[str], patch: Callable[[ModuleType], None]
    ) -> None:
        """Run ``patch`` on each module now if it is loaded, else on import."""
        for name in module_names:
            if name in sys.modules:
                patch(sys.modules[name])
            elif name not in self._hooked:
                wrapt.register_post_import_hook(self._guarded(patch), name)
                self._hooked.add(name)

    def _guarded(
        self, patch: Callable[[ModuleType], None]
    ) -> Callable[[ModuleType], None]:
        def on_import(module: ModuleType) -> None:
            try:
                with self.lock:
                    patch(module)
            except Exception:
                self.warn_once("patching")

        return on_import

    def covers(self, owner: type) -> bool:
        """Whether ``owner`` is patched already."""
        return any(patched is owner for patched, _, _ in self._undo)

    def replace(self, owner: type, name: str, replacement: Any) -> None:
        """Set ``owner.name`` to ``replacement``, remembering what was there."""
        self._undo.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, replacement)

    def wrap(self, owner: type, name: str, wrapper: Any) -> None:
        """Wrap ``owner.name`` with a wrapt ``(wrapped, instance, args, kwargs)``."""
        self._undo.append((owner, name, owner.__dict__.get(name)))
        wrapt.wrap_function_wrapper(owner, name, wrapper)

    def undo(self) -> None:
        """Restore every patched attribute, newest first."""
        for owner, name, original in reversed(self._undo):
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        self._undo.clear()

"""Ctrl-C and SIGTERM during training: a flag the loop checks between batches."""
from __future__ import annotations

import signal
import threading
from typing import Any, Dict


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked between batches, so state is never half-updated."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        # Signal handlers can only be set from the main thread; elsewhere Ctrl-C keeps its default effect.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C aborts at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

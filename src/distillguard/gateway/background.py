"""The gateway's background tasks: cancelling one, and tables rebuilt from their sources on a timer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any


async def cancel_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (if any) and wait until it has stopped."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Reloader:
    """Load once at start-up, then again every `refresh_s` seconds in a worker thread.

    The first load runs before the gateway serves, so an unreadable source fails the start-up naming
    it; a later failure is counted and logged, and the last good tables keep serving (budgets and
    blocklists must not vanish because of one bad read).
    """

    def __init__(self, what: str, refresh_s: float, log: logging.Logger) -> None:
        self._what, self._refresh_s, self._log = what, refresh_s, log
        self._task: asyncio.Task[None] | None = None
        self.refresh_failures = 0

    def reload(self) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the sources hold (called once, at stop)."""

    async def start(self) -> None:
        await asyncio.to_thread(self.reload)
        self._task = asyncio.create_task(self._refresh_loop(), name=f"distillguard-{self._what}")

    async def stop(self) -> None:
        await cancel_task(self._task)
        self._task = None
        self.close()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await asyncio.to_thread(self.reload)
            except Exception as e:
                self.refresh_failures += 1
                self._log.warning(
                    f"{self._what} refresh failed", extra={"error": f"{e.__class__.__name__}: {e}"}
                )

"""`LoopThread`: an asyncio event loop on a thread of its own, for the agent's aiohttp servers.

The agent is threaded; its HTTP listeners (OTLP/HTTP, the operator listener) each run aiohttp on
a private loop in a daemon thread. `start` runs the server's listen coroutine on that loop and
returns what it returns (the bound address), or raises what it raised (a port taken) once the
thread has ended; `stop` runs the server's shutdown coroutine there, then stops the loop and
joins the thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


class LoopThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._loop is not None

    def start(self, listen: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        """Run `listen()` on a new loop in a new thread, then keep that loop running; its result."""
        loop = asyncio.new_event_loop()
        started: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                started.set_result(loop.run_until_complete(listen()))
            except BaseException as exc:
                started.set_exception(exc)
                loop.close()
                return
            loop.run_forever()
            loop.close()

        thread = threading.Thread(target=run, name=self.name, daemon=True)
        thread.start()
        try:
            result = started.result()
        except BaseException:
            thread.join()
            raise
        self._loop, self._thread = loop, thread
        return result

    def stop(self, shutdown: Callable[[], Coroutine[Any, Any, None]], wait: float) -> bool:
        """Run `shutdown()` on the loop (up to `wait` s), stop the loop, join the thread (up to `wait` s).

        Returns False when the shutdown did not finish in time (the loop is stopped anyway).
        """
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return True
        self._loop = self._thread = None
        future = asyncio.run_coroutine_threadsafe(shutdown(), loop)
        finished = True
        try:
            future.result(wait)
        except (TimeoutError, concurrent.futures.TimeoutError):
            finished = False
        loop.call_soon_threadsafe(loop.stop)
        thread.join(wait)
        return finished

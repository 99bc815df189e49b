"""``AsyncConfigManager``: the seed's asyncio API over ``ConfigManager``.

    config = AsyncConfigManager()
    await config.initialize()
    config.get("trading.max_position_usdc")                 # memory: no await
    await config.set_runtime_config("trading.quote_frequency_hz", 2.5, actor="alice")
    await config.reload_key("trading.quote_frequency_hz")   # what the seed's listener calls

Blocking work (connecting, a set's validation and script) runs in a worker thread
(``asyncio.to_thread``); ``on_change`` callbacks run on the event loop (a coroutine function
is scheduled as a task), never on the library's threads.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable

from flashmm_config.manager import ConfigManager


class AsyncConfigManager:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sync = ConfigManager(*args, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set = set()

    async def initialize(self) -> "AsyncConfigManager":
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.sync.initialize)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        return self.sync.get(key, default)

    def explain(self, key: str) -> dict:
        return self.sync.explain(key)

    @property
    def environment(self) -> str:
        return self.sync.environment

    def on_change(self, callback: Callable[[str, Any, str], Any]) -> Callable[[], None]:
        """``callback(key, value, layer)`` on the event loop ``initialize`` ran on."""
        def on_thread(key: str, value: Any, layer: str) -> None:
            loop = self._loop
            if loop is None or loop.is_closed():
                return
            loop.call_soon_threadsafe(self._run, callback, key, value, layer)
        return self.sync.on_change(on_thread)

    def _run(self, callback: Callable, key: str, value: Any, layer: str) -> None:
        try:
            result = callback(key, value, layer)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._done)
        except Exception as exc:   # noqa: BLE001 - as the sync manager does
            self.sync.log.error("on_change callback failed for %s: %s: %s"
                                % (key, type(exc).__name__, exc))

    def _done(self, task: asyncio.Future) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.sync.log.error("on_change callback failed: %s: %s" % (type(exc).__name__, exc))

    async def set_runtime_config(self, key: str, value: Any, actor: str | None = None) -> dict:
        return await asyncio.to_thread(self.sync.set_runtime_config, key, value, actor)

    async def unset_runtime_config(self, key: str, actor: str | None = None) -> dict:
        return await asyncio.to_thread(self.sync.unset_runtime_config, key, actor)

    async def reload_key(self, key: str) -> None:
        await asyncio.to_thread(self.sync.reload_key, key)

    async def reload(self) -> None:
        await asyncio.to_thread(self.sync.reload)

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> "AsyncConfigManager":
        return await self.initialize()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

"""Pub/sub over the Redis client: a connection that subscribes and reads messages.

Standard library only, Python 3.8+.  Not shipped to target hosts (modules publish from their
scripts, they never subscribe): the client library's subscriber (``flashmm_config``),
``flashmm-config runtime watch`` and the tests use it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any, Optional

from flashmm_deploy.redis.client import (Connection, Endpoint, ReplyError, _SoftTimeout,
                                         encode_command)

__all__ = ["PubSubConnection"]


class PubSubConnection(Connection):
    """A ``Connection`` that can subscribe.  Once subscribed only ``read_message``,
    ``subscribe`` and ``close`` are possible; ``call`` and ``pipeline`` raise
    ``RedisError(kind="input")``.  A ``read_message`` timeout keeps the connection usable."""

    def __init__(self, endpoint: Endpoint):
        self._subscribed = False
        self._pending = deque()      # type: Any  (Deque[tuple]: messages read by subscribe)
        super().__init__(endpoint)

    def pipeline(self, *commands: tuple) -> list:
        if commands and self._subscribed:
            raise self._error("connection to redis at %s is subscribed: only read_message, "
                              "subscribe and close are possible" % self._where, "input")
        return super().pipeline(*commands)

    @staticmethod
    def _message(reply: Any) -> Optional[tuple]:
        if (isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message"
                and isinstance(reply[1], bytes)):
            return ("message", reply[1].decode("utf-8", "replace"), reply[2])
        return None

    def subscribe(self, *channels: str) -> None:
        """SUBSCRIBE to ``channels`` and consume the confirmations (messages that arrive
        meanwhile are kept for ``read_message``)."""
        if not channels:
            raise self._error("subscribe needs at least one channel", "input")
        payload = encode_command(("SUBSCRIBE",) + tuple(channels))
        waiting = [c.encode("utf-8") if isinstance(c, str) else bytes(c) for c in channels]
        self._send(payload, "sending to")
        confirmed = False
        while waiting:
            reply = self._read_reply()
            if isinstance(reply, ReplyError):
                if not confirmed:
                    raise reply                     # refused as a whole (e.g. NOPERM)
                raise self._broke("redis at %s answered SUBSCRIBE with an error: %s"
                                  % (self._where, reply), "reply")
            message = self._message(reply)
            if message is not None:
                self._pending.append(message)
            elif (isinstance(reply, list) and len(reply) == 3 and reply[0] == b"subscribe"
                  and reply[1] in waiting):
                waiting.remove(reply[1])
                confirmed = self._subscribed = True
            else:
                raise self._protocol("unexpected reply to SUBSCRIBE")

    def read_message(self, timeout: Optional[float] = None) -> Optional[tuple]:
        """The next pub/sub message as ``("message", channel, data)`` (channel str, data
        bytes), or None when none arrives within ``timeout`` seconds (None: the endpoint's
        timeout; 0: only what has already arrived).  A timeout keeps the connection usable."""
        if not self._subscribed:
            raise self._error("read_message needs subscribe() first", "input")
        if self._pending:
            return self._pending.popleft()
        wait = self.endpoint.timeout if timeout is None else timeout
        if (not isinstance(wait, (int, float)) or isinstance(wait, bool)
                or not wait >= 0 or math.isinf(wait)):
            raise self._error("read_message timeout must be a finite number >= 0", "input")
        deadline = time.monotonic() + wait
        while True:
            try:
                reply = self._read_reply(deadline, soft=True)
            except _SoftTimeout:
                return None
            if isinstance(reply, ReplyError):
                raise reply
            message = self._message(reply)
            if message is not None:
                return message
            # A late (un)subscribe confirmation or a pong: not a message, keep waiting.

    def _state(self) -> str:
        state = super()._state()
        return "subscribed" if state == "open" and self._subscribed else state


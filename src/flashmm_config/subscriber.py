"""The pub/sub connection of a ``ConfigManager``: ``flashmm:config:updates`` (each message's
data is the dotted key of a changed runtime value, what deploy's seed and a runtime set
publish) and ``flashmm:meta:updates`` (one JSON summary per change, with the version).

A subscribed connection can do nothing else, hence a second connection.  It reconnects on its
own with the same bounded backoff as the main one; after every (re)subscription
``on_subscribed`` runs, and the manager catches up there (``ConfigManager.catch_up``: a full
scan when ``flashmm:meta:version`` moved): a message published while this connection was away
is lost, the keys and the version are not.  Outages are logged by the main connection,
so this one stays quiet about them.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from flashmm_deploy.redis.client import Endpoint, RedisError, ReplyError
from flashmm_deploy.redis.keys import SUMMARY_CHANNEL, UPDATES_CHANNEL
from flashmm_deploy.redis_ext.pubsub import PubSubConnection
from flashmm_config.log import Log
from flashmm_config.link import FIRST_BACKOFF, MAX_BACKOFF

CONFIG_CHANNEL = UPDATES_CHANNEL
META_CHANNEL = SUMMARY_CHANNEL
POLL = 0.2                      # how long one read waits, so a stop is seen within that


class Subscriber:
    """Runs ``on_message(channel, data)`` for each message until stopped."""

    def __init__(self, endpoint: Endpoint, log: Log,
                 on_message: Callable[[str, bytes], None],
                 on_subscribed: Callable[[], None],
                 connect: Callable[[Endpoint], Any] = PubSubConnection) -> None:
        self.endpoint = endpoint
        self._log = log
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._connect = connect
        self._conn: Any = None
        self.subscriptions = 0

    def _subscribe(self) -> bool:
        conn = None
        try:
            conn = self._connect(self.endpoint)
            conn.subscribe(CONFIG_CHANNEL, META_CHANNEL)
        except (RedisError, ReplyError):
            if conn is not None:
                conn.close()
            return False
        self._conn = conn
        self.subscriptions += 1
        self._log("%s to %s and %s" % ("subscribed" if self.subscriptions == 1
                                       else "resubscribed", CONFIG_CHANNEL, META_CHANNEL))
        self._call(self._on_subscribed)
        return True

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:   # a handler's bug must not end the subscription
            self._log.error("update handler failed: %s: %s" % (type(exc).__name__, exc))

    def run(self, stop: threading.Event) -> None:
        backoff = 0.0
        while not stop.is_set():
            if self._conn is None:
                if self._subscribe():
                    backoff = 0.0
                else:
                    backoff = min(max(backoff * 2, FIRST_BACKOFF), MAX_BACKOFF)
                    stop.wait(backoff)
                continue
            try:
                message = self._conn.read_message(timeout=POLL)
            except (RedisError, ReplyError):
                self.close()
                continue
            if message is not None:
                _, channel, data = message
                self._call(self._on_message, channel, data)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

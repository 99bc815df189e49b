"""Real redis-servers for the integration tests (the fixtures are registered by
tests/integration/conftest.py; every name here is also importable from ``support``): the one
redis-server starter of the suite (plain or TLS, any port, any option) and a session server
whose 256 databases the tests share out."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from ports import free_port


@dataclass
class RedisServer:
    host: str
    port: int
    process: subprocess.Popen

    def client(self, db: int = 0, password: str | None = None) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, db=db, password=password,
                           decode_responses=True, socket_timeout=5)


def _ready(port: int, tls: bool) -> bool:
    """Listening, and (plain port) past loading its append-only file: a PING is answered by
    anything but -LOADING (PONG, or NOAUTH when it wants a password).  A TLS port: listening
    (it has no dataset to load).  A plain socket: redis-py retries a refused connection for
    seconds."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            if tls:
                return True
            s.sendall(b"PING\r\n")
            return not s.makefile("rb").readline().startswith(b"-LOADING")
    except OSError:
        return False


def start_redis(tmp: Path, *extra: str, port: int | None = None, tls: bool = False,
                what: str = "redis-server") -> RedisServer:
    """A redis-server on 127.0.0.1, ready: no persistence unless ``extra`` asks for it (options
    in ``extra`` come last and win), files in ``tmp``, 256 databases.  ``port``: a given port
    (the same one again after a stop), else a claimed free one.  ``tls``: the port is the TLS
    port (``extra`` carries the --tls-* options) and the plain port is closed.  Stop it with
    stop_redis."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run scripts/setup.sh")
    port = free_port() if port is None else port
    tmp.mkdir(parents=True, exist_ok=True)
    ports = ["--port", "0", "--tls-port", str(port)] if tls else ["--port", str(port)]
    proc = subprocess.Popen(
        [binary, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp), "--databases", "256", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _ready(port, tls):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what} did not start on port {port}")
        time.sleep(0.02)
    return RedisServer("127.0.0.1", port, proc)


def stop_redis(server: RedisServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One real redis-server for the session (each pytest worker has its own; 256 databases:
    give each test its own)."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    stop_redis(server)


_next_db = iter(range(1, 256))


def allocate_dbs(server: RedisServer, count: int) -> list[int]:
    """``count`` database numbers no other test uses, emptied."""
    try:
        dbs = [next(_next_db) for _ in range(count)]
    except StopIteration:
        pytest.fail("the session's redis-server has no free databases left: raise --databases")
    for db in dbs:
        server.client(db).flushdb()
    return dbs


@pytest.fixture
def redis_db(redis_server):
    """A fresh, empty database number on the session's redis-server."""
    db = allocate_dbs(redis_server, 1)[0]
    yield db
    redis_server.client(db).flushdb()


def value_of(client, key, kind):
    """A key's value for a snapshot: a hash's fields, a list's items (the runtime sets' audit
    list), a string's value."""
    return (client.hgetall(key) if kind == "hash" else
            client.lrange(key, 0, -1) if kind == "list" else client.get(key))


def snapshot_redis(server: RedisServer, dbs) -> dict[int, dict[str, object]]:
    """db -> {key: value} for strings and hashes (all the seed writes)."""
    out = {}
    for db in dbs:
        client = server.client(db)
        data = {}
        for key in client.scan_iter("*"):
            kind = client.type(key)
            data[key] = value_of(client, key, kind)
        out[db] = data
    return out


class SiteSnapshot:
    """Directories (a sandbox, an inventory) and Redis databases as they are now, put back
    exactly by :meth:`restore`: files with their modes and links, every key with its value
    (DUMP/RESTORE) and its remaining TTL.  Tests that change a site start from it again
    without an ansible-playbook run (a deploy or restore as a reset cost ~1.3-2 s of CPU)."""

    def __init__(self, server: RedisServer, dbs, dirs, store: Path):
        self.store = store
        self.dirs = [Path(d) for d in dirs]
        for i, path in enumerate(self.dirs):
            shutil.copytree(path, store / str(i), symlinks=True)
        # one binary-safe client per database, kept for restore()
        self.clients = {db: redis.Redis(host=server.host, port=server.port, db=db) for db in dbs}
        self.keys = {db: self._capture(client) for db, client in self.clients.items()}

    @staticmethod
    def _capture(client: redis.Redis) -> list[tuple[bytes, int, bytes]]:
        keys = list(client.scan_iter("*"))
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.pttl(key)
            pipe.dump(key)
        replies = pipe.execute()
        # a key that expired between the scan and its DUMP has nothing to restore
        return [(key, ttl, dump) for key, ttl, dump in zip(keys, replies[::2], replies[1::2])
                if dump is not None]

    def restore(self) -> None:
        for i, path in enumerate(self.dirs):         # also what a test added inside them
            if path.exists():
                shutil.rmtree(path)
            shutil.copytree(self.store / str(i), path, symlinks=True)
        for db, keys in self.keys.items():
            pipe = self.clients[db].pipeline(transaction=True)
            pipe.flushdb()
            for key, ttl, dump in keys:
                pipe.restore(key, max(ttl, 0), dump)
            pipe.execute()

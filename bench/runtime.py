"""The client library's figures: ``get``, a set reaching every subscriber, a full reload.

Starts its own redis-server on a free loopback port (stopped at the end), a host as deploy
leaves it (environment file, .env variables, runtime layer seeded by deploy's seed script) and
SUBSCRIBERS ``ConfigManager``s on it.  Prints:

* ``get``: ns per call of ``ConfigManager.get`` (goal < 1 us), best of 5 x 1e6 calls;
* write -> every subscriber applied: from just before the script that sets, bumps and
  publishes (``runtime_keys.write``) until the last subscriber's ``on_change`` ran (goal < 2 ms
  median on loopback), median and p95 of SETS;
* ``set_runtime_config``: the whole call (its validation of the configuration included);
* full reload: ``ConfigManager.reload()`` (file check + a full runtime scan), and ``load()``.

    .venv/bin/python bench/runtime.py
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import redis  # noqa: E402  (a dev dependency: only to wait for the server)

from flashmm_config import ConfigManager  # noqa: E402
from flashmm_config.log import Log  # noqa: E402
from flashmm_config.runtime_keys import read_version, write  # noqa: E402
from flashmm_config_support import deployed_host  # noqa: E402
from flashmm_deploy.redis.client import Connection  # noqa: E402
from flashmm_deploy.redis_ext.url import endpoint_from_url  # noqa: E402
from support import valid_secrets  # noqa: E402

SUBSCRIBERS = 3
SETS = 200
KEY = "trading.quote_frequency_hz"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ms(values: list[float]) -> str:
    values = sorted(values)
    return (f"median {statistics.median(values) * 1000:.3f} ms, "
            f"p95 {values[int(len(values) * 0.95) - 1] * 1000:.3f} ms")


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    port = free_port()
    server = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind",
                               "127.0.0.1", "--save", "", "--dir", str(work)],
                              stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                if redis.Redis(port=port).ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.02)
        url = f"redis://127.0.0.1:{port}/0"
        environ, config_dir, _ = deployed_host(
            work, {"app": {"environment": "development"}}, valid_secrets(), redis_url=url)
        quiet = Log()
        quiet.logger.disabled = True
        managers = [ConfigManager(environ, config_dir, log=quiet).initialize()
                    for _ in range(SUBSCRIBERS)]
        for m in managers:
            while m.subscriber.subscriptions < 1:
                time.sleep(0.01)
        first = managers[0]

        get = timeit.Timer(lambda: None)
        per_call = min(timeit.Timer("get(k)", globals={"get": first.get, "k": KEY}).repeat(
            5, 1_000_000)) / 1_000_000
        empty = min(get.repeat(5, 1_000_000)) / 1_000_000
        print(f"get: {per_call * 1e9:.0f} ns per call ({(per_call - empty) * 1e9:.0f} ns "
              f"without the timing loop's own call)")

        done = threading.Event()
        pending: set = set()
        lock = threading.Lock()

        def applied(index):
            def callback(key, value, layer):
                with lock:
                    pending.discard(index)
                    if not pending:
                        done.set()
            return callback

        for i, m in enumerate(managers):
            m.on_change(applied(i))
        field = first.fields[KEY]
        writes = []
        with Connection(endpoint_from_url(url)) as conn:
            for i in range(SETS):
                value = 1.0 + (i % 2)
                with lock:
                    pending.update(range(SUBSCRIBERS))
                done.clear()
                version = read_version(conn)
                start = time.perf_counter()
                write(conn, field, value, actor="bench", seen=version)
                done.wait(5)
                writes.append(time.perf_counter() - start)
        print(f"write -> all {SUBSCRIBERS} subscribers applied ({SETS} sets): {ms(writes)}")

        calls = []
        for i in range(SETS // 4):
            with lock:
                pending.update(range(SUBSCRIBERS))
            done.clear()
            start = time.perf_counter()
            first.set_runtime_config(KEY, 3.0 + (i % 2), actor="bench")
            calls.append(time.perf_counter() - start)
            done.wait(5)
        print(f"set_runtime_config (validation included), {len(calls)} calls: {ms(calls)}")

        reloads = []
        for _ in range(100):
            start = time.perf_counter()
            first.reload()
            reloads.append(time.perf_counter() - start)
        print(f"full reload (file check + runtime scan): {ms(reloads)}")
        loads = []
        for _ in range(50):
            start = time.perf_counter()
            first.state.load()
            loads.append(time.perf_counter() - start)
        print(f"layers load (env + file parse): {ms(loads)}")
        for m in managers:
            m.close()
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time one ``seed_apply.apply`` (connect, SELECT, EVALSHA, close) for 4 and for 400 keys.

Starts its own redis-server on a free loopback port and stops it at the end.  Prints, per size,
best and median of 50 applies, for a run that changes nothing (the steady state of a rerun) and
for one that changes a key (one key deleted, untimed, before each apply).  Figures only.

    .venv/bin/python bench/redis_seed.py
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from flashmm_deploy.redis.client import Connection, Endpoint, RedisError  # noqa: E402
from flashmm_deploy.hostside.seed_apply import apply  # noqa: E402
from flashmm_deploy.hostside.seed_script import render_script  # noqa: E402

RUNS = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp: str) -> tuple[subprocess.Popen, int]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", tmp],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with Connection(Endpoint(port=port, timeout=1)) as conn:
                conn.call("PING")
            return proc, port
        except RedisError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                sys.exit("redis-server did not start")
            time.sleep(0.05)


def desired(n: int) -> dict[str, str]:
    return {f"flashmm:config:bench:key_{i:04d}": f"{i * 1.5}" for i in range(n)}


def timed(port: int, db: int, script: str, before=None) -> list[float]:
    times = []
    for _ in range(RUNS):
        if before:
            before()
        t0 = time.perf_counter()
        apply(Endpoint(port=port, db=db), script)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start(tmp)
        try:
            print(f"seed_apply.apply, {RUNS} runs each, ms (best / median)")
            for db, n in ((1, 4), (2, 400)):
                keys = desired(n)
                script = render_script(keys)
                first = next(iter(keys))
                t0 = time.perf_counter()
                apply(Endpoint(port=port, db=db), script)      # first seed: EVALSHA + EVAL
                cold = time.perf_counter() - t0

                def drop_one(db=db, key=first):
                    with Connection(Endpoint(port=port, db=db)) as conn:
                        conn.call("DEL", key)

                unchanged = timed(port, db, script)
                changing = timed(port, db, script, drop_one)
                print(f"{n:4d} keys  script {len(script.encode()) / 1024:6.1f} KiB  "
                      f"first seed {cold * 1e3:6.2f}  "
                      f"no change {min(unchanged) * 1e3:6.2f} / "
                      f"{statistics.median(unchanged) * 1e3:6.2f}  "
                      f"one key changed {min(changing) * 1e3:6.2f} / "
                      f"{statistics.median(changing) * 1e3:6.2f}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()

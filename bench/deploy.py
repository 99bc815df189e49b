"""Benchmark deploy.yml on generated local inventories of 1, 10 and 50 hosts.

For each size: wall time of a first deploy (empty sandbox, empty Redis databases), of a
no-change rerun, of an ansible-playbook that only pings the same hosts (Ansible's fixed cost,
"the ping floor"), and of writing the same files with plain Python (the file floor).  Best of
``--repeat`` runs.  Starts its own redis-server on a free loopback port.

    .venv/bin/python bench/deploy.py [--sizes 1 10 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "src"))

import yaml  # noqa: E402

from flashmm_deploy import host_validation, dotenv_file, effective, filters, redis_seed# noqa: E402
from flashmm_deploy.filesync import sync  # noqa: E402
from flashmm_deploy.sandbox import make_local_inventory  # noqa: E402

PING = """---
- name: Ping
  hosts: all
  gather_facts: false
  tasks:
    - name: Ping
      ansible.builtin.ping:
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd, env) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def file_floor(inv_dir: Path, sandbox: Path) -> float:
    """Validate, render and atomically write every host's four files in-process."""
    start = time.perf_counter()
    inv = host_validation.load_inventory(inv_dir)
    for host, result in host_validation.validate_inventory(inv, require_secrets=True).items():
        cfg = result.config
        files = [
            {"path": f"config/environments/{cfg.app.environment}.yml", "mode": 0o644,
             "content": yaml.safe_dump(effective.environment_file_layer(cfg), sort_keys=True)},
            {"path": ".env", "mode": 0o600, "content": dotenv_file.render(effective.env_vars(cfg))},
            {"path": "redis/seed.lua", "mode": 0o644,
             "content": redis_seed.render_script(effective.runtime_keys(effective.effective(cfg)))},
            {"path": "docker-compose.yml", "mode": 0o644, "content": "services: {}\n" * 40},
        ]
        sync(str(sandbox / host), files)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    assert filters.FILTERS
    work = Path(tempfile.mkdtemp(prefix="flashmm-bench-"))
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--databases", "256", "--dir", str(work)],
                              stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
        (work / "ping.yml").write_text(PING)
        rows = []
        for size in args.sizes:
            inv = make_local_inventory(ROOT / "inventories" / "local", work / f"inv{size}",
                                       hosts=size, redis_port=port)
            first, rerun, ping, floor = [], [], [], []
            for _ in range(args.repeat):
                sandbox = work / f"sandbox{size}"
                shutil.rmtree(sandbox, ignore_errors=True)
                for db in range(1, size + 1):
                    redis.Redis(port=port, db=db).flushdb()
                run_env = dict(env, FLASHMM_SANDBOX=str(sandbox))
                deploy = [str(BIN / "ansible-playbook"), "deploy.yml", "-i", str(inv)]
                first.append(timed(deploy, run_env))
                rerun.append(timed(deploy, run_env))
                ping.append(timed([str(BIN / "ansible-playbook"), str(work / "ping.yml"), "-i",
                                   str(inv)], run_env))
                floor_dir = work / f"floor{size}"
                shutil.rmtree(floor_dir, ignore_errors=True)
                floor.append(file_floor(inv, floor_dir))
            rows.append((size, min(first), min(rerun), min(ping), min(floor)))
        print(f"deploy.yml on the local inventory, best of {args.repeat} (seconds)")
        print(f"{'hosts':>5} {'first':>8} {'rerun':>8} {'ping':>8} {'files':>8} "
              f"{'first/ping':>10} {'rerun/first':>11}")
        for size, f, r, p, fl in rows:
            print(f"{size:>5} {f:>8.2f} {r:>8.2f} {p:>8.2f} {fl:>8.3f} {f / p:>10.2f} {r / f:>11.2f}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

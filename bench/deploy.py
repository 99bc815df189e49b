"""Benchmark deploy.yml against Ansible's fixed cost, on generated local inventories.

For each size (default 1, 10 and 50 hosts, no compose stack: every host writes its files and
seeds its own database on one private redis-server), best of ``--repeat`` rounds, each round
running in turn:

- ping     an ``ansible.builtin.ping`` playbook over the same hosts (the floor: Ansible's cost
           of one module call per host, with the same interpreter);
- first    deploy.yml on an empty sandbox and empty databases;
- rerun    deploy.yml again (nothing changes);
- check    deploy.yml --check --diff (nothing to change);
- plan     deploy.yml with every per-host step skipped by tag: the controller pass alone;
- files    deploy.yml with the plan's steps limited to files and stack (a rerun whose module
           call does not seed: the runtime step is what ``flashmm_plan_steps`` leaves out).

Printed: seconds, the ratios the project aims at (first/ping and rerun/ping <= 1.2 at 50 hosts,
check/rerun <= 1.1) and the split of a rerun into its phases: the controller pass (plan minus an
empty playbook), the module call (files minus plan) and the seed (rerun minus files).

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

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "src"))

from flashmm_deploy.sandbox import make_local_inventory  # noqa: E402

PING = """---
- name: Ping
  hosts: all
  gather_facts: false
  tasks:
    - name: Ping
      ansible.builtin.ping:
"""
EMPTY = """---
- name: Nothing
  hosts: all
  gather_facts: false
  tasks:
    - name: Nothing, once
      ansible.builtin.meta: noop
      run_once: true
"""
SKIP_HOSTS = "flashmm_files,flashmm_stack,flashmm_runtime"
FILES_ONLY = '{"flashmm_plan_steps": ["files", "stack"]}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_cli(port: int, *args: str) -> None:
    subprocess.run(["redis-cli", "-p", str(port), *args], check=True, capture_output=True)


def start_redis(work: Path) -> tuple[subprocess.Popen, int]:
    """A private redis-server on a free loopback port (256 databases), once it answers."""
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--databases", "256", "--dir", str(work)],
                              stdout=subprocess.DEVNULL)
    for _ in range(100):
        if subprocess.run(["redis-cli", "-p", str(port), "ping"],
                          capture_output=True).returncode == 0:
            break
        time.sleep(0.05)
    return server, port


def tool_env() -> dict[str, str]:
    """The operator's environment after set-up: the venv first, the project's ansible.cfg."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "FLASHMM_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    return env


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flashmm-bench-"))
    server, port = start_redis(work)
    try:
        env = tool_env()
        (work / "ping.yml").write_text(PING)
        (work / "empty.yml").write_text(EMPTY)
        playbook = [str(BIN / "ansible-playbook")]
        rows = []
        for size in args.sizes:
            sandbox = work / f"sandbox{size}"
            inv = make_local_inventory(ROOT / "inventories" / "local", work / f"inv{size}",
                                       hosts=size, redis_port=port, sandbox=sandbox)
            runs: dict[str, list[float]] = {}

            def measure(name: str, *cmd: str, runs=runs, inv=inv) -> None:
                runs.setdefault(name, []).append(timed([*playbook, *cmd, "-i", str(inv)], env))

            for _ in range(args.repeat):
                shutil.rmtree(sandbox, ignore_errors=True)
                redis_cli(port, "flushall")
                measure("ping", str(work / "ping.yml"))
                measure("empty", str(work / "empty.yml"))
                measure("first", "deploy.yml")
                measure("rerun", "deploy.yml")
                measure("check", "deploy.yml", "--check", "--diff")
                measure("plan", "deploy.yml", "--skip-tags", SKIP_HOSTS)
                measure("files", "deploy.yml", "-e", FILES_ONLY)
            rows.append((size, {name: min(times) for name, times in runs.items()}))
        print(f"deploy.yml on generated local inventories (no stack), best of {args.repeat}, "
              "seconds")
        print(f"{'hosts':>5} {'ping':>6} {'first':>6} {'rerun':>6} {'check':>6} "
              f"{'first/ping':>10} {'rerun/ping':>10} {'check/rerun':>11} "
              f"{'| plan':>7} {'module':>7} {'seed':>6}")
        for size, t in rows:
            print(f"{size:>5} {t['ping']:>6.2f} {t['first']:>6.2f} {t['rerun']:>6.2f} "
                  f"{t['check']:>6.2f} {t['first'] / t['ping']:>10.2f} "
                  f"{t['rerun'] / t['ping']:>10.2f} {t['check'] / t['rerun']:>11.2f} "
                  f"| {t['plan'] - t['empty']:>5.2f} {t['files'] - t['plan']:>7.2f} "
                  f"{t['rerun'] - t['files']:>6.2f}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

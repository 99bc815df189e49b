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

``--connection ssh``: the same, over SSH to a fleet of target containers (scripts/fleet.sh,
started for the largest size and removed at the end, unless ``--keep-fleet``): each host is a
target reached as the user flashmm with become, pipelining and ControlPersist as ansible.cfg
sets them; the targets share this machine's network, so they seed the same private
redis-server.  Every measured run starts without an SSH master connection (its own
ControlPath directory), as an operator's run does; the ping pays the same connection set-up.

    .venv/bin/python bench/deploy.py [--sizes 1 10 50 | --sizes 10,50] [--repeat 3]
    .venv/bin/python bench/deploy.py --connection ssh --sizes 10,50   # needs the Docker engine
"""

from __future__ import annotations

import argparse
import glob
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

from flashmm_deploy.plan.sandbox import make_local_inventory  # noqa: E402

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
    control = None
    if env.get("FLASHMM_BENCH_SSH"):        # a fresh ControlPath directory: no master yet
        control = tempfile.mkdtemp(prefix="cp-", dir=env["FLASHMM_BENCH_SSH"])
        env = dict(env, ANSIBLE_SSH_CONTROL_PATH_DIR=control)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if control:                             # end this run's masters (ControlPersist keeps them)
        for sock in glob.glob(os.path.join(control, "*")):
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"],
                           capture_output=True, timeout=30)
        shutil.rmtree(control, ignore_errors=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def sizes(values: list[str]) -> list[int]:
    """``--sizes 10 50`` or ``--sizes 10,50``."""
    return [int(v) for value in values for v in value.split(",") if v.strip()]


class SshFleet:
    """``count`` targets of scripts/fleet.sh under ``work`` (fleet "bench"), and inventories of
    the first N of them that seed ``redis_port`` like the local ones."""

    def __init__(self, work: Path, count: int, port: int, env: dict[str, str]):
        self.work, self.count = work, count
        self.fleet_env = dict(env, FLASHMM_FLEET_NAME="bench", FLASHMM_FLEET_PORT=str(port),
                              FLASHMM_FLEET_STATE=str(work / "fleet-state"),
                              FLASHMM_FLEET_ROOTS=str(work / "fleet-roots"),
                              FLASHMM_FLEET_INVENTORY=str(work / "fleet-inventory"))
        self.roots = work / "fleet-roots"

    def script(self, *args: str) -> None:
        proc = subprocess.run([str(ROOT / "scripts" / "fleet.sh"), *args], cwd=ROOT,
                              env=self.fleet_env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"scripts/fleet.sh {' '.join(args)} failed:\n{proc.stderr}")

    def start(self) -> None:
        for script in ("build-images.sh",):
            proc = subprocess.run([str(ROOT / "scripts" / script)], cwd=ROOT, env=self.fleet_env,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"scripts/{script} failed:\n{proc.stderr}")
        self.script("start", str(self.count))
        import yaml
        self.fleet_hosts = yaml.safe_load(
            (self.work / "fleet-inventory" / "hosts.yml").read_text())["all"]["children"]["flashmm"]

    def inventory(self, inv: Path, size: int) -> None:
        """Turn a generated local inventory of ``size`` hosts into one that reaches the first
        ``size`` targets over SSH (host sandbox-NN is target fleet-NN, its root the target's)."""
        import yaml
        path = inv / "hosts.yml"
        data = yaml.safe_load(path.read_text())
        group = data["all"]["children"]["flashmm"]
        for i, name in enumerate(list(group["hosts"]), start=1):
            target = self.fleet_hosts["hosts"][f"fleet-{i:02d}"]
            group["hosts"][name].update(ansible_port=target["ansible_port"],
                                        flashmm_root=target["flashmm_root"])
        group["vars"].pop("ansible_connection")
        group["vars"].update(self.fleet_hosts["vars"], ansible_connection="ssh",
                             ansible_become=True)
        path.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))

    def clear(self, size: int) -> None:
        """Empty the first ``size`` roots (the directories stay: they are bind mounts)."""
        for i in range(1, size + 1):
            root = self.roots / f"fleet-{i:02d}"
            for entry in root.iterdir() if root.is_dir() else ():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["1", "10", "50"],
                    help="host counts, e.g. 1 10 50 or 10,50")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--connection", choices=("local", "ssh"), default="local")
    ap.add_argument("--port", type=int, default=43200,
                    help="ssh: the fleet's first port (3 per target from there)")
    ap.add_argument("--keep-fleet", action="store_true", help="ssh: leave the targets running")
    args = ap.parse_args()
    args.sizes = sizes(args.sizes)
    work = Path(tempfile.mkdtemp(prefix="flashmm-bench-"))
    server, port = start_redis(work)
    fleet = None
    try:
        env = tool_env()
        if args.connection == "ssh":
            engine = subprocess.run([str(ROOT / "scripts" / "engine.sh"), "start"], cwd=ROOT,
                                    env=env, capture_output=True, text=True)
            if engine.returncode != 0:
                sys.exit(f"no Docker engine: {engine.stderr}")
            env["DOCKER_HOST"] = engine.stdout.strip().removeprefix("DOCKER_HOST=")
            fleet = SshFleet(work, max(args.sizes), args.port, env)
            started = time.perf_counter()
            fleet.start()
            print(f"fleet: {fleet.count} SSH targets up in {time.perf_counter() - started:.1f} s",
                  flush=True)
            env["FLASHMM_BENCH_SSH"] = str(work)
        (work / "ping.yml").write_text(PING)
        (work / "empty.yml").write_text(EMPTY)
        playbook = [str(BIN / "ansible-playbook")]
        rows = []
        for size in args.sizes:
            sandbox = work / f"sandbox{size}"
            inv = make_local_inventory(ROOT / "inventories" / "local", work / f"inv{size}",
                                       hosts=size, redis_port=port, sandbox=sandbox)
            if fleet:
                fleet.inventory(inv, size)
            runs: dict[str, list[float]] = {}

            def measure(name: str, *cmd: str, runs=runs, inv=inv) -> None:
                runs.setdefault(name, []).append(timed([*playbook, *cmd, "-i", str(inv)], env))

            for _ in range(args.repeat):
                shutil.rmtree(sandbox, ignore_errors=True)
                if fleet:
                    fleet.clear(size)
                redis_cli(port, "flushall")
                measure("ping", str(work / "ping.yml"))
                measure("empty", str(work / "empty.yml"))
                measure("first", "deploy.yml")
                measure("rerun", "deploy.yml")
                measure("check", "deploy.yml", "--check", "--diff")
                measure("plan", "deploy.yml", "--skip-tags", SKIP_HOSTS)
                measure("files", "deploy.yml", "-e", FILES_ONLY)
            rows.append((size, {name: min(times) for name, times in runs.items()}))
        where = ("over SSH to fleet targets (become, pipelining, ControlPersist; each run starts "
                 "without a master connection)" if fleet else "on generated local inventories")
        print(f"deploy.yml {where} (no stack), best of {args.repeat}, seconds")
        print(f"{'hosts':>5} {'ping':>6} {'first':>6} {'rerun':>6} {'check':>6} "
              f"{'first/ping':>10} {'rerun/ping':>10} {'check/ping':>10} {'check/rerun':>11} "
              f"{'| plan':>7} {'module':>7} {'seed':>6}")
        for size, t in rows:
            print(f"{size:>5} {t['ping']:>6.2f} {t['first']:>6.2f} {t['rerun']:>6.2f} "
                  f"{t['check']:>6.2f} {t['first'] / t['ping']:>10.2f} "
                  f"{t['rerun'] / t['ping']:>10.2f} {t['check'] / t['ping']:>10.2f} "
                  f"{t['check'] / t['rerun']:>11.2f} "
                  f"| {t['plan'] - t['empty']:>5.2f} {t['files'] - t['plan']:>7.2f} "
                  f"{t['rerun'] - t['files']:>6.2f}")
    finally:
        server.terminate()
        server.wait()
        if fleet and not args.keep_fleet:
            fleet.script("stop")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Where a command's machine time goes: the whole machine's CPU, the containers' and the
engine daemons', sampled while the command runs (a test tier, a deploy, ``sleep 60`` beside a
running stack).  Figures only.

Each ``--every`` seconds: the machine's busy time (/proc/stat), the CPU of the engine's
containers (their cgroup: cgroup v1 ``cpuacct/docker``, or v2 ``system.slice/docker-*.scope``
and ``docker/``), and the running containers (``docker ps``).  At the end, the CPU of the
engine's long-lived processes over the run (dockerd, containerd, the shims, counting the
children they waited for: ``runc`` and every health-check ``exec``) and a line per
``--every``-window.

    .venv/bin/python bench/cpu_share.py -- ./scripts/test.sh tests/integration
    .venv/bin/python bench/cpu_share.py --every 5 -- sleep 60
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")
ENGINE = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "docker-proxy")


def busy_seconds() -> float:
    fields = [int(v) for v in open("/proc/stat", encoding="ascii").readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / HZ        # all but idle and iowait


def containers_seconds() -> float:
    """CPU of every container so far (the cgroup of the engine's containers)."""
    v1 = "/sys/fs/cgroup/cpuacct/docker/cpuacct.usage"
    if os.path.exists(v1):
        return int(open(v1, encoding="ascii").read()) / 1e9
    total = 0.0
    for stat in (glob.glob("/sys/fs/cgroup/system.slice/docker-*.scope/cpu.stat")
                 + glob.glob("/sys/fs/cgroup/docker/*/cpu.stat")):
        try:
            for line in open(stat, encoding="ascii"):
                if line.startswith("usage_usec "):
                    total += int(line.split()[1]) / 1e6
        except OSError:
            pass                                  # a container that just went away
    return total


def engine_processes() -> dict[int, tuple[str, float]]:
    """pid -> (name, CPU incl. waited-for children) of the engine's processes."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            raw = open(f"/proc/{pid}/stat", encoding="ascii", errors="replace").read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        if name in ENGINE:
            f = raw[raw.rindex(")") + 2:].split()
            out[int(pid)] = (name, sum(int(v) for v in f[11:15]) / HZ)
    return out


def running_containers() -> int:
    try:
        proc = subprocess.run(["docker", "ps", "-q"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return len(proc.stdout.split()) if proc.returncode == 0 else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")

    cores = os.cpu_count() or 1
    engine_before = engine_processes()
    start, busy0, cont0 = time.monotonic(), busy_seconds(), containers_seconds()
    samples = [(0.0, busy0, cont0, running_containers())]
    proc = subprocess.Popen(command)
    while proc.poll() is None:
        try:
            proc.wait(timeout=args.every)
        except subprocess.TimeoutExpired:
            pass
        samples.append((time.monotonic() - start, busy_seconds(), containers_seconds(),
                        running_containers()))
    wall = time.monotonic() - start
    engine_after = engine_processes()

    busy = samples[-1][1] - busy0
    cont = samples[-1][2] - cont0
    engine: dict[str, float] = {}
    for pid, (name, cpu) in engine_after.items():
        before = engine_before.get(pid)
        engine[name] = engine.get(name, 0.0) + cpu - (before[1] if before and
                                                      before[0] == name else 0.0)
    print(f"\n{' '.join(command)}: exit {proc.returncode}, {wall:.0f} s on {cores} cores")
    print(f"machine busy      {busy:8.0f} core-s  ({busy / wall / cores:4.0%} of the machine)")
    print(f"containers        {cont:8.0f} core-s  ({cont / max(busy, 1e-9):4.0%} of busy)")
    for name, cpu in sorted(engine.items(), key=lambda kv: -kv[1]):
        print(f"{name:17s} {cpu:8.0f} core-s  ({cpu / max(busy, 1e-9):4.0%} of busy; with the "
              "children it waited for)")
    print(f"\n{'from s':>7s} {'busy':>6s} {'containers':>11s} {'running':>8s}")
    for (t0, b0, c0, n0), (t1, b1, c1, _) in zip(samples, samples[1:]):
        span = max(t1 - t0, 1e-9)
        print(f"{t0:7.0f} {(b1 - b0) / span / cores:6.0%} {(c1 - c0) / span / cores:11.0%} "
              f"{n0:8d}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())

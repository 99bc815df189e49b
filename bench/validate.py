"""Time validating each environment's inventory, in-process and as a process.

Per environment (local, development, testnet, production):

- warm: ``host_validation.validate_inventory(Inventory(path))`` with a fresh Inventory each run, best and
  median of 20 runs in this process (imports already paid);
- cold: the first such call in a fresh Python process, measured inside it (and, separately, the
  imports it needed), best and median of 5 fresh processes;
- process: ``flashmm-config validate <inventory> -q`` wall time, best and median of 5, and the
  CPU (user + system) each such process used, best and median.

Targets: in-process validation under 150 ms per environment; a ``validate`` process at most
150 ms of CPU (start-up and imports included).  Then the floor under that target: the CPU of
processes that only import what any ``validate`` needs (a bare Python, PyYAML, pydantic, the
schema's models), median of 10 each.  Figures only.

    .venv/bin/python bench/validate.py
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from flashmm_deploy.inventory import host_validation# noqa: E402
from flashmm_deploy.inventory.inventory import Inventory  # noqa: E402

ENVIRONMENTS = ("local", "development", "testnet", "production")
WARM_RUNS, COLD_RUNS, PROCESS_RUNS = 20, 5, 10
TARGET_MS = 150
CLI = Path(sys.executable).parent / "flashmm-config"

COLD = """
import sys, time, json
sys.path.insert(0, sys.argv[2])
t0 = time.perf_counter()
from flashmm_deploy.inventory import host_validation
from flashmm_deploy.inventory.inventory import Inventory
t1 = time.perf_counter()
results = host_validation.validate_inventory(Inventory(sys.argv[1]))
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first": t2 - t1, "hosts": len(results)}))
"""


def ms(seconds: float) -> float:
    return seconds * 1000.0


def best_median(samples: list[float]) -> tuple[float, float]:
    return min(samples), statistics.median(samples)


def warm(path: Path) -> tuple[list[float], int]:
    samples, hosts = [], 0
    for _ in range(WARM_RUNS):
        t0 = time.perf_counter()
        results = host_validation.validate_inventory(Inventory(path))
        samples.append(time.perf_counter() - t0)
        hosts = len(results)
    return samples, hosts


def cold(path: Path) -> tuple[list[float], list[float]]:
    first, imports = [], []
    for _ in range(COLD_RUNS):
        proc = subprocess.run([sys.executable, "-c", COLD, str(path), str(ROOT / "src")],
                              capture_output=True, text=True, cwd=ROOT, check=True)
        data = json.loads(proc.stdout)
        first.append(data["first"])
        imports.append(data["import"])
    return first, imports


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process(path: Path) -> tuple[list[float], list[float], int]:
    """Wall time and CPU of each ``validate`` process (the CPU from the children's rusage:
    machine noise moves it far less than the wall clock)."""
    samples, cpu, code = [], [], 0
    for _ in range(PROCESS_RUNS):
        c0, t0 = children_cpu(), time.perf_counter()
        proc = subprocess.run([str(CLI), "validate", str(path.relative_to(ROOT)), "-q"],
                              capture_output=True, text=True, cwd=ROOT)
        samples.append(time.perf_counter() - t0)
        cpu.append(children_cpu() - c0)
        code = proc.returncode
    return samples, cpu, code


# What any validate process pays before it reads an inventory: each line's CPU includes the
# lines above it.
FLOOR = (("a bare Python", "pass"),
         ("+ PyYAML", "import yaml"),
         ("+ pydantic", "import yaml, pydantic.main"),
         ("+ the schema's models", "import yaml, flashmm_deploy.config.schema"),
         ("+ Ansible's argument validator",
          "import yaml, flashmm_deploy.config.schema; "
          "from ansible.module_utils.common.arg_spec import ArgumentSpecValidator"))


def floor() -> None:
    print(f"\nthe floor: CPU of a process that only imports, ms (median of {PROCESS_RUNS})")
    for label, code in FLOOR:
        cpu = []
        for _ in range(PROCESS_RUNS):
            c0 = children_cpu()
            subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
            cpu.append(children_cpu() - c0)
        print(f"  {label:<32} {ms(statistics.median(cpu)):>6.1f}")


def main() -> None:
    load = os.getloadavg()
    print(f"flashmm-config validate timings, ms (load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]})")
    print(f"warm: best/median of {WARM_RUNS} in-process runs; cold: first call in a fresh process "
          f"(imports apart), best/median of {COLD_RUNS}; process: CLI wall time, best/median of "
          f"{PROCESS_RUNS}, and its CPU; targets: in-process < {TARGET_MS} ms, process CPU "
          f"<= {TARGET_MS} ms")
    header = (f"{'environment':<12} {'hosts':>5}  {'warm best':>9} {'warm med':>8}  "
              f"{'cold best':>9} {'cold med':>8} {'imports':>8}  "
              f"{'proc best':>9} {'proc med':>8}  {'cpu best':>8} {'cpu med':>7} {'exit':>4}")
    print(header)
    print("-" * len(header))
    for env in ENVIRONMENTS:
        path = ROOT / "inventories" / env
        w, hosts = warm(path)
        first, imports = cold(path)
        p, cpu, code = process(path)
        wb, wm = best_median(w)
        cb, cm = best_median(first)
        pb, pm = best_median(p)
        ub, um = best_median(cpu)
        print(f"{env:<12} {hosts:>5}  {ms(wb):>9.1f} {ms(wm):>8.1f}  {ms(cb):>9.1f} {ms(cm):>8.1f} "
              f"{ms(statistics.median(imports)):>8.1f}  {ms(pb):>9.1f} {ms(pm):>8.1f}  "
              f"{ms(ub):>8.1f} {ms(um):>7.1f} {code:>4}")
    floor()


if __name__ == "__main__":
    main()

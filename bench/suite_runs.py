"""Which tests start how many processes, and what they cost: the figures behind the suite's
time.  Reads the log that ``FLASHMM_TEST_RUN_LOG=FILE`` makes the test helpers write (one line
per ``ansible-playbook``, ``flashmm-config``, docker or fleet.sh process a test starts through
``tests/support.run`` or the engine and fleet helpers, and one per pytest process at its end)
and prints, per command, per test file and for the costliest tests: processes, their wall
seconds and their CPU seconds (the process and its children: the Ansible workers, the modules,
docker compose), and what the pytest processes spent themselves.  Figures only.

    FLASHMM_TEST_RUN_LOG=/tmp/runs.jsonl ./scripts/test.sh tests/integration
    .venv/bin/python bench/suite_runs.py /tmp/runs.jsonl [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("log")
    parser.add_argument("--top", type=int, default=25, help="tests listed (default 25)")
    args = parser.parse_args()
    lines = [json.loads(line) for line in open(args.log, encoding="utf-8") if line.strip()]
    runs = [r for r in lines if r.get("kind") != "worker"]
    workers = [r for r in lines if r.get("kind") == "worker"]
    if not runs:
        print(f"{args.log}: no runs logged", file=sys.stderr)
        return 1

    def table(title: str, key) -> dict:
        rows: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
        for r in runs:
            row = rows[key(r)]
            row[0] += 1
            row[1] += r["seconds"]
            row[2] += r["cpu"]
        print(f"\n{title:70s} {'runs':>5s} {'wall s':>8s} {'cpu s':>8s}")
        return rows

    def show(rows: dict, limit: int | None = None) -> None:
        for name, (n, wall, cpu) in sorted(rows.items(), key=lambda kv: -kv[1][2])[:limit]:
            print(f"{name[-70:]:70s} {n:5d} {wall:8.1f} {cpu:8.1f}")

    total = (len(runs), sum(r["seconds"] for r in runs), sum(r["cpu"] for r in runs))
    print(f"{total[0]} processes, {total[1]:.0f} s of wall time, {total[2]:.0f} s of CPU")
    if workers:     # the pytest processes' own lines (tests/integration/conftest.py)
        own = sum(w["cpu"] for w in workers)
        children = sum(w["children_cpu"] for w in workers)
        print(f"{len(workers)} pytest process(es): {own:.0f} s of CPU of their own (the tests' "
              f"code), {children:.0f} s in all their children, of which {children - total[2]:.0f} s "
              "in processes not logged above (redis-servers, the engine and image scripts); the engine's "
              "(dockerd, containers) in neither")
    show(table("by command", lambda r: r["cmd"]))
    show(table("by test file", lambda r: r["test"].split("::")[0]))
    show(table(f"the {args.top} costliest tests", lambda r: r["test"]), args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, the linters (ruff, yamllint, ansible-lint in the
# production profile) and the freshness of the generated files, then both test tiers:
#   tests/unit         no process, no socket (a guard enforces it): seconds, one process
#   tests/integration  real redis-server, ansible-playbook, flashmm-config, Docker engine:
#                      pytest-xdist workers, the count from the core count
# The linters run beside the unit tier.  Exits non-zero on any failure, including "no tests
# collected" (pytest's exit 5).  Arguments go to one pytest run over the workers instead:
#   ./scripts/test.sh tests/unit        ./scripts/test.sh -k envfile      ./scripts/test.sh -m engine
# FLASHMM_TEST_WORKERS=N sets the worker count (default: one more than the cores: a worker
# waiting on the engine (containers starting, health checks) leaves its core to the extra one.
# Measured on 2 cores, same code, fresh clones: 2 workers 612 s with the machine 71% busy,
# 3 workers 530 s at 88%, 4 workers 531 s at 95%).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

cores=$(nproc 2>/dev/null || echo 2)
workers=${FLASHMM_TEST_WORKERS:-$(( cores + 1 ))}
PYTEST=(pytest -q -p no:cacheprovider)
# loadgroup: a module's tests that share a module-scoped fixture go to one worker; the order
# tests/conftest.py gives (those groups first, the engine's first of all) is kept
XDIST=(-n "$workers" --dist loadgroup --no-loadscope-reorder)

if [ "$#" -gt 0 ]; then
  echo "== pytest ($workers workers): $*"
  exec "${PYTEST[@]}" "${XDIST[@]}" "$@"
fi

log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
lint() {
  echo "== ruff" && ruff check . &&
  echo "== yamllint" && yamllint . &&
  echo "== ansible-lint (production profile)" && ansible-lint -q &&
  echo "== generated files are up to date (.env.example, docs/configuration.md, flashmm_config/fields.json)" &&
  flashmm-config docs --check
}
lint >"$log/lint" 2>&1 &
lint_pid=$!
# The engine and the local images, meanwhile: on a fresh machine the images take a minute or
# two to build (mostly waiting on the package mirror), which the engine tests would otherwise
# wait for in their first fixture.  A failure here is only reported: that fixture runs the
# same scripts again and fails the tests with their message.
images() {
  local host
  host=$(scripts/engine.sh start) && export "$host" && scripts/build-images.sh
}
images >"$log/images" 2>&1 &
images_pid=$!

status=0
start=$SECONDS
echo "== pytest: unit tier (tests/unit)"
"${PYTEST[@]}" tests/unit || status=$?
echo "   unit tier: $(( SECONDS - start )) s"

lint_status=0
wait "$lint_pid" || lint_status=$?
cat "$log/lint"
[ "$lint_status" -eq 0 ] || { echo "test.sh: the linters failed (exit $lint_status)" >&2; exit "$lint_status"; }
[ "$status" -eq 0 ] || { echo "test.sh: the unit tier failed (exit $status)" >&2; exit "$status"; }

wait "$images_pid" || { echo "test.sh: the engine or the images are not ready (the engine tests will say why):"; tail -5 "$log/images"; }
start=$SECONDS
echo "== pytest: integration tier (tests/integration, $workers workers on $cores cores)"
"${PYTEST[@]}" "${XDIST[@]}" tests/integration || status=$?
echo "   integration tier: $(( SECONDS - start )) s"
exit "$status"

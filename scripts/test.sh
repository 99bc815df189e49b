#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, the linters (ruff, yamllint, ansible-lint in the
# production profile), freshness of the generated files, then both test tiers:
#   tests/unit         no process, no socket (a guard enforces it): seconds
#   tests/integration  real redis-server, ansible-playbook, flashmm-config, Docker engine
# Exits non-zero on any failure, including "no tests collected".  Arguments go to pytest:
#   ./scripts/test.sh tests/unit        ./scripts/test.sh -k envfile
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
ruff check .
echo "== yamllint"
yamllint .
echo "== ansible-lint (production profile)"
ansible-lint -q
echo "== generated files are up to date (.env.example, docs/configuration.md, flashmm_config/fields.json)"
flashmm-config docs --check
echo "== pytest"
pytest -q -p no:cacheprovider "$@"

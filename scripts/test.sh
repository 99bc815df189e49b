#!/usr/bin/env bash
# The whole test suite: set-up, yamllint, ansible-lint (production profile), freshness of the
# generated docs, then every unit and integration test (real redis-server, ansible-playbook and
# docker-compose).  Exits non-zero on any failure, including "no tests collected".
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== yamllint"
yamllint .
echo "== ansible-lint (production profile)"
ansible-lint -q
echo "== generated .env.example and docs/configuration.md are up to date"
flashmm-config docs --check
echo "== pytest"
pytest -q -p no:cacheprovider "$@"

#!/usr/bin/env bash
# The main job: set up, validate every environment, and deploy the `local` inventory into the
# sandbox (.sandbox/local/<host>/) against a real local redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

# The local inventory seeds 127.0.0.1:6379 (one database per host).  Start a redis-server
# there if nothing answers; its data and log live in .state/redis.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  mkdir -p .state/redis
  redis-server --port 6379 --bind 127.0.0.1 --daemonize yes --dir "$PWD/.state/redis" \
    --logfile "$PWD/.state/redis/redis.log" --pidfile "$PWD/.state/redis/redis.pid" --save "" >/dev/null
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "run-local: started redis-server on 127.0.0.1:6379 (log: .state/redis/redis.log)"
fi

export PATH="$PWD/.venv/bin:$PATH"
echo "run-local: validating every environment"
flashmm-config validate inventories/local inventories/development inventories/testnet inventories/production
flashmm-config secrets generate inventories/local
ansible-playbook deploy.yml -i inventories/local
echo "run-local: deployed to $PWD/.sandbox/local/<host>/ (hosts: local-1 local-2 local-3);"
echo "run-local: runtime keys in redis 127.0.0.1:6379 databases 1-3, e.g.:"
echo "  redis-cli -n 1 --scan --pattern 'flashmm:config:*'"

#!/usr/bin/env bash
# The main job: set up, validate every environment, and deploy inventories/local: three hosts on
# this machine, each with its directory .sandbox/local/<host>/ and its own compose stack
# (project flashmm-<host>: the stand-in FlashMM app and a password-protected Redis, ports on
# 127.0.0.1 only) on a Docker engine that scripts/engine.sh finds or starts.
# Without an engine it renders and seeds as far as it can (one redis-server per host on the
# port its stack would publish, with the host's rendered ACL file) and says why no stack is up.
# Running it again is quick and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
say() { printf 'run-local: %s\n' "$*"; }

say "validating every environment"
flashmm-config validate -q inventories/local inventories/development inventories/testnet \
  inventories/production
flashmm-config secrets generate inventories/local

# host api-port redis-port, from the inventory itself
mapfile -t hosts < <(.venv/bin/python - <<'PY'
import yaml
inv = yaml.safe_load(open("inventories/local/hosts.yml"))
for name, hv in inv["all"]["children"]["flashmm"]["hosts"].items():
    print(name, hv["flashmm_stack_api_port"], hv["flashmm_stack_redis_port"])
PY
)
fallback=.state/redis-fallback

stop_fallback() {       # redis-servers of an earlier engine-less run hold the stacks' ports
  local pid
  for pid in "$fallback"/*.pid; do
    [ -f "$pid" ] || continue
    kill "$(cat "$pid")" 2>/dev/null || true
    rm -f "$pid"
  done
}

wait_healthy() {        # host api-port: print the health URL once it answers 200
  local url="http://127.0.0.1:$2/health"
  for _ in $(seq 1 60); do
    if .venv/bin/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
        "$url" 2>/dev/null; then
      say "$1 health: $url"
      return 0
    fi
    sleep 0.5
  done
  say "$1 health: $url does not answer 200 (see: docker compose -p flashmm-$1 logs)"
  return 1
}

if engine=$(scripts/engine.sh start); then
  export "${engine?}"
  stop_fallback
  scripts/build-images.sh
  ansible-playbook deploy.yml -i inventories/local
  say "deployed to $PWD/.sandbox/local/<host>/ with $engine"
  status=0
  for line in "${hosts[@]}"; do
    read -r host api _ <<<"$line"
    wait_healthy "$host" "$api" || status=1
  done
  exit "$status"
fi

say "no Docker engine could be started (scripts/engine.sh said why, above): rendering and"
say "seeding without the stacks; one redis-server per host stands in for its stack's Redis"
ansible-playbook deploy.yml -i inventories/local -e flashmm_compose_up=false --skip-tags flashmm_runtime
mkdir -p "$fallback"
for line in "${hosts[@]}"; do
  read -r host _ port <<<"$line"
  if ! redis-cli -p "$port" --user healthcheck --pass none --no-auth-warning ping >/dev/null 2>&1; then
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --save "" \
      --aclfile "$PWD/.sandbox/local/$host/redis/users.acl" --dir "$PWD/$fallback" \
      --pidfile "$PWD/$fallback/$host.pid" --logfile "$PWD/$fallback/$host.log" >/dev/null
    for _ in $(seq 1 50); do
      redis-cli -p "$port" --user healthcheck --pass none --no-auth-warning ping >/dev/null 2>&1 && break
      sleep 0.1
    done
  fi
done
ansible-playbook deploy.yml -i inventories/local -e flashmm_compose_up=false --tags flashmm_runtime
say "rendered to $PWD/.sandbox/local/<host>/ and seeded the redis-servers on 127.0.0.1:16381-16383;"
say "no stack is running: start a Docker engine and run this again"

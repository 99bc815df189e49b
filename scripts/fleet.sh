#!/usr/bin/env bash
# A fleet of SSH-reachable FlashMM hosts on this machine, for deploys over SSH as operators run
# them (become, host keys, pipelining), the SSH benchmark and the tests:
#   scripts/fleet.sh start [N]   N targets (default 3): start the missing ones (and stopped ones
#                                again), remove those past N, write the inventory; again with
#                                another N resizes the fleet
#   scripts/fleet.sh stop        remove every target of the fleet and the stacks deploys started
#   scripts/fleet.sh status      one line per target: name, state, ssh port
# Each target is a container of localhost/flashmm-target:dev (scripts/build-images.sh) running
# sshd on 127.0.0.1:<port> only; the login is the user flashmm with a throwaway key pair, who
# becomes root with sudo.  A target shares this machine's network (its published ports and
# loopback) and has the engine's socket as /var/run/docker.sock and its flashmm_root mounted at
# the same path as here, so the compose stack a deploy starts from inside it runs on this
# machine's engine with the bind paths the compose file names (README, "Real hosts over SSH").
#
# Written (git-ignored): the inventory's hosts.yml and vault.yml (inventories/fleet; its
# group_vars are committed), the keys and known_hosts (.state/fleet), the hosts' roots
# (.sandbox/fleet/<host>).  Settings, for tests and a second fleet beside the first:
#   FLASHMM_FLEET_NAME       fleet name (default fleet): containers flashmm-<name>-target-NN,
#                            compose projects flashmm-<name>-NN
#   FLASHMM_FLEET_INVENTORY  inventory directory (default inventories/fleet)
#   FLASHMM_FLEET_STATE      keys and known_hosts (default .state/fleet)
#   FLASHMM_FLEET_ROOTS      where the hosts' roots live (default .sandbox/fleet)
#   FLASHMM_FLEET_PORT       first port (default 42200): target NN listens on PORT+3*(NN-1),
#                            its stack publishes the API on the next port and Redis on the one after
# Needs an engine: eval "$(scripts/engine.sh start)" first (uses $DOCKER_HOST, or the default).
set -euo pipefail
cd "$(dirname "$0")/.."

NAME="${FLASHMM_FLEET_NAME:-fleet}"
INVENTORY="${FLASHMM_FLEET_INVENTORY:-inventories/fleet}"
STATE="${FLASHMM_FLEET_STATE:-.state/fleet}"
ROOTS="${FLASHMM_FLEET_ROOTS:-.sandbox/fleet}"
PORT="${FLASHMM_FLEET_PORT:-42200}"
IMAGE="localhost/flashmm-target:dev"
LABEL="io.flashmm.fleet"
USER_NAME="flashmm"
MAX_TARGETS=99

say() { printf 'fleet: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[[ "$NAME" =~ ^[a-z0-9][a-z0-9-]{0,30}$ ]] || die "FLASHMM_FLEET_NAME must be lower-case letters, digits and '-'"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "FLASHMM_FLEET_PORT must be a port number"
mkdir -p "$STATE" "$ROOTS" "$INVENTORY"
STATE=$(cd "$STATE" && pwd)
ROOTS=$(cd "$ROOTS" && pwd)
INVENTORY=$(cd "$INVENTORY" && pwd)

engine() {
  command -v docker >/dev/null 2>&1 || die "the docker CLI is not installed: run scripts/setup.sh"
  timeout 15 docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
    die "no Docker engine answers at ${DOCKER_HOST:-the default socket}: run eval \"\$(scripts/engine.sh start)\" first"
  local host="${DOCKER_HOST:-unix:///var/run/docker.sock}"
  [[ "$host" == unix://* ]] || die "DOCKER_HOST=$host: a target needs the engine's unix socket to mount"
  SOCKET="${host#unix://}"
  [ -S "$SOCKET" ] || die "$SOCKET is not a socket"
}

container() { printf 'flashmm-%s-target-%02d' "$NAME" "$1"; }
host_name() { printf 'fleet-%02d' "$1"; }
project() { printf 'flashmm-%s-%02d' "$NAME" "$1"; }
ssh_port() { echo $((PORT + 3 * ($1 - 1))); }

# The fleet's targets, as "index container-name state" lines, by index.
targets() {
  docker ps -a --filter "label=$LABEL=$NAME" --format '{{.Label "io.flashmm.fleet-index"}} {{.Names}} {{.State}}' |
    sort -n
}

free() {        # true when nothing listens on 127.0.0.1:$1 (as sshd binds: SO_REUSEADDR)
  python3 - "$1" <<'PY'
import socket, sys
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", int(sys.argv[1])))
    except OSError:
        sys.exit(1)
PY
}

# Wait (bounded) until the target's sshd greets on its port.
wait_ssh() {
  python3 - "$1" <<'PY' || return 1
import socket, sys, time
deadline = time.monotonic() + 30
while True:
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as s:
            if s.recv(64).startswith(b"SSH-"):
                sys.exit(0)
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.1)
PY
}

keys() {
  chmod 700 "$STATE"
  if [ ! -s "$STATE/id_ed25519" ]; then
    ssh-keygen -q -t ed25519 -N '' -C "flashmm fleet $NAME (throwaway)" -f "$STATE/id_ed25519"
    say "generated the fleet's key pair ($STATE/id_ed25519)"
  fi
  if [ ! -s "$STATE/ssh_host_ed25519_key" ]; then
    ssh-keygen -q -t ed25519 -N '' -C "flashmm fleet $NAME host key" -f "$STATE/ssh_host_ed25519_key"
  fi
  cp "$STATE/id_ed25519.pub" "$STATE/authorized_keys.tmp"
  chmod 644 "$STATE/authorized_keys.tmp"
  mv "$STATE/authorized_keys.tmp" "$STATE/authorized_keys"
}

run_target() {  # index: a new target container
  local i=$1 name port root
  name=$(container "$i")
  port=$(ssh_port "$i")
  root="$ROOTS/$(host_name "$i")"
  free "$port" || die "127.0.0.1:$port (ssh of $(host_name "$i")) is in use: set FLASHMM_FLEET_PORT"
  mkdir -p "$root"
  docker run -d --name "$name" --label "$LABEL=$NAME" --label "io.flashmm.fleet-index=$i" \
    --network host --restart no --stop-timeout 2 \
    -e "FLASHMM_TARGET_PORT=$port" \
    -v "$STATE/ssh_host_ed25519_key:/etc/flashmm-target/ssh_host_ed25519_key:ro" \
    -v "$STATE/authorized_keys:/etc/flashmm-target/authorized_keys:ro" \
    -v "$SOCKET:/var/run/docker.sock" \
    -v "$root:$root" \
    "$IMAGE" >/dev/null
}

inventory() {   # N: write hosts.yml (atomically) and the known_hosts file
  local n=$1 i host_key
  host_key=$(cut -d' ' -f1,2 "$STATE/ssh_host_ed25519_key.pub")
  : >"$STATE/known_hosts.tmp"
  for ((i = 1; i <= n; i++)); do
    printf '[127.0.0.1]:%s %s\n' "$(ssh_port "$i")" "$host_key" >>"$STATE/known_hosts.tmp"
  done
  mv "$STATE/known_hosts.tmp" "$STATE/known_hosts"
  {
    printf -- '---\n'
    printf '# Generated by scripts/fleet.sh start %s (git-ignored): the fleet %s, targets reached over\n' "$n" "$NAME"
    printf '# SSH on 127.0.0.1 as %s with become; their settings are in group_vars/.\n' "$USER_NAME"
    printf 'all:\n  children:\n    flashmm:\n      hosts:\n'
    for ((i = 1; i <= n; i++)); do
      printf '        %s:\n' "$(host_name "$i")"
      printf '          ansible_port: %s\n' "$(ssh_port "$i")"
      printf '          flashmm_root: %s/%s\n' "$ROOTS" "$(host_name "$i")"
      printf '          flashmm_stack_api_port: %s\n' $(($(ssh_port "$i") + 1))
      printf '          flashmm_stack_redis_port: %s\n' $(($(ssh_port "$i") + 2))
      printf '          flashmm_stack_project_name: %s\n' "$(project "$i")"
    done
    printf '      vars:\n'
    printf '        ansible_host: 127.0.0.1\n'
    printf '        ansible_user: %s\n' "$USER_NAME"
    printf '        ansible_ssh_private_key_file: %s/id_ed25519\n' "$STATE"
    printf '        ansible_ssh_host_key_checking: true\n'
    printf '        ansible_ssh_common_args: -o UserKnownHostsFile=%s/known_hosts -o StrictHostKeyChecking=yes\n' "$STATE"
    printf '    # Filled by the playbooks for their later plays; declared so that an empty one does not warn.\n'
    printf '    flashmm_stack_hosts: {}\n    flashmm_runtime_hosts: {}\n'
    printf '    flashmm_restore_targets: {}\n    flashmm_restore_stack_targets: {}\n'
  } >"$INVENTORY/hosts.yml.tmp"
  mv "$INVENTORY/hosts.yml.tmp" "$INVENTORY/hosts.yml"
}

down_project() {  # compose project: the stack a deploy started from a target
  docker compose -p "$1" down -v --remove-orphans --timeout 5 >/dev/null 2>&1 ||
    say "WARNING: docker compose -p $1 down failed"
}

start() {
  local n=${1:-3} i idx name state
  [[ "$n" =~ ^[0-9]+$ ]] && ((n >= 1 && n <= MAX_TARGETS)) || die "N must be 1 to $MAX_TARGETS"
  engine
  docker image inspect "$IMAGE" >/dev/null 2>&1 || die "$IMAGE is not built: run scripts/build-images.sh"
  keys
  # Past N: removed, with their stacks.
  while read -r idx name state; do
    [ -n "$idx" ] || continue
    if ((idx > n)); then
      docker rm -f "$name" >/dev/null
      down_project "$(project "$idx")"
      say "removed $(host_name "$idx") ($name)"
    fi
  done < <(targets)
  local started=()
  for ((i = 1; i <= n; i++)); do
    name=$(container "$i")
    state=$(docker inspect --format '{{.State.Status}}' "$name" 2>/dev/null || true)
    case "$state" in
      running) ;;
      "") run_target "$i"; started+=("$i") ;;
      *) docker start "$name" >/dev/null; started+=("$i") ;;
    esac
  done
  for i in "${started[@]}"; do
    wait_ssh "$(ssh_port "$i")" || {
      docker logs --tail 20 "$(container "$i")" >&2 || true
      die "$(host_name "$i"): sshd does not answer on 127.0.0.1:$(ssh_port "$i") (its log above)"
    }
  done
  inventory "$n"
  if [ -x .venv/bin/flashmm-config ] && [ -f "$INVENTORY/group_vars/all/flashmm.yml" ]; then
    .venv/bin/flashmm-config secrets generate "$INVENTORY" | sed 's/^/fleet: /' >&2
  fi
  say "$n target(s) up (${#started[@]} started): ssh $USER_NAME@127.0.0.1 -p $(ssh_port 1)..$(ssh_port "$n"); inventory $INVENTORY"
}

stop() {
  local idx name state
  engine
  while read -r idx name state; do
    [ -n "$idx" ] || continue
    docker rm -f "$name" >/dev/null
    down_project "$(project "$idx")"
    say "removed $(host_name "$idx") ($name)"
  done < <(targets)
  rm -f "$INVENTORY/hosts.yml"
}

status() {
  local idx name state
  engine
  while read -r idx name state; do
    [ -n "$idx" ] || continue
    printf '%s %s %s ssh 127.0.0.1:%s\n' "$(host_name "$idx")" "$name" "$state" "$(ssh_port "$idx")"
  done < <(targets)
}

case "${1:-}" in
  start) start "${2:-3}" ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start [N]|stop|status" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# A Docker engine for the project's scripts and tests, on machines without systemd.
#   scripts/engine.sh start    use the engine that answers ($DOCKER_HOST when set, else the default
#                              socket), or start (or find) a private dockerd; prints one line
#                              DOCKER_HOST=... on stdout:  eval "$(scripts/engine.sh start)"
#   scripts/engine.sh stop     stop the private dockerd started here (no-op if none)
#   scripts/engine.sh status   print the DOCKER_HOST line and exit 0 if an engine answers, else 1
# The private daemon keeps its socket and exec-root under a short path (unix socket paths are
# limited to ~108 bytes): $FLASHMM_ENGINE_RUN, default /run/flashmm-engine; its images and
# containers in .state/engine/root (or $FLASHMM_ENGINE_DATA); its log in .state/engine/dockerd.log.
# Progress goes to stderr.  Safe to run concurrently (flock).
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR="${FLASHMM_ENGINE_RUN:-/run/flashmm-engine}"
SOCK="$RUN_DIR/docker.sock"
PIDFILE="$RUN_DIR/dockerd.pid"
PRIVATE_HOST="unix://$SOCK"
DEFAULT_HOST="unix:///var/run/docker.sock"
STATE_DIR="$PWD/.state/engine"
LOG="$STATE_DIR/dockerd.log"
START_TIMEOUT=30
STOP_TIMEOUT=45          # dockerd gives containers 15 s to stop, then tears down containerd

say() { printf 'engine: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# True when an engine answers on $1 (a DOCKER_HOST value).
answers() {
  local version
  version=$(DOCKER_HOST="$1" DOCKER_CONTEXT='' timeout 10 docker version --format '{{.Server.Version}}' 2>/dev/null) \
    && [ -n "$version" ]
}

# True while process $1 runs (a zombie waiting for a reaper does not count).
alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) && [ -n "$state" ] && [[ "$state" != Z* ]]
}

# The pid of the private dockerd if it is alive (its pidfile names a dockerd serving our socket).
private_pid() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "dockerd .*--host $PRIVATE_HOST" || return 1
  echo "$pid"
}

# The data root the private dockerd $1 was started with (one engine per machine: another
# checkout's daemon is used as it is, images and all).
data_root_of() {
  tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | sed -n '/^--data-root$/{n;p;q}'
}

# A private dockerd whose data root was deleted under it (a checkout removed while its engine
# ran) answers but can neither build nor import an image: stop it, so that start makes a new one.
stop_if_orphaned() {
  local pid root
  pid=$(private_pid) || return 0
  answers "$PRIVATE_HOST" || return 0       # still starting: its data root is being made
  root=$(data_root_of "$pid")
  if [ -n "$root" ] && [ ! -d "$root/image" ]; then
    say "the private dockerd (pid $pid) keeps its data in $root, which is gone: stopping it"
    stop
  fi
}

# The first DOCKER_HOST that answers: the caller's, the default socket, the private daemon.
answering_host() {
  local host
  for host in ${DOCKER_HOST:+"$DOCKER_HOST"} "$DEFAULT_HOST" "$PRIVATE_HOST"; do
    if answers "$host"; then echo "$host"; return 0; fi
  done
  return 1
}

# Where the private daemon keeps images: overlay2 cannot stack on an overlay filesystem.
data_root() {
  local candidate
  for candidate in ${FLASHMM_ENGINE_DATA:+"$FLASHMM_ENGINE_DATA"} "$STATE_DIR/root" /var/lib/flashmm-engine; do
    mkdir -p "$candidate"
    if [ "$(stat -f -c %T "$candidate")" != overlayfs ]; then echo "$candidate"; return 0; fi
    say "$candidate is on an overlay filesystem, where overlay2 cannot work"
  done
  die "no directory for the engine's data outside an overlay filesystem: set FLASHMM_ENGINE_DATA"
}

lock() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/lock"
  flock -w 90 9 || die "another engine.sh holds $RUN_DIR/lock for more than 90 s"
}

start() {
  local pid root deadline started=''
  stop_if_orphaned
  if [ -n "${DOCKER_HOST:-}" ] && answers "$DOCKER_HOST"; then
    echo "DOCKER_HOST=$DOCKER_HOST"; return 0
  fi
  if [ -n "${DOCKER_HOST:-}" ] && [ "$DOCKER_HOST" != "$PRIVATE_HOST" ]; then
    say "DOCKER_HOST=$DOCKER_HOST does not answer: looking for another engine"
  fi
  if answers "$DEFAULT_HOST"; then echo "DOCKER_HOST=$DEFAULT_HOST"; return 0; fi
  command -v dockerd >/dev/null 2>&1 || die "dockerd is not installed: run scripts/setup.sh"
  lock
  if pid=$(private_pid); then
    say "private dockerd already running (pid $pid)"
  else
    root=$(data_root)
    mkdir -p "$STATE_DIR"
    # Left behind by a daemon that was killed: dockerd refuses a pidfile naming a live pid, and
    # waits for the containerd of its old pidfile, which may be a zombie not yet reaped.
    rm -f "$SOCK" "$PIDFILE"
    pid=$(cat "$RUN_DIR/exec/containerd/containerd.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && ! alive "$pid"; then rm -f "$RUN_DIR/exec/containerd/containerd.pid"; fi
    say "starting a private dockerd (socket $SOCK, data $root, log ${LOG#"$PWD/"})"
    printf '\n== %s engine.sh start\n' "$(date -Is)" >>"$LOG"
    # setsid: the daemon outlives the shell, test run or job that asked for it (it leaves our
    # process group); as a background job it is not a group leader, so setsid execs, $! is dockerd.
    setsid dockerd --data-root "$root" --exec-root "$RUN_DIR/exec" --host "$PRIVATE_HOST" \
      --pidfile "$PIDFILE" --storage-driver overlay2 </dev/null >>"$LOG" 2>&1 9>&- &
    started=$!
  fi
  deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if answers "$PRIVATE_HOST"; then
      say "private dockerd answers ($(DOCKER_HOST="$PRIVATE_HOST" docker version --format 'dockerd {{.Server.Version}}' 2>/dev/null))"
      echo "DOCKER_HOST=$PRIVATE_HOST"; return 0
    fi
    if [ -n "$started" ] && ! alive "$started"; then
      say "the private dockerd exited at start; the end of ${LOG#"$PWD/"}:"
      tail -n 25 "$LOG" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
  say "the private dockerd did not answer within ${START_TIMEOUT} s; the end of ${LOG#"$PWD/"}:"
  tail -n 25 "$LOG" >&2 || true
  exit 1
}

stop() {
  local pid deadline
  lock
  if ! pid=$(private_pid); then say "no private dockerd running"; return 0; fi
  say "stopping the private dockerd (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while ((SECONDS < deadline)); do
    alive "$pid" || { say "stopped"; return 0; }
    sleep 0.2
  done
  say "dockerd (pid $pid) still running after ${STOP_TIMEOUT} s: killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

status() {
  local host
  if host=$(answering_host); then echo "DOCKER_HOST=$host"; return 0; fi
  say "no engine answers"
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

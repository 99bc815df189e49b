#!/usr/bin/env bash
# Set up everything flashmm-deploy needs on a Debian machine (as root, or with sudo):
#   apt: redis-server, docker-compose (validates rendered compose files), python3-venv
#   .venv with the pinned Python dependencies (constraints.txt), the project installed editable
#   .collections with the Galaxy collections of requirements.yml
# Idempotent and quick when nothing changed.  Prints what it did.
set -euo pipefail
cd "$(dirname "$0")/.."

# The `ansible` bundle on PyPI that carries the collection versions of requirements.yml;
# used only when Galaxy cannot be reached.
ANSIBLE_BUNDLE="ansible==12.3.0"
ANSIBLE_BUNDLE_SHA256="cd156f82fa87f7a899212b0efa9f7ca3a24d609212de9f78428a572eb01e5414"

log() { printf 'setup: %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  log "installing with apt: ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  echo "setup: Python 3.11 is required (python3 is $(python3 -V 2>&1))" >&2; exit 1; }

stamp_want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.flashmm-stamp 2>/dev/null)" != "$stamp_want" ]; then
  log "installing Python dependencies into .venv (pinned by constraints.txt)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
  echo "$stamp_want" > .venv/.flashmm-stamp
fi

if [ ! -f .collections/ansible_collections/community/docker/MANIFEST.json ]; then
  log "installing collections from requirements.yml"
  if ! timeout 120 .venv/bin/ansible-galaxy collection install -r requirements.yml -p .collections >/dev/null 2>&1; then
    log "Galaxy unreachable: taking the collections from the $ANSIBLE_BUNDLE bundle on PyPI"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" "$ANSIBLE_BUNDLE"
    wheel=$(ls "$tmp"/ansible-*.whl)
    echo "$ANSIBLE_BUNDLE_SHA256  $wheel" | sha256sum -c --quiet -
    mkdir -p .collections
    .venv/bin/python - "$wheel" <<'PY'
import sys, zipfile
wanted = ("ansible_collections/community/docker/",
          "ansible_collections/community/library_inventory_filtering_v1/")
with zipfile.ZipFile(sys.argv[1]) as whl:
    whl.extractall(".collections", [n for n in whl.namelist() if n.startswith(wanted)])
PY
  fi
fi
log "ready: $(.venv/bin/ansible-playbook --version | sed -n 1p), redis $(redis-server --version | awk '{print $3}'), $(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /')"

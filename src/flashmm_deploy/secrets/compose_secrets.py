"""Secrets as files in the app's container (``flashmm_stack_compose_secrets``): which of the
app's variables become files, where they go, what ``.env`` says instead, and the label that
makes compose recreate the app when one of them changes.

With the setting on, every secret variable the app gets (each secret env var of ``.env`` but
those deploy keeps for itself, ``secret_files.NOT_FOR_THE_APP``, plus ``REDIS_URL`` when it
carries the Redis password) is written to ``secrets/<name>`` under the host's root (the
variable's name in lower case; the value exactly, no newline; mode
``flashmm_files_secret_mode``, 0600), declared as a top-level compose ``secrets:`` entry with
``file: ./secrets/<name>`` and given to the app service, which sees it as
``/run/secrets/<name>``; ``.env`` holds ``<VAR>_FILE=/run/secrets/<name>`` and not ``<VAR>``.
Nothing of a value is in the container's configuration (``docker inspect``), nor in the
engine's stored ``config.v2.json``.

How compose v2 gives a ``file:`` secret to a container without swarm (measured with the
project's Compose 2.40.3 on dockerd 20.10): a read-only bind mount of the host file at
``/run/secrets/<name>``, owner and mode as on the host; ``uid``, ``gid`` and ``mode`` of the
long syntax are ignored ("not supported"), so the file's own mode is what the container sees.
The app runs as root (uid 0: the seed's ``python:3.11-slim`` image and the stand-in set no
``USER``), which reads a 0600 file of any owner: the files keep the secret mode every other
secret file has.  An image that runs as another user needs ``flashmm_files_owner`` set to it.

Two consequences of a bind mount of a file: deploy replaces a file by rename (atomic writes),
and a running container keeps the old inode; and compose does not recreate a container whose
secret file changed (its config hash covers the secret's definition, not the content).  So the
app service carries ``io.flashmm.secrets-digest`` (``digest``): it changes exactly when a
secret file's content does, and compose recreates the app, which then mounts the new files.

Light: imported by the controller pass and by action plugins in forked workers.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

SETTING = "flashmm_stack_compose_secrets"
SECRETS_DIR = "secrets"
CONTAINER_DIR = "/run/secrets"
FILE_SUFFIX = "_FILE"
LABEL = "io.flashmm.secrets-digest"


def name(var: str) -> str:
    """The compose secret's name (and file name) of ``var``: ``REDIS_URL`` -> ``redis_url``."""
    return var.lower()


def host_path(var: str) -> str:
    """Where deploy writes ``var``'s file, relative to the host's root."""
    return f"{SECRETS_DIR}/{name(var)}"


def container_path(var: str) -> str:
    return f"{CONTAINER_DIR}/{name(var)}"


def is_secret_path(path: str) -> bool:
    """A path under the root that holds one secret (``secrets/<name>``)."""
    return path.startswith(SECRETS_DIR + "/")


def app_vars(secret_env: Iterable[str], not_for_the_app: Iterable[str],
             password_in_url: bool) -> list[str]:
    """The variables the app gets as files: every secret env var but deploy's own, and
    REDIS_URL when it carries the password.  Generic over the schema's list."""
    names = set(secret_env) - set(not_for_the_app)
    if password_in_url:
        names.add("REDIS_URL")
    return sorted(names)


def split(env: Mapping[str, str], as_files: Iterable[str]) -> tuple[dict[str, str],
                                                                     dict[str, str]]:
    """(``.env``'s variables, path -> content of each secret file) for ``env``, the variables
    the app would get in its environment: each of ``as_files`` leaves for its file, and
    ``<VAR>_FILE`` names where the container sees it."""
    out = dict(env)
    files = {}
    for var in as_files:
        files[host_path(var)] = out.pop(var, "")
        out[var + FILE_SUFFIX] = container_path(var)
    return out, files


def digest(host: str, files: Mapping[str, str]) -> str:
    """The app service's ``io.flashmm.secrets-digest`` label: changes exactly when the content
    of a secret file does.  Visible to anyone who can call the Docker API, so it must tell
    nothing about a value: an HMAC-SHA256 whose key is a SHA-256 over every secret file
    together (names and contents, length-prefixed), never a hash of one secret.  To test a
    guess of one value one needs every other value too, and validation makes SECRET_KEY,
    ENCRYPTION_KEY and API_AUTH_TOKEN (generated, 32+ characters) part of every environment:
    the key is always at least those secrets.  The message is the host's name, so two hosts
    with the same secrets show different labels.  Why not a random salt per host: deploy,
    check mode and restore compute the label on the controller (any operator's), where the
    only place a salt could live is the vault, as one more secret to generate, back up and
    rotate; the secrets themselves already are that key."""
    material = hashlib.sha256()
    for path in sorted(files):
        for part in (path.encode("utf-8"), files[path].encode("utf-8")):
            material.update(len(part).to_bytes(8, "big") + part)
    return hmac.new(material.digest(), f"{LABEL}\0{host}".encode("utf-8"),
                    hashlib.sha256).hexdigest()


def compose_context(host: str, as_files: Iterable[str],
                    files: Mapping[str, str]) -> dict | None:
    """What the compose template renders for the app's secrets: None when off."""
    as_files = sorted(as_files)
    if not as_files:
        return None
    return {"names": [name(v) for v in as_files],
            "files": {name(v): "./" + host_path(v) for v in as_files},
            "label": LABEL, "digest": digest(host, files)}

# Over 350 lines: one rule (a restored host's secrets) over .env, app files, records.
"""A restore's treatment of secrets, on the controller: which secrets the restored hosts get,
and the restored ``flashmm:secure:*`` records under the key those hosts hold.

By default a restore keeps the secrets the vault holds now.  A backup taken before a rotation
holds the old Redis password and encryption key; putting them back would lock deploy, backup
and rotation out of Redis (they authenticate with the vault's password) and leave the records
readable only with a key the vault no longer has.  So:

* ``.env`` is the backup's, with the value of every secret variable taken from the current
  vault (``REDIS_URL``'s password too); ``influxdb/influxdb.env`` likewise; ``redis/users.acl``
  is the file deploy renders now (the controller pass's); a compose file that fingerprints the
  ACL file (``io.flashmm.acl-sha256``) gets the fingerprint of that file.
* Each restored record readable only with the backup's keys (its ``ENCRYPTION_KEY`` /
  ``OLD_ENCRYPTION_KEY``, from the backup's encrypted ``.env``) is re-encrypted under the
  current ``ENCRYPTION_KEY`` here, before it reaches the host, with the timestamp it had.  The
  new token is a function of the key, the record's name, timestamp and plaintext (its IV is an
  HMAC of them), so a second restore of the same backup writes the same token and changes
  nothing.  A record already under the current key is restored as it is; one that no key
  opens (not a token, or a key nobody has) is restored as it is and counted.

With ``restore_secrets`` the backup's secret files are restored as they are, and the backup's
secrets are written into the vault (``vault_values``, ``write_vault``) so that vault and hosts
agree afterwards.

Light on purpose (no schema import): the per-host parts run in forked Ansible workers.
Nothing here puts a secret into a message or a result.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flashmm_deploy.secrets import compose_secrets, secret_generation
from flashmm_deploy.config import dotenv_file
from flashmm_deploy.backup.backup_store import SECURE_PREFIX, BackupError
from flashmm_deploy.core.errors import FlashmmError
from flashmm_deploy.core.paths import display_path
from flashmm_deploy.hostside.redis_acl import DEPLOY_PASSWORD_ENVS
from flashmm_deploy.secrets.secret_files import app_secret_files, env_file, influxdb_env_file

ENV_PATH = ".env"
INFLUXDB_ENV_PATH = "influxdb/influxdb.env"
ACL_PATH = "redis/users.acl"
COMPOSE_PATH = "docker-compose.yml"
NEW_KEY, OLD_KEY = "ENCRYPTION_KEY", "OLD_ENCRYPTION_KEY"
# what secret_files.influxdb_env_file puts into influxdb.env from the vault
INFLUXDB_SECRETS = ("DOCKER_INFLUXDB_INIT_PASSWORD", "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN")
_ACL_LABEL = re.compile(r'(io\.flashmm\.acl-sha256: )"[0-9a-f]{64}"')
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0", "")


def flag(value: Any, name: str = "restore_secrets") -> bool:
    """``-e restore_secrets=true`` (a string from -e, a bool from a vars file)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise BackupError(f"{name} must be true or false (got {value!r})")


# ---- the backup's secret files ----------------------------------------------------------------

def backup_env(files: Mapping[str, tuple[bytes, str, bool]], host: str, backup_id: str,
               path: str = ENV_PATH) -> dict[str, str] | None:
    """The variables of the backup's ``path`` (``.env`` by default), None when the backup holds
    no such file.  A file deploy did not write (edited by hand) is an error naming it."""
    if path not in files:
        return None
    try:
        env = dotenv_file.parse(files[path][0].decode("utf-8"))
        return (with_app_secret_files(env, {p: f[0] for p, f in files.items()})
                if path == ENV_PATH else env)
    except (UnicodeDecodeError, FlashmmError) as exc:
        why = str(exc) if isinstance(exc, FlashmmError) else "not UTF-8 text"
        raise BackupError(f"{host}: {path} in backup {backup_id} is not the file deploy writes "
                          f"({why}): its secrets cannot be replaced by the vault's; restore it "
                          "as it is with -e restore_secrets=true") from None


def app_file_vars(env: Mapping[str, str]) -> list[str]:
    """The variables a ``.env`` gives as files (``<VAR>_FILE`` naming ``/run/secrets/<name>``:
    compose secrets were on when it was written)."""
    suffix = compose_secrets.FILE_SUFFIX
    return sorted(name[:-len(suffix)] for name, value in env.items()
                  if name.endswith(suffix) and value == compose_secrets.container_path(
                      name[:-len(suffix)]))


def backup_as_files(files: Mapping[str, tuple[bytes, str, bool]]) -> list[str]:
    """``app_file_vars`` of the backup's ``.env`` (none without a readable one)."""
    try:
        return app_file_vars(dotenv_file.parse(files[ENV_PATH][0].decode("utf-8")))
    except (KeyError, UnicodeDecodeError, FlashmmError):
        return []


def with_app_secret_files(env: Mapping[str, str],
                          contents: Mapping[str, bytes]) -> dict[str, str]:
    """``.env``'s variables with each ``<VAR>_FILE`` (compose secrets) replaced by ``<VAR>``
    and the content of ``secrets/<name>`` (``contents``: path -> bytes): what the app had.
    FlashmmError (naming the file, never a value) when a named file is missing or not
    UTF-8."""
    out = dict(env)
    for var in app_file_vars(env):
        path = compose_secrets.host_path(var)
        if path not in contents:
            raise FlashmmError(f"it names {var} as a file, but there is no {path}")
        try:
            out[var] = contents[path].decode("utf-8")
        except UnicodeDecodeError:
            raise FlashmmError(f"{path} is not UTF-8 text") from None
        del out[var + compose_secrets.FILE_SUFFIX]
    return out


def fresh_app_files(files: Mapping[str, tuple[bytes, str, bool]], host: str, backup_id: str,
                    secret_env: Mapping[str, str], secrets: Mapping[str, str],
                    password_in_url: bool, redis_user: str | None = None) -> dict[str, str]:
    """path -> content of the backup's ``.env`` and, when it was taken with compose secrets on,
    its ``secrets/<name>`` files, with the secrets as deploy renders them from ``secrets`` (the
    current vault's); the compose file's ``io.flashmm.secrets-digest`` then digests those
    files (``fresh_secrets_label``).  Empty when the backup holds no ``.env``."""
    backup_vars = backup_env(files, host, backup_id)
    if backup_vars is None:
        return {}
    plan_env = fresh_plan_env(backup_vars, secret_env, password_in_url, redis_user)
    plan_env["as_files"] = backup_as_files(files)
    out = {ENV_PATH: env_file(plan_env, secret_env, secrets)[0]}
    out.update(app_secret_files(plan_env, secret_env, secrets))
    return out


_SECRETS_LABEL = re.compile(r'(' + re.escape(compose_secrets.LABEL) + r': )"[0-9a-f]{64}"')


def fresh_secrets_label(text: str, host: str, app_files: Mapping[str, str]) -> str:
    """A compose file whose app carries ``io.flashmm.secrets-digest`` with the digest of
    ``app_files`` (path -> content of the secret files written with it)."""
    digest = compose_secrets.digest(host, {p: c for p, c in app_files.items()
                                           if compose_secrets.is_secret_path(p)})
    return _SECRETS_LABEL.sub(lambda m: f'{m.group(1)}"{digest}"', text)


def _without_password(url: str) -> tuple[str, bool]:
    """(``url`` without its userinfo, whether it carried a password)."""
    if "://" not in url:
        return url, False
    scheme, rest = url.split("://", 1)
    authority, sep, tail = rest.partition("/")
    if "@" not in authority:
        return url, False
    userinfo, host = authority.rsplit("@", 1)
    return f"{scheme}://{host}{sep}{tail}", ":" in userinfo


def fresh_env(backup_vars: Mapping[str, str], secret_env: Mapping[str, str],
              secrets: Mapping[str, str], password_in_url: bool,
              redis_user: str | None = None) -> str:
    """The backup's ``.env`` with the secrets as deploy renders them from ``secrets`` (the
    current vault's; ``secret_files.env_file``): its non-secret values kept, ``REDIS_URL``
    carrying the current Redis password where it carried one (or the plan says it must)."""
    text, _ = env_file(fresh_plan_env(backup_vars, secret_env, password_in_url, redis_user),
                       secret_env, secrets)
    return text


def fresh_plan_env(backup_vars: Mapping[str, str], secret_env: Mapping[str, str],
                   password_in_url: bool, redis_user: str | None = None) -> dict[str, Any]:
    """The ``.env`` part of a plan (``secret_files.env_file``'s input) that renders the
    backup's variables ``backup_vars`` again, with other secrets."""
    public = {k: v for k, v in backup_vars.items() if k not in secret_env}
    in_url = password_in_url
    if public.get("REDIS_URL"):
        public["REDIS_URL"], had_password = _without_password(public["REDIS_URL"])
        in_url = in_url or had_password
    return {"public": public, "redis_password_in_url": in_url, "redis_user": redis_user}


def fresh_influxdb_env(backup_vars: Mapping[str, str], secrets: Mapping[str, str]) -> str:
    """The backup's ``influxdb/influxdb.env`` with the current vault's InfluxDB secrets."""
    public = {k: v for k, v in backup_vars.items() if k not in INFLUXDB_SECRETS}
    text, _ = influxdb_env_file({"public": public}, secrets)
    return text


def fresh_compose(text: str, acl: str) -> str:
    """A compose file whose Redis is recreated when its ACL file changes (the escape hatch's
    ``io.flashmm.acl-sha256`` label) fingerprints ``acl``, the file written with it."""
    digest = hashlib.sha256(acl.encode("utf-8")).hexdigest()
    return _ACL_LABEL.sub(lambda m: f'{m.group(1)}"{digest}"', text)


# ---- records ----------------------------------------------------------------------------------

def _fernet(key: str | None):
    from cryptography.fernet import Fernet

    if not key:
        return None
    try:
        return Fernet(key.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError):
        return None


def token(key: str, plaintext: bytes, timestamp: int, context: bytes) -> str:
    """A Fernet token of ``plaintext`` under ``key`` (the spec's format: version 0x80, the
    timestamp, a 16-byte IV, AES-128-CBC with PKCS7, HMAC-SHA256), whose IV is an HMAC of
    ``context``, the timestamp and the plaintext: the same input gives the same token."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    raw = base64.urlsafe_b64decode(key.encode("ascii"))
    signing, encryption = raw[:16], raw[16:]
    stamp = struct.pack(">Q", timestamp)
    iv = hmac.new(signing, b"flashmm-restore-iv\0" + context + b"\0" + stamp + plaintext,
                  hashlib.sha256).digest()[:16]
    padder = padding.PKCS7(algorithms.AES.block_size).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(encryption), modes.CBC(iv)).encryptor()
    basic = b"\x80" + stamp + iv + encryptor.update(padded) + encryptor.finalize()
    return base64.urlsafe_b64encode(basic + hmac.new(signing, basic, hashlib.sha256).digest()
                                    ).decode("ascii")


def reencrypt(entries: list[dict[str, Any]], current_key: str | None,
              open_keys: list[str | None]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``entries`` (module entries: values base64) with each ``flashmm:secure:*`` string record
    that ``current_key`` does not open but one of ``open_keys`` does re-encrypted under
    ``current_key``, TTL and timestamp kept.  Returns (entries, counts: ``records``,
    ``current``, ``reencrypted``, ``unreadable`` and the names of the unreadable ones)."""
    from cryptography.fernet import InvalidToken

    counts: dict[str, Any] = dict(records=0, current=0, reencrypted=0, unreadable=0,
                                  unreadable_keys=[])
    new = _fernet(current_key)
    openers = [f for f in (_fernet(k) for k in open_keys if k and k != current_key) if f]
    out = []
    for entry in entries:
        if not entry["key"].startswith(SECURE_PREFIX):
            out.append(entry)
            continue
        counts["records"] += 1
        value = (base64.b64decode(entry["values"][0])
                 if entry["type"] == "string" and len(entry["values"]) == 1 else None)
        replaced = None
        if value is not None and new is not None:
            try:
                new.decrypt(value)
                counts["current"] += 1
                out.append(entry)
                continue
            except (InvalidToken, ValueError, TypeError):
                pass
            for opener in openers:
                try:
                    plain = opener.decrypt(value)
                    stamp = opener.extract_timestamp(value)
                except (InvalidToken, ValueError, TypeError):
                    continue
                replaced = token(current_key, plain, stamp, entry["key"].encode("utf-8"))
                if new.decrypt(replaced) != plain:      # never write what cannot be read
                    raise BackupError(f"{entry['key']}: the re-encrypted record does not "
                                      "decrypt to its content")
                break
        if replaced is None:
            counts["unreadable"] += 1
            counts["unreadable_keys"].append(entry["key"])
            out.append(entry)
            continue
        counts["reencrypted"] += 1
        out.append(dict(entry, values=[base64.b64encode(replaced.encode("ascii")).decode("ascii")]))
    return out, counts


# ---- restore_secrets: the backup's secrets into the vault -------------------------------------

def vault_values(host_envs: Mapping[str, Mapping[str, str] | None],
                 secret_env: Mapping[str, str], backup_id: str) -> dict[str, str | None]:
    """vault key -> the value every restored host's backup ``.env`` holds (None: unset there,
    removed from the vault).  Hosts that disagree are an error naming the variable (the vault
    holds one value per environment); so is a host without ``.env``."""
    values: dict[str, str | None] = {}
    seen: dict[str, str] = {}
    for host, env in sorted(host_envs.items()):
        if env is None:
            raise BackupError(f"{host}: backup {backup_id} holds no .env: there are no secrets "
                              "of this host to restore (leave out -e restore_secrets)")
        for name, key in sorted(secret_env.items()):
            if name in DEPLOY_PASSWORD_ENVS:    # never in .env: the vault's stay
                continue
            value = env.get(name) or None
            if key in values and values[key] != value:
                raise BackupError(f"backup {backup_id}: {name} differs between {seen[key]} and "
                                  f"{host} (values hidden); the vault holds one value per "
                                  "environment: restore those hosts' secrets one at a time or "
                                  "not at all")
            values.setdefault(key, value)
            seen.setdefault(key, host)
    return values


def _open_vault(path: Path, keys: Any):
    from flashmm_deploy.inventory.vault import VaultFile

    where = display_path(path)
    vf = VaultFile.open(path, keys, where)
    if vf.doc is None or not vf.encrypted or not vf.vault_id:
        raise BackupError(f"{where}: not an encrypted vault with a vault id: the backup's "
                          "secrets are written only into one (flashmm-config secrets generate)")
    return vf, where


def _changes(secrets: Mapping[str, Any], values: Mapping[str, str | None]) -> list[str]:
    return sorted(k for k, v in values.items()
                  if (k in secrets if v is None else secrets.get(k) != v))


def planned_generation(path: Path, keys: Any, values: Mapping[str, str | None],
                       backup_id: str, now: float) -> dict[str, Any]:
    """Before any host is touched: the vault opens and no rotation is rolling in it.  Returns
    the secrets generation the restored hosts record, the one ``write_vault(..., now=now)``
    leaves in the vault: its current one when it holds ``values`` already, else the next."""
    vf, where = _open_vault(path, keys)
    _refuse_rolling(vf, where)
    if not _changes(vf.doc.get("flashmm_secrets") or {}, values):
        return secret_generation.current(vf.doc)
    doc = {secret_generation.VARIABLE: vf.doc.get(secret_generation.VARIABLE)}
    return secret_generation.bump(doc, f"restore {backup_id}: secrets", now=now)


def _refuse_rolling(vf: Any, where: str) -> None:
    rolling = sorted(f"{kind} ({entry.get('id')})"
                     for kind, entry in (vf.doc.get("flashmm_rotations") or {}).items()
                     if isinstance(entry, Mapping) and entry.get("state") == "rolling")
    if rolling:
        raise BackupError(f"{where}: rotation {', '.join(rolling)} is still rolling: finish it "
                          "(playbooks/rotate_secrets.yml with its rotation_id) before restoring "
                          "a backup's secrets")


def write_vault(path: Path, keys: Any, values: Mapping[str, str | None], backup_id: str, *,
                check: bool, now: float | None = None) -> dict[str, Any]:
    """Put ``values`` into the vault's ``flashmm_secrets`` (None: remove), keeping every other
    variable, under the vault's edit lock, atomically; bump the secret generation (at ``now``)
    when something changed.  Returns ``changed`` and the names changed (never a value)."""
    from flashmm_deploy.inventory.vault import edit_lock

    with edit_lock(path):
        vf, where = _open_vault(path, keys)
        _refuse_rolling(vf, where)
        secrets = vf.secrets_map()
        changed = _changes(secrets, values)
        for key in changed:
            if values[key] is None:
                del secrets[key]
            else:
                secrets[key] = values[key]
        generation = None
        if changed:
            generation = secret_generation.bump(vf.doc, f"restore {backup_id}: secrets",
                                                now=now)
            if not check:
                vf.save(keys, vf.vault_id)
    return {"changed": bool(changed), "names": changed,
            "generation": generation["number"] if generation else None}

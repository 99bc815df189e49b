"""Secret rotation, the vault's side: which secrets a kind of rotation renews, and the two
vault steps around rolling them to the hosts.

``begin`` renews the secrets in the vault and keeps, where clients need both during the
switch, the previous value beside the new one (``redis_password_previous``: Redis accepts
both; ``old_encryption_key``: the app decrypts with both).  ``finish`` drops the previous
values.  Between the two, ``playbooks/rotate_secrets.yml`` rolls every host (``.env``, the
ACL file reloaded live, the app restarted) and, for the encryption key, re-encrypts the
records.  The vault records each rotation in ``flashmm_rotations`` (kind -> id and state).
Without an explicit id, a run resumes the rotation of its kind that is still rolling, else
starts a new one with a new id (``<UTC date>.<n>``, unique in the vault: a second rotation the
same day, say after a leak, is a rotation, not a no-op).  With an explicit id, a rerun resumes
that rotation or, once it is done, changes nothing.  Both steps bump the vault's secrets
generation (``secret_generation``) when they change it.  Every vault write is atomic: an
interrupted run leaves the previous vault.

New third-party keys are data, never templates: ``read_new_values`` reads a YAML file
(ansible-vault encrypted, plain, or with ``!vault`` values) itself, and every value holding a
Jinja2 delimiter or what ``.env`` cannot hold is refused, naming the key, never the value.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from flashmm_deploy.config import dotenv_file
from flashmm_deploy.secrets import secret_generation
from flashmm_deploy.core.errors import FlashmmError
from flashmm_deploy.core.paths import display_path
from flashmm_deploy.core.values import is_template, template_marks
from flashmm_deploy.config.secret_generators import GENERATORS
from flashmm_deploy.inventory.vault import VaultError, VaultFile, VaultKeys, edit_lock, is_encrypted

KINDS = ("api", "redis", "encryption", "generated")
# Third-party keys: new values come from the operator (the vault, or -e @file).
API_KEYS = ("cambrian_api_key", "cambrian_secret_key", "grafana_api_key",
            "twitter_bearer_token", "twitter_api_key", "twitter_api_secret")
# Generated app secrets rolled by a restart of the app alone.  (The InfluxDB token and admin
# password are InfluxDB's first-start setup: changing them means changing InfluxDB itself.)
GENERATED = ("secret_key", "api_auth_token")
# kind -> each (secret renewed, where its previous value stays during the switch): redis rolls
# the app's user's password and deploy's user's
WITH_PREVIOUS = {"redis": (("redis_password", "redis_password_previous"),
                           ("redis_deploy_password", "redis_deploy_password_previous")),
                 "encryption": (("encryption_key", "old_encryption_key"),)}
BOOKKEEPING = "flashmm_rotations"
# An id names the rotation in messages, the vault and the secrets generation: a short word.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_AUTO_ID = re.compile(r"(\d{4}-\d{2}-\d{2})\.(\d+)")
# The variable of a keys file that holds them (the form `-e @new-keys.yml` took)
NEW_VALUES_VAR = "rotate_new_values"


class RotationError(FlashmmError):
    pass


@dataclass
class VaultStep:
    kind: str
    rotation_id: str
    state: str                                          # rolling | done
    renewed: list[str] = field(default_factory=list)    # names only, never values
    changed: bool = False
    resumed: bool = False


def kinds(selection: str) -> list[str]:
    chosen = list(KINDS) if selection == "all" else [k.strip() for k in selection.split(",")]
    bad = [k for k in chosen if k not in KINDS]
    if bad or not chosen:
        raise RotationError(f"rotate={selection!r}: choose one or more of "
                            f"{', '.join(KINDS)} (comma-separated) or all")
    return chosen


def _open(path: Path, keys: VaultKeys) -> VaultFile:
    where = display_path(path)
    vf = VaultFile.open(path, keys, where)
    if vf.doc is None:
        raise RotationError(f"{where}: no vault to rotate (flashmm-config secrets init)")
    if not vf.encrypted or not vf.vault_id:
        raise RotationError(f"{where}: not an encrypted vault with a vault id "
                            "(flashmm-config secrets generate encrypts it)")
    return vf


def _book(vf: VaultFile) -> Any:
    from ruamel.yaml.comments import CommentedMap

    book = vf.doc.get(BOOKKEEPING)
    if book is None:
        book = vf.doc[BOOKKEEPING] = CommentedMap()
    return book


def begin(path: Path, keys: VaultKeys, kind: str, rotation_id: str | None = None,
          new_values: Mapping[str, str] | None = None, dry_run: bool = False) -> VaultStep:
    """Renew ``kind``'s secrets in the vault, under the vault's edit lock.  ``rotation_id``
    None: resume the rotation of ``kind`` that is still rolling, else start a new one with a
    new id.  An explicit id: resume it while it rolls, nothing once it is done."""
    check_id(rotation_id)
    check_new_values(new_values)
    if new_values and kind != "api":
        raise RotationError(f"new API key values are for rotate=api, not {kind}")
    with edit_lock(path):
        return _begin(path, keys, kind, rotation_id, new_values, dry_run)


def check_id(rotation_id: str | None) -> None:
    if rotation_id is not None and not _ID.fullmatch(str(rotation_id)):
        raise RotationError(f"rotation_id {str(rotation_id)[:70]!r}: expected 1-64 letters, "
                            "digits, '.', '_' or '-' (omit it: a new rotation gets its own id)")


def new_rotation_id(book: Mapping[str, Any], now: datetime.datetime | None = None) -> str:
    """``<UTC date>.<n>``, n one more than any id of that date the vault's book holds (of any
    kind): unique, and in the order rotations began."""
    day = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%d")
    taken = [0]
    for entry in book.values():
        found = _AUTO_ID.fullmatch(str((entry or {}).get("id", ""))) \
            if isinstance(entry, Mapping) else None
        if found and found.group(1) == day:
            taken.append(int(found.group(2)))
    return f"{day}.{max(taken) + 1}"


def check_new_values(new_values: Mapping[str, str] | None, source: str = "") -> None:
    """Refuse, before the vault opens, a new API key value that is not plain data ``.env`` can
    hold: the message names the key and why, never the value (nor a part of it)."""
    where = f"{source}: " if source else ""
    for name, value in sorted((new_values or {}).items(), key=lambda kv: str(kv[0])):
        if name not in API_KEYS:
            raise RotationError(f"{where}new API key {str(name)[:64]!r}: not a third-party key "
                                f"({', '.join(API_KEYS)})")
        if not isinstance(value, str) or not value.strip():
            raise RotationError(f"{where}new API key {name}: must be a non-empty string "
                                "(value hidden)")
        # what validation would refuse later, refused before the vault changes
        marks = template_marks(value)
        why = (f"{' and '.join(map(repr, marks))}, a Jinja2 delimiter (values are data, "
               "never templates)" if marks else dotenv_file.refusal(value))
        if why:
            raise RotationError(f"{where}new API key {name}: holds {why} (value hidden)")


def new_values_of_variable(raw: Any, name: str = NEW_VALUES_VAR) -> dict[str, str]:
    """The new keys given as a variable (``-e @new-keys.yml``), as its raw, never templated,
    value: a mapping of key -> string."""
    if isinstance(raw, str) and is_template(raw):
        raise RotationError(f"{name}: holds a Jinja2 template, which is never evaluated: give "
                            "the new keys as data (-e rotate_new_values_file=PATH)")
    if not isinstance(raw, Mapping):
        raise RotationError(f"{name}: expected a mapping of third-party key names to values, "
                            f"not a {type(raw).__name__}")
    values = {str(k): v for k, v in raw.items()}
    check_new_values(values, name)
    return values


def read_new_values(path: Path, keys: VaultKeys) -> dict[str, str]:
    """New API keys from a YAML file the toolkit reads itself (never templated): the file
    ansible-vault encrypted, or plain (values may be ``!vault``), a mapping of key -> value,
    or ``rotate_new_values:`` holding that mapping.  Errors name the file and the key."""
    import yaml

    where = display_path(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise RotationError(f"{where}: cannot read the new keys ({exc.strerror})") from None
    if is_encrypted(raw):
        raw = keys.decrypt(raw, where)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RotationError(f"{where}: not UTF-8 text (byte {exc.start})") from None

    class Loader(yaml.SafeLoader):
        pass

    def vaulted(loader, node):
        return keys.decrypt(loader.construct_scalar(node).encode("ascii", "replace"),
                            f"{where}: a !vault value").decode("utf-8")

    Loader.add_constructor("!vault", vaulted)
    try:
        data = yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader plus !vault
    except VaultError:
        raise
    except Exception as exc:  # noqa: BLE001 - YAML errors quote the line: a secret
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark is not None else ""
        raise RotationError(f"{where}:{line} invalid YAML (content hidden)") from None
    if isinstance(data, Mapping) and list(data) == [NEW_VALUES_VAR]:
        data = data[NEW_VALUES_VAR]
    if not isinstance(data, Mapping) or not data:
        raise RotationError(f"{where}: expected a mapping of third-party key names to values "
                            f"({', '.join(API_KEYS)}), or {NEW_VALUES_VAR}: holding one")
    values = {str(k): v for k, v in data.items()}
    check_new_values(values, where)
    return values


def check_settable(name: str) -> None:
    if name not in API_KEYS:
        how = {"redis_password": "rotate it: rotate_secrets.yml -e rotate=redis",
               "redis_deploy_password": "rotate it: rotate_secrets.yml -e rotate=redis",
               "encryption_key": "rotate it: rotate_secrets.yml -e rotate=encryption"}
        how.update({g: "rotate it: rotate_secrets.yml -e rotate=generated" for g in GENERATED})
        raise RotationError(f"secrets set {str(name)[:64]!r}: "
                            + (how[name] if name in how else
                               f"only third-party keys are set this way ({', '.join(API_KEYS)})"))


def set_api_key(path: Path, keys: VaultKeys, name: str, value: str) -> bool:
    """``flashmm-config secrets set``: put a new third-party key into the vault as data (under
    its edit lock; the secrets generation bumped).  False: the vault holds that value already.
    The hosts get it with the next rotation (``rotate=api``) or deploy."""
    check_settable(name)
    check_new_values({name: value}, f"secrets set {name}")
    with edit_lock(path):
        vf = _open(path, keys)
        secrets = vf.secrets_map()
        if secrets.get(name) == value:
            return False
        secrets[name] = value
        secret_generation.bump(vf.doc, f"secrets set {name}")
        vf.save(keys, vf.vault_id)
    return True


def _begin(path: Path, keys: VaultKeys, kind: str, rotation_id: str | None,
           new_values: Mapping[str, str] | None, dry_run: bool) -> VaultStep:
    vf = _open(path, keys)
    secrets = vf.secrets_map()
    book = _book(vf)
    entry = book.get(kind) or {}
    if rotation_id is None:
        rotation_id = (entry["id"] if entry.get("state") == "rolling"
                       else new_rotation_id(book))
    if entry.get("id") == rotation_id and entry.get("state") in ("rolling", "done"):
        _same_values(path, kind, rotation_id, entry["state"], secrets, new_values)
        return VaultStep(kind, rotation_id, entry["state"], resumed=entry["state"] == "rolling")
    if entry.get("state") == "rolling":
        raise RotationError(f"{display_path(path)}: rotation {entry.get('id')!r} of {kind} is "
                            f"still rolling: finish it (-e rotation_id={entry.get('id')}, or no "
                            "rotation_id) first")
    step = VaultStep(kind, rotation_id, "rolling", changed=True)
    if kind in WITH_PREVIOUS:
        name = WITH_PREVIOUS[kind][0][0]
        if not secrets.get(name):
            raise RotationError(f"{display_path(path)}: flashmm_secrets.{name} is not set: "
                                "nothing to rotate")
        # the others where the vault has them (deploy's user's: where Redis needs a password,
        # the rotation's validation refuses a vault without it)
        for name, previous in WITH_PREVIOUS[kind]:
            if not secrets.get(name):
                continue
            secrets[previous] = secrets[name]
            secrets[name] = GENERATORS[name]()
            step.renewed.append(name)
    elif kind == "generated":
        for name in GENERATED:
            if secrets.get(name):
                secrets[name] = GENERATORS[name]()
                step.renewed.append(name)
    else:   # api: the operator's new values (or already edited into the vault)
        for name, value in sorted((new_values or {}).items()):
            if secrets.get(name) != value:
                secrets[name] = value
                step.renewed.append(name)
    book[kind] = {"id": rotation_id, "state": "rolling"}
    secret_generation.bump(vf.doc, f"rotation {rotation_id} {kind}: begin")
    if not dry_run:
        vf.save(keys, vf.vault_id)
    return step


def _same_values(path: Path, kind: str, rotation_id: str, state: str, secrets: Mapping,
                 new_values: Mapping[str, str] | None) -> None:
    """A rotation resumed or done keeps its keys: other new values are refused, not dropped."""
    differ = sorted(n for n, v in (new_values or {}).items() if secrets.get(n) != v)
    if differ:
        what = ("is done" if state == "done" else "is rolling with other values")
        raise RotationError(f"{display_path(path)}: rotation {rotation_id!r} of {kind} {what} "
                            f"for {', '.join(differ)}: "
                            + ("omit rotation_id to start a new rotation" if state == "done"
                               else "finish it first (rerun without new values)"))


def finish(path: Path, keys: VaultKeys, kind: str, rotation_id: str,
           dry_run: bool = False) -> VaultStep:
    """Drop the previous value and mark the rotation done (nothing if it is done already)."""
    check_id(rotation_id)
    with edit_lock(path):
        return _finish(path, keys, kind, rotation_id, dry_run)


def _finish(path: Path, keys: VaultKeys, kind: str, rotation_id: str,
            dry_run: bool) -> VaultStep:
    vf = _open(path, keys)
    entry = _book(vf).get(kind) or {}
    if entry.get("id") == rotation_id and entry.get("state") == "done":
        return VaultStep(kind, rotation_id, "done")
    if entry.get("id") != rotation_id:
        raise RotationError(f"{display_path(path)}: no rotation {rotation_id!r} of {kind} to "
                            "finish")
    step = VaultStep(kind, rotation_id, "done", changed=True)
    for _, previous in WITH_PREVIOUS.get(kind, ()):
        vf.secrets_map().pop(previous, None)
    _book(vf)[kind] = {"id": rotation_id, "state": "done"}
    secret_generation.bump(vf.doc, f"rotation {rotation_id} {kind}: finish")
    if not dry_run:
        vf.save(keys, vf.vault_id)
    return step

"""Secret rotation, the vault's side: which secrets a kind of rotation renews, and the two
vault steps around rolling them to the hosts.

``begin`` renews the secrets in the vault and keeps, where clients need both during the
switch, the previous value beside the new one (``redis_password_previous``: Redis accepts
both; ``old_encryption_key``: the app decrypts with both).  ``finish`` drops the previous
values.  Between the two, ``playbooks/rotate_secrets.yml`` rolls every host (``.env``, the
ACL file reloaded live, the app restarted) and, for the encryption key, re-encrypts the
records.  The vault records each rotation in ``flashmm_rotations`` (kind -> id and state), so
that a rerun after a failure resumes the same rotation (nothing is renewed twice) and a rerun
of a finished rotation id changes nothing.  Every vault write is atomic: an interrupted run
leaves the previous vault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import dotenv_file
from .errors import FlashmmError
from .inventory import display_path
from .layers import TEMPLATE_MARKS
from .secret_gen import GENERATORS
from .vault import VaultFile, VaultKeys, edit_lock

KINDS = ("api", "redis", "encryption", "generated")
# Third-party keys: new values come from the operator (the vault, or -e @file).
API_KEYS = ("cambrian_api_key", "cambrian_secret_key", "grafana_api_key",
            "twitter_bearer_token", "twitter_api_key", "twitter_api_secret")
# Generated app secrets rolled by a restart of the app alone.  (The InfluxDB token and admin
# password are InfluxDB's first-start setup: changing them means changing InfluxDB itself.)
GENERATED = ("secret_key", "api_auth_token")
# kind -> (the secret renewed, where its previous value stays during the switch)
WITH_PREVIOUS = {"redis": ("redis_password", "redis_password_previous"),
                 "encryption": ("encryption_key", "old_encryption_key")}
BOOKKEEPING = "flashmm_rotations"


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


def begin(path: Path, keys: VaultKeys, kind: str, rotation_id: str,
          new_values: Mapping[str, str] | None = None, dry_run: bool = False) -> VaultStep:
    """Renew ``kind``'s secrets in the vault, unless rotation ``rotation_id`` of this kind is
    already rolling (resume) or done (nothing to do); under the vault's edit lock."""
    _check_new_values(new_values)
    with edit_lock(path):
        return _begin(path, keys, kind, rotation_id, new_values, dry_run)


def _check_new_values(new_values: Mapping[str, str] | None) -> None:
    for name, value in sorted((new_values or {}).items()):     # the request first
        if name not in API_KEYS:
            raise RotationError(f"new API key {name!r}: not a third-party key "
                                f"({', '.join(API_KEYS)})")
        if not isinstance(value, str) or not value.strip():
            raise RotationError(f"new API key {name}: must be a non-empty string")
        # what validation would refuse later, refused before the vault changes
        marks = [m for m in TEMPLATE_MARKS if m in value]
        why = (f"{' and '.join(map(repr, marks))}, a Jinja2 delimiter" if marks
               else dotenv_file.refusal(value))
        if why:
            raise RotationError(f"new API key {name}: holds {why} (value hidden)")


def _begin(path: Path, keys: VaultKeys, kind: str, rotation_id: str,
           new_values: Mapping[str, str] | None, dry_run: bool) -> VaultStep:
    """Renew ``kind``'s secrets in the vault, unless rotation ``rotation_id`` of this kind is
    already rolling (resume) or done (nothing to do)."""
    vf = _open(path, keys)
    secrets = vf.secrets_map()
    book = _book(vf)
    entry = book.get(kind) or {}
    if entry.get("id") == rotation_id and entry.get("state") in ("rolling", "done"):
        return VaultStep(kind, rotation_id, entry["state"], resumed=entry["state"] == "rolling")
    if entry.get("state") == "rolling":
        raise RotationError(f"{display_path(path)}: rotation {entry.get('id')!r} of {kind} is "
                            f"still rolling: finish it (-e rotation_id={entry.get('id')}) first")
    step = VaultStep(kind, rotation_id, "rolling", changed=True)
    if kind in WITH_PREVIOUS:
        name, previous = WITH_PREVIOUS[kind]
        if not secrets.get(name):
            raise RotationError(f"{display_path(path)}: flashmm_secrets.{name} is not set: "
                                "nothing to rotate")
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
    if not dry_run:
        vf.save(keys, vf.vault_id)
    return step


def finish(path: Path, keys: VaultKeys, kind: str, rotation_id: str,
           dry_run: bool = False) -> VaultStep:
    """Drop the previous value and mark the rotation done (nothing if it is done already)."""
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
    if kind in WITH_PREVIOUS:
        vf.secrets_map().pop(WITH_PREVIOUS[kind][1], None)
    _book(vf)[kind] = {"id": rotation_id, "state": "done"}
    if not dry_run:
        vf.save(keys, vf.vault_id)
    return step

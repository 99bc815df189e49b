"""The environment vault: ``group_vars/all/vault.yml``, an ansible-vault file whose vault id is
the environment's name (``local``, ``development``, ``testnet``, ``production``).

Opening and writing it is Ansible's own code (``VaultLib``, the ``--vault-id`` parsing of its
CLI), so a file this module writes is one ``ansible-playbook --vault-id <env>@...`` opens, and
the vault ids of ``ansible.cfg`` (``vault_identity_list``) count for the CLI as for a playbook.
Errors name the file and the vault id, never a value.
"""

from __future__ import annotations

import io
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from flashmm_deploy.core import file_lock
from flashmm_deploy.core.errors import FlashmmError
from flashmm_deploy.hostside.atomic_write import write_atomic
from flashmm_deploy.core.paths import display_path

VAULT_HEADER = "$ANSIBLE_VAULT;"
VAULT_FILE_MODE = 0o600


class VaultError(FlashmmError):
    pass


def header_vault_id(text: bytes | str) -> str | None:
    """The vault id an encrypted file or value names in its envelope (format 1.2), or None."""
    first = (text.decode("ascii", "replace") if isinstance(text, bytes) else text).lstrip()
    first = first.split("\n", 1)[0].strip()
    parts = first.split(";")
    return parts[3] if len(parts) >= 4 and parts[0] == "$ANSIBLE_VAULT" else None


def is_encrypted(text: bytes | str) -> bool:
    head = text[:len(VAULT_HEADER)]
    return (head.decode("ascii", "replace") if isinstance(head, bytes) else head) == VAULT_HEADER


@dataclass
class VaultKeys:
    """The vault secrets an operator gave (``--vault-id``, ``--vault-password-file``) plus the
    defaults of ``ansible.cfg`` and the environment, loaded on first use: reading a password
    file, running a client script or prompting happens only when a vault must be opened."""

    vault_ids: list[str] = field(default_factory=list)
    password_files: list[str] = field(default_factory=list)
    _secrets: list | None = field(default=None, repr=False)

    @classmethod
    def given(cls, vault_ids: Iterable[str] | None = None,
              password_files: Iterable[str] | None = None) -> "VaultKeys":
        return cls(list(vault_ids or ()), list(password_files or ()))

    @classmethod
    def of_secrets(cls, secrets: list) -> "VaultKeys":
        """Keys already loaded, e.g. by ``ansible-playbook`` (an action plugin's loader)."""
        return cls(_secrets=list(secrets))

    def secrets(self) -> list:
        if self._secrets is None:
            self._secrets = _load_secrets(self.vault_ids, self.password_files)
        return self._secrets

    def ids(self) -> list[str]:
        return [vault_id for vault_id, _ in self.secrets()]

    def secret_for(self, vault_id: str):
        """The secret of exactly this vault id (a new vault is never written with the wrong
        environment's password)."""
        for have, secret in self.secrets():
            if have == vault_id:
                return secret
        return None

    def describe(self) -> str:
        ids = self.ids()
        return f"vault ids given: {', '.join(ids)}" if ids else "no vault password given"

    def decrypt(self, text: bytes, where: str) -> bytes:
        from ansible.parsing.vault import VaultLib  # heavy import: only when a vault is opened

        wanted = header_vault_id(text)
        if not self.secrets():
            raise VaultError(f"{where}: encrypted{_for(wanted)}; no vault password given "
                             f"(--vault-id {wanted or 'ENV'}@FILE|prompt)")
        try:
            return VaultLib(self.secrets()).decrypt(text)
        except Exception:  # noqa: BLE001 - ansible raises several types; never chain them
            raise VaultError(f"{where}: cannot decrypt{_for(wanted)} with the vault passwords "
                             f"given ({self.describe()})") from None

    def encrypt(self, plaintext: bytes, vault_id: str, where: str) -> bytes:
        from ansible.parsing.vault import VaultLib

        secret = self.secret_for(vault_id)
        if secret is None:
            raise VaultError(f"{where}: no vault password for vault id {vault_id!r} "
                             f"({self.describe()}); give --vault-id {vault_id}@FILE or "
                             f"{vault_id}@prompt")
        return VaultLib([(vault_id, secret)]).encrypt(plaintext, secret=secret, vault_id=vault_id)


def _for(vault_id: str | None) -> str:
    return f" for vault id {vault_id!r}" if vault_id else ""


def _load_secrets(vault_ids: list[str], password_files: list[str]) -> list:
    from ansible import constants as C
    from ansible.cli import CLI
    from ansible.errors import AnsibleError
    from ansible.parsing.dataloader import DataLoader

    # A password source the operator named and that does not exist is an error here (Ansible
    # would only warn and go on without it: the vault then "cannot be decrypted").
    for given in vault_ids:
        source = given.split("@", 1)[1] if "@" in given else given
        if source not in ("prompt", "prompt_ask_vault_pass") and not os.path.exists(source):
            raise VaultError(f"--vault-id {given}: {source}: no such file")
    for given in password_files:
        if not os.path.exists(given):
            raise VaultError(f"--vault-password-file {given}: no such file")
    ids = list(C.DEFAULT_VAULT_IDENTITY_LIST or []) + list(vault_ids)
    try:
        return CLI.setup_vault_secrets(DataLoader(), vault_ids=ids,
                                       vault_password_files=list(password_files),
                                       auto_prompt=False, initialize_context=False)
    except AnsibleError as exc:      # a missing password file, a failing client script
        message = str(getattr(exc, "message", "") or exc).splitlines()[0]
        raise VaultError(f"vault password: {message}") from None


# ---- the vault file ------------------------------------------------------------------------

def _yaml():
    from ruamel.yaml import YAML       # round-trip: comments, order and other variables kept

    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


@dataclass
class VaultFile:
    """One vault file read for editing: its YAML document (round-trip, so comments and every
    other variable survive a rewrite) and how it was stored."""

    path: Path                  # as given (may be a symlink)
    target: Path                # the file written: a symlink is followed, never replaced
    doc: Any
    encrypted: bool
    vault_id: str | None

    @classmethod
    def open(cls, path: Path, keys: VaultKeys, where: str, *, read: bool = True) -> "VaultFile":
        """``read=False``: start the document over (nothing of the old file is needed, not
        even its password), still writing through a symlink."""
        target = Path(os.path.realpath(path))
        if path.is_symlink() and not target.parent.is_dir():
            raise VaultError(f"{where}: a symlink into {target.parent.name}/, which does not exist")
        if target.exists() and not target.is_file():
            raise VaultError(f"{where}: not a regular file")
        if not target.exists() or not read:
            return cls(path, target, None, False, None)
        try:
            raw = target.read_bytes()
        except OSError as exc:
            raise VaultError(f"{where}: cannot read ({exc.strerror})") from None
        encrypted = is_encrypted(raw)
        vault_id = header_vault_id(raw) if encrypted else None
        text = keys.decrypt(raw, where) if encrypted else raw
        try:
            doc = _yaml().load(text.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise VaultError(f"{where}: not UTF-8 text (byte {exc.start} is not valid)") from None
        except Exception as exc:  # noqa: BLE001 - ruamel's errors may quote the line: a secret
            mark = getattr(exc, "problem_mark", None)
            line = f" line {mark.line + 1}:" if mark is not None else ""
            raise VaultError(f"{where}:{line} invalid YAML") from None
        if doc is not None and not hasattr(doc, "keys"):
            raise VaultError(f"{where}: expected a mapping of variables, not a "
                             f"{type(doc).__name__}")
        return cls(path, target, doc, encrypted, vault_id)

    def secrets_map(self) -> Any:
        """``flashmm_secrets`` of the document (created when absent)."""
        from ruamel.yaml.comments import CommentedMap

        if self.doc is None:
            self.doc = CommentedMap()
        current = self.doc.get("flashmm_secrets")
        if current is None:
            current = self.doc["flashmm_secrets"] = CommentedMap()
        if not hasattr(current, "keys"):
            raise VaultError(f"{display(self.path)}: flashmm_secrets must be a mapping")
        return current

    def dump(self) -> bytes:
        buf = io.StringIO()
        _yaml().dump(self.doc, buf)
        return buf.getvalue().encode("utf-8")

    def save(self, keys: VaultKeys, vault_id: str, header: str = "") -> None:
        """Encrypt with ``vault_id`` and replace the target atomically (0600): an interrupted
        run leaves the previous vault as it was."""
        text = self.dump()
        if header and not text.startswith(b"#"):
            text = header.encode("utf-8") + text
        data = keys.encrypt(text, vault_id, display(self.path))
        write_atomic(self.target, data, VAULT_FILE_MODE)
        self.encrypted, self.vault_id = True, vault_id


@contextmanager
def edit_lock(path: Path, timeout: float = 30.0):
    """An exclusive lock for a read-modify-write of the vault file at ``path`` (two secrets or
    rotation runs at once would otherwise lose one's update): ``flock`` on a hidden file beside
    it (Ansible and the inventory reader skip hidden files), released when the holder ends."""
    lock = Path(path).parent / ".vault.lock"
    with file_lock.exclusive(
            lock, timeout, poll=0.1,
            on_open_error=lambda exc: VaultError(
                f"{display(path)}: cannot lock its directory ({exc.strerror})"),
            on_busy=lambda: VaultError(f"{display(path)}: another run is changing this vault "
                                       f"(waited {timeout:g}s for {lock.name})")):
        yield


display = display_path

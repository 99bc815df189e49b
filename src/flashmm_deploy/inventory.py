"""Read an Ansible YAML inventory directory without running Ansible, and find each host's
configuration layers with the file each came from.

Layer variables and where each may live (anything else is an error, because Ansible replaces a
whole dict variable rather than merging it, so a misplaced one would silently drop a layer):

====================== ============ ===========================================
variable               layer        allowed in
====================== ============ ===========================================
flashmm_config         environment  group_vars/all/
flashmm_secrets        vault        group_vars/all/ (vault.yml)
flashmm_group_config   group        group_vars/<group>/ (not all)
flashmm_host_config    host         host_vars/<host>, or the host's vars in hosts.yml
flashmm_env_overrides  env          any of the above (highest precedence wins)
====================== ============ ===========================================

Values must be literal (no Jinja): the CLI and the playbook must give the same answer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .errors import InventoryError, Issue, Origin
from .layers import LayerInput

LAYER_VARS = {
    "flashmm_config": "environment",
    "flashmm_secrets": "vault",
    "flashmm_group_config": "group",
    "flashmm_host_config": "host",
    "flashmm_env_overrides": "env",
}
_ALLOWED = {
    "flashmm_config": {"group_all"},
    "flashmm_secrets": {"group_all"},
    "flashmm_group_config": {"group"},
    "flashmm_host_config": {"host_file", "host_inline"},
    "flashmm_env_overrides": {"group_all", "group", "host_file", "host_inline", "group_inline"},
}
_PLACE_HINT = {
    "group_all": "group_vars/all/", "group": "group_vars/<group>/",
    "host_file": "host_vars/<host>", "host_inline": "the host's vars in hosts.yml",
    "group_inline": "a group's vars in hosts.yml",
}
VAULT_HEADER = "$ANSIBLE_VAULT;"


def display_path(path: Path) -> str:
    """A path relative to the working directory when below it (errors stay short and
    machine-independent), else absolute."""
    return _display_path(Path(path), os.getcwd())


@lru_cache(maxsize=4096)
def _display_path(path: Path, cwd: str) -> str:     # resolve() is slow: once per path
    try:
        return str(path.resolve().relative_to(Path(cwd).resolve()))
    except ValueError:
        return str(path)


class _Vaulted:
    """An inline ``!vault`` value we could not (yet) decrypt."""

    def __init__(self, ciphertext: str):
        self.ciphertext = ciphertext


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when present: 10x faster
    pass


_Loader.add_constructor("!vault", lambda loader, node: _Vaulted(loader.construct_scalar(node)))
_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


@dataclass
class VarFile:
    path: Path
    data: dict[str, Any]
    encrypted_unreadable: bool = False


@dataclass
class HostLayers:
    host: str
    layers: list[LayerInput]
    issues: list[Issue]
    vault_available: bool
    sources: dict[str, str] = field(default_factory=dict)   # layer var -> file (display form)
    values: dict[str, Any] = field(default_factory=dict)    # layer var -> value read there


def _vault_secret(password_file: str | None):
    path = password_file or os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE")
    if not path or not Path(path).is_file():
        return None
    from ansible.parsing.vault import VaultLib, VaultSecret  # heavy import: only when needed

    return VaultLib([("default", VaultSecret(Path(path).read_bytes().strip()))])


class Inventory:
    def __init__(self, path: str | os.PathLike, vault_password_file: str | None = None):
        self.path = Path(path)
        if self.path.is_file():
            self.hosts_file, self.path = self.path, self.path.parent
        else:
            candidates = [self.path / n for n in ("hosts.yml", "hosts.yaml")]
            found = [c for c in candidates if c.is_file()]
            if not found:
                raise InventoryError(f"{display_path(self.path)}: no hosts.yml inventory found")
            self.hosts_file = found[0]
        self._vault = _vault_secret(vault_password_file)
        self._var_files_cache: dict[tuple[str, str], tuple[VarFile, ...]] = {}
        self.name = self.path.name
        self.groups: dict[str, dict] = {}           # group -> {"parents": set, "vars": dict}
        self.host_vars_inline: dict[str, dict] = {}
        self.host_groups: dict[str, set[str]] = {}
        raw = self._load(self.hosts_file).data or {}
        if not isinstance(raw, dict):
            raise InventoryError(f"{display_path(self.hosts_file)}: expected a YAML inventory mapping")
        for group, body in raw.items():
            self._walk_group(group, body or {}, parent=None)
        self.hosts = sorted(self.host_groups)

    # ---- reading -------------------------------------------------------------------------

    def _load(self, path: Path) -> VarFile:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InventoryError(f"{display_path(path)}: cannot read ({exc.strerror})") from None
        if text.startswith(VAULT_HEADER):
            if self._vault is None:
                return VarFile(path, {}, encrypted_unreadable=True)
            try:
                text = self._vault.decrypt(text.encode()).decode("utf-8")
            except Exception:  # noqa: BLE001 - ansible raises several types; never chain them
                raise InventoryError(f"{display_path(path)}: cannot decrypt with the given vault "
                                     "password") from None
        try:
            data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise InventoryError(f"{display_path(path)}:{where}: invalid YAML "
                                 f"({getattr(exc, 'problem', 'parse error')})") from None
        if data is not None and not isinstance(data, dict):
            raise InventoryError(f"{display_path(path)}: expected a mapping of variables")
        return VarFile(path, self._decrypt_inline(data or {}))

    def _decrypt_inline(self, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: self._decrypt_inline(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self._decrypt_inline(v) for v in data]
        if isinstance(data, _Vaulted) and self._vault is not None:
            return self._vault.decrypt(data.ciphertext.encode()).decode("utf-8")
        return data

    def _walk_group(self, group: str, body: dict, parent: str | None):
        g = self.groups.setdefault(group, {"parents": set(), "vars": {}})
        if parent:
            g["parents"].add(parent)
        g["vars"].update(body.get("vars") or {})
        for host, hvars in (body.get("hosts") or {}).items():
            self.host_groups.setdefault(host, set()).add(group)
            self.host_vars_inline.setdefault(host, {}).update(hvars or {})
        for child, child_body in (body.get("children") or {}).items():
            self._walk_group(child, child_body or {}, parent=group)

    def _depth(self, group: str) -> int:
        parents = self.groups.get(group, {}).get("parents") or set()
        return 0 if group == "all" else 1 + max((self._depth(p) for p in parents), default=0)

    def groups_of(self, host: str) -> list[str]:
        """The host's groups with their ancestors, in Ansible's precedence order (low first)."""
        seen: set[str] = {"all"}
        todo = list(self.host_groups.get(host, ()))
        while todo:
            g = todo.pop()
            if g not in seen:
                seen.add(g)
                todo.extend(self.groups.get(g, {}).get("parents", ()))
        return sorted(seen, key=lambda g: (self._depth(g), g))

    def _var_files(self, kind: str, name: str) -> tuple[VarFile, ...]:
        """The var files of a group or host, read once per Inventory."""
        key = (kind, name)
        if key not in self._var_files_cache:
            self._var_files_cache[key] = self._read_var_files(kind, name)
        return self._var_files_cache[key]

    def _read_var_files(self, kind: str, name: str) -> tuple[VarFile, ...]:
        base = self.path / kind
        files = []
        for ext in ("", ".yml", ".yaml"):
            p = base / f"{name}{ext}"
            if p.is_file():
                files.append(p)
        d = base / name
        if d.is_dir():
            files.extend(sorted(f for f in d.iterdir()
                                if f.is_file() and f.suffix in (".yml", ".yaml", "")))
        return tuple(self._load(f) for f in files)

    # ---- layers ----------------------------------------------------------------------------

    def _definitions(self, host: str):
        """Every (place, source, vars, unreadable) for a host, lowest precedence first."""
        groups = self.groups_of(host)
        for g in groups:
            gvars = self.groups.get(g, {}).get("vars") or {}
            if gvars:
                yield "group_inline", display_path(self.hosts_file), gvars, False
        for g in groups:
            for vf in self._var_files("group_vars", g):
                yield ("group_all" if g == "all" else "group"), display_path(vf.path), vf.data, \
                    vf.encrypted_unreadable
        if self.host_vars_inline.get(host):
            yield "host_inline", display_path(self.hosts_file), self.host_vars_inline[host], False
        for vf in self._var_files("host_vars", host):
            yield "host_file", display_path(vf.path), vf.data, vf.encrypted_unreadable

    def var_source(self, host: str, var: str) -> str | None:
        """The file that sets ``var`` for ``host`` (its highest-precedence definition)."""
        found = None
        for _, source, data, _ in self._definitions(host):
            if var in data:
                found = source
        return found

    def host_layers(self, host: str) -> HostLayers:
        if host not in self.host_groups:
            raise InventoryError(f"host {host!r} is not in {display_path(self.hosts_file)} "
                                 f"(hosts: {', '.join(self.hosts)})")
        issues: list[Issue] = []
        chosen: dict[str, tuple[str, Any]] = {}
        unreadable_secret_files = False
        sources: dict[str, str] = {}
        for place, source, data, unreadable in self._definitions(host):
            if unreadable:
                if place == "group_all":   # an encrypted vault.yml we hold no password for
                    unreadable_secret_files = True
                    sources["flashmm_secrets"] = source + " (encrypted)"
                continue
            for var, value in data.items():
                if var not in LAYER_VARS:
                    continue
                if place not in _ALLOWED[var]:
                    allowed = " or ".join(_PLACE_HINT[p] for p in sorted(_ALLOWED[var]))
                    issues.append(Issue(var, f"must be defined in {allowed}, not "
                                        f"{_PLACE_HINT[place]} (Ansible would replace the whole "
                                        "layer instead of merging it)", Origin(LAYER_VARS[var], source)))
                    continue
                if any(isinstance(v, _Vaulted) for v in _flat_values(value)):
                    if var == "flashmm_secrets":
                        unreadable_secret_files = True
                        continue
                    issues.append(Issue(var, "holds an inline !vault value that cannot be decrypted "
                                        "here (give a vault password file)",
                                        Origin(LAYER_VARS[var], source)))
                    continue
                chosen[var] = (source, value)
        layers = [layer_input(var, source, value) for var, (source, value) in chosen.items()]
        vault_available = "flashmm_secrets" in chosen and not unreadable_secret_files
        sources.update({var: source for var, (source, _) in chosen.items()})
        return HostLayers(host, layers, issues, vault_available, sources,
                          {var: value for var, (_, value) in chosen.items()})


def layer_input(var: str, source: str, value: Any) -> LayerInput:
    """The LayerInput for one layer variable (the vault's flat dict is the secrets section)."""
    if var == "flashmm_secrets":
        value = {"secrets": value}
    return LayerInput(LAYER_VARS[var], source, value)


def _flat_values(value: Any):
    if isinstance(value, dict):
        for v in value.values():
            yield from _flat_values(v)
    elif isinstance(value, list):
        for v in value:
            yield from _flat_values(v)
    else:
        yield value

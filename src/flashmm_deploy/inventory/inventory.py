# Over 350 lines: one Inventory class (files, groups, placement, vaulted YAML, lint) used whole.
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

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flashmm_deploy.core.errors import InventoryError, Issue, Origin
from flashmm_deploy.config.layers import LayerInput
from flashmm_deploy.core.paths import display_path
from flashmm_deploy.core.values import TooLarge, check_size
from flashmm_deploy.inventory.vault import VaultError, VaultKeys, header_vault_id, is_encrypted

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


class _Vaulted:
    """An inline ``!vault`` value we could not (yet) decrypt."""

    def __init__(self, ciphertext: str):
        self.ciphertext = ciphertext


MAX_FILE_BYTES = 1 << 20        # an inventory file of more than 1 MiB is a mistake
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Where Ansible looks for group_vars/<name> and host_vars/<name>: the first that exists wins,
# a directory is read recursively (sorted; hidden and backup~ entries skipped).
VAR_FILE_EXTENSIONS = ("", ".yml", ".yaml", ".json")


class DuplicateKey(yaml.MarkedYAMLError):
    pass


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when present: 10x faster
    def construct_mapping(self, node, deep=False):
        """Refuse a key given twice in one mapping: YAML would keep the last one silently."""
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:            # an unhashable key: SafeLoader says so itself
                break
            if duplicate:
                raise DuplicateKey(problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


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


class Inventory:
    """A YAML inventory directory (``hosts.yml`` or ``hosts.yaml``, group_vars/, host_vars/),
    read the way Ansible reads it.  Anything else (an INI or script inventory) is refused by
    name rather than read differently."""

    def __init__(self, path: str | os.PathLike, vault: VaultKeys | None = None):
        self.path = Path(path)
        if self.path.is_file():
            self.hosts_file, self.path = self.path, self.path.parent
            if self.hosts_file.suffix not in (".yml", ".yaml"):
                raise InventoryError(f"{display_path(self.hosts_file)}: flashmm-config reads "
                                     "YAML inventories only (hosts.yml); use ansible-inventory "
                                     "for INI or script inventories")
        else:
            candidates = [self.path / n for n in ("hosts.yml", "hosts.yaml")]
            found = [c for c in candidates if c.is_file()]
            if not found:
                others = sorted(p.name for p in self.path.glob("hosts*") if p.is_file()) \
                    if self.path.is_dir() else []
                hint = (f" ({', '.join(others)}: flashmm-config reads YAML inventories only)"
                        if others else "")
                raise InventoryError(f"{display_path(self.path)}: no hosts.yml inventory found"
                                     + hint)
            if len(found) > 1:
                raise InventoryError(f"{display_path(self.path)}: both hosts.yml and hosts.yaml; "
                                     "Ansible would read both as one inventory: keep one")
            self.hosts_file = found[0]
        self._vault = vault if vault is not None else VaultKeys.given()
        self.closed_vaults: dict[str, str | None] = {}   # file -> vault id no password opened
        self._var_files_cache: dict[tuple[str, str], tuple[VarFile, ...]] = {}
        self._orphans: list[Issue] | None = None
        self.name = self.path.name
        self.groups: dict[str, dict] = {}           # group -> {"parents": set, "vars": dict}
        self.host_vars_inline: dict[str, dict] = {}
        self.host_groups: dict[str, set[str]] = {}
        raw = self._load(self.hosts_file).data or {}
        for group, body in raw.items():
            self._walk_group(str(group), body, parent=None)
        self.hosts = sorted(self.host_groups)

    # ---- reading -------------------------------------------------------------------------

    def _load(self, path: Path) -> VarFile:
        where = display_path(path)
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise InventoryError(f"{where}: larger than {MAX_FILE_BYTES} bytes; an "
                                     "inventory file this size is a mistake")
            text = path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise InventoryError(f"{where}: cannot read ({exc.strerror})") from None
        except UnicodeDecodeError as exc:
            raise InventoryError(f"{where}: not UTF-8 text (byte {exc.start} is not valid)") \
                from None
        if is_encrypted(text):
            opened = self._open(text, where)
            if opened is None:
                self.closed_vaults[where] = header_vault_id(text)
                return VarFile(path, {}, encrypted_unreadable=True)
            text = opened
        try:
            data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
            check_size(data)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" line {mark.line + 1}:" if mark else ""
            raise InventoryError(f"{where}:{line} invalid YAML "
                                 f"({getattr(exc, 'problem', None) or 'parse error'})") from None
        except (TooLarge, RecursionError) as exc:
            raise InventoryError(f"{where}: {exc if isinstance(exc, TooLarge) else 'nests too deeply'}") \
                from None
        if data is not None and not isinstance(data, dict):
            raise InventoryError(f"{where}: expected a mapping of variables, not a "
                                 f"{type(data).__name__}")
        for name in data or {}:
            if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
                raise InventoryError(f"{where}: {name!r} is not a variable name (letters, digits "
                                     "and '_', not starting with a digit; an invisible character?)")
        return VarFile(path, self._decrypt_inline(data or {}))

    def _decrypt_inline(self, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: self._decrypt_inline(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self._decrypt_inline(v) for v in data]
        if isinstance(data, _Vaulted):
            opened = self._open(data.ciphertext, "an inline !vault value")
            return data if opened is None else opened
        return data

    def _open(self, ciphertext: str, where: str) -> str | None:
        """The plain text, or None for a vault none of the given passwords is meant for
        (another environment's: its secrets are "not available", as ansible-playbook without
        that --vault-id leaves them).  A password given for this vault id that fails is an
        error."""
        if not self._vault.secrets():
            return None
        try:
            return self._vault.decrypt(ciphertext.encode(), where).decode("utf-8")
        except VaultError as exc:
            wanted = header_vault_id(ciphertext)
            if wanted is not None and self._vault.secret_for(wanted) is None:
                return None
            raise InventoryError(str(exc)) from None

    def _shape(self, what: str, value: Any, want: type) -> Any:
        if value is None:
            return want()
        if not isinstance(value, want):
            raise InventoryError(f"{display_path(self.hosts_file)}: {what} must be a "
                                 f"{'mapping' if want is dict else want.__name__}, not a "
                                 f"{type(value).__name__}")
        return value

    def _walk_group(self, group: str, body: Any, parent: str | None, depth: int = 0):
        if depth > 50:
            raise InventoryError(f"{display_path(self.hosts_file)}: groups nest more than 50 deep")
        body = self._shape(f"group {group!r}", body, dict)
        g = self.groups.setdefault(group, {"parents": set(), "vars": {}})
        if parent:
            g["parents"].add(parent)
        gvars = self._shape(f"the vars of group {group!r}", body.get("vars"), dict)
        for name in gvars:
            if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
                raise InventoryError(f"{display_path(self.hosts_file)}: {name!r} (group "
                                     f"{group!r}) is not a variable name")
        g["vars"].update(gvars)
        hosts = self._shape(f"the hosts of group {group!r}", body.get("hosts"), dict)
        for host, hvars in hosts.items():
            self.host_groups.setdefault(str(host), set()).add(group)
            hvars = self._shape(f"the vars of host {host!r}", hvars, dict)
            for name in hvars:
                if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
                    raise InventoryError(f"{display_path(self.hosts_file)}: {name!r} (host "
                                         f"{host!r}) is not a variable name")
            self.host_vars_inline.setdefault(str(host), {}).update(hvars)
        children = self._shape(f"the children of group {group!r}", body.get("children"), dict)
        for child, child_body in children.items():
            self._walk_group(str(child), child_body, parent=group, depth=depth + 1)

    def _depth(self, group: str) -> int:
        parents = self.groups.get(group, {}).get("parents") or set()
        return 0 if group == "all" else 1 + max((self._depth(p) for p in parents), default=0)

    def _priority(self, group: str) -> int:
        """``ansible_group_priority``: orders groups of the same depth (inventory file only)."""
        value = self.groups.get(group, {}).get("vars", {}).get("ansible_group_priority", 1)
        return value if isinstance(value, int) and not isinstance(value, bool) else 1

    def groups_of(self, host: str) -> list[str]:
        """The host's groups with their ancestors, in Ansible's precedence order (low first)."""
        seen: set[str] = {"all"}
        todo = list(self.host_groups.get(host, ()))
        while todo:
            g = todo.pop()
            if g not in seen:
                seen.add(g)
                todo.extend(self.groups.get(g, {}).get("parents", ()))
        return sorted(seen, key=lambda g: (self._depth(g), self._priority(g), g))

    def _var_files(self, kind: str, name: str) -> tuple[VarFile, ...]:
        """The var files of a group or host, read once per Inventory."""
        key = (kind, name)
        if key not in self._var_files_cache:
            self._var_files_cache[key] = self._read_var_files(kind, name)
        return self._var_files_cache[key]

    def _read_var_files(self, kind: str, name: str) -> tuple[VarFile, ...]:
        """As Ansible's host_group_vars plugin: the first of name, name.yml, name.yaml,
        name.json that exists; a directory read recursively, sorted, hidden and backup~
        entries skipped, files with one of those extensions or none."""
        base = self.path / kind
        for ext in VAR_FILE_EXTENSIONS:
            p = base / f"{name}{ext}"
            if p.exists():
                files = _dir_files(p) if p.is_dir() else [p]
                return tuple(self._load(f) for f in files)
        return ()

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

    def variable_names(self, host: str) -> set[str]:
        """Every variable the inventory sets for ``host``."""
        return set(self.host_variables(host))

    def host_variables(self, host: str) -> dict[str, Any]:
        """The host's variables as Ansible merges them (a later definition replaces an earlier
        one whole), as read: templates are not evaluated."""
        merged: dict[str, Any] = {}
        for _, _, data, _ in self._definitions(host):
            merged.update(data)
        return merged

    def var_source(self, host: str, var: str) -> str | None:
        """The file that sets ``var`` for ``host`` (its highest-precedence definition)."""
        found = None
        for _, source, data, _ in self._definitions(host):
            if var in data:
                found = source
        return found

    def orphan_var_files(self) -> list[Issue]:
        """group_vars/<name> and host_vars/<name> for a group or host the inventory does not
        have: Ansible ignores them, so the layer they hold would vanish without a word."""
        out = []
        for kind, known in (("group_vars", set(self.groups) | {"all", "ungrouped"}),
                            ("host_vars", set(self.host_groups))):
            base = self.path / kind
            if not base.is_dir():
                continue
            for entry in sorted(base.iterdir()):
                if entry.name.startswith(".") or entry.name.endswith("~"):
                    continue
                name = entry.name if entry.is_dir() else entry.stem \
                    if entry.suffix in VAR_FILE_EXTENSIONS else None
                if name is None or name in known:
                    continue
                close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
                what = "group" if kind == "group_vars" else "host"
                for path in (_dir_files(entry) if entry.is_dir() else [entry]):
                    held = sorted(v for v in self._load(path).data if v.startswith("flashmm_"))
                    out.append(Issue(display_path(path), f"no {what} named {name!r} in "
                                     f"{display_path(self.hosts_file)}: Ansible ignores this file"
                                     + (f" and the {', '.join(held)} it holds" if held else "")
                                     + (f"; did you mean {close[0]}?" if close else ""),
                                     Origin("inventory", display_path(path))))
        return out

    def host_layers(self, host: str) -> HostLayers:
        if host not in self.host_groups:
            raise InventoryError(f"host {host!r} is not in {display_path(self.hosts_file)} "
                                 f"(hosts: {', '.join(self.hosts)})")
        if self._orphans is None:
            self._orphans = self.orphan_var_files()
        issues: list[Issue] = list(self._orphans)
        chosen: dict[str, tuple[str, Any]] = {}
        defined_in: dict[str, list[str]] = {}
        unreadable_secret_files = False
        sources: dict[str, str] = {}
        for place, source, data, unreadable in self._definitions(host):
            if unreadable:
                if place == "group_all":   # an encrypted vault.yml we hold no password for
                    unreadable_secret_files = True
                    sources["flashmm_secrets"] = source + " (encrypted, not opened)"
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
                defined_in.setdefault(var, []).append(source)
        for var, places in defined_in.items():
            if len(places) > 1:
                # Ansible keeps one and drops the other whole: a layer would vanish silently
                issues.append(Issue(var, "is defined in more than one place for this host ("
                                    + " and ".join(places) + "); Ansible would keep only the "
                                    "last, dropping the others whole: define it once",
                                    Origin(LAYER_VARS[var], places[-1])))
        layers = [layer_input(var, source, value) for var, (source, value) in chosen.items()]
        vault_available = "flashmm_secrets" in chosen and not unreadable_secret_files
        sources.update({var: source for var, (source, _) in chosen.items()})
        return HostLayers(host, layers, issues, vault_available, sources,
                          {var: value for var, (_, value) in chosen.items()})


def _dir_files(directory: Path) -> list[Path]:
    out = []
    for entry in sorted(directory.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name.endswith("~"):
            continue
        if entry.is_dir() and not entry.suffix:
            out.extend(_dir_files(entry))
        elif entry.is_file() and entry.suffix in VAR_FILE_EXTENSIONS:
            out.append(entry)
    return out


def layer_input(var: str, source: str, value: Any) -> LayerInput:
    """The LayerInput for one layer variable (the vault's flat dict is the secrets section)."""
    if var == "flashmm_secrets":
        value = {"secrets": value} if isinstance(value, dict) or value is None else value
    return LayerInput(LAYER_VARS[var], source, value, variable=var)


def _flat_values(value: Any):
    if isinstance(value, dict):
        for v in value.values():
            yield from _flat_values(v)
    elif isinstance(value, list):
        for v in value:
            yield from _flat_values(v)
    else:
        yield value

"""Validate hosts, read either by our inventory reader (the CLI) or from the variables Ansible
resolved (the plugins), so both give the same answer.

``FLASHMM_TRACE_VALIDATIONS=<file>`` appends one line per validated host to that file: how the
tests prove that a deploy validates each host exactly once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flashmm_deploy.config import role_settings
from flashmm_deploy.core.errors import ConfigInvalid, InventoryError, Issue, Origin
from flashmm_deploy.inventory.inventory import LAYER_VARS, Inventory, layer_input
from flashmm_deploy.config.layers import LayerInput
from flashmm_deploy.core.values import TooLarge, check_size, is_template, native, plain
from flashmm_deploy.config.validate import Validated, validate_layers
from flashmm_deploy.inventory.vault import VaultKeys

EXTRA_VARS_SOURCE = "extra vars (-e) or play vars"
_inventories: dict[tuple, Inventory] = {}


def load_inventory(path: str | Path, vault: VaultKeys | None = None) -> Inventory:
    """An Inventory, cached per process (one ansible-playbook run reads each file once)."""
    key = (str(Path(path).resolve()), vault and (tuple(vault.vault_ids), tuple(vault.password_files)))
    if key not in _inventories:
        _inventories[key] = Inventory(path, vault)
    return _inventories[key]


def _trace(host: str) -> None:
    path = os.environ.get("FLASHMM_TRACE_VALIDATIONS")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {host}\n")


def _validate(host: str, layers: list[LayerInput], reader_issues: list[Issue], *,
              require_secrets: bool, vault_available: bool) -> Validated:
    """Validate layers; issues the inventory reader found (misplaced or templated layer
    variables) come first and make the result invalid too."""
    _trace(host)
    result = validate_layers(layers, require_secrets=require_secrets,
                             vault_available=vault_available)
    result.errors[:0] = reader_issues
    if reader_issues:
        result.config = None
    return result


def validate_host(inv: Inventory, host: str, *, require_secrets: bool = False,
                  runtime_url: str | None = None) -> Validated:
    """Validate one host of a PyYAML-read inventory; with ``runtime_url``, the live runtime
    layer in that Redis database is part of the resolution."""
    hl = inv.host_layers(host)
    layers, issues = list(hl.layers), list(hl.issues)
    role_vars = role_settings.project_role_variables()
    if role_vars is not None:           # a checkout: typos of variable names are errors here too
        issues += role_settings.unknown_variables(
            inv.variable_names(host), role_vars | set(LAYER_VARS) | role_settings.INTERNAL_VARS,
            lambda var: inv.var_source(host, var) or "inventory")
    if runtime_url:
        from flashmm_deploy.config.runtime import read_layer   # redis-py only when asked for
        layer, runtime_issues = read_layer(runtime_url)
        layers.append(layer)
        issues += runtime_issues
    return _validate(host, layers, issues, require_secrets=require_secrets,
                     vault_available=hl.vault_available)


def unevaluated_issues(inv: Inventory, host: str) -> list[Issue]:
    """Role variables whose value is a template only Ansible evaluates, yet breaks its rule
    whatever it renders to (``flashmm_root: "relsandbox/{{ inventory_hostname }}"``): the
    deploy's message for each, so that ``validate`` refuses what deploy refuses."""
    known = {"inventory_hostname": host, "inventory_hostname_short": host.split(".")[0]}
    out = []
    for name, value in sorted(inv.host_variables(host).items()):
        if isinstance(value, str) and is_template(value):
            problem = role_settings.template_problem(name, value, known)
            if problem:
                out.append(Issue(name, problem, Origin(role_settings.ROLE_VARS_LAYER,
                                                       inv.var_source(host, name) or "inventory")))
    return out


def validate_inventory(inv: Inventory, hosts: list[str] | None = None, *,
                       require_secrets: bool = False,
                       runtime_url: str | None = None) -> dict[str, Validated]:
    return {h: validate_host(inv, h, require_secrets=require_secrets, runtime_url=runtime_url)
            for h in (hosts or inv.hosts)}


def raise_for_errors(results: Mapping[str, Validated]) -> None:
    bad = {h: r.errors for h, r in results.items() if r.errors}
    if bad:
        raise ConfigInvalid(bad)


# ---- from the variables Ansible resolved (the plugins) ---------------------------------------

def host_layers_from_vars(host: str, host_vars: Mapping[str, Any]
                          ) -> tuple[list[LayerInput], list[Issue], bool]:
    """Layers of ``host`` from its variables as Ansible resolved them (vault files decrypted,
    ``-e`` applied), attributed to the files our inventory reader finds them in.  The layer
    variables are taken raw, never templated: a layer holds literal values."""
    inv_dir = plain(host_vars.get("inventory_dir"))
    issues: list[Issue] = []
    sources: dict[str, str] = {}
    read: dict[str, Any] = {}
    if inv_dir:
        hl = load_inventory(inv_dir).host_layers(host)
        issues, sources, read = hl.issues, hl.sources, hl.values
    layers = []
    for var in LAYER_VARS:
        value = host_vars.get(var)
        if value is not None:
            value = plain(value)
            # a value that is not the one in the inventory file came from -e or play vars
            # (an encrypted vault file, unreadable to the reader, keeps its attribution)
            source = sources.get(var, EXTRA_VARS_SOURCE)
            if var in read and read[var] != value:
                source = EXTRA_VARS_SOURCE
            layers.append(layer_input(var, source, value))
    vault_available = any(layer.name == "vault" for layer in layers)
    return layers, issues, vault_available


def validate_host_layers(layer_vars: Mapping[str, Mapping[str, Any]], *,
                         require_secrets: bool = False) -> dict[str, Validated]:
    """host -> Validated, from each host's layer variables (and ``inventory_dir``)."""
    results = {}
    for host, host_vars in layer_vars.items():
        layers, issues, vault_available = host_layers_from_vars(host, host_vars)
        results[host] = _validate(host, layers, issues, require_secrets=require_secrets,
                                  vault_available=vault_available)
    return results



def layer_vars(raw_vars: Mapping[str, Any]) -> dict[str, Any]:
    """The layer variables (and ``inventory_dir``) of a host's raw, untemplated variables, as
    plain values: what ``validate_host_layers`` reads.  A variable too large to walk (an
    alias bomb Ansible parsed happily) is refused by name before anything walks it."""
    out = {}
    for name in (*LAYER_VARS, "inventory_dir"):
        if name in raw_vars:
            try:
                check_size(raw_vars[name])
            except TooLarge as exc:
                raise InventoryError(f"{name}: {exc}") from None
            out[name] = native(raw_vars[name])
    return out

"""The operations the CLI and the Ansible plugins share, so both give the same answer."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigInvalid, Issue
from .inventory import LAYER_VARS, Inventory, layer_input
from .layers import LayerInput, plain
from .validate import Validated, validate_layers

EXTRA_VARS_SOURCE = "extra vars (-e) or play vars"
_inventories: dict[tuple[str, str | None], Inventory] = {}


def load_inventory(path: str | Path, vault_password_file: str | None = None) -> Inventory:
    """An Inventory, cached per process (one ansible-playbook run reads each file once)."""
    key = (str(Path(path).resolve()), vault_password_file)
    if key not in _inventories:
        _inventories[key] = Inventory(path, vault_password_file)
    return _inventories[key]


def _validate(layers: list[LayerInput], reader_issues: list[Issue], *, require_secrets: bool,
              vault_available: bool) -> Validated:
    """Validate layers; issues the inventory reader found (misplaced or templated layer
    variables) come first and make the result invalid too."""
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
    if runtime_url:
        from .runtime import read_layer   # redis-py only when asked for
        layer, runtime_issues = read_layer(runtime_url)
        layers.append(layer)
        issues += runtime_issues
    return _validate(layers, issues, require_secrets=require_secrets,
                     vault_available=hl.vault_available)


def validate_inventory(inv: Inventory, hosts: list[str] | None = None, *,
                       require_secrets: bool = False,
                       runtime_url: str | None = None) -> dict[str, Validated]:
    return {h: validate_host(inv, h, require_secrets=require_secrets, runtime_url=runtime_url)
            for h in (hosts or inv.hosts)}


def raise_for_errors(results: Mapping[str, Validated]) -> None:
    bad = {h: r.errors for h, r in results.items() if r.errors}
    if bad:
        raise ConfigInvalid(bad)


# ---- from Ansible's hostvars (the filter plugins) ------------------------------------------------

def host_layers_from_vars(hostvars: Mapping[str, Any], host: str) -> tuple[list[LayerInput], list[Issue], bool]:
    """Layers for ``host`` from the values Ansible resolved (so vault and -e work), attributed to
    the files the inventory reader finds them in."""
    hv = hostvars[host]
    inv_dir = plain(hv.get("inventory_dir"))
    issues: list[Issue] = []
    sources: dict[str, str] = {}
    read: dict[str, Any] = {}
    if inv_dir:
        hl = load_inventory(inv_dir).host_layers(host)
        issues, sources, read = hl.issues, hl.sources, hl.values
    layers = []
    for var in LAYER_VARS:
        if var in hv and hv[var] is not None:
            value = plain(hv[var])
            # a value that is not the one in the inventory file came from -e or play vars
            # (an encrypted vault file, unreadable to the reader, keeps its attribution)
            source = sources.get(var, EXTRA_VARS_SOURCE)
            if var in read and read[var] != value:
                source = EXTRA_VARS_SOURCE
            layers.append(layer_input(var, source, value))
    vault_available = any(l.name == "vault" for l in layers)
    return layers, issues, vault_available


def validate_hostvars(hostvars: Mapping[str, Any], hosts: list[str], *,
                      require_secrets: bool = False) -> dict[str, Validated]:
    results = {}
    for host in hosts:
        layers, issues, vault_available = host_layers_from_vars(hostvars, host)
        results[host] = _validate(layers, issues, require_secrets=require_secrets,
                                  vault_available=vault_available)
    return results


def valid_config(hostvars: Mapping[str, Any], host: str, *, require_secrets: bool = True):
    """The validated FlashMMConfig of one host, or ConfigInvalid."""
    results = validate_hostvars(hostvars, [host], require_secrets=require_secrets)
    raise_for_errors(results)
    return results[host].config


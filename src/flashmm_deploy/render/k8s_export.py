"""Kubernetes export of a host's configuration, as the seed's backup does it with ``kubectl
create configmap flashmm-config-backup --from-file=config/ --dry-run=client -o yaml``: a
ConfigMap holding the config files and a Secret holding the ``.env`` variables.

Names are DNS-1123 labels (at most 63 characters of ``[a-z0-9-]``, starting and ending with a
letter or digit), data keys valid ConfigMap/Secret keys (``[-._a-zA-Z0-9]+``), Secret values
base64 under ``data`` as ``kubectl`` writes them.  A config file's key is its name; where it sits
below ``config/`` (``environments/<env>.yml``) is kept in the ``flashmm.io/paths`` annotation,
which a pod's volume ``items`` can follow.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

from flashmm_deploy.core.errors import FlashmmError

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


class ExportError(FlashmmError):
    pass


def dns_label(text: str) -> str:
    """``text`` as a DNS-1123 label: lowercase, other characters as '-', trimmed, at most 63
    characters (a long name keeps a hash of the whole so two names stay distinct)."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    label = re.sub(r"-{2,}", "-", label)
    if len(label) > 63:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        label = label[:54].rstrip("-") + "-" + digest
    if not _LABEL.fullmatch(label):
        raise ExportError(f"{text!r}: no DNS-1123 label can be made of it")
    return label


def label_value(text: str) -> str:
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63].strip("-_.")
    return value if _LABEL_VALUE.fullmatch(value) else ""


def config_key(path: str) -> str:
    key = path.rsplit("/", 1)[-1]
    if not _KEY.fullmatch(key) or key in (".", ".."):
        raise ExportError(f"config/{path}: {key!r} is not a valid ConfigMap key")
    return key


def objects(host: str, environment: str, config_files: Mapping[str, bytes],
            env: Mapping[str, str], *, namespace: str | None = None,
            source: str = "inventory") -> list[dict[str, Any]]:
    """The ConfigMap and the Secret of one host.  ``config_files``: path below ``config/`` ->
    content; ``env``: the ``.env`` variables."""
    labels = {"app.kubernetes.io/name": "flashmm", "app.kubernetes.io/managed-by": "flashmm-deploy"}
    for name, value in (("app.kubernetes.io/instance", host), ("flashmm.io/environment", environment)):
        if label_value(value):
            labels[name] = label_value(value)
    data, paths = {}, {}
    for path, content in sorted(config_files.items()):
        key = config_key(path)
        if key in data:
            raise ExportError(f"config/{path}: its name {key!r} is taken by config/{paths[key]}")
        try:
            data[key] = content.decode("utf-8")
        except UnicodeDecodeError:
            raise ExportError(f"config/{path}: not UTF-8 text") from None
        paths[key] = path
    for name in env:
        if not _KEY.fullmatch(name):
            raise ExportError(f".env: {name!r} is not a valid Secret key")
    annotations = {"flashmm.io/source": source, "flashmm.io/paths": json.dumps(paths, sort_keys=True)}

    def meta(name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "labels": labels, "annotations": annotations}
        if namespace:
            out["namespace"] = dns_label(namespace)
        return out

    base = dns_label(f"flashmm-{host}")
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": meta(dns_label(f"{base}-config")), "data": data}
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": meta(dns_label(f"{base}-env")),
              "data": {k: base64.b64encode(v.encode("utf-8")).decode("ascii")
                       for k, v in sorted(env.items())}}
    return [config_map, secret]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, as ``kubectl ... -o yaml`` writes them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    lines = value.split("\n")
    block = len(lines) > 1 and all(line == line.rstrip() for line in lines)
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if block else None)


_Dumper.add_representer(str, _str)


def to_yaml(objs: list[dict[str, Any]]) -> str:
    return "".join("---\n" + yaml.dump(o, Dumper=_Dumper, sort_keys=False,
                                       default_flow_style=False, allow_unicode=True, width=100)
                   for o in objs)

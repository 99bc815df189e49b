"""The functions behind ``filter_plugins/flashmm.py``.  Each takes Ansible's ``hostvars`` (so
vaulted and ``-e`` values arrive as Ansible resolved them) and returns ``(result, warnings)``;
errors are ``FlashmmError``.  Kept free of Ansible imports so they unit-test without it.

Each filter imports what it uses when it runs: a worker that templates one filter (the rotation
playbook's ``rotate_kinds`` in most of its tasks) does not import the schema and pydantic for
another (~0.13 s of CPU per worker)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flashmm_deploy.core.values import plain


def _raw(hostvars: Any, host: str) -> Mapping[str, Any]:
    # Ansible's HostVars: the variables untemplated (a layer holds literal values); a plain
    # mapping of mappings (tests) is taken as it is.
    return hostvars.raw_get(host) if hasattr(hostvars, "raw_get") else hostvars[host]


def flashmm_explain(hostvars, host, key):
    """Value, layer, file and shadowed values of ``key`` for ``host``; secrets redacted."""
    from flashmm_deploy.config import effective
    from flashmm_deploy.config.layers import did_you_mean
    from flashmm_deploy.config.schema import FIELDS
    from flashmm_deploy.core.errors import FlashmmError
    from flashmm_deploy.inventory import host_validation

    key, host = plain(key), plain(host)
    if key not in FIELDS:
        raise FlashmmError(f"{key}: unknown key{did_you_mean(key)}")
    results = host_validation.validate_host_layers(
        {host: host_validation.layer_vars(_raw(hostvars, host))})
    return effective.explain(results[host].resolution, key), []


def flashmm_rotation_kinds(selection):
    """``rotate=`` of the rotation playbook -> the kinds to rotate, in order."""
    from flashmm_deploy.secrets.rotation import kinds

    return kinds(plain(selection) if selection else ""), []


def flashmm_drift_report(hostvars, hosts, prefix="flashmm_drift_"):
    """The drift report (``drift.report``) of ``hosts`` from the results their check-mode steps
    registered as ``<prefix>files``, ``<prefix>stack``, ``<prefix>runtime``."""
    from flashmm_deploy.reports import drift

    per_host = {}
    for host in hosts:
        variables = hostvars[plain(host)]
        per_host[plain(host)] = {step: plain(variables.get(prefix + step))
                                 for step in drift.STEPS if variables.get(prefix + step)}
    return drift.report(per_host), []


def flashmm_audit_report(hostvars, hosts, var="flashmm_audit_read"):
    """The audit report (``audit_report.report``) of ``hosts`` from their ``var`` results."""
    from flashmm_deploy.reports import audit_report

    return audit_report.report({plain(h): plain(hostvars[plain(h)].get(var)) for h in hosts}), []


FILTERS: dict[str, Any] = {"flashmm_explain": flashmm_explain,
                           "flashmm_audit_report": flashmm_audit_report,
                           "flashmm_rotation_kinds": flashmm_rotation_kinds,
                           "flashmm_drift_report": flashmm_drift_report}

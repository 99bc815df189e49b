"""Validating a runtime change against the whole effective configuration.

A runtime set (or unset) is checked in three steps, each refusal one line naming the key and
the rule, before anything is written:

1. the key is a runtime key of the schema (``runtime: true``);
2. the value has its key's type (``layers.check_typed``);
3. the configuration with the change, every layer included, is validated by the deploy
   toolkit's own rules (``flashmm_deploy.config.validate``: ranges, formats, cross-field and secret
   rules, production's included).  A problem the configuration already had before the change
   is not this change's fault and does not refuse it; a new one does.

Step 3 needs pydantic (and the schema module, ``flashmm_deploy.config.schema``): it is imported on
the first set, so an application that only reads its configuration (the stand-in's image has
no pydantic) never loads it.
"""

from __future__ import annotations

import difflib
from typing import Any, Mapping, Sequence

from flashmm_config.layers import Field, check_typed, redis_key


class RuntimeSetRefused(ValueError):
    """A runtime change was refused; the message is one line naming the key and the rule.
    Nothing was written or published."""


def check_key(fields: Mapping[str, Field], key: str) -> Field:
    field = fields.get(key)
    runtime = sorted(k for k, f in fields.items() if f.runtime)
    if field is None:
        close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.75)
        raise RuntimeSetRefused("%s: unknown key%s; runtime keys: %s" % (
            key, "; did you mean %s?" % close[0] if close else "", ", ".join(runtime)))
    if not field.runtime:
        raise RuntimeSetRefused("%s: not a runtime key (it is set by deploy, through the "
                                "inventory); runtime keys: %s" % (key, ", ".join(runtime)))
    return field


def check_value(field: Field, value: Any) -> Any:
    """The value typed for its key (an int for a float key becomes a float)."""
    try:
        return check_typed(field, value)
    except ValueError as exc:
        raise RuntimeSetRefused("%s: %s (got %r)" % (field.key, exc, value)) from None


def _issues(layers: Sequence[Any], runtime: Mapping[str, Any]) -> list:
    from flashmm_deploy.config.layers import LayerInput
    from flashmm_deploy.config.validate import validate_layers

    data = {redis_key(key): value for key, value in runtime.items()}
    result = validate_layers([*layers, LayerInput("runtime", "redis (runtime layer)", data)])
    return result.errors


def _one_line(text: str) -> str:
    return " ".join(text.split())


def check_change(layers: Sequence[Any], runtime: Mapping[str, Any], key: str,
                 value: Any) -> None:
    """Raise RuntimeSetRefused when setting ``key`` to ``value`` (None: removing it) in the
    runtime layer ``runtime`` (dotted key -> value, as Redis holds it now) makes the
    configuration of ``layers`` (``flashmm_deploy.config.layers.LayerInput``: the lower layers) break
    a rule it did not break before."""
    after = dict(runtime)
    if value is None:
        after.pop(key, None)
    else:
        after[key] = value
    before = {(i.path, i.message) for i in _issues(layers, runtime)}
    new = [i for i in _issues(layers, after) if (i.path, i.message) not in before]
    if new:
        change = "removing it" if value is None else "%s = %s" % (key, _json(value))
        first = new[0]
        rule = first.message if first.path == key else "%s: %s" % (first.path, first.message)
        more = " (and %d more problem(s))" % (len(new) - 1) if len(new) > 1 else ""
        raise RuntimeSetRefused(_one_line("%s: refused, %s breaks a rule: %s%s" % (
            key, change, rule, more)))


def _json(value: Any) -> str:
    import json
    return json.dumps(value)

"""Strict parsing of environment-variable strings into schema types, and the reverse.

Standard library only (the stand-in app imports it in its container, without pydantic).

Accepted spellings (documented in docs/configuration.md):
- bool: ``true``/``false``/``1``/``0``, case-insensitive.  ``yes``/``on`` are rejected.
- int: optional sign and digits only (``8000``).  ``8000.0`` and ``1e3`` are rejected.
- float: decimal or exponent notation (``2.5``, ``10``, ``1e3``).  ``nan``/``inf`` rejected.
- list: a JSON array of strings (``["https://a.example", "https://b.example"]``).
- str: taken as is (``"1.10"`` stays ``"1.10"``).
- an empty string for an optional key means unset.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:     # any object with kind, optional and default will do: the stand-in app
    from flashmm_deploy.config.schema import FieldSpec   # passes its own, and must not import pydantic

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_TRUE, _FALSE = {"true", "1"}, {"false", "0"}


class EnvParseError(ValueError):
    """The string does not spell a value of the field's type (message never holds a secret)."""


def parse(spec: FieldSpec, raw: str) -> Any:
    if spec.optional and raw == "":
        return None
    if spec.kind in ("str", "choice"):
        return raw
    if spec.kind == "bool":
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise EnvParseError(f"expected a boolean (true/false/1/0), got {raw!r}")
    if spec.kind == "int":
        if _INT.fullmatch(raw.strip()):
            return int(raw)
        raise EnvParseError(f"expected an integer like {spec.default!r}, got {raw!r}")
    if spec.kind == "float":
        if _FLOAT.fullmatch(raw.strip()):
            value = float(raw)
            if math.isfinite(value):
                return value
        raise EnvParseError(f"expected a number like {spec.default!r}, got {raw!r}")
    if spec.kind == "list":
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise EnvParseError(f'expected a JSON array of strings like ["*"], got {raw!r}')
    raise AssertionError(f"unhandled kind {spec.kind}")


def render(spec: FieldSpec, value: Any) -> str:
    """The canonical env-var spelling of a (validated) value; ``parse`` reads it back."""
    if value is None:
        return ""
    if spec.kind == "bool":
        return "true" if value else "false"
    if spec.kind == "float":
        return repr(float(value))
    if spec.kind == "list":
        return json.dumps(list(value), separators=(",", ":"))
    if hasattr(value, "get_secret_value"):
        return value.get_secret_value()
    return str(value)

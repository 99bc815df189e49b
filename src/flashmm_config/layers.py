"""The configuration schema as the application sees it, and the pure functions of its four layers.

The schema comes from ``fields.json`` next to this module, generated from
``flashmm_deploy.config.schema`` by ``flashmm-config docs`` (reading it needs neither pydantic nor
the deploy toolkit, so the stand-in's image, which has no pydantic, runs this library too).  Each
dotted key has ``env`` (its variable), ``kind`` (str/int/float/bool/list/choice), ``optional``,
``secret``, ``runtime`` (may be overridden in Redis) and ``default``.

Layers, lowest first; every effective value carries the name of the layer it came from:

* ``default``  fields.json;
* ``file``     ``<config dir>/environments/<ENVIRONMENT>.yml``, nested YAML, typed values;
* ``env``      the process environment, strictly parsed by ``env_strings.parse`` (an optional
  key's empty variable means unset); a variable may be given as ``<VAR>_FILE``, the path of
  a file holding its value (``read_secret_files``: compose secrets under ``/run/secrets``);
* ``runtime``  Redis ``flashmm:config:<section>:<key>``, JSON, runtime keys only.

Every problem names the key and, for a secret key, never its value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from flashmm_deploy.config import env_strings
from flashmm_deploy.redis.keys import CONFIG_PREFIX

LAYERS = ("default", "file", "env", "runtime")
# <VAR>_FILE names a file holding <VAR>'s value (compose secrets): ``read_secret_files``
FILE_SUFFIX = "_FILE"
# The seed's Settings has no default for these: they must be present (they may be empty).
REQUIRED_ENV = ("CAMBRIAN_API_KEY", "CAMBRIAN_SECRET_KEY", "SEI_RPC_URL", "SEI_WS_URL",
                "SEI_CHAIN_ID")
_EXPECTED = {"str": "a string", "choice": "a string", "int": "an integer", "bool": "a boolean",
             "float": "a number", "list": "a list of strings"}


@dataclass(frozen=True)
class Field:
    """One dotted key of the schema (duck-types ``env_strings.parse``'s spec)."""

    key: str
    env: str
    kind: str
    optional: bool
    secret: bool
    runtime: bool
    default: Any


class ConfigError(Exception):
    """A layer could not be read; ``problems`` name keys, never secret values."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def load_fields() -> dict[str, Field]:
    """The schema from fields.json, in its (sorted) order."""
    text = resources.files(__package__).joinpath("fields.json").read_text("utf-8")
    return {key: Field(key=key, **spec) for key, spec in json.loads(text)["fields"].items()}


def missing_required(environ: Mapping[str, str]) -> list[str]:
    return [name for name in REQUIRED_ENV if name not in environ]


def shown(field: Field, value: Any) -> str:
    """How a value may appear in a message: never for a secret key."""
    return "(value hidden: secret)" if field.secret else repr(value)


def check_typed(field: Field, value: Any) -> Any:
    """A typed (YAML or JSON) value checked against the field's kind, normalised (an integer
    for a float key becomes a float).  Raises ValueError naming what was expected."""
    kind = field.kind
    ok = False
    if kind in ("str", "choice"):
        ok = isinstance(value, str)
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
            ok = math.isfinite(value)
    elif kind == "list":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = list(value) if ok else value
    if not ok:
        raise ValueError("expected %s, got %s" % (_EXPECTED.get(kind, kind),
                                                  "null" if value is None
                                                  else type(value).__name__))
    return value


def file_layer(fields: Mapping[str, Field], path: Path) -> tuple[dict[str, Any], list[str]]:
    """(values, unknown dotted keys) of a nested YAML file; a missing file is an empty layer.
    Raises ConfigError listing every bad key."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return {}, []
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8"
        raise ConfigError(["%s: cannot be read (%s)" % (path, reason)]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # Only the position: the YAML error text may quote the file (a secret, one day).
        mark = getattr(exc, "problem_mark", None)
        where = " at line %d, column %d" % (mark.line + 1, mark.column + 1) if mark else ""
        raise ConfigError(["%s: not valid YAML%s" % (path, where)]) from None
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        raise ConfigError(["%s: expected a mapping of sections at the top" % path])
    values: dict[str, Any] = {}
    unknown: list[str] = []
    problems: list[str] = []

    def walk(prefix: str, mapping: dict) -> None:
        for name, value in mapping.items():
            dotted = prefix + str(name)
            field = fields.get(dotted)
            if field is not None:
                if value is None and field.optional:
                    continue                          # null: unset, like an empty variable
                try:
                    values[dotted] = check_typed(field, value)
                except ValueError as exc:
                    problems.append("%s: %s: %s%s" % (
                        path, dotted, exc, "" if field.secret or value is None
                        else " " + repr(value)))
            elif isinstance(value, dict) and any(k.startswith(dotted + ".") for k in fields):
                walk(dotted + ".", value)
            else:
                unknown.append(dotted)

    walk("", data)
    if problems:
        raise ConfigError(problems)
    return values, unknown


def read_secret_files(fields: Mapping[str, Field],
                      environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """``environ`` with every schema variable given as a file resolved: ``<VAR>_FILE=<path>``
    (what deploy's ``.env`` holds with compose secrets, the file mounted at
    ``/run/secrets/<name>``) becomes ``<VAR>`` = the file's content, one trailing newline
    stripped.  Returns (the environment, problems).  Both ``<VAR>`` and ``<VAR>_FILE`` present,
    or a file that cannot be read (or is not UTF-8 text), is a problem naming the variable and
    the path, never the content; that variable is then left unset.  An empty ``<VAR>_FILE`` is
    unset, like any empty variable."""
    out = dict(environ)
    problems: list[str] = []
    for field in fields.values():
        file_var = field.env + FILE_SUFFIX
        path = out.pop(file_var, None)
        if not path:
            continue
        if field.env in environ:
            problems.append("%s and %s (%s) are both set: give the value one way only"
                            % (field.env, file_var, path))
            out.pop(field.env)
            continue
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            text = data.decode("utf-8")
        except OSError as exc:
            problems.append("%s (%s): cannot read %s (%s)" % (
                file_var, field.key, path, exc.strerror or type(exc).__name__))
            continue
        except UnicodeDecodeError:
            problems.append("%s (%s): %s is not UTF-8 text" % (file_var, field.key, path))
            continue
        out[field.env] = text[:-1] if text.endswith("\n") else text
    return out, problems


def env_layer(fields: Mapping[str, Field], environ: Mapping[str, str]) -> dict[str, Any]:
    """The values the environment sets.  Raises ConfigError listing every bad variable."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for field in fields.values():
        raw = environ.get(field.env)
        if raw is None:
            continue
        try:
            value = env_strings.parse(field, raw)
        except ValueError as exc:
            detail = ("not a valid %s (value hidden: secret)" % field.kind if field.secret
                      else str(exc))
            problems.append("%s (%s): %s" % (field.env, field.key, detail))
            continue
        if value is not None:                         # empty optional variable: unset
            values[field.key] = value
    if problems:
        raise ConfigError(problems)
    return values


def runtime_value(field: Field, raw: bytes) -> Any:
    """A Redis value of a runtime key: JSON valid for the field's kind.  Raises ValueError."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not JSON") from None
    return check_typed(field, value)


def redis_key(dotted: str) -> str:
    return CONFIG_PREFIX + dotted.replace(".", ":")


def dotted_key(name: str) -> str | None:
    """``flashmm:config:a:b`` -> ``a.b``; None outside the prefix."""
    if not name.startswith(CONFIG_PREFIX):
        return None
    return name[len(CONFIG_PREFIX):].replace(":", ".")


def resolve(fields: Mapping[str, Field],
            layers: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[Any, str]]:
    """Every key's effective (value, layer): the highest layer that sets it wins."""
    out = {}
    for key, field in fields.items():
        value, layer = field.default, "default"
        for name in LAYERS[1:]:
            given = layers.get(name, {})
            if key in given:
                value, layer = given[key], name
        out[key] = (value, layer)
    return out

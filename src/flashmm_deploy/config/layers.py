"""Merge configuration layers, keeping for every leaf where its value came from.

Layers, lowest priority first (``LAYER_ORDER``):

- ``defaults``    the schema's defaults (the seed's DEFAULT_CONFIG)
- ``environment`` ``group_vars/all/flashmm.yml`` (``flashmm_config``)
- ``vault``       ``group_vars/all/vault.yml`` (``flashmm_secrets``, the ``secrets`` section)
- ``group``       ``group_vars/<group>/`` (``flashmm_group_config``)
- ``host``        ``host_vars/<host>`` (``flashmm_host_config``)
- ``env``         environment-variable overrides (``flashmm_env_overrides``: ``{VAR: "string"}``)
- ``runtime``     Redis ``flashmm:config:<section>:<key>`` values (runtime-overridable keys only)

Secrets may only come from ``vault`` or ``env``: a secret in a plain-text layer is an error.
"""

from __future__ import annotations

import difflib
import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flashmm_deploy.config import env_strings
from flashmm_deploy.core.errors import Issue, Origin
from flashmm_deploy.redis.keys import dotted_key
from flashmm_deploy.config.schema import FIELDS, FIELDS_BY_ENV, SECTIONS, FieldSpec
from flashmm_deploy.core.values import TEMPLATE_MARKS, plain

LAYER_ORDER = ("defaults", "environment", "vault", "group", "host", "env", "runtime")
# Jinja2's delimiters: a layer holds literal values, and Ansible would template (or choke on,
# printing the lines around it) a value holding one, unclosed ones included.
# scheme://user:password@ anywhere in a plain value: a password typed into the wrong field.
# It matches what
# r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/@]*:[^\s@]*@" matches, in linear time: that one is
# quadratic in a long run of scheme characters (a 100 kB value took 11 s); this one starts
# only where such a run starts and takes its first letter and first colon.
_CREDENTIAL_URL = re.compile(r"(?<![A-Za-z0-9+.-])[0-9+.-]*[A-Za-z][A-Za-z0-9+.-]*://"
                             r"[^\s/@:]*:[^\s@]*@")
SECRET_LAYERS = ("vault", "env")
REDACTED = "<redacted>"


@dataclass(frozen=True)
class LayerInput:
    """One layer's data.  ``data`` is nested for the YAML layers, ``{VAR: str}`` for ``env`` and
    ``{dotted.path or flashmm:config:... key: value}`` for ``runtime``."""

    name: str
    source: str
    data: Mapping[str, Any]
    variable: str = ""          # the Ansible variable that holds it, when there is one

    @property
    def origin(self) -> Origin:
        return Origin(self.name, self.source)


@dataclass
class Provenance:
    origin: Origin
    # values this one overrode, lowest layer first: (origin, value)
    shadowed: list[tuple[Origin, Any]] = field(default_factory=list)

    def __repr__(self) -> str:   # values may be secrets: never in a repr
        return f"Provenance({self.origin}, {len(self.shadowed)} shadowed)"


@dataclass
class Resolution:
    values: dict[str, Any]                 # dotted path -> winning value
    provenance: dict[str, Provenance]      # dotted path -> where it came from
    issues: list[Issue]
    sources: dict[str, str] = field(default_factory=dict)   # layer name -> its file
    # known keys a layer set to a value it refused (reported in ``issues``): not "unset"
    refused: set[str] = field(default_factory=set)

    def __repr__(self) -> str:   # values may be secrets: never in a repr
        return f"Resolution({len(self.values)} values, {len(self.issues)} issue(s))"

    def nested(self) -> dict[str, Any]:
        """The winning values as the nested mapping the schema validates."""
        out: dict[str, Any] = {}
        for path, value in self.values.items():
            node = out
            *parents, leaf = path.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        return out

    def origin(self, path: str) -> Origin | None:
        prov = self.provenance.get(path)
        return prov.origin if prov else None


@functools.lru_cache(maxsize=65536)    # each host's layers ask again for the same unknown keys
def did_you_mean(path: str) -> str:
    """A hint naming the closest known key, or '' when nothing is close."""
    known = list(FIELDS) + sorted(SECTIONS)
    close = difflib.get_close_matches(path, known, n=1, cutoff=0.75)
    if not close:
        # the right key in the wrong section: trading.confidence_threshold -> ml.confidence_threshold
        leaf = path.rsplit(".", 1)[-1]
        close = [p for p in FIELDS if p.rsplit(".", 1)[-1] == leaf][:1]
    return f"; did you mean {close[0]}?" if close else ""


def did_you_mean_env(name: str) -> str:
    close = difflib.get_close_matches(name, list(FIELDS_BY_ENV), n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""




def invisible(text: str) -> str | None:
    """The first character of ``text`` a reader cannot see or that is no text at all, spelt
    out by code point (``U+200B (ZERO WIDTH SPACE)``), or None: control characters (tab
    included), format characters (Unicode category Cf: zero-width spaces and joiners, BOMs,
    bidirectional overrides, soft hyphens), line and paragraph separators and lone
    surrogates.  A value holding one looks right in every file and terminal yet is another
    value (``0.0.0.0`` followed by a zero-width space is no address)."""
    for char in text:
        if unicodedata.category(char) in _INVISIBLE:
            name = unicodedata.name(char, "") or _CONTROL_NAMES.get(char, "")
            return f"U+{ord(char):04X}" + (f" ({name})" if name else "")
    return None


_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_CONTROL_NAMES = {"\t": "CHARACTER TABULATION", "\n": "LINE FEED, a newline",
                  "\r": "CARRIAGE RETURN",
                  "\x00": "NULL", "\x1b": "ESCAPE", "\x7f": "DELETE", "\x85": "NEXT LINE"}


def _templated(path: str, value: Any, layer: LayerInput, issues: list[Issue],
               spec: FieldSpec | None = None) -> bool:
    """Record an issue when ``value`` (a string, or strings in a list) holds an invisible or
    control character (named by code point) or a Jinja2 delimiter (named); never the value."""
    spec = spec or FIELDS[path]
    strings = [s for s in (value if isinstance(value, list) else [value]) if isinstance(s, str)]
    hidden = next(filter(None, map(invisible, strings)), None)
    if hidden:
        issues.append(Issue(path, f"holds {hidden}, an invisible or control character: the "
                            "value would not be what it looks like in the file; remove it"
                            + (" (value hidden)" if spec.secret else "")
                            + (f"; .env variable {spec.env}"
                               if spec.secret and spec.env not in path else ""),
                            layer.origin))
        return True
    marks = sorted({m for s in strings for m in TEMPLATE_MARKS if m in s})
    if marks:
        issues.append(Issue(path, f"holds {' and '.join(repr(m) for m in marks)}, a Jinja2 "
                            "delimiter: layer values are literal and Ansible would template "
                            "them; remove it" + (" (value hidden)" if spec.secret else ""),
                            layer.origin))
        return True
    if not spec.secret and any(_CREDENTIAL_URL.search(s) for s in strings):
        issues.append(Issue(path, "must not carry credentials (a URL with user:password@ in "
                            "it); passwords belong in the vault (value hidden)", layer.origin))
        return True
    return False


def _nested_hint(key: str) -> str:
    """``trading.quote_frequency_hz`` -> ``trading: {quote_frequency_hz: ...}``."""
    *parents, leaf = [part for part in key.split(".") if part] or [key]
    text = f"{leaf}: ..."
    for part in reversed(parents):
        text = f"{part}: {{{text}}}"
    return text


def _leaves(layer: LayerInput, issues: list[Issue], refused: set[str]):
    """Yield (path, value) for each leaf a YAML layer sets; record unknown keys, dotted keys,
    misplaced secrets and values that are no literal text as issues (the paths of known keys
    whose value was refused go to ``refused``)."""

    def walk(data: Any, prefix: str):
        if data is None:            # an empty section (``trading:`` with nothing under it)
            return
        if not isinstance(data, Mapping):
            where = prefix.rstrip(".") or layer.variable or "(top level)"
            issues.append(Issue(where, f"expected a mapping of keys, not a {type(data).__name__}",
                                layer.origin))
            return
        for key, value in data.items():
            if not isinstance(key, str):
                issues.append(Issue(f"{prefix}{key!r}", "keys must be strings", layer.origin))
                continue
            path = prefix + key
            if "." in key:
                # YAML keys are not paths: read as one, a file could give a setting twice
                refused.add(path)
                hint = (f"nest it, {_nested_hint(key)}" if layer.name != "vault" else
                        "flashmm_secrets maps secret names (secret_key, redis_password, ...) "
                        "to values")
                issues.append(Issue(path, f"{key!r} is a dotted key; keys are not paths "
                                    "(the same setting could then be given twice in one file): "
                                    + hint, layer.origin))
                continue
            if path in FIELDS:
                spec = FIELDS[path]
                if spec.secret and layer.name not in SECRET_LAYERS:
                    refused.add(path)
                    issues.append(Issue(path, "a secret may only be set in the vault "
                                        "(flashmm_secrets in group_vars/all/vault.yml) or as an "
                                        f"environment override ({spec.env}); value hidden",
                                        layer.origin))
                    continue
                if _templated(path, value, layer, issues):
                    refused.add(path)
                    continue
                yield path, value
            elif path in SECTIONS:
                yield from walk(value, path + ".")
            else:
                hidden = invisible(key)
                issues.append(Issue(path, "unknown key" + (
                    f" (it holds {hidden}, an invisible or control character)" if hidden
                    else did_you_mean(path)), layer.origin))

    yield from walk(layer.data, "")


def _env_leaves(layer: LayerInput, issues: list[Issue], refused: set[str]):
    for name, raw in (layer.data or {}).items():
        spec = FIELDS_BY_ENV.get(name)
        if spec is None:
            issues.append(Issue(str(name), "unknown environment variable" + did_you_mean_env(str(name)),
                                layer.origin))
            continue
        if isinstance(raw, bool):
            raw = "true" if raw else "false"
        elif isinstance(raw, (int, float)):
            raw = str(raw)
        if not isinstance(raw, str):
            issues.append(Issue(f"{spec.path} ({name})", "an environment override must be a string",
                                layer.origin))
            continue
        if _templated(f"{spec.path} ({name})", raw, layer, issues, spec):
            refused.add(spec.path)
            continue
        try:
            yield spec.path, env_strings.parse(spec, raw)
        except env_strings.EnvParseError as exc:
            refused.add(spec.path)
            message = "value hidden: cannot be parsed" if spec.secret else str(exc)
            issues.append(Issue(f"{spec.path} ({name})", message, layer.origin))


def _runtime_leaves(layer: LayerInput, issues: list[Issue], refused: set[str]):
    for key, value in (layer.data or {}).items():
        path = dotted_key(key)
        spec = FIELDS.get(path)
        if spec is None:
            issues.append(Issue(path, "unknown runtime key" + did_you_mean(path), layer.origin))
        elif not spec.runtime:
            issues.append(Issue(path, "is not runtime-overridable (runtime keys: "
                                + ", ".join(p for p, f in FIELDS.items() if f.runtime) + ")",
                                layer.origin))
        else:
            yield path, value


def resolve(layers: list[LayerInput]) -> Resolution:
    """Merge ``layers`` (any order; sorted by LAYER_ORDER, stable within a layer name)."""
    issues: list[Issue] = []
    values: dict[str, Any] = {}
    provenance: dict[str, Provenance] = {}

    def put(path: str, value: Any, origin: Origin):
        prev = provenance.get(path)
        if prev is None:
            provenance[path] = Provenance(origin)
        else:
            provenance[path] = Provenance(origin, prev.shadowed + [(prev.origin, values[path])])
        values[path] = value

    defaults = Origin("defaults", "schema default")
    for path, spec in FIELDS.items():
        if not spec.required:
            put(path, spec.default, defaults)

    sources = {}
    refused: set[str] = set()
    for layer in sorted(layers, key=lambda lay: LAYER_ORDER.index(lay.name)):
        sources[layer.name] = layer.source
        if layer.name in ("env", "runtime") and not isinstance(layer.data, Mapping):
            issues.append(Issue(layer.variable or "(top level)",
                                f"expected a mapping, not a {type(layer.data).__name__}",
                                layer.origin))
            continue
        walker = {"env": _env_leaves, "runtime": _runtime_leaves}.get(layer.name, _leaves)
        for path, value in walker(layer, issues, refused):
            put(path, plain(value), layer.origin)
    return Resolution(values, provenance, issues, sources, refused)


def shown(path: str, value: Any) -> Any:
    """A value fit for display: secrets become ``<redacted>`` (unset stays None), and a URL
    never shows a password someone put in it (validation refuses such a URL, but explain shows
    invalid values too)."""
    if FIELDS[path].secret and value is not None:
        return REDACTED
    if isinstance(value, list):
        return [shown(path, v) for v in value] if not FIELDS[path].secret else REDACTED
    if isinstance(value, str) and "://" in value:
        from flashmm_deploy.redis_ext.url import mask_url
        return mask_url(value)
    return value

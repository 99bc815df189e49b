"""The bad-input table of tests/integration/test_bad_inputs.py (and helpers shared with
test_secret_suite.py): mutations applied to a private copy of a `local`-style inventory built by
``flashmm_deploy.plan.sandbox.make_local_inventory`` (three hosts sandbox-01..03, no stack).

Each ``Variant`` is one bad input.  Its ``apply(inv)`` edits the copy; ``keys`` are the names
(dotted key path or variable) of which the CLI's message must hold at least one; ``file`` is the
inventory-relative file the message must name; ``hidden`` is a fragment of a secret value that
must never be printed; ``hostile`` variants (alias bombs, recursion) run only as a bounded
process.  No tests here: an importable module.
"""

from __future__ import annotations

import os
import resource
import secrets as random_tokens
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import yaml
from cryptography.fernet import Fernet

from flashmm_deploy.config.schema import FIELDS, SECRET_FIELDS, FlashMMConfig

# ---- the base inventory's files ---------------------------------------------------------------

ENV = "group_vars/all/flashmm.yml"          # flashmm_config
VAULT = "group_vars/all/vault.yml"          # flashmm_secrets
HOST = "host_vars/sandbox-01.yml"           # flashmm_host_config (storage.redis.db)
HOSTS = "hosts.yml"
GROUP = "group_vars/flashmm/main.yml"       # flashmm_group_config (not in the base: created)
LAYER_FILE = {"env": (ENV, "flashmm_config"), "host": (HOST, "flashmm_host_config"),
              "group": (GROUP, "flashmm_group_config")}

# Printed by Python or by Ansible when an exception escaped instead of a message.
TRACEBACK_MARKERS = ("Traceback (most recent call last)", "An exception occurred during task "
                     "execution", "Unexpected Exception", "MODULE FAILURE",
                     "flashmm-config: internal error")    # an unforeseen exception, caught last


def token(n: int = 24) -> str:
    return random_tokens.token_urlsafe(n)


# ---- editing a copy -----------------------------------------------------------------------------

def load(inv: Path, rel: str) -> dict:
    path = inv / rel
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}


def dump(inv: Path, rel: str, data: Any) -> None:
    path = inv / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n" + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def set_path(data: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value


def edit(rel: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(inv: Path) -> None:
        data = load(inv, rel)
        change(data)
        dump(inv, rel, data)
    return apply


def layer_of(path: str, layer: str | None = None) -> str:
    """The layer a key is set in: the host layer holds storage.redis.db in the base (so a bad
    value anywhere lower would be shadowed); everything else goes to the environment layer."""
    return layer or ("host" if path == "storage.redis.db" else "env")


def config(path: str, value: Any, layer: str | None = None) -> Callable[[Path], None]:
    """Set a key in a YAML layer (a mapping variable in its file)."""
    rel, name = LAYER_FILE[layer_of(path, layer)]

    def change(d: dict) -> None:
        if not isinstance(d.get(name), dict):
            d[name] = {}
        set_path(d[name], path, value)
    return edit(rel, change)


def config_file(path: str, layer: str | None = None) -> str:
    return LAYER_FILE[layer_of(path, layer)][0]


def secret(key: str, value: Any) -> Callable[[Path], None]:
    return edit(VAULT, lambda d: d.setdefault("flashmm_secrets", {}).__setitem__(key, value))


def override(name: str, value: Any, rel: str = HOST) -> Callable[[Path], None]:
    return edit(rel, lambda d: d.setdefault("flashmm_env_overrides", {}).__setitem__(name, value))


def var(rel: str, name: str, value: Any) -> Callable[[Path], None]:
    """A top-level variable in a vars file."""
    return edit(rel, lambda d: d.__setitem__(name, value))


def rename_var(rel: str, old: str, new: str) -> Callable[[Path], None]:
    def change(d: dict) -> None:
        d[new] = d.pop(old)
    return edit(rel, change)


def _flashmm_group(d: dict) -> dict:
    return d["all"]["children"]["flashmm"]


def group_var(name: str, value: Any) -> Callable[[Path], None]:
    """A variable of the `flashmm` group in hosts.yml."""
    return edit(HOSTS, lambda d: _flashmm_group(d)["vars"].__setitem__(name, value))


def host_var(name: str, value: Any, host: str = "sandbox-01") -> Callable[[Path], None]:
    """A variable of one host in hosts.yml."""
    return edit(HOSTS, lambda d: _flashmm_group(d)["hosts"][host].__setitem__(name, value))


def all_var(name: str, value: Any) -> Callable[[Path], None]:
    return edit(HOSTS, lambda d: d["all"].setdefault("vars", {}).__setitem__(name, value))


def rename_host(new: str, old: str = "sandbox-03") -> Callable[[Path], None]:
    def change(d: dict) -> None:
        hosts = _flashmm_group(d)["hosts"]
        hosts[new] = hosts.pop(old)
    return edit(HOSTS, change)


def write_text(rel: str, text: str) -> Callable[[Path], None]:
    return write_bytes(rel, text.encode("utf-8"))


def write_bytes(rel: str, data: bytes) -> Callable[[Path], None]:
    def apply(inv: Path) -> None:
        path = inv / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return apply


def transform(rel: str, change: Callable[[str], str | bytes]) -> Callable[[Path], None]:
    """Rewrite a file's text (the group file is created valid first)."""
    def apply(inv: Path) -> None:
        if rel == GROUP and not (inv / rel).exists():
            dump(inv, rel, {"flashmm_group_config": {"trading": {"risk_multiplier": 1.0}}})
        result = change((inv / rel).read_text(encoding="utf-8"))
        (inv / rel).write_bytes(result if isinstance(result, bytes) else result.encode("utf-8"))
    return apply


def delete(rel: str) -> Callable[[Path], None]:
    return lambda inv: (inv / rel).unlink()


def both(*changes: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(inv: Path) -> None:
        for change in changes:
            change(inv)
    return apply


# ---- the table ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    cls: str
    name: str
    apply: Callable[[Path], None]
    keys: tuple[str, ...]          # the message names at least one of these
    file: str | None               # ... and this inventory-relative file
    hidden: str | None = None      # never printed (a fragment of a secret value)
    hostile: bool = False          # run only as a bounded process

    @property
    def id(self) -> str:
        return f"{self.cls}:{self.name}"


VARIANTS: list[Variant] = []


def add(cls: str, name: str, apply, keys=(), file=None, **kw) -> None:
    VARIANTS.append(Variant(cls, name, apply, tuple([keys] if isinstance(keys, str) else keys),
                            file, **kw))


def _model_fields(model=FlashMMConfig, prefix=""):
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and hasattr(ann, "model_fields"):
            yield from _model_fields(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", info


_BOUND_ATTR = {"Gt": "gt", "Ge": "ge", "Lt": "lt", "Le": "le", "MaxLen": "max_length"}
BOUNDS = {path: {type(m).__name__: getattr(m, _BOUND_ATTR[type(m).__name__]) for m in info.metadata
                 if type(m).__name__ in _BOUND_ATTR}
          for path, info in _model_fields()}
PUBLIC = [spec for spec in FIELDS.values() if not spec.secret]

# -- types: one wrong type for every public key of the schema, then layer-shaped mistakes
WRONG_TYPE = {"str": 12345, "int": "three", "float": "fast", "bool": "maybe", "choice": 42,
              "list": "*"}
for spec in PUBLIC:
    add("types", spec.path, config(spec.path, WRONG_TYPE[spec.kind]), spec.path,
        config_file(spec.path))
for spec in PUBLIC:
    if spec.kind in ("int", "float"):      # a boolean is not a number (strict)
        add("types", f"{spec.path}=true", config(spec.path, True), spec.path,
            config_file(spec.path))
add("types", "section-as-scalar", edit(ENV, lambda d: d["flashmm_config"].__setitem__("trading", 5)),
    "trading", ENV)
add("types", "nested-section-as-scalar",
    edit(ENV, lambda d: d["flashmm_config"]["storage"].__setitem__("redis", "localhost")),
    "storage.redis", ENV)
add("types", "flashmm_config-not-a-mapping", var(ENV, "flashmm_config", "app.debug=true"),
    "flashmm_config", ENV)
add("types", "flashmm_config-a-list", var(ENV, "flashmm_config", [{"app": {"debug": True}}]),
    "flashmm_config", ENV)
add("types", "flashmm_secrets-a-list", var(VAULT, "flashmm_secrets", ["secret_key"]),
    "flashmm_secrets", VAULT)
add("types", "flashmm_host_config-a-number", var(HOST, "flashmm_host_config", 42),
    "flashmm_host_config", HOST)
add("types", "flashmm_env_overrides-a-string", var(HOST, "flashmm_env_overrides", "APP_DEBUG=1"),
    "flashmm_env_overrides", HOST)
add("types", "secret-a-list", secret("secret_key", [token(40)]), "secrets.secret_key", VAULT)
add("types", "secret-a-number", secret("api_auth_token", 12345678901234567890123456789012345),
    "secrets.api_auth_token", VAULT)
add("types", "secret-a-mapping", secret("encryption_key", {"key": token()}),
    "secrets.encryption_key", VAULT)
add("types", "secret-a-bool", secret("redis_password", True), "secrets.redis_password", VAULT)
add("types", "host-layer-int-as-string", config("storage.redis.db", "one", "host"),
    "storage.redis.db", HOST)
add("types", "group-layer-float-as-string", config("trading.risk_multiplier", "x", "group"),
    "trading.risk_multiplier", GROUP)
add("types", "override-int", override("TRADING_MAX_QUOTE_LEVELS", "three"),
    "trading.max_quote_levels", HOST)
add("types", "override-bool", override("MONITORING_ALERT_ENABLED", "maybe"),
    "monitoring.alert_enabled", HOST)
add("types", "override-list-not-json", override("API_CORS_ORIGINS", "[not json"),
    "api.cors_origins", HOST)
add("types", "override-a-list", override("API_PORT", [8000]), "api.port", HOST)

# -- ranges: each bound of the schema crossed, choices, non-finite numbers, lengths, cross-field
for path, bounds in BOUNDS.items():
    spec = FIELDS[path]
    step = 1 if spec.kind == "int" else 0.5
    below = (bounds["Gt"] if "Gt" in bounds else bounds["Ge"] - step) if (
        "Gt" in bounds or "Ge" in bounds) else None
    above = (bounds["Lt"] if "Lt" in bounds else bounds["Le"] + step) if (
        "Lt" in bounds or "Le" in bounds) else None
    if spec.kind == "list":
        if "MaxLen" in bounds:
            add("ranges", f"{path}-too-long", config(path, ["https://a.example"] *
                                                      (bounds["MaxLen"] + 1)), path, config_file(path))
        continue
    if below is not None:
        add("ranges", f"{path}-below", config(path, below), path, config_file(path))
    if above is not None:
        add("ranges", f"{path}-above", config(path, above), path, config_file(path))
for spec in PUBLIC:
    if spec.kind == "choice":
        add("ranges", f"{spec.path}-not-a-choice", config(spec.path, "staging-ish"), spec.path,
            config_file(spec.path))
for path, value in (("trading.max_position_usdc", float("nan")),
                    ("ml.confidence_threshold", float("inf")),
                    ("trading.risk_multiplier", float("-inf"))):
    add("ranges", f"{path}-{value}", config(path, value), path, ENV)
add("ranges", "app.name-5000-chars", config("app.name", "n" * 5000), "app.name", ENV)
add("ranges", "sei.chain_id-of-another-network", config("sei.chain_id", "pacific-1"),
    "sei.chain_id", ENV)
add("ranges", "production-with-debug", config("app.environment", "production"), "app.debug", ENV)
add("ranges", "override-above", override("TRADING_MAX_POSITION_USDC", "100001"),
    "trading.max_position_usdc", HOST)
add("ranges", "host-layer-below", config("trading.quote_frequency_hz", 0, "host"),
    "trading.quote_frequency_hz", HOST)
add("ranges", "group-layer-above", config("ml.confidence_threshold", 1.5, "group"),
    "ml.confidence_threshold", GROUP)

# -- unknown keys, at each level and in each layer
for name, path, layer, named in (
        ("section", "tradng.max_position_usdc", "env", "tradng"),
        ("key", "trading.max_postion_usdc", "env", None),
        ("nested-section", "storage.redsi.host", "env", "storage.redsi"),
        ("key-in-nested-section", "storage.redis.hots", "env", None),
        ("nested-section-below-nested", "storage.redis.tls.enabled", "env", "storage.redis.tls"),
        ("key-in-deepest-section", "monitoring.alert_thresholds.max_drawdown", "env", None),
        ("key-below-a-leaf", "app.name.first", "env", "app.name"),
        ("host-layer-key", "trading.quote_frequncy_hz", "host", None),
        ("host-layer-section", "mls.batch_size", "host", "mls"),
        ("group-layer-key", "ml.batchsize", "group", None)):
    add("unknown", name, config(path, 1, layer), named or path, config_file(path, layer))
add("unknown", "vault-secret", secret("secret_kye", token(40)), "secrets.secret_kye", VAULT)
add("unknown", "vault-nested-secrets", secret("secrets", {"secret_key": token(40)}),
    "secrets.secrets", VAULT)
add("unknown", "override-variable", override("SECRET_KEYY", token(40)), "SECRET_KEYY", HOST)
add("unknown", "override-misspelt", override("TRADING_MAX_POSITON_USDC", "5"),
    "TRADING_MAX_POSITON_USDC", HOST)
add("unknown", "non-string-key", edit(ENV, lambda d: d["flashmm_config"]["trading"].__setitem__(7, 1)),
    "trading", ENV)
add("unknown", "key-with-trailing-space", config("app.debug ", False), "app.debug", ENV)
# a dotted key is no path: read as one, a file could give one setting twice
add("unknown", "dotted-key", edit(ENV, lambda d: d["flashmm_config"].__setitem__(
    "trading.quote_frequency_hz", 3.0)), "trading.quote_frequency_hz", ENV)
add("unknown", "dotted-key-in-a-section", edit(HOST, lambda d: d["flashmm_host_config"].setdefault(
    "storage", {}).__setitem__("redis.db", 2)), "storage.redis.db", HOST)

# -- misplaced layers: a layer variable in the wrong file or group
SMALL = {"flashmm_config": {"trading": {"risk_multiplier": 2.0}},
         "flashmm_secrets": {"secret_key": token(40)},
         "flashmm_host_config": {"trading": {"risk_multiplier": 2.0}},
         "flashmm_group_config": {"trading": {"risk_multiplier": 2.0}}}
for layer_var, where, apply, rel in (
        ("flashmm_config", "host_vars", var(HOST, "flashmm_config", SMALL["flashmm_config"]), HOST),
        ("flashmm_config", "group_vars-flashmm", var(GROUP, "flashmm_config",
                                                     SMALL["flashmm_config"]), GROUP),
        ("flashmm_config", "hosts.yml-group-vars", group_var("flashmm_config",
                                                             SMALL["flashmm_config"]), HOSTS),
        ("flashmm_config", "hosts.yml-host-vars", host_var("flashmm_config",
                                                           SMALL["flashmm_config"]), HOSTS),
        ("flashmm_config", "hosts.yml-all-vars", all_var("flashmm_config", SMALL["flashmm_config"]),
         HOSTS),
        ("flashmm_config", "a-second-file-of-group_vars-all",
         var("group_vars/all/zz-extra.yml", "flashmm_config", SMALL["flashmm_config"]),
         "group_vars/all/zz-extra.yml"),
        ("flashmm_secrets", "host_vars", var(HOST, "flashmm_secrets", SMALL["flashmm_secrets"]), HOST),
        ("flashmm_secrets", "group_vars-flashmm", var(GROUP, "flashmm_secrets",
                                                      SMALL["flashmm_secrets"]), GROUP),
        ("flashmm_secrets", "group_vars-all-flashmm.yml",
         var(ENV, "flashmm_secrets", SMALL["flashmm_secrets"]), ENV),
        ("flashmm_secrets", "hosts.yml-group-vars", group_var("flashmm_secrets",
                                                              SMALL["flashmm_secrets"]), HOSTS),
        ("flashmm_host_config", "group_vars-all", var(ENV, "flashmm_host_config",
                                                      SMALL["flashmm_host_config"]), ENV),
        ("flashmm_host_config", "group_vars-flashmm", var(GROUP, "flashmm_host_config",
                                                          SMALL["flashmm_host_config"]), GROUP),
        ("flashmm_host_config", "hosts.yml-group-vars",
         group_var("flashmm_host_config", SMALL["flashmm_host_config"]), HOSTS),
        ("flashmm_host_config", "host_vars-of-an-unknown-host",
         var("host_vars/sandbox-1.yml", "flashmm_host_config", SMALL["flashmm_host_config"]),
         "host_vars/sandbox-1.yml"),
        ("flashmm_group_config", "group_vars-all", var(ENV, "flashmm_group_config",
                                                       SMALL["flashmm_group_config"]), ENV),
        ("flashmm_group_config", "host_vars", var(HOST, "flashmm_group_config",
                                                  SMALL["flashmm_group_config"]), HOST),
        ("flashmm_group_config", "hosts.yml-group-vars",
         group_var("flashmm_group_config", SMALL["flashmm_group_config"]), HOSTS),
        ("flashmm_group_config", "group_vars-of-an-unknown-group",
         var("group_vars/flashmm-hosts/main.yml", "flashmm_group_config",
             SMALL["flashmm_group_config"]), "group_vars/flashmm-hosts/main.yml")):
    add("misplaced", f"{layer_var}-in-{where}", apply, layer_var, rel)

# -- YAML errors, in every kind of file


def _dup(text: str) -> str:
    return text + "\n" + text.replace("---\n", "", 1)


def _tab(text: str) -> str:
    return text.replace("\n  ", "\n\t", 1)


def _bom_in(name: str) -> Callable[[str], str]:
    """A BOM (U+FEFF, invisible) inside a variable's name: libyaml keeps it there (it drops one
    only at the start of a line), so the variable silently becomes another one."""
    return lambda text: text.replace(f"{name}:", f"{name[:7]}\ufeff{name[7:]}:", 1)


TOP_KEY = {ENV: "flashmm_config", VAULT: "flashmm_secrets", HOST: "flashmm_host_config",
           HOSTS: "all", GROUP: "flashmm_group_config"}
for rel, short in ((ENV, "flashmm.yml"), (VAULT, "vault.yml"), (HOST, "host_vars"),
                   (HOSTS, "hosts.yml"), (GROUP, "group_vars-flashmm")):
    add("yaml", f"syntax-{short}", transform(rel, lambda t: t + "\nbroken: [unclosed, \n"), (),
        rel)
    add("yaml", f"tab-{short}", transform(rel, _tab), (), rel)
    add("yaml", f"duplicate-key-{short}", transform(rel, _dup), TOP_KEY[rel], rel)
    add("yaml", f"scalar-top-level-{short}", write_text(rel, "just a plain string\n"), (), rel)
    add("yaml", f"list-top-level-{short}", write_text(rel, "- one\n- two\n"), (), rel)
    name = "flashmm_compose_up" if rel == HOSTS else TOP_KEY[rel]
    add("yaml", f"bom-inside-{name}-{short}", transform(rel, _bom_in(name)),
        (name, f"{name[:7]}\ufeff{name[7:]}", "\\ufeff"), rel)
add("yaml", "duplicate-nested-section-flashmm.yml",
    transform(ENV, lambda t: t + "  trading:\n    max_position_usdc: 5.0\n"), "trading", ENV)
add("yaml", "empty-flashmm.yml", write_text(ENV, ""), "flashmm_config", ENV)
add("yaml", "empty-hosts.yml", write_text(HOSTS, ""), (), HOSTS)
add("yaml", "hosts-a-list", edit(HOSTS, lambda d: _flashmm_group(d).__setitem__(
    "hosts", ["sandbox-01", "sandbox-02"])), (), HOSTS)
add("yaml", "host-vars-a-list", edit(
    HOSTS, lambda d: _flashmm_group(d)["hosts"].__setitem__("sandbox-01", ["a", "b"])), (), HOSTS)
add("yaml", "children-a-number", edit(HOSTS, lambda d: d["all"].__setitem__("children", 5)), (),
    HOSTS)
add("yaml", "group-a-string", edit(HOSTS, lambda d: d["all"]["children"].__setitem__(
    "flashmm_stack_hosts", "none")), (), HOSTS)
add("yaml", "group-vars-a-list", edit(HOSTS, lambda d: _flashmm_group(d).__setitem__(
    "vars", ["flashmm_compose_up"])), (), HOSTS)

# -- encodings
add("encodings", "latin-1-flashmm.yml", transform(ENV, lambda t: t.encode("utf-8").replace(
    b"  app:\n", b"  app:\n    name: Flash\xe9MM\n", 1)), (), ENV)
for rel, short in ((VAULT, "vault.yml"), (HOST, "host_vars"), (HOSTS, "hosts.yml")):
    add("encodings", f"latin-1-{short}", transform(rel, lambda t: t.encode("utf-8") +
                                                    b"# caf\xe9\n"), (), rel)
add("encodings", "utf-16-flashmm.yml", transform(ENV, lambda t: t.encode("utf-16")), (), ENV)
add("encodings", "utf-16-be-hosts.yml", transform(HOSTS, lambda t: b"\xfe\xff" +
                                                  t.encode("utf-16-be")), (), HOSTS)
add("encodings", "utf-32-host_vars", transform(HOST, lambda t: t.encode("utf-32")), (), HOST)
add("encodings", "nul-byte-flashmm.yml", transform(ENV, lambda t: t + "\x00\n"), (), ENV)
add("encodings", "raw-bell-in-a-value", transform(ENV, lambda t: t.replace(
    "  app:\n", '  app:\n    name: "Flash\x07MM"\n', 1)), (), ENV)
add("encodings", "overlong-utf-8", transform(ENV, lambda t: t.encode("utf-8") + b"# \xc0\xaf\n"),
    (), ENV)
add("encodings", "escape-sequence-in-a-value", config("app.name", "\x1b[31mFlashMM"), "app.name", ENV)
add("encodings", "lone-surrogate-escape", config("app.name", "Flash\ud800MM"), (), ENV)
add("encodings", "carriage-return-in-a-value", config("ml.model_path", "/app/m\r.pt"),
    "ml.model_path", ENV)
add("encodings", "nul-escape-in-a-value", config("app.version", "1.0\x00"), "app.version", ENV)
# invisible characters (Unicode Cf, separators) and controls: a value that is not what it shows
add("encodings", "zero-width-space-in-a-value", config("api.host", "0.0.0.0\u200b"), "api.host",
    ENV)
add("encodings", "bidi-override-in-a-value", config("app.name", "FlashMM\u202e"), "app.name", ENV)
add("encodings", "tab-in-a-value", config("app.name", "Flash\tMM"), "app.name", ENV)
add("encodings", "line-separator-in-an-override", override("FLASHMM_APP_NAME", "Flash\u2028MM"),
    "app.name", HOST)
_core = "S" + token(30)
add("encodings", "zero-width-joiner-in-a-secret", secret("secret_key", _core + "\u200d" + token(8)),
    "secrets.secret_key", VAULT, hidden=_core)
_core = "S" + token(30)
add("encodings", "bom-in-a-secret-override", override("API_AUTH_TOKEN", _core + "\ufeff"),
    "secrets.api_auth_token", HOST, hidden=_core)


# -- hostile YAML: alias bombs (billion laughs), recursion, depth, size
def bomb() -> list:
    level: list = ["lol"] * 9
    for _ in range(8):                 # 9 ** 9 = 387 420 489 leaves, a few hundred bytes of YAML
        level = [level] * 9
    return level


add("hostile", "alias-bomb-host_vars", edit(HOST, lambda d: d["flashmm_host_config"].__setitem__(
    "bomb", bomb())), (), HOST, hostile=True)
add("hostile", "alias-bomb-vault.yml", secret("cambrian_api_key", bomb()), (), VAULT, hostile=True)
add("hostile", "alias-bomb-hosts.yml-host-layer", host_var("flashmm_host_config", {"bomb": bomb()}),
    (), HOSTS, hostile=True)
add("hostile", "alias-bomb-hosts.yml-plain-var", group_var("bomb_payload", bomb()), (), HOSTS,
    hostile=True)
add("hostile", "recursive-alias-host_vars", transform(
    HOST, lambda t: t + "flashmm_env_overrides: &loop\n  API_CORS_ORIGINS: *loop\n"), (), HOST,
    hostile=True)
add("hostile", "nesting-100000-deep", transform(
    HOST, lambda t: t + "deep: " + "[" * 100000 + "]" * 100000 + "\n"), (), HOST, hostile=True)
add("hostile", "two-megabyte-value", transform(ENV, lambda t: t.replace(
    "  app:\n", "  app:\n    name: " + "x" * 2_000_000 + "\n", 1)), (), ENV)
add("hostile", "ten-thousand-unknown-keys", edit(ENV, lambda d: d["flashmm_config"]["trading"].update(
    {f"k{i}": i for i in range(10000)})), "trading.k0", ENV)

# -- paths: flashmm_root
for name, value in (("relative", "relative/sandbox-01"), ("dot-relative", "./sandbox-01"),
                    ("tilde", "~/flashmm"), ("dotdot", "/tmp/flashmm/../sandbox-01"),
                    ("trailing-dotdot", "/tmp/flashmm/.."), ("slash", "/"), ("double-slash", "//"),
                    ("empty", ""), ("not-normalised", "/tmp//flashmm/./x"), ("a-list", ["/tmp/x"])):
    add("paths", f"flashmm_root-{name}", host_var("flashmm_root", value), "flashmm_root", HOSTS)
# templates Ansible evaluates at deploy, but whose every rendering breaks the rule
for name, value in (("templated-relative", "relsandbox/{{ inventory_hostname }}"),
                    ("templated-dotdot", "/tmp/flashmm/{{ inventory_hostname }}/.."),
                    ("templated-home", "$HOME/{{ inventory_hostname }}"),
                    ("templated-dotdot-after-a-lookup",
                     "{{ lookup('ansible.builtin.env', 'HOME') }}/../{{ inventory_hostname }}")):
    add("paths", f"flashmm_root-{name}", host_var("flashmm_root", value), "flashmm_root", HOSTS)

# -- hostnames
for name, host in (("slash", "sandbox/03"), ("dotdot-prefix", "../hosts"), ("dotdot", ".."),
                   ("dotdot-inside", "sandbox/../03"), ("absolute", "/etc/sandbox-03"),
                   ("dot", ".")):
    add("hostnames", name, rename_host(host), host, HOSTS)

# -- URLs: every URL key of the schema
URL_FIELDS = {"sei.rpc_url": "https", "sei.ws_url": "wss", "cambrian.base_url": "https",
              "storage.redis.url": "redis", "storage.influxdb.url": "http",
              "monitoring.grafana_url": "https"}
for path, scheme in URL_FIELDS.items():
    pw = "pw" + token(12)
    wrong = "http" if scheme == "redis" else "ftp"
    for name, value, hidden in (
            ("no-host", f"{scheme}://", None),
            ("no-host-with-path", f"{scheme}:///rpc", None),
            ("spaces-as-host", f"{scheme}://   ", None),
            ("spaces-as-host-with-path", f"{scheme}://   /rpc", None),
            ("space-inside-host", f"{scheme}://sei rpc.example.com", None),
            ("wrong-scheme", f"{wrong}://host.example.com", None),
            ("no-scheme", "host.example.com:6379", None),
            ("password-in-userinfo", f"{scheme}://:{pw}@redis:6379/0", pw),
            ("user-and-password", f"{scheme}://flashmm:{pw}x@host.example.com/", pw + "x")):
        add("urls", f"{path}-{name}", config(path, value), path, ENV, hidden=hidden)
_pw = "pw" + token(12)
add("urls", "override-with-credentials", override("SEI_RPC_URL", f"https://u:{_pw}@rpc.example.com"),
    "sei.rpc_url", HOST, hidden=_pw)
add("urls", "webhook-not-https", secret("alert_webhook_url", "http://hooks.example.com/" + token()),
    "secrets.alert_webhook_url", VAULT)
add("urls", "webhook-no-host", secret("alert_webhook_url", "https://"), "secrets.alert_webhook_url",
    VAULT)

# -- secrets: every slot with every character the .env dialect or Ansible cannot carry
MARKS = {"quote": "'", "backslash": "\\", "newline": "\nsecond line", "dollar-brace": "${HOME}",
         "jinja-expr": "{{ lookup('env', 'HOME') }}", "jinja-stmt": "{% if x %}y{% endif %}",
         "jinja-comment": "{# note #}", "jinja-expr-unclosed": "{{ x", "jinja-stmt-unclosed": "{% if",
         "jinja-comment-unclosed": "{# note"}
FERNET = ("encryption_key", "old_encryption_key")


def secret_value(key: str, core: str) -> str:
    """A well-formed value for a secret slot, holding ``core``."""
    if key in FERNET:
        return Fernet.generate_key().decode()
    if key == "alert_webhook_url":
        return f"https://hooks.example.com/{core}"
    return core + token(12)


for spec in SECRET_FIELDS:
    for mark_name, mark in MARKS.items():
        core = "S" + token(18)
        value = secret_value(spec.key, core)
        hidden = value[:24] if spec.key in FERNET else core
        add("secrets", f"{spec.key}-{mark_name}", secret(spec.key, value + mark + token(6)),
            spec.path, VAULT, hidden=hidden)
for path in ("secrets.secret_key", "secrets.api_auth_token", "secrets.redis_password",
             "secrets.influxdb_admin_password"):
    short = "S" + token(6)
    add("secrets", f"{path.split('.')[1]}-too-short", secret(path.split(".")[1], short), path, VAULT,
        hidden=short)
for key in FERNET:
    core = "S" + token(30)
    add("secrets", f"{key}-not-a-fernet-key", secret(key, core), f"secrets.{key}", VAULT, hidden=core)
add("secrets", "secret_key-empty", secret("secret_key", ""), "secrets.secret_key", VAULT)
_core = "S" + token(18)
add("secrets", "override-quote", override("API_AUTH_TOKEN", _core + "'" + token(20)),
    "secrets.api_auth_token", HOST, hidden=_core)
_core = "S" + token(18)
add("secrets", "override-jinja", override("REDIS_PASSWORD", _core + "{{ x }}"),
    "secrets.redis_password", HOST, hidden=_core)
_core = "S" + token(6)
add("secrets", "override-too-short", override("SECRET_KEY", _core), "secrets.secret_key", HOST,
    hidden=_core)
_core = "S" + token(30)
add("secrets", "override-not-a-fernet-key", override("ENCRYPTION_KEY", _core),
    "secrets.encryption_key", HOST, hidden=_core)
_core = "S" + token(30)
add("secrets", "in-the-environment-layer", config("secrets.cambrian_secret_key", _core),
    "secrets.cambrian_secret_key", ENV, hidden=_core)
_core = "S" + token(30)
add("secrets", "in-the-host-layer", config("secrets.grafana_api_key", _core, "host"),
    "secrets.grafana_api_key", HOST, hidden=_core)

# -- role variables (the variable is named, and the file that sets it)
for name, variable, value, where in (
        ("secret-mode-0644", "flashmm_files_secret_mode", "0644", "group"),
        ("secret-mode-0640", "flashmm_files_secret_mode", "0640", "group"),
        ("secret-mode-an-int", "flashmm_files_secret_mode", 600, "group"),
        ("secret-mode-in-words", "flashmm_files_secret_mode", "rw-------", "group"),
        ("directory-mode-0777", "flashmm_files_directory_mode", "0777", "group"),
        ("directory-mode-0775", "flashmm_files_directory_mode", "0775", "group"),
        ("directory-mode-0600", "flashmm_files_directory_mode", "0600", "group"),
        ("config-mode-0666", "flashmm_files_config_mode", "0666", "group"),
        ("config-mode-0755", "flashmm_files_config_mode", "0755", "group"),
        ("runtime-mode-sometimes", "flashmm_runtime_mode", "sometimes", "group"),
        ("runtime-mode-empty", "flashmm_runtime_mode", "", "group"),
        ("typo-flashmm_runtime_moed", "flashmm_runtime_moed", "enforce", "group"),
        ("redis-databases-zero", "flashmm_redis_databases", 0, "group"),
        ("redis-databases-a-word", "flashmm_redis_databases", "sixteen", "group"),
        ("lock-timeout-negative", "flashmm_lock_timeout", -1, "group"),
        ("runtime-redis-port-70000", "flashmm_runtime_redis_port", 70000, "group"),
        ("runtime-timeout-zero", "flashmm_runtime_timeout", 0, "group"),
        ("compose-up-maybe", "flashmm_compose_up", "maybe", "group"),
        ("project-name-with-spaces", "flashmm_stack_project_name", "Bad Name!", "host"),
        ("api-bind-a-hostname", "flashmm_stack_api_bind", "localhost", "group"),
        ("owner-with-a-shell-command", "flashmm_files_owner", "root; rm -rf /", "group")):
    add("role", name, (group_var if where == "group" else host_var)(variable, value), variable, HOSTS)
add("role", "typo-flashmm_host_confg", rename_var(HOST, "flashmm_host_config", "flashmm_host_confg"),
    "flashmm_host_confg", HOST)
add("role", "typo-flashmm_confg", rename_var(ENV, "flashmm_config", "flashmm_confg"), "flashmm_confg",
    ENV)
add("role", "typo-flashmm_secret", rename_var(VAULT, "flashmm_secrets", "flashmm_secret"),
    "flashmm_secret", VAULT)
add("role", "typo-flashmm_env_override", var(HOST, "flashmm_env_override", {"FLASHMM_DEBUG": "true"}),
    "flashmm_env_override", HOST)
add("role", "typo-flashmm_group_confg", var(GROUP, "flashmm_group_confg",
                                            {"trading": {"risk_multiplier": 2.0}}),
    "flashmm_group_confg", GROUP)

# -- an inventory with no hosts (the message says so; hosts.yml itself is not broken)
NO_HOSTS = ("host",)
add("no-hosts", "empty-group", edit(HOSTS, lambda d: _flashmm_group(d).__setitem__("hosts", {})),
    NO_HOSTS, None)
add("no-hosts", "hosts-null", edit(HOSTS, lambda d: _flashmm_group(d).__setitem__("hosts", None)),
    NO_HOSTS, None)
add("no-hosts", "all-empty", write_text(HOSTS, "---\nall: {}\n"), NO_HOSTS, None)
add("no-hosts", "all-null", write_text(HOSTS, "---\nall:\n"), NO_HOSTS, None)
add("no-hosts", "only-ungrouped-empty", write_text(HOSTS, "---\nall:\n  children:\n    ungrouped: {}\n"),
    NO_HOSTS, None)
add("no-hosts", "no-hosts.yml", delete(HOSTS), (), HOSTS)

# -- storage.redis.db beyond flashmm_redis_databases.  The base inventory's count depends on
# the databases the session's redis-server handed out (sandbox.make_local_inventory), so each
# variant pins it to 16.
DB_KEYS = ("storage.redis.db", "flashmm_redis_databases")


def with_16_databases(change: Callable[[Path], None]) -> Callable[[Path], None]:
    return both(group_var("flashmm_redis_databases", 16), change)


add("redis-db", "db-16", with_16_databases(config("storage.redis.db", 16, "host")), DB_KEYS,
    HOST)
add("redis-db", "db-255", with_16_databases(config("storage.redis.db", 255, "host")), DB_KEYS,
    HOST)
add("redis-db", "override-db-99", with_16_databases(override("REDIS_DB", "99")), DB_KEYS, HOST)
add("redis-db", "databases-2", group_var("flashmm_redis_databases", 2), DB_KEYS, HOSTS)
add("redis-db", "runtime-db-16", with_16_databases(group_var("flashmm_runtime_redis_db", 16)),
    ("flashmm_runtime_redis_db",), HOSTS)


# ---- running things, bounded ---------------------------------------------------------------------

@dataclass
class Ran:
    returncode: int | None         # None: killed at the timeout
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def tracebacks(self) -> list[str]:
        return [m for m in TRACEBACK_MARKERS if m in self.output]


def run_bounded(cmd: list[str], *, env: dict[str, str], cwd: Path, timeout: float,
                memory: int | None = None) -> Ran:
    """Run ``cmd`` in its own session; at ``timeout`` kill the whole process group (Ansible
    forks workers).  ``memory`` caps the address space (RLIMIT_AS) of it and its children."""
    def limit() -> None:
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace", start_new_session=True, preexec_fn=limit)
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    return Ran(code, out, err, time.monotonic() - start)


def snapshot_tree(*roots: Path) -> dict[str, tuple[int, bytes]]:
    """path -> (mode, content) of every file and directory below each root."""
    out = {}
    for root in roots:
        if root.exists():
            for p in sorted(root.rglob("*")):
                st = p.lstat()
                body = p.read_bytes() if p.is_file() and not p.is_symlink() else b""
                out[str(p)] = (st.st_mode, body)
    return out


def snapshot_redis_all(host: str, port: int, password: str | None = None) -> dict[int, dict]:
    """db -> {key: (type, DUMP, ttl)} of every non-empty database of a redis-server."""
    out = {}
    admin = redis.Redis(host=host, port=port, password=password, socket_timeout=5)
    for name in admin.info("keyspace"):
        db = int(str(name).removeprefix("db"))
        client = redis.Redis(host=host, port=port, db=db, password=password, socket_timeout=5)
        out[db] = {key: (client.type(key), client.dump(key), client.ttl(key))
                   for key in client.scan_iter("*")}
        client.close()
    admin.close()
    return out


def describe_change(before: dict, after: dict) -> list[str]:
    """What differs between two snapshots: added, removed and changed entries, by name."""
    changed = [f"changed {k}" for k in before if k in after and before[k] != after[k]]
    return ([f"added {k}" for k in after if k not in before] +
            [f"removed {k}" for k in before if k not in after] + changed)

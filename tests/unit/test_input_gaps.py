"""Input gaps of issue 15 (item 5), at the level of the code that decides: a dotted YAML key is
refused (not read as a path), an invisible or control character in a value is refused by code
point, a secret refused by its layer is not also "required but not set", and a templated
``flashmm_root`` that breaks the rule whatever it renders to is refused with deploy's message."""

from __future__ import annotations

import secrets as random_tokens

import pytest
from cryptography.fernet import Fernet

from flashmm_deploy.core.errors import Origin
from flashmm_deploy.config.layers import LayerInput, resolve
from flashmm_deploy.config.role_settings import RULES, template_problem
from flashmm_deploy.config.validate import validate_layers

ENV_SRC = "inventories/t/group_vars/all/flashmm.yml"
VAULT_SRC = "inventories/t/group_vars/all/vault.yml"
HOST_SRC = "inventories/t/host_vars/mm-01.yml"
SEI = {"network": "testnet", "rpc_url": "https://sei-testnet-rpc.polkachu.com",
       "ws_url": "wss://sei-testnet-rpc.polkachu.com/websocket", "chain_id": "atlantic-2"}


def env_layer(config: dict) -> LayerInput:
    return LayerInput("environment", ENV_SRC, {"sei": dict(SEI), **config},
                      variable="flashmm_config")


def vault_layer(**secrets) -> LayerInput:
    """The secrets every environment needs, valid, with ``secrets`` changed."""
    values = {"secret_key": random_tokens.token_urlsafe(48),
              "api_auth_token": random_tokens.token_urlsafe(32),
              "encryption_key": Fernet.generate_key().decode()}
    values.update(secrets)
    return LayerInput("vault", VAULT_SRC, {"secrets": {k: v for k, v in values.items()
                                                       if v is not None}},
                      variable="flashmm_secrets")




def rendered(result) -> str:
    return "\n".join(issue.render() for issue in result.errors + result.warnings)


# ---- 1. a dotted key is not a path ----------------------------------------------------------------

def test_a_dotted_key_is_refused_naming_file_key_and_the_nesting():
    """It used to be read as the path: one file could set trading.quote_frequency_hz twice."""
    res = resolve([env_layer({"trading": {"quote_frequency_hz": 1.0},
                              "trading.quote_frequency_hz": 3.0})])
    assert [i.path for i in res.issues] == ["trading.quote_frequency_hz"]
    issue = res.issues[0]
    assert issue.origin == Origin("environment", ENV_SRC)
    assert "'trading.quote_frequency_hz' is a dotted key" in issue.message
    assert "nest it, trading: {quote_frequency_hz: ...}" in issue.message
    assert res.values["trading.quote_frequency_hz"] == 1.0        # the nested one, only


@pytest.mark.parametrize("data, path, hint", [
    ({"storage": {"redis.db": 2}}, "storage.redis.db", "redis: {db: ...}"),
    ({"storage.redis.tls.enabled": True}, "storage.redis.tls.enabled",
     "storage: {redis: {tls: {enabled: ...}}}"),
    ({"app.": {"debug": True}}, "app.", "app: ..."),
])
def test_dotted_keys_anywhere_in_a_yaml_layer(data, path, hint):
    res = resolve([LayerInput("host", HOST_SRC, data, variable="flashmm_host_config")])
    assert [i.path for i in res.issues] == [path]
    assert "is a dotted key" in res.issues[0].message and hint in res.issues[0].message


def test_a_dotted_key_in_the_vault_says_the_vault_is_flat():
    value = "S" + random_tokens.token_urlsafe(40)
    res = resolve([LayerInput("vault", VAULT_SRC, {"secrets": {"secrets.secret_key": value}},
                              variable="flashmm_secrets")])
    assert [i.path for i in res.issues] == ["secrets.secrets.secret_key"]
    assert "flashmm_secrets maps secret names" in res.issues[0].message
    assert value not in res.issues[0].render()


def test_the_runtime_layer_keeps_its_dotted_paths():
    res = resolve([LayerInput("runtime", "redis", {"trading.quote_frequency_hz": 2.0})])
    assert res.issues == [] and res.values["trading.quote_frequency_hz"] == 2.0


# ---- 2. invisible and control characters -----------------------------------------------------------

@pytest.mark.parametrize("char, shown", [
    ("\u200b", "U+200B (ZERO WIDTH SPACE)"), ("\ufeff", "U+FEFF (ZERO WIDTH NO-BREAK SPACE)"),
    ("\u202e", "U+202E (RIGHT-TO-LEFT OVERRIDE)"), ("\u00ad", "U+00AD (SOFT HYPHEN)"),
    ("\u2060", "U+2060 (WORD JOINER)"), ("\u2028", "U+2028 (LINE SEPARATOR)"),
    ("\t", "U+0009 (CHARACTER TABULATION)"), ("\x1b", "U+001B (ESCAPE)"), ("\x07", "U+0007"),
])
def test_an_invisible_character_in_a_value_is_refused_by_code_point(char, shown):
    result = validate_layers([env_layer({"api": {"host": "0.0.0.0" + char}}), vault_layer()])
    assert not result.ok
    assert [i.path for i in result.errors] == ["api.host"], rendered(result)
    assert f"holds {shown}, an invisible or control character" in result.errors[0].message


def test_visible_unicode_is_still_a_value():
    result = validate_layers([env_layer({"app": {"name": "Flash\u00e9 MM \u65e5\u672c \U0001f680"}}),
                              vault_layer()])
    assert result.ok, rendered(result)


@pytest.mark.parametrize("layer", ["vault", "env"])
def test_an_invisible_character_in_a_secret_names_the_code_point_never_the_value(layer):
    core = "S" + random_tokens.token_urlsafe(40)
    value = core + "\u200b"
    if layer == "vault":
        given = [vault_layer(secret_key=value)]
    else:
        given = [vault_layer(secret_key=None),
                 LayerInput("env", HOST_SRC, {"SECRET_KEY": value}, variable="flashmm_env_overrides")]
    result = validate_layers([env_layer({}), *given])
    text = rendered(result)
    assert "secrets.secret_key" in text and "U+200B (ZERO WIDTH SPACE)" in text
    assert "(value hidden)" in text
    assert core not in text and core[:12] not in text
    assert "is required but not set" not in text


def test_an_invisible_character_in_a_list_item():
    result = validate_layers([env_layer({"api": {"cors_origins": ["https://a.example\u200c"]}}),
                              vault_layer()])
    assert [i.path for i in result.errors] == ["api.cors_origins"]
    assert "U+200C (ZERO WIDTH NON-JOINER)" in result.errors[0].message


def test_an_unknown_key_holding_an_invisible_character_says_so():
    res = resolve([env_layer({"app": {"debug\u200b": True}})])
    assert len(res.issues) == 1 and res.issues[0].path == "app.debug\u200b"
    assert "unknown key (it holds U+200B (ZERO WIDTH SPACE)" in res.issues[0].message


# ---- 5. a refused value is not also "not set" --------------------------------------------------------

@pytest.mark.parametrize("mark", ["{{ x }}", "{% if %}", "{# c", "\u200b"])
def test_a_refused_secret_is_not_also_required_but_not_set(mark):
    core = "S" + random_tokens.token_urlsafe(40)
    result = validate_layers([env_layer({}), vault_layer(secret_key=core + mark)],
                             require_secrets=True)
    about = [i for i in result.errors if i.path == "secrets.secret_key"]
    assert len(about) == 1, rendered(result)
    assert "is required but not set" not in rendered(result) and core not in rendered(result)


def test_a_refused_required_key_is_not_also_required_but_not_set():
    result = validate_layers([LayerInput("environment", ENV_SRC, {"sei": {
        **SEI, "rpc_url": SEI["rpc_url"] + "\u200b"}}, variable="flashmm_config"), vault_layer()])
    assert [i.path for i in result.errors] == ["sei.rpc_url"], rendered(result)


def test_a_secret_missing_everywhere_is_still_required():
    result = validate_layers([env_layer({}), vault_layer(secret_key=None)], require_secrets=True)
    assert "secrets.secret_key: is required but not set" in rendered(result)


# ---- 3. a templated flashmm_root -------------------------------------------------------------------

KNOWN = {"inventory_hostname": "mm-01", "inventory_hostname_short": "mm-01"}


@pytest.mark.parametrize("template, rendering", [
    ("relsandbox/{{ inventory_hostname }}", "relsandbox/mm-01"),
    ("/tmp/flashmm/{{ inventory_hostname }}/..", "/tmp/flashmm/mm-01/.."),
    ("$HOME/{{ inventory_hostname }}", "$HOME/mm-01"),
    ("~/{{inventory_hostname_short}}", "~/mm-01"),
    ("/srv/./{{ inventory_hostname }}", "/srv/./mm-01"),
    ("{# note #}relative", "relative"),
])
def test_a_template_of_known_names_gets_deploys_own_message(template, rendering):
    assert template_problem("flashmm_root", template, KNOWN) == RULES["flashmm_root"](rendering)
    assert RULES["flashmm_root"](rendering) is not None


@pytest.mark.parametrize("template", [
    "{{ playbook_dir }}/../sandbox", "{{ lookup('env', 'HOME') }}/../{{ inventory_hostname }}",
    "relative/{{ base }}", " {{ base -}} /x", "{# note #}relative/{{ x }}", "/srv//{{ x }}",
])
def test_a_template_that_breaks_the_rule_whatever_it_renders_to(template):
    problem = template_problem("flashmm_root", template, KNOWN)
    assert problem is not None and repr(template) in problem
    assert problem.endswith("every value this template renders to breaks that rule")


@pytest.mark.parametrize("template", [
    "/srv/flashmm/{{ inventory_hostname }}", "{{ base }}/{{ inventory_hostname }}",
    "{{ lookup('env', 'FLASHMM_SANDBOX') }}/{{ inventory_hostname }}", "  {{- base }}/x",
    "{{ base -}}  /x", "/srv/{{ x }}", "{{ x }}", "{% if a %}relative{% endif %}",
    "/srv/{{ '}}' }}/..", "relative/{{ x", "/srv/{{ inventory_hostname }}/",
])
def test_a_template_only_its_rendering_can_judge_is_left_to_deploy(template):
    assert template_problem("flashmm_root", template, KNOWN) is None


def test_other_variables_are_not_judged_from_their_template():
    assert template_problem("flashmm_stack_project_name", "Bad Name {{ x }}", KNOWN) is None

"""The seed script as rendered on the controller: deterministic, inert to Jinja2, refusing what
cannot be seeded.  (Its behaviour against Redis: tests/integration/test_seed_apply.py.)"""

from __future__ import annotations

import json

import pytest

from flashmm_deploy.hostside.seed_script import (CONFIG_PREFIX, SEED_LUA_BODY, SEEDED_KEY,
                                        UPDATES_CHANNEL, VERSION_KEY, SeedInputError,
                                        lua_string, render_script, script_sha)
from support import ALERT, CONF, HZ, POS, SEED_DESIRED

D1 = SEED_DESIRED
NASTY = {
    POS: '{"q": "it\'s \\"quoted\\" \\\\ back\\\\slash ]] ]=] [[x]] --[[ c", "n": [1,\n2,\r\n\t3]}',
    HZ: json.dumps("é 漢字 🚀 \u2028 \x00 \x7f {{ x }} {% y %} {# z #}", ensure_ascii=False),
    CONF: '"\\u0000\\n"',
    ALERT: "  true\n",
}


def test_rendering_is_deterministic_and_sorted():
    a = render_script(D1)
    assert a.encode() == render_script(dict(reversed(list(D1.items())))).encode()
    assert render_script({**D1, HZ: "5.5"}) != a
    assert a.endswith(SEED_LUA_BODY.lstrip("\n"))
    assert a.index(f'{{"{CONF}", "0.7"}}') < a.index(f'{{"{POS}", "2000.0"}}')
    assert script_sha(a) == script_sha(render_script(D1)) and len(script_sha(a)) == 40


def test_rendered_script_is_inert_to_jinja2():
    script = render_script(NASTY)
    for marker in ("{{", "{%", "{#", "}}", "%}", "#}"):
        assert marker not in script


@pytest.mark.parametrize("bad", [
    {"other:key": "1"},                 # outside flashmm:config:
    {UPDATES_CHANNEL: "1"},             # the channel's name
    {POS: "not json"},
    {POS: 1.0},                         # values are JSON strings
    {1: "1"},
])
def test_what_cannot_be_seeded_is_refused(bad):
    with pytest.raises(SeedInputError):
        render_script(bad)


def test_bookkeeping_lives_outside_the_config_prefix():
    """The seed's app scans flashmm:config:* and reads every key there as a value."""
    for key in (SEEDED_KEY, VERSION_KEY):
        assert not key.startswith(CONFIG_PREFIX)
    assert "'flashmm:meta:seeded'" in SEED_LUA_BODY and "'flashmm:meta:version'" in SEED_LUA_BODY


def test_lua_string_is_ascii_on_one_line():
    literal = lua_string("".join(chr(c) for c in range(256)) + "漢🚀")
    assert literal.isascii() and "\n" not in literal and "\r" not in literal
    assert literal.startswith('"') and literal.endswith('"')


def test_rules_are_rendered_and_the_script_stays_inert_to_jinja2():
    script = render_script(D1, {HZ: {"kind": "number", "gt": 0, "le": 10.0},
                                ALERT: {"kind": "boolean"}})
    assert f'[{lua_string(HZ)}] = {{ kind = "number", gt = 0, le = 10.0 }},' in script
    for marker in ("{{", "{%", "{#", "}}"):
        assert marker not in script
    with pytest.raises(SeedInputError):
        render_script(D1, {HZ: {"kind": "number", "le": "10"}})


def test_the_schema_gives_every_runtime_key_its_rule():
    from flashmm_deploy.render.render import seed_lua
    from flashmm_deploy.config.schema import FIELDS
    from flashmm_deploy.config.effective import effective
    from flashmm_deploy.config.validate import validate_layers
    from flashmm_deploy.config.layers import LayerInput
    from support import valid_secrets
    result = validate_layers([LayerInput("environment", "e", {"sei": {
        "network": "testnet", "rpc_url": "https://r.example", "ws_url": "wss://r.example",
        "chain_id": "atlantic-2"}}), LayerInput("vault", "v", {"secrets": valid_secrets()})])
    assert result.ok, [i.render() for i in result.errors]
    script = seed_lua(effective(result.config))
    assert '= { kind = "number", gt = 0, le = 10 },' in script          # quote_frequency_hz
    assert f'[{lua_string(FIELDS["monitoring.alert_enabled"].redis_key)}] = {{ kind = "boolean" }}' \
        in script

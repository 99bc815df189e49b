"""The preflight checks' reading of answers (the HTTP itself: tests/integration/test_preflight.py):
what counts as a balance, which hosts share a request, and that no message holds a secret."""

from __future__ import annotations

import json

import pytest

from flashmm_deploy.plan import preflight
from flashmm_deploy.plan.preflight import Answer, Target

API, SECRET = "CANARY-api-key", "CANARY-secret-key"


def target(**kw) -> Target:
    base = dict(rpc_url="http://rpc", chain_id="atlantic-2", cambrian_url="http://c/test",
                balance_url="http://c/balance", balance_field="data.usdc", max_position=100.0,
                timeout=1.0, api_key=API, secret_key=SECRET)
    return Target(**{**base, **kw})


def world(balance_body: bytes, asked: list | None = None):
    def get(url, headers, timeout):
        if asked is not None:
            asked.append(url)
        if url.endswith("/status"):
            return Answer(200, json.dumps({"result": {"node_info": {"network": "atlantic-2"}}})
                          .encode())
        if url.endswith("/balance"):
            return Answer(200, balance_body)
        return Answer(200, b"{}")
    return get


@pytest.mark.parametrize("body, problem", [
    (b'{"data": {"usdc": 99.5}}', "trading.max_position_usdc 100 is above the account "
                                  "balance 99.5 (from http://c/balance)"),
    (b'{"data": {"usdc": true}}', "'data.usdc' is not a number"),
    (b'{"data": {"usdc": "1e9"}}', "'data.usdc' is not a number"),
    (b'{"data": {"usdc": NaN}}', "'data.usdc' is not a number"),
    (b'{"data": 5}', "no 'data.usdc' in the answer"),
    (b'<html>', "an answer that is not JSON"),
    (b' ' * (preflight.MAX_BODY + 1), "an answer over"),
])
def test_a_balance_is_a_finite_number_not_below_the_position(body, problem):
    failed = preflight.run({"h": target()}, get=world(body))
    assert len(failed) == 1 and failed[0].startswith("balance: h: ") and problem in failed[0]


def test_an_equal_balance_passes():
    assert preflight.run({"h": target()}, get=world(b'{"data": {"usdc": 100}}')) == []


def test_hosts_share_a_request_only_when_everything_that_decides_it_is_equal():
    asked: list[str] = []
    targets = {"a": target(), "b": target(), "c": target(max_position=50.0),
               "d": target(api_key="other")}
    assert preflight.run(targets, get=world(b'{"data": {"usdc": 100}}', asked)) == []
    assert sorted(asked).count("http://rpc/health") == 1
    assert sorted(asked).count("http://c/test") == 2            # two sets of credentials
    assert sorted(asked).count("http://c/balance") == 3         # a, c (position), d (key)


def test_missing_credentials_are_named_and_no_message_holds_a_secret():
    failed = preflight.run({"h": target(secret_key=None)}, get=world(b"{}"))
    assert failed == ["balance: h: no Cambrian credentials to ask the balance with",
                      "cambrian-credentials: h: cambrian_secret_key not set in the vault: "
                      "nothing to test"]
    assert API not in repr(target()) and SECRET not in repr(target())

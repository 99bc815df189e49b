"""Preflight, the seed's "Runtime Validation": before a deploy touches any host, ask the outside
world whether each host's configuration can work.

Checks, per host (each failure is one line naming the check and the hosts):

* ``sei-rpc``        ``GET <sei.rpc_url>/health`` answers 200;
* ``sei-chain-id``   ``GET <sei.rpc_url>/status`` (CometBFT) serves ``result.node_info.network``
                     equal to ``sei.chain_id``;
* ``cambrian-credentials``  the Cambrian test-connection endpoint accepts the host's API key and
                     secret (sent as ``X-API-Key`` / ``X-API-Secret``; 200 accepted, 401/403
                     refused);
* ``balance``        the balance endpoint (same credentials) returns a JSON number at
                     ``flashmm_preflight_balance_field`` (a dotted path), and
                     ``trading.max_position_usdc`` is not above it.

Hosts that share an endpoint and credentials share one request (a fleet of 50 hosts on one RPC
asks it once), and requests run in parallel with a timeout.  Redirects are not followed (a
redirect would carry the credentials elsewhere), and no message holds a response body, a
header or a secret: only the check, the URL, the HTTP status or the connection error.

Controller only (standard library HTTP): called by the plan task, never on a target.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import socket
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

CHECKS = ("sei-rpc", "sei-chain-id", "cambrian-credentials", "balance")
MAX_BODY = 1 << 20          # a status or balance answer is small; more is an error
MAX_PARALLEL = 16


@dataclass(frozen=True)
class Target:
    """What one host's checks need (from its validated configuration and role variables)."""

    rpc_url: str
    chain_id: str
    cambrian_url: str
    balance_url: str
    balance_field: str
    max_position: float
    timeout: float
    api_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)

    def credentials(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key or "", "X-API-Secret": self.secret_key or ""}


def target(config: Any, settings: Mapping[str, Any]) -> Target:
    """A host's Target from its validated ``FlashMMConfig`` and role variables; the Cambrian
    URLs default to ``cambrian.base_url`` + ``/v1/test-connection`` and
    ``/v1/account/balance``."""
    base = str(config.cambrian.base_url).rstrip("/")
    secrets = config.secrets

    def reveal(value: Any) -> str | None:
        return value.get_secret_value() if value is not None else None
    return Target(
        rpc_url=str(config.sei.rpc_url).rstrip("/"), chain_id=config.sei.chain_id,
        cambrian_url=settings["flashmm_preflight_cambrian_url"] or base + "/v1/test-connection",
        balance_url=settings["flashmm_preflight_balance_url"] or base + "/v1/account/balance",
        balance_field=settings["flashmm_preflight_balance_field"],
        max_position=float(config.trading.max_position_usdc),
        timeout=float(settings["flashmm_preflight_timeout"]),
        api_key=reveal(secrets.cambrian_api_key), secret_key=reveal(secrets.cambrian_secret_key))


# ---- HTTP ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    status: int | None          # None: no HTTP answer (``error`` says why)
    body: bytes = b""
    error: str = ""


@functools.cache
def _opener():
    """urllib's opener without redirects (a 3xx is returned as it is).  Built on first use:
    urllib.request (ssl, http.client, email) costs the plan task's every run otherwise."""
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None
    return urllib.request.build_opener(NoRedirect)


def http_get(url: str, headers: Mapping[str, str], timeout: float) -> Answer:
    """One GET; never raises for what the far end does."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers=dict(headers, Accept="application/json"))
    try:
        with _opener().open(request, timeout=timeout) as resp:
            return Answer(resp.status, resp.read(MAX_BODY + 1))
    except urllib.error.HTTPError as exc:
        return Answer(exc.code)
    except urllib.error.URLError as exc:
        reason = exc.reason
        return Answer(None, error=getattr(reason, "strerror", None) or str(reason))
    except (TimeoutError, socket.timeout):
        return Answer(None, error=f"no answer within {timeout:g} s")
    except (OSError, ValueError) as exc:        # a reset, a bad status line, a URL urllib refuses
        return Answer(None, error=exc.__class__.__name__)


# ---- the checks ---------------------------------------------------------------------------

def _json(answer: Answer) -> Any:
    if len(answer.body) > MAX_BODY:
        raise ValueError(f"an answer over {MAX_BODY} bytes")
    try:
        return json.loads(answer.body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("an answer that is not JSON") from None


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, Mapping) or part not in data:
            raise ValueError(f"no {path!r} in the answer")
        data = data[part]
    return data


def _http_problem(url: str, answer: Answer, expected: str = "200") -> str:
    if answer.status is None:
        return f"GET {url}: {answer.error}"
    return f"GET {url} answered HTTP {answer.status} (expected {expected})"


def _sei_rpc(t: Target, get: Callable[..., Answer]) -> str | None:
    url = t.rpc_url + "/health"
    answer = get(url, {}, t.timeout)
    return None if answer.status == 200 else _http_problem(url, answer)


def _sei_chain_id(t: Target, get: Callable[..., Answer]) -> str | None:
    url = t.rpc_url + "/status"
    answer = get(url, {}, t.timeout)
    if answer.status != 200:
        return _http_problem(url, answer)
    try:
        network = _dig(_json(answer), "result.node_info.network")
    except ValueError as exc:
        return f"GET {url}: {exc} (expected result.node_info.network)"
    if network != t.chain_id:
        shown = network if isinstance(network, str) and len(network) <= 64 else "another chain"
        return f"the RPC at {t.rpc_url} serves chain {shown!r}, sei.chain_id is {t.chain_id!r}"
    return None


def _cambrian(t: Target, get: Callable[..., Answer]) -> str | None:
    missing = [n for n, v in (("cambrian_api_key", t.api_key),
                              ("cambrian_secret_key", t.secret_key)) if not v]
    if missing:
        return f"{' and '.join(missing)} not set in the vault: nothing to test"
    answer = get(t.cambrian_url, t.credentials(), t.timeout)
    if answer.status in (401, 403):
        return (f"GET {t.cambrian_url} refused the Cambrian credentials (HTTP {answer.status}): "
                "check cambrian_api_key and cambrian_secret_key in the vault")
    return None if answer.status == 200 else _http_problem(t.cambrian_url, answer)


def _balance(t: Target, get: Callable[..., Answer]) -> str | None:
    if not (t.api_key and t.secret_key):
        return "no Cambrian credentials to ask the balance with"
    answer = get(t.balance_url, t.credentials(), t.timeout)
    if answer.status != 200:
        return _http_problem(t.balance_url, answer)
    try:
        balance = _dig(_json(answer), t.balance_field)
    except ValueError as exc:
        return f"GET {t.balance_url}: {exc}"
    if isinstance(balance, bool) or not isinstance(balance, (int, float)) \
            or not math.isfinite(balance):
        return f"GET {t.balance_url}: {t.balance_field!r} is not a number"
    if t.max_position > balance:
        return (f"trading.max_position_usdc {t.max_position:g} is above the account balance "
                f"{balance:g} (from {t.balance_url})")
    return None


_RUN: dict[str, Callable[[Target, Callable[..., Answer]], str | None]] = {
    "sei-rpc": _sei_rpc, "sei-chain-id": _sei_chain_id,
    "cambrian-credentials": _cambrian, "balance": _balance}


def _request_key(check: str, t: Target) -> tuple:
    """What decides a check's answer: hosts with the same key share one request."""
    creds = hashlib.sha256(json.dumps([t.api_key, t.secret_key]).encode()).hexdigest()
    return {"sei-rpc": (check, t.rpc_url, t.timeout),
            "sei-chain-id": (check, t.rpc_url, t.chain_id, t.timeout),
            "cambrian-credentials": (check, t.cambrian_url, creds, t.timeout),
            "balance": (check, t.balance_url, t.balance_field, creds, t.max_position,
                        t.timeout)}[check]


def run(targets: Mapping[str, Target], get: Callable[..., Answer] = http_get) -> list[str]:
    """Every failure as one line ``<check>: <hosts>: <what>``, sorted; [] when all pass."""
    jobs: dict[tuple, tuple[str, Target]] = {}
    hosts_of: dict[tuple, list[str]] = {}
    for host in sorted(targets):
        for check in CHECKS:
            key = _request_key(check, targets[host])
            jobs.setdefault(key, (check, targets[host]))
            hosts_of.setdefault(key, []).append(host)
    with ThreadPoolExecutor(min(MAX_PARALLEL, max(1, len(jobs)))) as pool:
        outcomes = dict(zip(jobs, pool.map(lambda job: _RUN[job[0]](job[1], get),
                                           jobs.values())))
    return sorted(f"{key[0]}: {', '.join(hosts_of[key])}: {problem}"
                  for key, problem in outcomes.items() if problem)

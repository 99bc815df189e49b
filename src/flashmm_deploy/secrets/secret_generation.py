"""Secret generations: which state of an environment's secrets a vault holds, and a host runs.

Every change of the secrets in a vault (a rotation's begin and finish, a restore that brings a
backup's secrets back, ``secrets generate`` renewing or adding a value) bumps the vault's
``flashmm_secrets_generation``: a number, the change that made it (``id``) and when.  Each host
records the generation of the last run that wrote its secrets (``.flashmm/generation.json``,
see ``filesync``).  A run whose vault is older than a host's generation was made from a stale
checkout (its vault predates a rotation another operator ran): it is refused before it writes,
since it would put old passwords back and lock every newer run out.

The number is ``max(previous + 1, now in seconds)``: monotonic within a vault's history even
when a clock steps back, and a vault started over (``secrets init --replace``, which cannot read
the old one) still comes after the generations hosts ran before.

Light on purpose (stdlib only): the action plugins import it in Ansible's workers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping
from typing import Any

VARIABLE = "flashmm_secrets_generation"


def current(vault_vars: Mapping[str, Any] | None) -> dict[str, Any]:
    """The generation a vault's variables hold (number 0 for a vault from before generations)."""
    raw = (vault_vars or {}).get(VARIABLE)
    if not isinstance(raw, Mapping):
        return {"number": 0, "id": "none", "at": ""}
    number = raw.get("number")
    return {"number": number if isinstance(number, int) and not isinstance(number, bool) else 0,
            "id": str(raw.get("id", "")), "at": str(raw.get("at", ""))}


def bump(doc: MutableMapping[str, Any], change: str, *, now: float | None = None) -> dict:
    """Record in the vault document ``doc`` (its top-level mapping) that its secrets changed by
    ``change`` (e.g. ``"rotation 2026-12-03.1 redis: begin"``); returns the new generation."""
    previous = current(doc)["number"]
    moment = time.time() if now is None else now
    new = {"number": max(previous + 1, int(moment)), "id": change,
           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))}
    doc[VARIABLE] = new
    return new


def rotations_in_progress(book: Any) -> list[str]:
    """``"<kind> (rotation <id>)"`` of each rotation the vault's ``flashmm_rotations`` says is
    still rolling."""
    if not isinstance(book, Mapping):
        return []
    return [f"{kind} (rotation {entry.get('id')})" for kind, entry in sorted(book.items())
            if isinstance(entry, Mapping) and entry.get("state") == "rolling"]


def describe(generation: Mapping[str, Any]) -> str:
    number = generation.get("number", 0)
    if not number:
        return "no recorded generation"
    return f"generation {number} ({generation.get('id') or '?'}, {generation.get('at') or '?'})"

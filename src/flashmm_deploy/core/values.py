"""Plain Python values of what Ansible hands plugins.  Light on purpose (standard library
only): the per-host action plugins import it in every forked worker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# What makes a string a Jinja2 template for Ansible: an expression, a statement or a comment.
TEMPLATE_MARKS = ("{{", "{%", "{#")
# ... and every delimiter, closing ones included (what no rendered text may still hold).
TEMPLATE_DELIMITERS = TEMPLATE_MARKS + ("}}", "%}", "#}")


def template_marks(text: str) -> list[str]:
    """The Jinja2 opening delimiters ``text`` holds, in ``TEMPLATE_MARKS`` order."""
    return [m for m in TEMPLATE_MARKS if m in text]


def is_template(value: Any) -> bool:
    """Whether Ansible would template ``value``: a string holding a Jinja2 opening delimiter,
    or a mapping, list or tuple holding one anywhere."""
    if isinstance(value, str):
        return any(m in value for m in TEMPLATE_MARKS)
    if isinstance(value, Mapping):
        return any(is_template(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(is_template(v) for v in value)
    return False


def plain(value: Any) -> Any:
    """Deep copy into plain Python types.  Ansible 2.19 hands plugins tagged subclasses of str,
    dict, int...; pydantic strict mode and json.dumps must see the plain types."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def native(value: Any) -> Any:
    """Like ``plain``, for variables read raw from Ansible: an inline-vaulted value becomes its
    plaintext (decrypted, never templated)."""
    if type(value).__name__ == "EncryptedString":
        return str(value)
    if isinstance(value, Mapping):
        return {native(k): native(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [native(v) for v in value]
    return plain(value)


# A FlashMM inventory holds a few hundred values: far more is a mistake or a YAML alias bomb,
# whose shared references expand exponentially when walked.  Refused before anything walks it.
MAX_VALUES = 100_000


class TooLarge(ValueError):
    """A structure that expands to more than MAX_VALUES values, or nests too deeply."""


def check_size(value: Any, limit: int = MAX_VALUES) -> int:
    """The number of values ``value`` expands to (shared references counted once per use, as
    a walk would meet them), computed in time linear in its distinct nodes; raises TooLarge
    past ``limit`` or past a nesting depth of 100."""
    memo: dict[int, int] = {}

    def size(v: Any, depth: int) -> int:
        if not isinstance(v, (Mapping, list, tuple)):
            return 1
        if depth > 100:
            raise TooLarge("nests more than 100 levels deep")
        if id(v) in memo:
            return memo[id(v)]
        items = list(v.items()) if isinstance(v, Mapping) else [(None, x) for x in v]
        n = 1
        for key, x in items:
            n += size(x, depth + 1) + (key is not None)
            if n > limit:
                raise TooLarge(f"expands to more than {limit} values (a YAML alias bomb?)")
        memo[id(v)] = n
        return n

    return size(value, 0)

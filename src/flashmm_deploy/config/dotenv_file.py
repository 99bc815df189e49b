r"""The ``.env`` file deploy writes next to ``docker-compose.yml``: render, mask, parse.

Dialect: a fixed header comment, then one ``KEY='value'`` line per variable, keys sorted, a
trailing newline; nothing else.  Identical input gives byte-identical output.

Two readers must get exactly the value we meant: python-dotenv (``dotenv_values``, current
PyPI release, what pydantic-settings uses) and Docker Compose v2's ``env_file`` (compose-go,
the ``docker compose`` plugin).  Findings, checked by ``tests/unit/test_envfile.py`` and
``tests/integration/test_envfile_compose.py`` (``docker compose config --format json``):

- Single quotes are needed: in double quotes both unescape ``\n``, ``\"`` etc., and compose
  expands ``$VAR``; unquoted values lose `` #...`` and edge spaces.
- Inside single quotes ``$``, ``#``, ``"``, ``%``, spaces, ``=``, ``!``, backtick, ``&;|<>``,
  tabs and any printable unicode (accents, CJK, emoji, U+2028) read back literally in both.
  A lone ``$`` followed by a name (``$HOME``), ``$$`` and a trailing ``$`` are literal too:
  python-dotenv only expands ``${NAME}`` / ``${NAME:-default}``, compose nothing inside single
  quotes.  (``docker compose config`` *prints* every ``$`` as ``$$`` because its output is a
  compose file; the container gets the single ``$``.)
- Refused, because a reader would read something else (see ``REFUSED``):
  ``'`` ends the value early: python-dotenv drops the line, compose rejects the whole file.
  ``\`` : both turn ``\'`` into ``'``; python-dotenv turns ``\\`` into ``\`` where compose
  keeps both; a trailing ``\`` makes python-dotenv drop the line and compose reject the file.
  ``${`` : python-dotenv expands ``${X}`` even inside single quotes; compose does not.
  CR: python-dotenv reads the file in universal-newline mode (CR becomes LF), compose keeps
  it.  NUL cannot be in a process environment.  LF survives both readers but is refused: it
  breaks every line-based tool (``parse``, ``mask``, diffs).
  Other control characters (C0 except tab, DEL, C1): escape sequences would reach the
  operator's terminal through ``--diff``; no real secret holds one.
  A lone surrogate cannot be written as UTF-8 at all.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from flashmm_deploy.core.errors import FlashmmError
from flashmm_deploy.hostside.filesync import mask_env

HEADER = ("# Written by flashmm-deploy; changes are overwritten on the next deploy.\n"
          "# Values are single-quoted and read literally by python-dotenv and docker compose.\n")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)='([^']*)'")
# What is refused, in the order it is reported; each entry: (test, description).  Descriptions
# spell characters out in words so that an error message never holds a fragment of a value.
REFUSED: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile("'"), "a single quote (it would end the quoted value)"),
    (re.compile(r"\\"), "a backslash (the readers unescape it differently)"),
    (re.compile(r"\$\{"), "a dollar sign followed by an opening brace "
                          "(python-dotenv would expand it as a variable)"),
    (re.compile("\n"), "a newline"),
    (re.compile("\r"), "a carriage return (python-dotenv reads it as a newline)"),
    (re.compile("\x00"), "a NUL byte"),
    (re.compile("[\x01-\x08\x0b-\x1f\x7f-\x9f]"), "a control character"),
    (re.compile("[\ud800-\udfff]"), "a lone surrogate (not encodable as UTF-8)"),
)


def refusal(value: str) -> str | None:
    """Why ``value`` cannot be written to ``.env`` (words only, never the value), or None."""
    for pattern, why in REFUSED:
        if pattern.search(value):
            return why
    return None


def _check(name: object, value: object, secret_names: Collection[str]) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise FlashmmError(f".env: invalid variable name {name!r}: expected letters, digits and "
                           "underscores, not starting with a digit")
    if not isinstance(value, str):
        raise FlashmmError(f".env: {name} must be a string, got {type(value).__name__}")
    why = refusal(value)
    if why is not None:
        hint = ("value hidden; regenerate it from a URL-safe alphabet" if name in secret_names
                else "change the value")
        raise FlashmmError(f".env: {name} contains {why}, which python-dotenv and docker "
                           f"compose would not both read back unchanged ({hint})")


def render(env: Mapping[str, str], secret_names: Collection[str] = ()) -> str:
    """The ``.env`` text for ``env``; raises FlashmmError naming the first offending variable
    (in key order) and the kind of character, never a secret's value."""
    lines = [HEADER]
    for name in sorted(env, key=str):
        _check(name, env[name], secret_names)
        lines.append(f"{name}='{env[name]}'\n")
    return "".join(lines)


def parse(text: str) -> dict[str, str]:
    """Read back what ``render`` writes (comment and blank lines skipped); anything else is a
    FlashmmError giving the line number, never the line (it may hold a secret)."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), 1):
        if line == "" or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise FlashmmError(f".env line {number} is not of the form KEY='value' "
                               "(was it edited by hand?)")
        name, value = match.groups()
        _check(name, value, ())
        out[name] = value
    return out


def mask(text: str, secret_names: Collection[str]) -> str:
    """``text`` with the value of every variable in ``secret_names`` replaced by
    ``'<redacted>'``.  Also safe on a hand-edited file: ``export``, spaces around ``=``, a
    commented-out assignment and a quoted value spanning several lines are redacted whole.
    (The one implementation is ``filesync.mask_env``, which also runs on target hosts.)"""
    return mask_env(text, secret_names)

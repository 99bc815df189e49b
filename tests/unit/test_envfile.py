"""Properties of the ``.env`` renderer over a corpus of nasty values and seeded random strings:
every value either reads back identically with python-dotenv (as pydantic-settings reads it) or
is refused with an error naming the variable and never holding a secret's value.

``CORPUS``, ``random_values`` and ``refused_by_design`` are reused by
``tests/integration/test_envfile_compose.py``, which checks the same values against docker
compose's ``env_file``."""

from __future__ import annotations

import io
import random

import pytest
from dotenv import dotenv_values

from flashmm_deploy.config import dotenv_file
from flashmm_deploy.core.errors import FlashmmError

# Characters and sequences a secret or a URL may hold, and ones the dialects disagree on.
SPECIALS = [
    "$", "#", '"', "%", " ", "=", "!", "`", "&", ";", "|", "<", ">", "*", "?", "~", "^", "(",
    ")", "[", "]", "{", "}", "@", ":", "/", "+", ",", ".", "-", "_", "\t",
    "é", "ü", "中文", "😀", "\u00a0", "\u2028", "\ufeff",
    "$HOME", "$$", "$1", "$(id)", "$ {X}", "{$}", "$}", "# ",
    "'", "\\", "\n", "\r", "\x00", "\x1b", "\x85", "${X}", "${", "${HOME}", "${X:-d}",
]
CORPUS = sorted(
    {v for s in SPECIALS for v in (s, s + "tail", "head" + s + "tail", "head" + s)} | {
        "", " ", "  leading and trailing  ", "a #not-a-comment", "# looks like a comment",
        "a=b", "= =", "==", "'quoted'", '"double"', '"', "''", "export X=1", "KEY='v'",
        "p@ss w0rd!$%^&*()", "$$$$", "a$", "$a$b$c", "100%", "C:\\path", "\\'", "\\\\", "x\\",
        "multi\nline", "crlf\r\n", "tab\there", "ünïcödé ✓ 日本語 🚀🔥",
        "postgres://user:p#ss@host:5432/db?x=1&y=2", "https://hooks.example/T0/B1?token=a=b",
        "gAAAAABh-UrlSafe_Base64==", "`rm -rf /`; echo $HOME | cat > /dev/null &",
        "x" * 4096, ("ab$#\" " * 700)[:4096], "é" * 2048,
    })
ALPHABET = ("abcXYZ019" * 4 + " \t$#\"'\\=!`&;|<>%{}()@:/.,-_~^*?+[]"
            + "éü中😀\u00a0\u2028\ufeff" + "\n\r\x00\x1b\x85")


def random_values(count: int = 300) -> list[str]:
    rng = random.Random(1234)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 41)))
            for _ in range(count)]


RANDOM = random_values()

MUST_ROUND_TRIP = ["$", "#", '"', "%", " spaced out ", "=", "!", "`", "&", ";", "|", "<>",
                   "café", "中文", "😀", "$HOME", "$$", "a$", "a #b", "= ="]
MUST_BE_REFUSED = ["'", "\\", "\n", "\r", "\x00", "${X}", "${"]


def refused_by_design(value: str) -> bool:
    """Independent statement of the rule (see the envfile docstring for why each is refused)."""
    return ("'" in value or "\\" in value or "${" in value
            or any(ord(c) < 32 and c != "\t" or 0x7F <= ord(c) <= 0x9F for c in value)
            or any(0xD800 <= ord(c) <= 0xDFFF for c in value))


SECRET_MESSAGE = (".env: {name} contains {why}, which python-dotenv and docker compose would not "
                  "both read back unchanged (value hidden; regenerate it from a URL-safe alphabet)")


def dotenv_read(text: str) -> dict[str, str | None]:
    return dict(dotenv_values(stream=io.StringIO(text)))


ALL = [pytest.param(v, id=f"corpus{i}") for i, v in enumerate(CORPUS)] + [
    pytest.param(v, id=f"random{i}") for i, v in enumerate(RANDOM)]


def test_corpus_is_nasty_enough():
    assert len(CORPUS) >= 60 and len(RANDOM) == 300
    accepted = [v for v in CORPUS + RANDOM if not refused_by_design(v)]
    assert 100 < len(accepted) < len(CORPUS) + len(RANDOM)


@pytest.mark.parametrize("secret", [True, False], ids=["secret", "plain"])
@pytest.mark.parametrize("value", ALL)
def test_value_reads_back_identically_or_is_refused_naming_the_variable(value, secret):
    name = "SOME_SECRET" if secret else "SOME_SETTING"
    try:
        text = dotenv_file.render({name: value}, {name} if secret else ())
    except FlashmmError as exc:
        message = str(exc)
        assert refused_by_design(value)
        assert name in message
        assert value not in message
        if secret:      # nothing derived from the value: a fixed text per kind of character
            reasons = {why for _, why in dotenv_file.REFUSED}
            assert message in {SECRET_MESSAGE.format(name=name, why=why) for why in reasons}
        return
    assert not refused_by_design(value)
    assert dotenv_read(text) == {name: value}
    assert dotenv_file.parse(text) == {name: value}


@pytest.mark.parametrize("value", MUST_ROUND_TRIP)
def test_characters_a_secret_may_hold_are_accepted(value):
    text = dotenv_file.render({"V": value})
    assert text.endswith(f"\nV='{value}'\n")
    assert dotenv_read(text) == {"V": value}


@pytest.mark.parametrize("value", MUST_BE_REFUSED, ids=["quote", "backslash", "lf", "cr", "nul",
                                                        "dollar-brace", "open-dollar-brace"])
def test_characters_the_readers_disagree_on_are_refused(value):
    with pytest.raises(FlashmmError, match="API_KEY contains"):
        dotenv_file.render({"OK": "fine", "API_KEY": "abc" + value + "xyz"}, {"API_KEY"})


def test_whole_corpus_in_one_file_reads_back_with_dotenv_from_stream_and_path(tmp_path):
    env = {f"V{i:03d}": v for i, v in enumerate(CORPUS + RANDOM) if not refused_by_design(v)}
    text = dotenv_file.render(env, secret_names=list(env)[::2])
    assert dotenv_read(text) == env
    path = tmp_path / ".env"
    path.write_text(text, encoding="utf-8")
    assert dict(dotenv_values(path, encoding="utf-8")) == env   # how pydantic-settings reads it
    assert dotenv_file.parse(path.read_text(encoding="utf-8")) == env


def test_rendering_is_byte_identical_whatever_the_insertion_order():
    env = {f"K{i}": v for i, v in enumerate(CORPUS) if not refused_by_design(v)}
    backwards = dict(reversed(list(env.items())))
    shuffled = list(env.items())
    random.Random(7).shuffle(shuffled)
    texts = {dotenv_file.render(d, {"K3"}).encode() for d in (env, backwards, dict(shuffled))}
    assert len(texts) == 1
    text = texts.pop().decode()
    assert text.startswith("#") and text.endswith("\n") and "\r" not in text
    names = [line.split("=", 1)[0] for line in text.split("\n")[:-1]
             if not line.startswith("#")]
    assert names == sorted(env)


def test_empty_environment_renders_only_the_header():
    text = dotenv_file.render({})
    assert text == dotenv_file.HEADER and text.endswith("\n")
    assert dotenv_file.parse(text) == {} and dotenv_read(text) == {}


@pytest.mark.parametrize("name", ["1ABC", "A-B", "A B", "", "A=B", "É", "A.B", "#A", " A"])
def test_invalid_variable_names_are_refused(name):
    with pytest.raises(FlashmmError, match="invalid variable name"):
        dotenv_file.render({name: "value"})


def test_names_that_are_dotenv_keywords_still_round_trip():
    env = {"export": "x", "_": "y", "a1": "z"}
    assert dotenv_read(dotenv_file.render(env)) == env


def test_first_offending_variable_is_named_and_no_secret_reaches_the_message():
    secret = "hunter2-very-secret-'value"
    with pytest.raises(FlashmmError) as info:
        dotenv_file.render({"A_OK": "fine", "DB_PASSWORD": secret, "Z_BAD": "x\\y"}, {"DB_PASSWORD"})
    assert "DB_PASSWORD" in str(info.value) and "single quote" in str(info.value)
    assert "hunter2" not in str(info.value) and "secret-" not in str(info.value)


def test_mask_hides_every_secret_value_and_keeps_the_rest():
    env = {f"V{i:03d}": v for i, v in enumerate(CORPUS + RANDOM) if not refused_by_design(v)}
    secrets = set(list(env)[::3])
    text = dotenv_file.render(env, secrets)
    masked = dotenv_file.mask(text, secrets)
    assert dotenv_file.parse(masked) == {k: "<redacted>" if k in secrets else v
                                     for k, v in env.items()}
    assert len(masked.split("\n")) == len(text.split("\n"))
    plain = "".join(env[k] for k in env if k not in secrets)
    for name in secrets:
        if len(env[name]) >= 4 and env[name] not in plain and env[name] not in dotenv_file.HEADER:
            assert env[name] not in masked


def test_mask_also_hides_secrets_in_a_hand_edited_file():
    text = ("# TOKEN=commented-out-token\n"
            "export TOKEN = 'exported-token'\n"
            'PASSWORD="multi\nline-\\"password\nend"\n'
            "PLAIN=keep-me\n"
            "KEY=unquoted-key # comment\n")
    masked = dotenv_file.mask(text, {"TOKEN", "PASSWORD", "KEY"})
    for leaked in ("commented-out-token", "exported-token", "multi", "line-", "password", "end",
                   "unquoted-key"):
        assert leaked not in masked
    assert "PLAIN=keep-me" in masked
    assert masked.count("'<redacted>'") == 4


def test_parse_reads_back_random_environments():
    rng = random.Random(99)
    usable = [v for v in CORPUS + RANDOM if not refused_by_design(v)]
    for _ in range(50):
        env = {f"N{rng.randrange(1000)}": rng.choice(usable) for _ in range(rng.randrange(0, 12))}
        text = dotenv_file.render(env)
        assert dotenv_file.parse(text) == env == dotenv_read(text)


@pytest.mark.parametrize("text", ["A=unquoted-secret-value\n", "A='unterminated-secret-value\n",
                                  "A='x' # trailing-secret-comment\n", "export A='export-secret'\n",
                                  "A=\"double-quoted-secret\"\n", "A='has ${HOME} inside'\n"])
def test_parse_refuses_anything_outside_the_dialect_without_echoing_it(text):
    with pytest.raises(FlashmmError) as info:
        dotenv_file.parse("# header\n" + text)
    assert "secret" not in str(info.value) and "HOME" not in str(info.value)
    assert "line 2" in str(info.value) or "A contains" in str(info.value)

"""The rendered ``.env`` read by Docker Compose v2's ``env_file`` (the Go binary users run, as the
``docker compose`` plugin; ``config`` needs no engine) gives every service exactly the values we
rendered, for the whole nasty corpus at once, as python-dotenv reads them; and the values
``render`` refuses really are read differently (or not at all) when written naively."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values

from flashmm_deploy.config import dotenv_file
from flashmm_deploy.core.errors import FlashmmError
from unit.test_envfile import CORPUS, RANDOM

pytestmark = pytest.mark.integration


def compose_environments(project: Path, env_files: dict[str, str]) -> dict[str, dict[str, str]]:
    """Write one service per env file (``app`` for ``.env``), run ``docker compose config``
    once, and return each service's environment as the container would receive it."""
    if shutil.which("docker") is None:
        pytest.fail("the docker CLI is not installed: run scripts/setup.sh")
    services = {}
    for service, filename in env_files.items():
        services[service] = {"image": "busybox", "env_file": filename}
    (project / "docker-compose.yml").write_text(
        yaml.safe_dump({"name": "envfile-check", "services": services}, sort_keys=True))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COMPOSE_", "DOCKER_", "FLASHMM_"))}
    env["FLASHMM_DEMO"] = "expanded"
    proc = subprocess.run(["docker", "compose", "-f", str(project / "docker-compose.yml"),
                           "config", "--format", "json"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    config = json.loads(proc.stdout)
    out = {}
    for service in env_files:
        environment = config["services"][service].get("environment") or {}
        assert all(isinstance(v, str) for v in environment.values())
        # `config` prints a compose file, where `$$` means a literal `$`: every `$` of the
        # value the container gets is printed doubled, so undo exactly that.
        out[service] = {k: v.replace("$$", "$") for k, v in environment.items()}
    out["_stderr"] = proc.stderr
    return out


def test_compose_env_file_reads_every_accepted_corpus_value_exactly(tmp_path):
    env = {}
    for i, value in enumerate(CORPUS + RANDOM):
        try:
            dotenv_file.render({"V": value})
        except FlashmmError:
            continue
        env[f"V{i:03d}"] = value
    assert len(env) > 250
    (tmp_path / ".env").write_text(dotenv_file.render(env, secret_names=list(env)[::2]),
                                   encoding="utf-8")
    result = compose_environments(tmp_path, {"app": ".env"})
    assert "could not parse" not in result["_stderr"]
    got = result["app"]
    mismatched = {k: (v, got.get(k)) for k, v in env.items() if got.get(k) != v}
    assert mismatched == {}
    assert got == env


# Refused values written naively (``KEY='value'``, what render would write if it did not
# refuse): what python-dotenv (read from the file, as pydantic-settings does) and Compose v2
# then read.  None: the reader dropped the line; REFUSED: compose rejects the whole file.
REFUSED = "<compose refuses the file>"
NAIVE = {
    # value: (python-dotenv reads, docker compose v2 reads)
    "a'b": (None, REFUSED),               # the quote ends the value
    "a\\'b": ("a'b", "a'b"),             # both unescape the quote
    "a\\\\b": ("a\\b", "a\\\\b"),    # python-dotenv unescapes, compose keeps both
    "ab\\": (None, REFUSED),             # a trailing backslash
    "x${FLASHMM_DEMO}y": ("xexpandedy", "x${FLASHMM_DEMO}y"),   # dotenv expands, compose not
    "x${FLASHMM_UNSET}y": ("xy", "x${FLASHMM_UNSET}y"),
    "a\rb": ("a\nb", "a\rb"),           # python-dotenv reads the file in universal-newline mode
}


NEWLINE = "first\nsecond"


def compose_reads(project: Path, value: str):
    """What compose v2 gives a container from ``NAIVE='value'``, each value in a project of its
    own (a file compose cannot parse fails the whole project)."""
    project.mkdir()
    (project / "naive.env").write_bytes(f"NAIVE='{value}'\n".encode())
    try:
        return compose_environments(project, {"svc": "naive.env"})["svc"].get("NAIVE")
    except AssertionError as exc:
        if "failed to read" in str(exc) or "unterminated" in str(exc):
            return REFUSED
        raise


@pytest.fixture(scope="module")
def naive_reads(tmp_path_factory):
    """value -> (python-dotenv reads, docker compose v2 reads), for every NAIVE value and
    NEWLINE each written naively to its own env file."""
    base = tmp_path_factory.mktemp("naive")
    out = {}
    for i, value in enumerate([*NAIVE, NEWLINE]):
        with pytest.MonkeyPatch.context() as mp:     # the environment compose_environments gives
            mp.setenv("FLASHMM_DEMO", "expanded")
            mp.delenv("FLASHMM_UNSET", raising=False)
            path = base / f"naive{i}.env"
            path.write_bytes(f"NAIVE='{value}'\n".encode())
            by_dotenv = dotenv_values(path, encoding="utf-8").get("NAIVE")
        out[value] = (by_dotenv, compose_reads(base / f"p{i}", value))
    return out


@pytest.mark.parametrize("value", list(NAIVE), ids=["quote", "escaped-quote", "double-backslash",
                                                   "trailing-backslash", "dollar-brace-set",
                                                   "dollar-brace-unset", "carriage-return"])
def test_refused_value_is_misread_when_written_naively(value, naive_reads):
    with pytest.raises(FlashmmError, match="NAIVE contains"):
        dotenv_file.render({"NAIVE": value})
    assert naive_reads[value] == NAIVE[value]
    assert naive_reads[value] != (value, value)      # at least one reader misreads it


def test_newline_is_refused_by_policy_though_both_readers_here_would_keep_it(naive_reads):
    """LF inside single quotes survives python-dotenv and compose v2 alike; render refuses it
    anyway: parse, mask and diffs are line based, so a value spanning lines could hide a
    secret from the masking or split a diff."""
    with pytest.raises(FlashmmError, match="NAIVE contains a newline"):
        dotenv_file.render({"NAIVE": NEWLINE})
    assert naive_reads[NEWLINE] == (NEWLINE, NEWLINE)

"""The rendered ``.env`` read by docker-compose 1.29's ``env_file`` (the real ``docker-compose``
binary, ``config`` needs no Docker engine) gives every service exactly the values we rendered,
for the whole nasty corpus at once; and the values ``render`` refuses really are read
differently (or not at all) when written naively."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values

from flashmm_deploy import dotenv_file
from flashmm_deploy.errors import FlashmmError
from unit.test_envfile import CORPUS, RANDOM

pytestmark = pytest.mark.integration


def compose_environments(project: Path, env_files: dict[str, str]) -> dict[str, dict[str, str]]:
    """Write one service per env file (``app`` for ``.env``), run ``docker-compose config``
    once, and return each service's environment as the container would receive it."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: run scripts/setup.sh")
    services = {}
    for service, filename in env_files.items():
        services[service] = {"image": "busybox", "env_file": filename}
    (project / "docker-compose.yml").write_text(
        yaml.safe_dump({"version": "3.8", "services": services}, sort_keys=True))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COMPOSE_", "DOCKER_", "FLASHMM_"))}
    env["FLASHMM_DEMO"] = "expanded"
    proc = subprocess.run([binary, "-f", str(project / "docker-compose.yml"), "config"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    out = {}
    for service in env_files:
        environment = config["services"][service].get("environment") or {}
        assert all(isinstance(v, str) for v in environment.values())
        # `config` prints a compose file, where `$$` means a literal `$`: its serializer
        # (compose/config/serialize.py, escape_dollar) replaces every `$` of every string by
        # `$$`.  The container gets the string before that escaping, so undo exactly it.
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
# refuse): what python-dotenv (read from the file, as pydantic-settings does) and docker-compose
# 1.29 then read.  None means the reader dropped the line as unparsable.
NAIVE = {
    # value: (python-dotenv reads, docker-compose reads)
    "a'b": (None, None),                  # the quote ends the value; the line is dropped
    "a\\'b": ("a'b", "a'b"),              # backslash-quote is unescaped by both
    "a\\\\b": ("a\\b", "a\\b"),           # double backslash becomes one in both
    "ab\\": (None, "ab\\"),               # trailing backslash: current python-dotenv drops
                                          # the line, 0.21 (compose) keeps the backslash
    "x${FLASHMM_DEMO}y": ("xexpandedy", "xexpandedy"),   # expanded inside single quotes
    "x${FLASHMM_UNSET}y": ("xy", "xy"),   # an unset variable expands to nothing
    "a\rb": ("a\nb", "a\nb"),             # both read the file in universal-newline mode
}


NEWLINE = "first\nsecond"


@pytest.fixture(scope="module")
def naive_reads(tmp_path_factory):
    """value -> (python-dotenv reads, docker-compose reads), for every NAIVE value and NEWLINE
    each written naively to its own env file; one ``docker-compose config`` run for all."""
    project = tmp_path_factory.mktemp("naive")
    values = [*NAIVE, NEWLINE]
    files = {}
    for i, value in enumerate(values):
        (project / f"naive{i}.env").write_bytes(f"NAIVE='{value}'\n".encode())
        files[f"svc{i}"] = f"naive{i}.env"
    with pytest.MonkeyPatch.context() as mp:      # the environment compose_environments gives compose
        mp.setenv("FLASHMM_DEMO", "expanded")
        mp.delenv("FLASHMM_UNSET", raising=False)
        by_dotenv = [dotenv_values(project / files[f"svc{i}"], encoding="utf-8").get("NAIVE")
                     for i in range(len(values))]
    composed = compose_environments(project, files)
    return {value: (by_dotenv[i], composed[f"svc{i}"].get("NAIVE"))
            for i, value in enumerate(values)}


@pytest.mark.parametrize("value", list(NAIVE), ids=["quote", "escaped-quote", "double-backslash",
                                                   "trailing-backslash", "dollar-brace-set",
                                                   "dollar-brace-unset", "carriage-return"])
def test_refused_value_is_misread_when_written_naively(value, naive_reads):
    with pytest.raises(FlashmmError, match="NAIVE contains"):
        dotenv_file.render({"NAIVE": value})
    assert naive_reads[value] == NAIVE[value]
    assert naive_reads[value] != (value, value)      # at least one reader misreads it


def test_newline_is_refused_by_policy_though_both_readers_here_would_keep_it(naive_reads):
    """LF inside single quotes survives python-dotenv and compose 1.29 alike; render refuses it
    anyway because parse, mask and diffs are line based (and DESIGN says so)."""
    with pytest.raises(FlashmmError, match="NAIVE contains a newline"):
        dotenv_file.render({"NAIVE": NEWLINE})
    assert naive_reads[NEWLINE] == (NEWLINE, NEWLINE)

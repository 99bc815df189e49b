"""A real Docker engine for the tests (fixture registered by tests/integration/conftest.py):
``scripts/engine.sh start`` (the engine that answers, or a private dockerd) and
``scripts/build-images.sh`` (the local images, built from Debian packages: no registry is
reachable).  No engine is a failure, never a skip: CI has one."""

from __future__ import annotations

import os
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ports import free_port  # noqa: F401  (the name tests import from here)
from support import logged_run

ROOT = Path(__file__).resolve().parent.parent
ENGINE_SH = ROOT / "scripts" / "engine.sh"
BUILD_IMAGES_SH = ROOT / "scripts" / "build-images.sh"
REDIS_IMAGE = "localhost/flashmm-redis:dev"
STANDIN_IMAGE = "localhost/flashmm-standin:dev"
SOURCE_LABEL = "io.flashmm.source-sha256"


def engine_env(host: str) -> dict[str, str]:
    """os.environ with DOCKER_HOST set; a DOCKER_CONTEXT or COMPOSE_* variable of the caller's
    shell would point the CLI elsewhere or change the projects the tests write."""
    env = {k: v for k, v in os.environ.items()
           if k != "DOCKER_CONTEXT" and not k.startswith("COMPOSE_")}
    env["DOCKER_HOST"] = host
    return env


@dataclass
class DockerEngine:
    """The engine the tests use.  ``env`` is the environment for any docker command."""

    host: str                                   # the DOCKER_HOST value, e.g. unix:///run/...
    env: dict[str, str] = field(repr=False)
    redis_image: str = REDIS_IMAGE
    standin_image: str = STANDIN_IMAGE

    def run(self, *cmd: str | os.PathLike, check: bool = True, timeout: float = 120,
            cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
        """Run ``cmd`` with :attr:`env` (text output captured); with ``check``, a non-zero exit
        fails the test with the command's stderr."""
        argv = [str(c) for c in cmd]
        try:
            with logged_run(argv):
                proc = subprocess.run(argv, env=self.env, cwd=cwd, capture_output=True,
                                      text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{' '.join(argv)}` did not finish within {timeout} s")
        if check and proc.returncode != 0:
            pytest.fail(f"`{' '.join(argv)}` exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
        return proc

    def docker(self, *args: str | os.PathLike, **kwargs) -> subprocess.CompletedProcess:
        """``docker ARGS...``, e.g. ``engine.docker("run", "--rm", engine.redis_image, ...)``."""
        return self.run("docker", *args, **kwargs)

    def compose(self, compose_file: str | os.PathLike, *args: str | os.PathLike,
                **kwargs) -> subprocess.CompletedProcess:
        """``docker compose -f FILE ARGS...`` (Compose v2), run in the file's directory."""
        kwargs.setdefault("cwd", Path(compose_file).parent)
        return self.run("docker", "compose", "-f", compose_file, *args, **kwargs)

    def image_id(self, image: str) -> str:
        return self.docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()

    def image_label(self, image: str, label: str = SOURCE_LABEL) -> str:
        return self.docker("image", "inspect", "--format",
                           f'{{{{index .Config.Labels "{label}"}}}}', image).stdout.strip()


def start_engine() -> str:
    """``scripts/engine.sh start``; returns the DOCKER_HOST value, or fails the test."""
    try:
        proc = subprocess.run([str(ENGINE_SH), "start"], capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("scripts/engine.sh start did not finish within 120 s")
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or len(lines) != 1 or not lines[0].startswith("DOCKER_HOST="):
        pytest.fail(f"no Docker engine could be started (scripts/engine.sh start exited "
                    f"{proc.returncode}; run scripts/setup.sh first):\n{proc.stderr}{proc.stdout}")
    return lines[0].removeprefix("DOCKER_HOST=")


def build_images(env: dict[str, str]) -> None:
    """``scripts/build-images.sh`` (seconds when nothing changed, ~1 min for a new rootfs)."""
    try:
        proc = subprocess.run([str(BUILD_IMAGES_SH)], env=env, capture_output=True, text=True,
                              timeout=1200, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("scripts/build-images.sh did not finish within 1200 s")
    if proc.returncode != 0:
        pytest.fail(f"scripts/build-images.sh exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
    for line in proc.stderr.splitlines():
        if "WARNING:" in line:
            warnings.warn(line, stacklevel=1)


@pytest.fixture(scope="session")
def docker_engine() -> DockerEngine:
    """A Docker engine that answers, with the project's local images built and up to date."""
    host = start_engine()
    env = engine_env(host)
    build_images(env)
    return DockerEngine(host=host, env=env)

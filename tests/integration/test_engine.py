"""The real container stack the project relies on: a Docker engine (scripts/engine.sh), Docker
Compose v2 (installed by scripts/setup.sh), and the local images built from Debian packages
(scripts/build-images.sh), driven the way the deployment drives them."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import tempfile
import time

import pytest
import redis
import yaml

from engine_support import (BUILD_IMAGES_SH, ENGINE_SH, REDIS_IMAGE, STANDIN_IMAGE, DockerEngine,
                            free_port)

pytestmark = pytest.mark.integration

COMPOSE_VERSION = "2.40.3"


def run_script(script, env, *args, timeout=300):
    return subprocess.run([str(script), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_engine_start_is_idempotent_and_prints_docker_host(docker_engine: DockerEngine):
    for _ in range(2):
        proc = run_script(ENGINE_SH, docker_engine.env, "start", timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == [f"DOCKER_HOST={docker_engine.host}"]
    status = run_script(ENGINE_SH, docker_engine.env, "status", timeout=60)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines() == [f"DOCKER_HOST={docker_engine.host}"]


def test_engine_start_concurrently_without_docker_host(docker_engine: DockerEngine):
    """Two shells with no DOCKER_HOST starting at once find the same engine (the lock)."""
    env = {k: v for k, v in docker_engine.env.items() if k != "DOCKER_HOST"}
    procs = [subprocess.Popen([str(ENGINE_SH), "start"], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        lines = out.splitlines()
        assert len(lines) == 1 and re.fullmatch(r"DOCKER_HOST=(unix|tcp)://\S+", lines[0]), out
    assert outputs[0][0] == outputs[1][0]


def test_a_private_engine_whose_data_root_is_gone_is_replaced(docker_engine: DockerEngine,
                                                              tmp_path):
    """A checkout deleted while its engine ran leaves a daemon that answers but can neither
    build nor import an image: start stops it and starts a new one (a daemon of its own here:
    its own socket and data, the suite's engine is not touched)."""
    env = {k: v for k, v in docker_engine.env.items() if k != "DOCKER_HOST"}
    # containerd's sockets live below the run directory: a short path (unix sockets take
    # ~104 bytes; a pytest-xdist tmp_path is too long)
    run_dir = tempfile.mkdtemp(prefix="fe-", dir="/tmp")
    env.update(FLASHMM_ENGINE_RUN=run_dir, FLASHMM_ENGINE_DATA=str(tmp_path / "data"))
    try:
        first = run_script(ENGINE_SH, env, "start", timeout=120)
        assert first.returncode == 0, first.stderr
        subprocess.run(["rm", "-rf", str(tmp_path / "data" / "image")], check=True)
        again = run_script(ENGINE_SH, env, "start", timeout=180)
        assert again.returncode == 0, again.stderr
        assert f"keeps its data in {tmp_path / 'data'}, which is gone: stopping it" in again.stderr
        assert "starting a private dockerd" in again.stderr
        assert again.stdout == first.stdout
        assert (tmp_path / "data" / "image").is_dir()
    finally:
        run_script(ENGINE_SH, env, "stop", timeout=120)
        subprocess.run(["sh", "-c", f"grep -o ' {tmp_path}/[^ ]*' /proc/mounts | "
                        "xargs -r -n1 umount -l"], check=False)
        shutil.rmtree(run_dir, ignore_errors=True)


def test_compose_v2_is_the_pinned_release(docker_engine: DockerEngine):
    assert docker_engine.docker("compose", "version", "--short").stdout.strip() == COMPOSE_VERSION


def test_images_exist_with_their_recipe_and_source_label(docker_engine: DockerEngine):
    redis_cfg = yaml.safe_load(docker_engine.docker(
        "image", "inspect", "--format", "{{json .Config}}", REDIS_IMAGE).stdout)
    standin_cfg = yaml.safe_load(docker_engine.docker(
        "image", "inspect", "--format", "{{json .Config}}", STANDIN_IMAGE).stdout)
    assert redis_cfg["Cmd"] == ["redis-server"]
    assert standin_cfg["Cmd"] == ["python3", "-m", "flashmm_deploy.standin"]
    assert "PYTHONPATH=/opt/flashmm/lib" in standin_cfg["Env"]
    assert standin_cfg["WorkingDir"] == "/app"
    labels = [docker_engine.image_label(image) for image in (REDIS_IMAGE, STANDIN_IMAGE)]
    for label in labels:
        assert re.fullmatch(r"[0-9a-f]{64}", label), labels
    assert labels[0] != labels[1]


def test_second_build_changes_no_image(docker_engine: DockerEngine):
    before = {image: docker_engine.image_id(image) for image in (REDIS_IMAGE, STANDIN_IMAGE)}
    started = time.monotonic()
    proc = run_script(BUILD_IMAGES_SH, docker_engine.env, timeout=600)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert {image: docker_engine.image_id(image) for image in before} == before
    for image in before:
        assert f"{image} is up to date" in proc.stderr
    assert elapsed < 30, f"an up-to-date build took {elapsed:.1f} s"


def test_standin_image_has_python_with_yaml_and_cryptography(docker_engine: DockerEngine):
    proc = docker_engine.docker(
        "run", "--rm", "--network", "none", STANDIN_IMAGE,
        "python3", "-c", "import yaml, cryptography, flashmm_deploy; print(flashmm_deploy.__file__)")
    assert proc.stdout.strip() == "/opt/flashmm/lib/flashmm_deploy/__init__.py"


def test_compose_project_with_password_protected_redis(docker_engine: DockerEngine, tmp_path):
    password = secrets.token_hex(16)
    port = free_port()
    project = f"flashmm-engine-test-{secrets.token_hex(4)}"
    compose_file = tmp_path / "compose.yaml"
    compose_file.write_text(yaml.safe_dump({
        "name": project,
        "services": {
            "redis": {
                "image": REDIS_IMAGE,
                "command": ["redis-server", "--requirepass", password,
                            "--save", "", "--appendonly", "no"],
                "environment": {"REDISCLI_AUTH": password},
                "healthcheck": {
                    "test": ["CMD-SHELL", "redis-cli ping | grep -qx PONG"],
                    "interval": "1s", "timeout": "3s", "retries": 30, "start_period": "1s",
                },
                "ports": [f"127.0.0.1:{port}:6379"],
            },
        },
    }, sort_keys=False))
    try:
        docker_engine.compose(compose_file, "up", "-d", "--wait", "--wait-timeout", "60",
                              timeout=120)
        ps = docker_engine.compose(compose_file, "ps", "--format", "json").stdout
        assert [json.loads(line)["Health"] for line in ps.splitlines()] == ["healthy"], ps
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port, socket_timeout=5).ping()
        with redis.Redis(host="127.0.0.1", port=port, password=password,
                         socket_timeout=5) as client:
            assert client.ping() is True
    finally:
        docker_engine.compose(compose_file, "down", "-v", "--timeout", "5", timeout=120)
    left = docker_engine.docker("ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
                                "--format", "{{.ID}}").stdout
    assert left.strip() == ""

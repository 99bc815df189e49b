"""The stack step's check, without an engine: what the controller hands the host-side check
(the planned compose file with every env file optional, each service's env files, sha256 of
the planned files and no secret content), and the pieces of the host side that need no docker
(timestamps, the summary).  The comparison with real containers: tests/integration/
test_stack_check.py."""

from __future__ import annotations

import hashlib
import json

import pytest

from flashmm_deploy.hostside import compose_state
from flashmm_deploy.plan import stack_check
from support import build_plan
from test_plan_result import CONFIG, VAULT

SECRET = "s3cr3t-Value-that-must-not-leave"


def host_plan(**stack):
    return {"root": "/opt/flashmm", "stack": dict({"project_name": "flashmm-h1",
                                                  "wait_timeout": 90}, **stack)}


COMPOSE = """\
name: flashmm-h1
services:
  flashmm:
    image: app:1
    env_file:
      - .env
  redis:
    image: redis:7
  influxdb:
    image: influxdb:2
    env_file: influxdb/influxdb.env
"""


def test_preview_args_make_env_files_optional_and_carry_only_hashes_of_secrets():
    files = {"docker-compose.yml": COMPOSE, ".env": f"SECRET_KEY='{SECRET}'\n",
             "redis/users.acl": f"user default on #{'0' * 64}\n"}
    args = stack_check.preview_args(host_plan(), files)
    compose = json.loads(args["compose"])
    assert compose["services"]["flashmm"]["env_file"] == [{"path": ".env", "required": False}]
    assert compose["services"]["influxdb"]["env_file"] == [
        {"path": "influxdb/influxdb.env", "required": False}]
    assert "env_file" not in compose["services"]["redis"]
    assert args["env_files"] == {"flashmm": [".env"], "redis": [],
                                 "influxdb": ["influxdb/influxdb.env"]}
    assert args["planned_sha256"][".env"] == hashlib.sha256(files[".env"].encode()).hexdigest()
    assert SECRET not in json.dumps(args)
    assert (args["root"], args["project_name"], args["timeout"]) == \
        ("/opt/flashmm", "flashmm-h1", 90)
    assert args["restart_redis_on_acl_change"] is False


def test_preview_args_name_the_file_when_the_compose_file_is_missing_or_misshapen():
    with pytest.raises(stack_check.StackCheckError, match="no docker-compose.yml"):
        stack_check.preview_args(host_plan(), {".env": ""})
    with pytest.raises(stack_check.StackCheckError, match="services.app.env_file"):
        stack_check.preview_args(host_plan(), {
            "docker-compose.yml": "services:\n  app:\n    env_file: [3]\n"})


def test_the_hatch_costs_a_module_call_only_when_it_is_on():
    assert stack_check.hatch_args(host_plan()) is None
    args = stack_check.hatch_args(host_plan(redis_restart_on_acl_change=True))
    assert args["task"] == "restart_stale_redis" and args["redis_service"] == "redis"


def test_the_plan_carries_the_hatch_and_its_compose_file_no_acl_label():
    for hatch in (False, True):
        plan = build_plan({"h1": {"flashmm_config": CONFIG, "flashmm_secrets": VAULT,
                                  "flashmm_root": "/srv/h1", "flashmm_compose_up": True,
                                  "flashmm_stack_redis_restart_on_acl_change": hatch}})
        host = plan.fact()["hosts"]["h1"]
        assert host["stack"]["redis_restart_on_acl_change"] is hatch
        compose = next(f["content"] for f in host["files"]
                       if f["path"] == "docker-compose.yml")
        # the hatch changes no service definition: a plain deploy after it recreates nothing
        assert "io.flashmm.acl-sha256" not in compose
        assert "io.flashmm.config-sha256" in compose


def test_docker_timestamps_in_nanoseconds():
    assert compose_state._timestamp_ns("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert compose_state._timestamp_ns("2026-12-03T13:43:21.856436574Z") % 10**9 == 856436574
    assert compose_state._timestamp_ns("1970-01-01T01:00:00+01:00") == 0
    assert compose_state._timestamp_ns("0001-01-01T00:00:00Z") < 0      # never started
    assert compose_state._timestamp_ns("") == 0


def test_summary_names_each_container_and_is_changed_only_when_one_changes():
    actions = {"flashmm": {"container": "p-flashmm-1", "action": "recreate",
                           "reasons": ["its env file .env changes"]},
               "redis": {"container": "p-redis-1", "action": "none", "reasons": []}}
    result = compose_state.summarize("p", actions, check=True)
    assert result["changed"] is True
    assert result["msg"] == "would recreate p-flashmm-1 (flashmm): its env file .env changes"
    assert result["diff"]["prepared"] == result["msg"] + "\n"
    quiet = compose_state.summarize("p", {"redis": actions["redis"]}, check=True)
    assert quiet["changed"] is False and "diff" not in quiet
    assert quiet["msg"] == "project p: no container would change"

"""compose_up: Ansible's notion of a change (and compose's errors) from the ``--progress json``
event lines of ``docker compose up`` (lines as Compose 2.40 writes them)."""

from __future__ import annotations

import json

from flashmm_deploy.hostside import compose_up
from flashmm_deploy.plan import stack_check

NOOP = """\
{"id":"Container p-redis-1","status":"Running"}
{"id":"Container p-flashmm-1","status":"Running"}
{"id":"Container p-redis-1","status":"Waiting"}
{"id":"Container p-flashmm-1","status":"Waiting"}
{"id":"Container p-redis-1","status":"Healthy"}
{"id":"Container p-flashmm-1","status":"Healthy"}
"""
RECREATE = """\
{"id":"Container p-redis-1","status":"Running"}
{"id":"Container p-flashmm-1","status":"Recreate"}
{"id":"Container p-flashmm-1","status":"Recreated"}
{"id":"Container p-flashmm-1","status":"Starting"}
{"id":"Container p-flashmm-1","status":"Started"}
{"id":"Container p-flashmm-1","status":"Healthy"}
"""
PULL_FAILED = """\
{"id":"x","text":"Pulling"}
{"id":"x","text":"Error","status":"Get \\"http://localhost/v2/\\": connection refused"}
{"error":true,"message":"Error response from daemon: Get \\"http://localhost/v2/\\": connection refused"}
"""


def test_a_stack_that_is_up_changes_nothing():
    assert compose_up.actions(compose_up.events(NOOP)) == []


def test_a_recreated_container_is_a_change_named_once_per_working_state():
    assert compose_up.actions(compose_up.events(RECREATE)) == [
        {"what": "container", "id": "p-flashmm-1", "status": "Recreate"},
        {"what": "container", "id": "p-flashmm-1", "status": "Starting"}]


def test_networks_volumes_and_pulls_count_as_changes():
    lines = "\n".join(json.dumps(e) for e in (
        {"id": "Network p_default", "status": "Creating"},
        {"id": "Volume p_data", "status": "Removing"},
        {"id": "redis", "text": "Pulling", "status": "7.0: Pulling from library/redis"}))
    assert [(a["what"], a["id"], a["status"]) for a in
            compose_up.actions(compose_up.events(lines))] == [
        ("network", "p_default", "Creating"), ("volume", "p_data", "Removing"),
        ("service", "redis", "Pulling")]


def test_errors_are_compose_messages_and_other_lines_only_without_them():
    found = compose_up.events(PULL_FAILED)
    assert compose_up.errors(found) == [
        'x: Get "http://localhost/v2/": connection refused',
        'Error response from daemon: Get "http://localhost/v2/": connection refused']
    plain = compose_up.events("unknown flag: --progress\nSee 'docker compose --help'.\n{bad json\n")
    assert compose_up.errors(plain) == ["unknown flag: --progress",
                                        "See 'docker compose --help'.", "{bad json"]
    assert compose_up.actions(plain) == []


def test_odd_json_lines_are_no_state_and_no_crash():
    odd = compose_up.events('{"id": 5, "text": ["Pulling"], "status": {"a": 1}}\n[1, 2]\n"s"\n'
                            '{"id": "Container p-x-1", "status": "Recreate"}\n')
    assert compose_up.actions(odd) == [{"what": "container", "id": "p-x-1", "status": "Recreate"}]
    assert compose_up.errors(odd) == ["[1, 2]", '"s"']


def test_the_real_run_is_one_module_call_with_the_one_off_recreations_when_on():
    host = {"root": "/srv/flashmm", "stack": {
        "project_name": "p", "wait_timeout": 90, "redis_restart_on_acl_change": False,
        "app_secret_files": []}}
    assert stack_check.up_args(host) == {"task": "up", "root": "/srv/flashmm",
                                         "project_name": "p", "timeout": 90}
    host["stack"].update(redis_restart_on_acl_change=True, app_secret_files=["secrets/a"])
    args = stack_check.up_args(host)
    assert args["task"] == "up" and args["timeout"] == 90
    assert args["restart_redis_on_acl_change"] is True
    assert args["app_secret_files"] == ["secrets/a"]


def test_a_failure_says_what_compose_said_and_names_the_version_only_when_it_is_the_cause():
    dead = compose_up.events('{"error":true,"message":"unable to get image \'r:1\': Cannot '
                             'connect to the Docker daemon at unix:///x.sock."}\n')
    message = compose_up.failure(dead, 1)
    assert message == "unable to get image 'r:1': Cannot connect to the Docker daemon at unix:///x.sock."
    old = compose_up.events('unsupported --progress value "json"\n')
    assert compose_up.failure(old, 1) == ('unsupported --progress value "json"; this step needs '
                                          'Docker Compose 2.29 or later (docker compose version)')
    assert compose_up.failure([], 3) == "exit status 3"

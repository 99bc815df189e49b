"""The reading side of compose secrets: ``flashmm_config`` (the client library the app
imports) and the stand-in read ``<VAR>_FILE`` for every variable of the schema; its content, one
trailing newline stripped, is the value.  Both ``<VAR>`` and ``<VAR>_FILE``, or a file that
cannot be read, is an error naming the variable and the path, never the content."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from flashmm_config import ConfigError, ConfigManager
from flashmm_config.layers import load_fields, read_secret_files
from flashmm_deploy.standin.app import StandIn
from flashmm_deploy.standin.event_log import EventLog

FIELDS = load_fields()
SECRET = "file-secret-Value-0123456789abcdef"
REQUIRED = {"CAMBRIAN_API_KEY": "", "CAMBRIAN_SECRET_KEY": "", "SEI_RPC_URL": "https://rpc.x",
            "SEI_WS_URL": "wss://rpc.x/websocket", "SEI_CHAIN_ID": "atlantic-2"}


def secret_file(tmp_path: Path, name: str, content: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    path.chmod(0o600)
    return str(path)


def test_a_file_gives_the_value_one_trailing_newline_stripped(tmp_path):
    env, problems = read_secret_files(FIELDS, {
        "SECRET_KEY_FILE": secret_file(tmp_path, "a", SECRET + "\n"),
        "API_AUTH_TOKEN_FILE": secret_file(tmp_path, "b", SECRET + "\n\n"),
        "REDIS_URL_FILE": secret_file(tmp_path, "c", "redis://app:pw@redis:6379/0"),
        "OTHER": "kept"})
    assert problems == []
    assert env["SECRET_KEY"] == SECRET
    assert env["API_AUTH_TOKEN"] == SECRET + "\n"        # only one newline is the file's
    assert env["REDIS_URL"] == "redis://app:pw@redis:6379/0"
    assert env["OTHER"] == "kept" and not [k for k in env if k.endswith("_FILE")]


def test_an_empty_file_variable_is_unset_and_an_empty_file_an_empty_value(tmp_path):
    env, problems = read_secret_files(FIELDS, {
        "SECRET_KEY_FILE": "", "GRAFANA_API_KEY_FILE": secret_file(tmp_path, "g", "")})
    assert problems == [] and "SECRET_KEY" not in env and env["GRAFANA_API_KEY"] == ""


@pytest.mark.parametrize("case", ["both", "missing", "directory", "unreadable", "not-utf8"])
def test_a_file_that_cannot_give_the_value_is_an_error_naming_variable_and_path(tmp_path,
                                                                                 case):
    path = secret_file(tmp_path, "k", SECRET)
    environ = {"SECRET_KEY_FILE": path}
    if case == "both":
        environ["SECRET_KEY"] = SECRET
    elif case == "missing":
        environ["SECRET_KEY_FILE"] = path = str(tmp_path / "absent")
    elif case == "directory":
        environ["SECRET_KEY_FILE"] = path = str(tmp_path)
    elif case == "unreadable":
        environ["SECRET_KEY_FILE"] = path = str(tmp_path / "k" / "below-a-file")
    else:
        Path(path).write_bytes(b"\xff\xfe" + SECRET.encode())
    env, problems = read_secret_files(FIELDS, environ)
    assert len(problems) == 1, problems
    assert "SECRET_KEY_FILE" in problems[0] and path in problems[0]
    assert SECRET not in problems[0]
    assert "SECRET_KEY" not in env          # neither value is taken


def test_the_client_library_reads_files_and_refuses_a_bad_one_at_load(tmp_path):
    key = Fernet.generate_key().decode()
    environ = dict(REQUIRED, ENCRYPTION_KEY_FILE=secret_file(tmp_path, "e", key + "\n"),
                   API_AUTH_TOKEN_FILE=secret_file(tmp_path, "t", SECRET))
    config = ConfigManager(environ, tmp_path / "config", file_poll=0)
    config.load()
    assert config.get("secrets.encryption_key") == key
    assert config.get("secrets.api_auth_token") == SECRET
    assert config.explain("secrets.api_auth_token")["layer"] == "env"
    bad = ConfigManager(dict(environ, API_AUTH_TOKEN=SECRET), tmp_path / "config", file_poll=0)
    with pytest.raises(ConfigError) as err:
        bad.load()
    assert "API_AUTH_TOKEN_FILE" in str(err.value) and SECRET not in str(err.value)


def test_the_standin_starts_from_files_and_names_a_bad_one(tmp_path):
    files = {var + "_FILE": secret_file(tmp_path, var.lower(), value)
             for var, value in (("CAMBRIAN_API_KEY", ""), ("CAMBRIAN_SECRET_KEY", ""),
                                ("ENCRYPTION_KEY", Fernet.generate_key().decode()))}
    environ = {k: v for k, v in REQUIRED.items() if not k.startswith("CAMBRIAN")} | files
    app = StandIn(environ, EventLog(), tmp_path / "config")
    assert app.prepare() == []              # required variables given as files count
    assert app.keyring.problem is None      # the records' key came from its file
    missing = dict(environ, CAMBRIAN_API_KEY_FILE=str(tmp_path / "gone"))
    problems = StandIn(missing, EventLog(), tmp_path / "config").prepare()
    assert len(problems) == 1 and "CAMBRIAN_API_KEY_FILE" in problems[0] \
        and str(tmp_path / "gone") in problems[0]

"""The encrypted-records keyring: MultiFernet with the new key first and the old one as a
fallback, and key problems reported without the key.  Pure."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet, InvalidToken

from flashmm_deploy.standin.secure_records import Keyring

NEW, OLD, OTHER = (Fernet.generate_key().decode() for _ in range(3))


def token(key: str, data: bytes = b"record") -> bytes:
    return Fernet(key.encode()).encrypt(data)


def test_new_and_old_keys_read_their_records():
    keyring = Keyring({"ENCRYPTION_KEY": NEW, "OLD_ENCRYPTION_KEY": OLD})
    assert keyring.problem is None
    assert keyring.classify(token(NEW)) == "new"
    assert keyring.classify(token(OLD).decode()) == "old"        # str tokens too
    assert keyring.classify(token(OTHER)) == "unreadable"
    assert keyring.classify(b"garbage") == "unreadable"
    assert keyring.classify(None) == "unreadable"
    assert keyring.decrypt(token(NEW, b"a")) == b"a"
    assert keyring.decrypt(token(OLD, b"b")) == b"b"
    with pytest.raises(InvalidToken):
        keyring.decrypt(token(OTHER))


def test_without_the_old_key_old_records_are_unreadable():
    keyring = Keyring({"ENCRYPTION_KEY": NEW, "OLD_ENCRYPTION_KEY": ""})
    assert keyring.problem is None
    assert keyring.classify(token(NEW)) == "new"
    assert keyring.classify(token(OLD)) == "unreadable"


def test_a_migrated_record_needs_only_the_new_key():
    keyring = Keyring({"ENCRYPTION_KEY": NEW, "OLD_ENCRYPTION_KEY": OLD})
    migrated = keyring.multi.rotate(token(OLD, b"kept"))
    assert keyring.classify(migrated) == "new"
    assert Keyring({"ENCRYPTION_KEY": NEW}).decrypt(migrated) == b"kept"


@pytest.mark.parametrize("environ,problem", [
    ({}, "ENCRYPTION_KEY is not set"),
    ({"ENCRYPTION_KEY": ""}, "ENCRYPTION_KEY is not set"),
    ({"ENCRYPTION_KEY": "canary-not-a-fernet-key"}, "ENCRYPTION_KEY is not a valid Fernet key"),
    ({"ENCRYPTION_KEY": NEW, "OLD_ENCRYPTION_KEY": "canary-old-not-a-key"},
     "OLD_ENCRYPTION_KEY is not a valid Fernet key"),
])
def test_key_problems_are_reported_without_the_key(environ, problem):
    keyring = Keyring(environ)
    assert keyring.problem.startswith(problem)
    assert "canary" not in keyring.problem


def test_a_bad_old_key_leaves_the_new_one_usable():
    keyring = Keyring({"ENCRYPTION_KEY": NEW, "OLD_ENCRYPTION_KEY": "bad"})
    assert keyring.classify(token(NEW)) == "new"
    assert keyring.classify(token(OLD)) == "unreadable"


def test_an_unusable_new_key_reads_nothing():
    for environ in ({}, {"ENCRYPTION_KEY": "bad", "OLD_ENCRYPTION_KEY": OLD}):
        keyring = Keyring(environ)
        assert keyring.classify(token(OLD)) == "unreadable"
        with pytest.raises(LookupError):
            keyring.decrypt(token(OLD))

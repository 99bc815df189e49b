"""Backups on the controller: ``<backups>/<env>/<backup_id>/``, one directory per host.

Layout of a backup (directories 0700, files 0600)::

    backup.json                     id, sequence, environment, time, toolkit version and commit,
                                    and each host's manifest sha256, signed (written last: a
                                    backup without it is incomplete and never listed or restored)
    <host>/manifest.json            id, environment, host, time, toolkit, config version, and
                                    per file and per Redis part: mode, size, sha256, where
                                    stored; signed
    <host>/files/<path>             each deployed file that holds no secret, byte for byte
    <host>/redis.json               flashmm:config:* and flashmm:meta:* keys: type, TTL, values
    <host>/secrets.vault            ansible-vault (vault id = the environment): the files that
                                    hold secrets (.env, influxdb/influxdb.env, redis/users.acl)
                                    and the flashmm:secure:* records, one JSON document

Nothing that holds a secret is written in clear; the manifests hold sizes and sha256 sums only.
A backup is written into ``.partial-<id>/`` and renamed into place when every host's part is
there, so a failed run never leaves something that looks like a backup.  ``verify`` checks
everything (signatures, sums, sizes, decryption, environment, hosts, paths, modes, the shape of
the Redis data) and names every file that differs.

**Signatures.**  ``backup.json`` and every ``manifest.json`` carry an HMAC-SHA256 over their
content (canonical JSON without the signature), keyed with ``PBKDF2-SHA256(vault password of
the environment's vault id, "flashmm-deploy backup signing key" + environment, 10000
iterations)``.  The index holds each manifest's sha256 and each manifest every stored file's,
so no byte of a backup can change without the vault password.  Why the vault password and not
a ``backup_signing_key`` secret inside the vault: a backup already needs exactly that password
(its ``secrets.vault`` is encrypted with it), so the signature adds no secret to generate,
rotate or lose, works for every environment and every backup from the first one, and stays
valid exactly as long as the backup can be decrypted at all (``ansible-vault rekey`` makes old
backups unreadable either way); a secret inside the vault would be readable by anyone holding
that same password, so it would not be any stronger.  PBKDF2 with ansible-vault's own
iteration count keeps a guess of the password no cheaper to test against a signature than
against ``secrets.vault`` beside it.  Backups of format 1 (before signatures) are refused
unless the operator accepts them explicitly (``accept_unsigned``: ``--accept-unsigned``,
``-e flashmm_restore_accept_unsigned=true``); every other check still applies to them.

**Ids, order and retention.**  Ids stay readable timestamps (``20261126T173012Z``, ``-2`` for
a second one in the same second), but no order comes from a clock: ``commit`` gives each backup
a ``sequence`` (one more than the highest the environment has seen, kept in ``.sequence`` and
in the signed index) under an ``flock`` on ``<env>/.lock``, and ``latest`` and retention go by
it.  Backups of format 1 have no sequence: they sort before every newer one, by time then id.
Id allocation, sealing and pruning all hold that lock, so two backups at once never prune
under each other, and a prune never removes the backup its own run just took.  Readers take no
lock: a backup that vanishes or is half-written under a listing or a verify is skipped and
named.
"""

from __future__ import annotations

# The store's parts, one job each (layout: names, modes, errors, helpers, the environment's lock;
# signing; index: listing and ids; writer: begin, write_host, commit, prune; verify); callers
# use this module's names.

from flashmm_deploy.backup.layout import (DEFAULT_DIR, DEFAULT_KEEP, DIR_MODE, FILE_MODE, FILES_DIR, FORMAT,
                                          INDEX, KDF_ITERATIONS, LEGACY_FORMAT, LOCK_FILE, LOCK_TIMEOUT_S,
                                          MANIFEST, PARTIAL, PRUNED, PUBLIC_MODE_RULE, REDIS_FILE,
                                          SECRET_MODE_RULE, SECRET_PATHS, SECRETS_FILE, SECURE_PREFIX,
                                          SEQUENCE_FILE, SIGNATURE, STALE_PARTIAL_S, BackupError,
                                          BackupGone, backups_dir, env_lock, host_name_problem, shown,
                                          toolkit)
from flashmm_deploy.backup.signing import (sign, signing_key)
from flashmm_deploy.backup.index import (BackupInfo, incomplete, list_backups, resolve_id)
from flashmm_deploy.backup.writer import (begin, commit, config_version, module_entry, prune, write_host)
from flashmm_deploy.backup.verify import (HostBackup, mode_problem, Verified, verify)

__all__ = ["DEFAULT_DIR", "DEFAULT_KEEP", "DIR_MODE", "FILE_MODE", "FILES_DIR", "FORMAT", "INDEX",
           "KDF_ITERATIONS", "LEGACY_FORMAT", "LOCK_FILE", "LOCK_TIMEOUT_S", "MANIFEST", "PARTIAL",
           "PRUNED", "PUBLIC_MODE_RULE", "REDIS_FILE", "SECRET_MODE_RULE", "SECRET_PATHS", "SECRETS_FILE",
           "SECURE_PREFIX", "SEQUENCE_FILE", "SIGNATURE", "STALE_PARTIAL_S", "BackupError", "BackupGone",
           "backups_dir", "env_lock", "host_name_problem", "shown", "toolkit", "sign", "signing_key",
           "BackupInfo", "incomplete", "list_backups", "resolve_id", "begin", "commit", "config_version",
           "module_entry", "prune", "write_host", "HostBackup", "mode_problem", "Verified", "verify"]

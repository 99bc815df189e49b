"""Backups nobody can forge and retention no clock can fool (issues 14 case 5, 15 item 2), on
the no-stack sandbox of test_backup_restore.py (two hosts, real redis-server, real
ansible-playbook and flashmm-config):

* each forgery a controller account can make without the vault password (edit a file or a
  manifest and re-sum everything, a 0666 ``.env``, an extra bind mount, a symlink to a file
  outside, a host name ``../x``, a Redis hash with an odd number of values) is refused by
  ``flashmm-config backup verify`` and by ``playbooks/restore.yml``, naming the file, with
  every host's files and Redis exactly as before;
* a backup of format 1 (unsigned) is refused unless accepted explicitly;
* a backup dated in the future (a controller whose clock was ahead) neither survives
  ``flashmm_backup_keep=1`` nor becomes ``latest``; two backups at once with keep=1 both
  succeed, each keeps its own, and ``latest`` is the one sealed last;
* the restore script refuses a badly shaped entry before its first write (all or nothing).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flashmm_deploy.hostside import backup_host
from flashmm_deploy.backup import backup_store
from flashmm_deploy.hostside.backup_host import BackupHostError
from flashmm_deploy.redis.client import Connection
from flashmm_deploy.hostside.seed_apply import endpoint_from_params
from redis_support import SiteSnapshot
from support import ROOT, VENV_BIN, ansible_playbook, flashmm_config, tool_env
from test_backup_restore import HOSTS, OVERRIDE, Site, failed, ok, redis_state

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def site(tmp_path_factory, redis_server):
    site = Site(tmp_path_factory.mktemp("integrity"), redis_server)
    ok(ansible_playbook("deploy.yml", site.inventory, env=site.env))
    for host in HOSTS:
        c = site.client(host)
        c.set(*OVERRIDE)
        c.hset("flashmm:secure:book", mapping={"a": "x", "b": "y"})
        c.zadd("flashmm:meta:zset", {"m": 1.5, "n": -2})
    ok(site.backup())
    site.baseline = backup_store.list_backups(site.env_dir())[-1].backup_id
    site.before = site.snapshot()
    site.saved = SiteSnapshot(redis_server, site.dbs, [site.sandbox],
                              tmp_path_factory.mktemp("integrity-baseline"))
    yield site
    for db in site.dbs:
        redis_server.client(db).flushdb()


@pytest.fixture
def drifted(site):
    """The hosts as the baseline backup holds them, then drifted (so that a restore would
    have work to do on every host): an override changed, a deployed file edited."""
    site.saved.restore()                        # files and keys, without a run
    assert site.snapshot() == site.before
    for host in HOSTS:
        site.client(host).set(OVERRIDE[0], "42.0")
    (site.sandbox / "sandbox-01" / "redis" / "seed.lua").write_text("-- edited\n")
    return site


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _dump(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def resum(backup: Path, host: str | None = None) -> None:
    """What a forger without the vault password can do: recompute every sum a manifest and
    the index hold from the files as they now are."""
    for h in [host] if host else HOSTS:
        mpath = backup / h / "manifest.json"
        manifest = _load(mpath)
        for rel, info in manifest["files"].items():
            if not info["secret"]:
                data = (backup / h / "files" / rel).read_bytes()
                info.update(size=len(data), sha256=_sha(data))
        for part in ("redis", "secrets"):
            data = (backup / h / manifest[part]["stored"]).read_bytes()
            manifest[part].update(size=len(data), sha256=_sha(data))
        _dump(mpath, manifest)
    index = _load(backup / "backup.json")
    for h in index["hosts"]:
        mpath = backup / h / "manifest.json"
        if mpath.is_file():
            index["hosts"][h]["manifest_sha256"] = _sha(mpath.read_bytes())
    _dump(backup / "backup.json", index)


def forge_resummed(backup: Path, tmp: Path) -> None:
    path = backup / "sandbox-01" / "files" / "config" / "environments" / "local.yml"
    path.write_text(path.read_text().replace("FlashMM", "Forged", 1))
    resum(backup)


def forge_env_mode(backup: Path, tmp: Path) -> None:
    mpath = backup / "sandbox-01" / "manifest.json"
    manifest = _load(mpath)
    manifest["files"][".env"]["mode"] = "0666"
    _dump(mpath, manifest)
    resum(backup)


def forge_mount(backup: Path, tmp: Path) -> None:
    path = backup / "sandbox-02" / "files" / "docker-compose.yml"
    text = path.read_text()
    assert "    volumes:\n" in text
    path.write_text(text.replace("    volumes:\n", "    volumes:\n      - /etc:/hostetc\n", 1))
    resum(backup)


def forge_symlink(backup: Path, tmp: Path) -> None:
    outside = tmp / "controller-file.yml"
    outside.write_text("# a file of the controller, outside the backup\n")
    path = backup / "sandbox-01" / "files" / "config" / "environments" / "local.yml"
    path.unlink()
    path.symlink_to(outside)
    resum(backup)


def forge_host_name(backup: Path, tmp: Path) -> None:
    shutil.copytree(backup / "sandbox-01", backup.parent / "x")     # next to the backup
    index = _load(backup / "backup.json")
    index["hosts"]["../x"] = dict(index["hosts"]["sandbox-01"])
    _dump(backup / "backup.json", index)


def forge_odd_hash(backup: Path, tmp: Path) -> None:
    path = backup / "sandbox-01" / "redis.json"
    dump = _load(path)
    entry = next(e for e in dump["keys"] if e["type"] == "hash")
    entry["values"] = entry["values"][:-1]
    assert len(entry["values"]) % 2 == 1
    _dump(path, dump)
    resum(backup)


FORGERIES = {
    "an edited file, every sum recomputed": (
        forge_resummed, ["sandbox-01/manifest.json: signature does not match",
                         "backup.json: signature does not match"]),
    ".env written 0666": (
        forge_env_mode, ["sandbox-01/manifest.json: .env: mode 0666 is not one deploy writes"]),
    "an extra bind mount in the compose file": (
        forge_mount, ["sandbox-02/manifest.json: signature does not match"]),
    "a symlink to a controller file": (
        forge_symlink, ["sandbox-01/files/config/environments/local.yml: a symlink"]),
    "a host name ../x": (
        forge_host_name, ["backup.json: host name '../x' is not a plain host name"]),
    "a Redis hash with an odd number of values": (
        forge_odd_hash, ["sandbox-01/redis.json: flashmm:meta:seeded: a hash with"]),
}


@pytest.mark.parametrize("case", list(FORGERIES))
def test_a_forged_backup_is_refused_by_verify_and_restore_with_hosts_unchanged(
        drifted, tmp_path, case):
    site = drifted
    copy = tmp_path / "backups"
    shutil.copytree(site.backups, copy, symlinks=True)
    forge, expected = FORGERIES[case]
    forge(copy / "local" / site.baseline, tmp_path)
    before = site.snapshot()

    verify = flashmm_config("backup", "verify", str(site.inventory), site.baseline,
                            "--backup-dir", str(copy))
    assert verify.returncode == 1, verify.stdout + verify.stderr
    for text in expected:
        assert text in verify.stderr, verify.stderr
    out = failed(site.restore(site.baseline, backups=copy))
    for text in expected:
        assert text in out, out[-4000:]
    assert "nothing restored" in out
    assert site.snapshot() == before
    if case == "a host name ../x":       # show reads the same backup
        shown = flashmm_config("backup", "show", str(site.inventory), site.baseline,
                               "--backup-dir", str(copy))
        assert shown.returncode == 1 and expected[0] in shown.stderr, shown.stdout


def test_the_genuine_backup_still_verifies_and_restores(drifted):
    """The control of the forgeries: the same backup, untouched, is accepted."""
    site = drifted
    verify = flashmm_config("backup", "verify", str(site.inventory), site.baseline,
                            "--backup-dir", str(site.backups))
    assert verify.returncode == 0 and "signatures, sums and decryption checked" in verify.stdout
    ok(site.restore(site.baseline))
    assert site.snapshot()[0] == site.before[0]
    assert all(site.client(h).get(OVERRIDE[0]) == OVERRIDE[1] for h in HOSTS)


def _make_unsigned(backup: Path) -> None:
    """A backup as the toolkit wrote it before signatures (format 1, no sequence)."""
    for h in HOSTS:
        mpath = backup / h / "manifest.json"
        manifest = _load(mpath)
        manifest.pop("signature", None)
        manifest["format"] = 1
        _dump(mpath, manifest)
    index = _load(backup / "backup.json")
    index.pop("signature", None)
    index.pop("sequence", None)
    index["format"] = 1
    _dump(backup / "backup.json", index)
    resum(backup)


def test_an_unsigned_backup_is_refused_unless_accepted_and_sorts_before_signed_ones(
        drifted, tmp_path):
    site = drifted
    copy = tmp_path / "backups"
    shutil.copytree(site.backups, copy)
    legacy = "20991231T235959Z"          # dated after every signed backup
    shutil.move(copy / "local" / site.baseline, copy / "local" / legacy)
    index = _load(copy / "local" / legacy / "backup.json")
    index["backup_id"] = legacy
    _dump(copy / "local" / legacy / "backup.json", index)
    for h in HOSTS:
        m = _load(copy / "local" / legacy / h / "manifest.json")
        m["backup_id"] = legacy
        _dump(copy / "local" / legacy / h / "manifest.json", m)
    _make_unsigned(copy / "local" / legacy)
    before = site.snapshot()

    refused = flashmm_config("backup", "verify", str(site.inventory), legacy,
                             "--backup-dir", str(copy))
    assert refused.returncode == 1
    assert f"{legacy}/backup.json: not signed" in refused.stderr
    assert "--accept-unsigned" in refused.stderr
    out = failed(site.restore(legacy, backups=copy))
    assert "not signed" in out and "flashmm_restore_accept_unsigned=true" in out
    assert site.snapshot() == before

    accepted = flashmm_config("backup", "verify", str(site.inventory), legacy,
                              "--backup-dir", str(copy), "--accept-unsigned")
    assert accepted.returncode == 0, accepted.stderr
    assert "UNSIGNED (accepted" in accepted.stdout
    ok(site.restore(legacy, "-e", "flashmm_restore_accept_unsigned=true", backups=copy))
    assert all(site.client(h).get(OVERRIDE[0]) == OVERRIDE[1] for h in HOSTS)

    # a signed backup taken now is newer than the unsigned one, whatever their dates say
    ok(site.backup(backups=copy))
    order = [b.backup_id for b in backup_store.list_backups(copy / "local")]
    assert order[0] == legacy and len(order) == 2
    assert backup_store.resolve_id(copy / "local", "latest") == order[1]


# ---- ids and retention no clock can fool ----------------------------------------------------

CLOCK = '''
import datetime as _dt
import os
import time as _time

_SHIFT = float(os.environ.pop("FLASHMM_TEST_CLOCK_SHIFT_S"))
os.environ.pop("PYTHONPATH", None)          # modules run on the hosts keep the real clock
_real_time, _real_gmtime, _real_localtime = _time.time, _time.gmtime, _time.localtime
_real_strftime = _time.strftime
_time.time = lambda: _real_time() + _SHIFT
_time.gmtime = lambda secs=None: _real_gmtime(_time.time() if secs is None else secs)
_time.localtime = lambda secs=None: _real_localtime(_time.time() if secs is None else secs)
_time.strftime = lambda fmt, t=None: _real_strftime(fmt, _time.localtime() if t is None else t)


_Real = _dt.datetime


class _Shifted(_Real):          # now() of the shifted clock, plain datetimes out
    @classmethod
    def now(cls, tz=None):
        return _Real.now(tz) + _dt.timedelta(seconds=_SHIFT)

    @classmethod
    def utcnow(cls):
        return _Real.utcnow() + _dt.timedelta(seconds=_SHIFT)

    def __repr__(self):         # Ansible writes datetimes into its module payloads by repr
        return repr(_Real.combine(self.date(), self.timetz()))


_dt.datetime = _Shifted
'''


def clock_ahead_env(tmp: Path, seconds: float) -> dict[str, str]:
    """The environment of a controller whose clock is ``seconds`` ahead (ansible-playbook and
    its workers; the modules on the hosts keep the real clock)."""
    where = tmp / "clock"
    where.mkdir()
    (where / "sitecustomize.py").write_text(CLOCK)
    return tool_env(PYTHONPATH=os.pathsep.join(p for p in (str(where),
                                                           os.environ.get("PYTHONPATH")) if p),
                    FLASHMM_TEST_CLOCK_SHIFT_S=str(seconds))


def taken_id(output: str) -> str:
    """The id a backup run took (its begin step's message, shown at -v)."""
    return re.search(r"backup (\S+) of \d+ host\(s\)", " ".join(output.split())).group(1)


def pruned_by(output: str) -> set[str]:
    """The ids a backup run's commit step says it pruned (at -v)."""
    flat = " ".join(output.split())
    return {backup_id for listed in re.findall(r"pruned ((?:\d{8}T\d{6}Z(?:-\d+)?(?:, )?)+)",
                                              flat)
            for backup_id in re.findall(r"\d{8}T\d{6}Z(?:-\d+)?", listed)}


def test_a_future_dated_backup_does_not_outlive_the_backup_just_taken(site, tmp_path):
    backups = tmp_path / "backups"
    ten_years = 10 * 365 * 86400
    future = ok(site.backup("-v", backups=backups, env=clock_ahead_env(tmp_path, ten_years)))
    future_id = taken_id(future.stdout)
    assert int(future_id[:4]) >= 2035, future_id            # the clock really was ahead
    now = ok(site.backup("-v", "-e", "flashmm_backup_keep=1", backups=backups))
    now_id = taken_id(now.stdout)
    assert now_id not in pruned_by(now.stdout)
    assert [b.backup_id for b in backup_store.list_backups(site.env_dir(backups))] == [now_id]
    assert backup_store.resolve_id(site.env_dir(backups), "latest") == now_id
    verify = flashmm_config("backup", "verify", str(site.inventory), "latest",
                            "--backup-dir", str(backups))
    assert verify.returncode == 0 and f"backup {now_id}: ok" in verify.stdout, verify.stderr


def test_two_backups_at_once_with_keep_1_both_succeed_and_keep_their_own(site, tmp_path):
    backups = tmp_path / "backups"
    ok(site.backup(backups=backups))                  # something old for both to prune
    env_dir = site.env_dir(backups)
    for _ in range(4):                                # each round: two runs started together
        cmd = [str(VENV_BIN / "ansible-playbook"), str(ROOT / "playbooks" / "backup.yml"),
               "-i", str(site.inventory), "-e", f"flashmm_backup_dir={backups}",
               "-e", "flashmm_backup_keep=1", "-v"]
        procs = [subprocess.Popen(cmd, cwd=ROOT, env=site.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=300)[0] for p in procs]
        for proc, out in zip(procs, outs):
            assert proc.returncode == 0, out[-3000:]
        ids = [taken_id(out) for out in outs]
        assert len(set(ids)) == 2
        for own, out in zip(ids, outs):               # a run never prunes what it just took
            assert own not in pruned_by(out), (own, pruned_by(out))
        left = backup_store.list_backups(env_dir)
        assert len(left) == 1 and left[0].backup_id in ids
        assert backup_store.resolve_id(env_dir, "latest") == left[0].backup_id
        assert not [p for p in env_dir.iterdir() if p.name.startswith(".partial-")]
    verify = flashmm_config("backup", "verify", str(site.inventory), "--backup-dir",
                            str(backups))
    assert verify.returncode == 0, verify.stderr


def test_a_backup_sealed_last_is_kept_and_latest_though_it_started_first(site, tmp_path):
    """Ordered, not by chance: backup A starts first and waits for a host held by another run;
    backup B (the other host only) starts later and completes first; then A completes.  A is
    the backup sealed last: its own prune keeps it (keep=1), and it is latest."""
    import time

    from flashmm_deploy.hostside.filesync import HostLock

    backups = tmp_path / "backups"
    env_dir = site.env_dir(backups)
    ok(site.backup(backups=backups))                  # an older one, to be pruned
    base = [str(VENV_BIN / "ansible-playbook"), str(ROOT / "playbooks" / "backup.yml"),
            "-i", str(site.inventory), "-e", f"flashmm_backup_dir={backups}",
            "-e", "flashmm_backup_keep=1", "-e", "flashmm_lock_timeout=300", "-v"]
    with HostLock(str(site.sandbox / "sandbox-01"), "held-by-the-test", 1):
        first = subprocess.Popen(base, cwd=ROOT, env=site.env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120          # bounds the wait only; asserts nothing
        while not list(env_dir.glob(".partial-*")):
            assert first.poll() is None and time.monotonic() < deadline, \
                "the first backup never started"
            time.sleep(0.1)
        second = ok(site.backup("-v", "--limit", "sandbox-02", "-e", "flashmm_backup_keep=1",
                                backups=backups))
    out = first.communicate(timeout=300)[0]
    assert first.returncode == 0, out[-3000:]
    first_id, second_id = taken_id(out), taken_id(second.stdout)
    assert first_id < second_id                        # A's id (and date) is the older
    assert first_id not in pruned_by(out) and second_id in pruned_by(out)
    assert [b.backup_id for b in backup_store.list_backups(env_dir)] == [first_id]
    assert backup_store.resolve_id(env_dir, "latest") == first_id


# ---- the host side: all or nothing ----------------------------------------------------------

def _b64(*values: str) -> list[str]:
    return [base64.b64encode(v.encode()).decode() for v in values]


GOOD = [{"key": "flashmm:config:trading:max_position_usdc", "type": "string", "ttl_ms": -1,
         "values": _b64("250.0")},
        {"key": "flashmm:meta:version", "type": "string", "ttl_ms": -1, "values": _b64("7")}]

BAD_SHAPES = {
    "a hash with an odd number of values": {"key": "flashmm:meta:seeded", "type": "hash",
                                            "ttl_ms": -1, "values": _b64("a", "1", "b")},
    "a zset score that is not a number": {"key": "flashmm:meta:z", "type": "zset",
                                          "ttl_ms": -1, "values": _b64("m", "abc")},
    "a string with two values": {"key": "flashmm:meta:s", "type": "string", "ttl_ms": -1,
                                 "values": _b64("a", "b")},
    "a TTL of 0": {"key": "flashmm:meta:t", "type": "string", "ttl_ms": 0,
                   "values": _b64("a")},
    "an empty list": {"key": "flashmm:meta:l", "type": "list", "ttl_ms": -1, "values": []},
    "a key twice": GOOD[0],
    "an unknown type": {"key": "flashmm:meta:x", "type": "stream", "ttl_ms": -1,
                        "values": _b64("a")},
}


@pytest.mark.parametrize("case", list(BAD_SHAPES))
def test_the_restore_script_refuses_a_bad_shape_before_its_first_write(redis_server, redis_db,
                                                                       case):
    client = redis_server.client(redis_db)
    client.set("flashmm:config:trading:max_position_usdc", "999.0")     # drift to revert
    client.set("flashmm:config:extra", "not in the backup")             # a key to delete
    client.hset("flashmm:meta:seeded", mapping={"a": "1"})
    client.set("flashmm:meta:version", "3")
    before = redis_state(client)
    entries = GOOD + [BAD_SHAPES[case]]
    endpoint = endpoint_from_params({"host": "127.0.0.1", "port": redis_server.port,
                                     "db": redis_db, "timeout": 5.0})
    # the script alone (no Python check first): refuses, writes nothing
    argv = backup_host.restore_argv(entries, "b1", "apply")
    with Connection(endpoint) as conn:
        reply = conn.pipeline(("EVAL", backup_host.RESTORE_LUA, 0) + argv)[0]
    assert "flashmm restore" in str(reply), reply
    assert redis_state(client) == before
    # the module's path: refused before the script is sent, naming the key
    with pytest.raises(BackupHostError) as err:
        backup_host.restore_redis(endpoint, entries, "b1", check=False)
    assert err.value.kind == "input" and BAD_SHAPES[case]["key"] in str(err.value)
    assert redis_state(client) == before
    assert client.get("flashmm:meta:version") == "3"


if __name__ == "__main__":      # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))

"""One run at a time per host, from its first step on the host to its last, and no run from a
checkout whose secrets are older than the host's.

Two layers, both under ``<root>/.flashmm/``:

- ``lock``: an exclusive ``flock`` held for one module call.  The kernel releases it when the
  process ends, however it ends.  It guards the files and the lease below.
- ``lease.json``: the *run's* hold on the host, between module calls (a deploy writes the files,
  then compose brings the stack up, then a second call seeds Redis: three processes, one run).
  It names the run, its action (deploy, rotation, restore...), its owner and start, and expires
  ``ttl`` seconds after the run last touched the host.  A call of another run waits for it
  (bounded by ``lock_timeout``) or fails naming it.  A lease is broken at once when the run that
  holds it is known dead: the controller lists its own runs whose process is gone
  (``stale_runs``, see ``flashmm_deploy.plan.runs``), and an operator may name one
  (``-e flashmm_lock_break=<run id>``).  A call that fails releases its run's lease: the run
  stops on this host.

``generation.json`` records the secrets generation (``flashmm_deploy.secrets.secret_generation``) of the
last run that wrote the host's secrets; ``check_generation`` refuses an older one.

Stdlib only, no relative imports: shipped to target hosts as ``module_utils/flashmm_host_lock.py``.
"""

from __future__ import annotations

import json
import os
import socket
import time

try:
    from flashmm_deploy.hostside.atomic_write import write_atomic
except ImportError:  # on a target host, inside an AnsiballZ payload
    from ansible.module_utils.flashmm_atomic_write import write_atomic  # type: ignore[no-redef]

STATE_DIR = ".flashmm"
LOCK_FILE = STATE_DIR + "/lock"
LEASE_FILE = STATE_DIR + "/lease.json"
GENERATION_FILE = STATE_DIR + "/generation.json"
POLL_SECONDS = 0.1
# Two runs that start within this many seconds of each other may each take some of their hosts
# first and then wait for the other's (Ansible writes all hosts of a task in parallel): the
# younger one stops at once where the older holds a host, rather than both waiting out
# flashmm_lock_timeout ("wait-die").  A run that starts later waits as usual.
TOGETHER_SECONDS = 30.0


class SyncError(Exception):
    pass


def _now_iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def _read_json(path: str) -> dict:
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read(1 << 16))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_json(path: str, data: dict) -> None:
    """Atomic, 0600: a reader sees the old record or the new one."""
    write_atomic(path, json.dumps(data, sort_keys=True).encode(), 0o600)


def _state_dir(root: str) -> str:
    path = os.path.join(root, STATE_DIR)
    if not os.path.isdir(path):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not os.path.isdir(path):
                raise SyncError("%s: exists and is not a directory" % path) from None
        os.chmod(path, 0o700)
    return path


def describe_holder(holder: dict) -> str:
    text = "%srun %s" % (holder["action"] + " " if holder.get("action") else "",
                         holder.get("run_id", "?"))
    if holder.get("owner"):
        text += " by %s" % holder["owner"]
    text += ", since %s" % (holder.get("started") or holder.get("since") or "?")
    if holder.get("expires"):
        text += ", lease until %s" % _now_iso(holder["expires"])
    return text


class HostLock:
    """Hold the host for one call of run ``run_id``.

    ``lease`` (a dict, or None for a call outside any run's lease bookkeeping):
      ``action``, ``owner``, ``started`` describe the run; ``ttl`` its lease's lifetime after
      each call; ``hold`` keeps the lease after this call (a later call of the run follows);
      ``release`` drops it at the end (the run's last call on this host);
      ``stale_runs`` are runs known dead whose leases are broken.
    Another run's live lease is waited for, like the flock itself, at most ``timeout`` s."""

    def __init__(self, root: str, run_id, timeout: float, lease: dict | None = None):
        self.root = root
        self.path = os.path.join(root, LOCK_FILE)
        self.lease_path = os.path.join(root, LEASE_FILE)
        self.run_id, self.timeout, self.fd = run_id, timeout, None
        self.lease = lease or {}
        self.broken: dict | None = None     # the dead run's lease this call broke, if any

    # -- acquiring ---------------------------------------------------------------------------
    def __enter__(self) -> "HostLock":
        import fcntl
        _state_dir(self.root)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            blocker = None
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                blocker = self._note()
            else:
                blocker = self._foreign_lease()
                if blocker is None:
                    break
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            if time.monotonic() >= deadline or self._yields_to(blocker):
                os.close(self.fd)
                self.fd = None
                raise SyncError(self._busy_message(blocker)) from None
            time.sleep(POLL_SECONDS)
        note = {"run_id": self.run_id, "pid": os.getpid(), "host": socket.gethostname(),
                "action": self.lease.get("action"), "owner": self.lease.get("owner"),
                "since": _now_iso(time.time())}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(note).encode(), 0)
        if self.lease.get("hold"):
            self._write_lease()
        return self

    def _note(self) -> dict:
        try:
            return json.loads(os.pread(self.fd, 4096, 0) or b"{}")
        except ValueError:
            return {}

    def _foreign_lease(self) -> dict | None:
        """The lease of another live run, or None (no lease, ours, expired, or a dead run's,
        which is then broken)."""
        lease = _read_json(self.lease_path)
        if not lease or lease.get("run_id") == self.run_id:
            return None
        expired = not isinstance(lease.get("expires"), (int, float)) or lease["expires"] <= time.time()
        dead = lease.get("run_id") in (self.lease.get("stale_runs") or ())
        if expired or dead:
            self.broken = dict(lease, reason="expired" if expired and not dead else "run ended")
            os.unlink(self.lease_path)
            return None
        return lease

    def _yields_to(self, holder: dict) -> bool:
        """Whether this run, taking its hold on the host, stops at once for ``holder``: an
        older run that started together with it (see TOGETHER_SECONDS)."""
        mine, theirs = self.lease.get("started_ts"), holder.get("started_ts")
        if not self.lease.get("hold") or not isinstance(mine, (int, float)) \
                or not isinstance(theirs, (int, float)):
            return False
        older = (theirs, str(holder.get("run_id"))) < (mine, str(self.run_id))
        return older and mine - theirs < TOGETHER_SECONDS

    def _busy_message(self, holder: dict) -> str:
        waited = ("stopped at once: that run started together with this one and is older"
                  if self._yields_to(holder) else
                  "waited %gs (flashmm_lock_timeout)" % self.timeout)
        return ("host %s is held by %s; %s. Run again when it ends; if that run died on "
                "another controller, its lease expires by itself, or break it now with "
                "-e flashmm_lock_break=%s"
                % (self.root, describe_holder(holder), waited, holder.get("run_id", "?")))

    # -- the run's lease ---------------------------------------------------------------------
    def _write_lease(self) -> None:
        now = time.time()
        mine = _read_json(self.lease_path)
        started = (mine.get("started") if mine.get("run_id") == self.run_id
                   else self.lease.get("started")) or _now_iso(now)
        _write_json(self.lease_path, {
            "run_id": self.run_id, "action": self.lease.get("action") or "run",
            "owner": self.lease.get("owner") or "", "started": started,
            "started_ts": self.lease.get("started_ts"),
            "renewed": _now_iso(now), "expires": now + float(self.lease.get("ttl") or 1800)})

    def release(self) -> None:
        """Drop this run's lease (nothing if another run's is there)."""
        if _read_json(self.lease_path).get("run_id") == self.run_id:
            try:
                os.unlink(self.lease_path)
            except FileNotFoundError:
                pass

    def __exit__(self, exc_type, *exc) -> None:
        try:
            # a failed call ends the run on this host: nothing of it follows to release it
            if self.lease and (self.lease.get("release") or exc_type is not None):
                self.release()
        finally:
            os.close(self.fd)           # closing releases the flock
            self.fd = None


def read_lease(root: str) -> dict:
    return _read_json(os.path.join(root, LEASE_FILE))


# -- secret generations ----------------------------------------------------------------------

def read_generation(root: str) -> dict:
    """The host's recorded generation; a record that is not one (hand-edited, corrupt) reads as
    a number that no vault is older than, so every run is refused until it is mended."""
    data = _read_json(os.path.join(root, GENERATION_FILE))
    number = data.get("number")
    if data and (not isinstance(number, int) or isinstance(number, bool) or number < 0):
        return {"number": float("inf"), "id": "unreadable %s (remove it to accept this vault)"
                % os.path.join(root, GENERATION_FILE), "at": "?"}
    return data


def _describe(gen: dict) -> str:
    return "generation %s (%s, %s)" % (gen.get("number", 0), gen.get("id") or "?",
                                       gen.get("at") or "?")


def check_generation(root: str, generation: dict | None) -> bool:
    """Refuse a run whose vault holds an older secrets generation than the host runs (or the
    same number from another history).  Returns whether the host's record would change."""
    if not generation:
        return False
    host = read_generation(root)
    mine = generation.get("number") or 0
    theirs = host.get("number") or 0
    if not mine and not theirs:         # vault and host from before generations: nothing to say
        return False
    if theirs > mine or (theirs == mine and theirs and host.get("id") != generation.get("id")):
        raise SyncError(
            "this host runs secrets %s, but the vault of this run holds %s: the vault in this "
            "checkout is older than a rotation or restore another run made. Update the checkout "
            "(git pull: the vault file), then run again; nothing was written"
            % (_describe(host), _describe(generation)))
    return theirs != mine or host.get("id") != generation.get("id")


def record_generation(root: str, generation: dict) -> None:
    _state_dir(root)
    _write_json(os.path.join(root, GENERATION_FILE),
                {k: generation.get(k) for k in ("number", "id", "at")})

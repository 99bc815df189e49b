# Over 350 lines: one write pass under the host lock (diff, atomic writes, roll back, audit).
"""Converge a set of files under one root in a single pass: atomic writes, stated modes, a
per-file diff with secret values masked, and a check mode that writes nothing.

Nothing half-written: every path is checked before the first write (no file where a directory
must be, nothing that resolves outside the root, no symlink where a file goes), and a failure
after the first write, in this module or in the caller's ``after_write`` (the seed), puts every
file back as it was.  Its hooks (``before_write``, ``first``/``after_first``, ``after_write``)
have one caller, ``hostside.converge``, which names the steps a host module runs.  Files a
previous run wrote and this one no longer does are removed (``.flashmm/state.json`` lists
them).  One run at a time per host: the call holds the host's lock and, with ``lease``, its
run's lease from the run's first call to its last (``host_lock``), waiting for another run at
most ``lock_timeout`` seconds; with ``generation``, a run whose vault is older than the host's
secrets is refused before anything is written.

Stdlib only, no relative imports: Ansible ships this file to target hosts as
``module_utils/flashmm_filesync.py`` (a symlink) for ``hostside/converge.py``.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time

try:
    from flashmm_deploy.hostside import audit_log
    from flashmm_deploy.hostside.atomic_write import write_atomic
    from flashmm_deploy.hostside.host_lock import (
        GENERATION_FILE, LOCK_FILE, STATE_DIR, HostLock, SyncError, check_generation,
        record_generation)
except ImportError:  # on a target host, inside an AnsiballZ payload
    from ansible.module_utils import flashmm_audit_log as audit_log  # type: ignore[no-redef]
    from ansible.module_utils.flashmm_atomic_write import write_atomic  # type: ignore[no-redef]
    from ansible.module_utils.flashmm_host_lock import (  # type: ignore[no-redef]
        GENERATION_FILE, LOCK_FILE, STATE_DIR, HostLock, SyncError, check_generation,
        record_generation)

# An assignment as a hand-edited .env may hold it: an optional comment mark, "export", spaces
# around "=".  Groups: the prefix up to and including "=", the key, the raw value.
_ASSIGNMENT = re.compile(r"(\s*(?:#\s*)?(?:export\s+)?([^=\s#]+)\s*=)\s*(.*)")
MASK = "'<redacted>'"
MASK_CHANGED = "'<redacted, changed>'"
UNPARSED = "# <line redacted: not a KEY=value assignment>"
COMMENT = "# <comment redacted>"
HIDDEN = "# <content hidden: holds secrets>\n"
HIDDEN_CHANGED = "# <content hidden: holds secrets; changed>\n"


def _values(text: str) -> dict[str, str]:
    """key -> raw value of the live (uncommented) assignments; the last one wins, as in dotenv."""
    out = {}
    for line in text.split("\n"):
        m = _ASSIGNMENT.match(line)
        if m and not line.lstrip().startswith("#"):
            out[m.group(2)] = m.group(3)
    return out


def mask_env(text: str, names, other: str | None = None, reveal=None,
             comments=frozenset()) -> str:
    """``text`` with secret values replaced by ``'<redacted>'``: those of ``names`` and, when
    ``reveal`` is given, of every key not in it (in a hand-edited file an unknown key may be a
    secret too, a line that is no assignment is redacted whole, and so is every comment but
    the ``comments`` we write ourselves: ``# old SECRET_KEY was ...`` must not show).  A quoted
    value spanning lines is masked whole.  With ``other``, a masked value that differs from the
    same key's value there is marked ``'<redacted, changed>'``, so a diff still says *that* it
    changed."""
    hidden = set(names)
    theirs = _values(other) if other is not None else None
    out, quote = [], None            # quote: the one still open on a multi-line masked value
    for line in text.split("\n"):
        if quote is not None:
            if re.search(r"(?<!\\)" + quote, line):
                quote = None
            continue
        m = _ASSIGNMENT.match(line)
        if reveal is not None and line.lstrip().startswith("#"):
            out.append(line if line in comments else COMMENT)
            continue
        if m is None:
            out.append(UNPARSED if reveal is not None and line.strip() else line)
            continue
        key, value = m.group(2), m.group(3)
        if key not in hidden and (reveal is None or key in reveal):
            out.append(line)
            continue
        if value[:1] in ("'", '"') and not re.search(r"(?<!\\)" + value[0], value[1:]):
            quote = value[0]
        changed = theirs is not None and theirs.get(key) != value
        out.append(m.group(1) + (MASK_CHANGED if changed else MASK))
    return "\n".join(out)


STATE_FILE = STATE_DIR + "/state.json"   # the files the last run wrote, and that run's id
__all__ = ["HostLock", "LOCK_FILE", "SyncError", "sync", "read_state", "check_run",
           "write_atomic"]


def _resolve_owner(owner, group) -> tuple[int, int]:
    """The uid/gid the files must have: the given ones, else the connecting user's (an
    existing file with a foreign owner is rewritten, which makes it ours)."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        if owner not in (None, ""):
            import pwd
            uid = int(owner) if str(owner).isdigit() else pwd.getpwnam(owner).pw_uid
        if group not in (None, ""):
            import grp
            gid = int(group) if str(group).isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise SyncError("no such user or group: %s" % (owner if owner else group)) from None
    return uid, gid


def read_state(root: str) -> dict:
    try:
        with open(os.path.join(root, STATE_FILE), "rb") as fh:
            data = json.loads(fh.read(1 << 20))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def check_run(root: str, run_id: str) -> None:
    """Refuse to seed when another run wrote this host's files after ``run_id`` did: seeding
    then would leave the host with one run's files and another's runtime layer."""
    state = read_state(root)
    if state.get("run_id") not in (None, run_id):
        raise SyncError("another deploy (run %s, %s) wrote this host's files after this run did: "
                        "not applying this run's runtime layer over them"
                        % (state.get("run_id"), state.get("written_at", "?")))


def _ensure_dir(path: str, mode: int, check: bool, created: list[str]) -> None:
    if os.path.isdir(path):
        return
    _ensure_dir(os.path.dirname(path), mode, check, created)
    if check:
        created.append(path)
        return
    try:
        os.mkdir(path, mode)
    except FileExistsError:             # another host's run made it a moment ago: fine
        if not os.path.isdir(path):
            raise SyncError(f"{path}: exists and is not a directory") from None
        return
    created.append(path)
    os.chmod(path, mode)                # mkdir's mode is filtered by the umask


def _inside(root: str, path: str) -> bool:
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


def _preflight(root: str, rel: str) -> str:
    """The absolute path of ``rel``, once every component was checked: a directory where a
    directory must be, nothing resolving outside the root, a regular file (or nothing) at the
    end.  Raises SyncError naming the path."""
    norm = os.path.normpath(rel)
    if norm.startswith("..") or os.path.isabs(norm) or norm == ".":
        raise SyncError(f"{rel}: must be a relative path inside {root}")
    path = os.path.join(root, norm)
    parent = root
    for part in norm.split(os.sep)[:-1]:
        parent = os.path.join(parent, part)
        if not os.path.lexists(parent):
            break
        if not os.path.isdir(parent):
            raise SyncError(f"{parent}: is not a directory, but {rel} goes inside it")
        if not _inside(root, parent):
            raise SyncError(f"{parent}: resolves outside {root}")
    parent = os.path.dirname(path)
    if os.path.lexists(path):
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            raise SyncError(f"{path}: is a symbolic link; deploy writes a regular file there "
                            "(remove the link)")
        if not stat.S_ISREG(st.st_mode):
            raise SyncError(f"{path}: exists and is not a regular file")
    existing = parent
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SyncError(f"{existing}: not writable by this user, so {rel} cannot be written")
    return path


def _read(path: str):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None, None
    with open(path, "rb") as fh:
        return st, fh.read()


def _diff(path, st, before, data, spec, mode) -> dict:
    old_text = before.decode("utf-8", "replace") if before is not None else ""
    new_text = data.decode("utf-8") if data is not None else ""
    # mask_keys alone means a secret KEY=value file too: never show a secret by omission
    mask = spec.get("mask") or ("env" if "mask_keys" in spec else None)
    if mask == "env":     # a secret file: show only values of known non-secret keys
        keys = spec.get("mask_keys") or []
        reveal = set(_values(new_text)) - set(keys)
        ours = {line for line in new_text.split("\n") if line.lstrip().startswith("#")}
        old_text, new_text = (mask_env(old_text, keys, reveal=reveal, comments=ours),
                              mask_env(new_text, keys, old_text, reveal, ours))
    elif mask == "all":   # nothing of it is shown, only that it changed
        old_text = HIDDEN if before is not None else ""
        new_text = "" if data is None else (HIDDEN if before == data else HIDDEN_CHANGED)
    return {"before_header": path if st is not None else "(absent)",
            "after_header": f"{path} (mode {mode:04o})" if data is not None else "(removed)",
            "before": old_text, "after": new_text}


def sync(root: str, files: list[dict], *, check: bool = False, owner=None, group=None,
         directory_mode: int = 0o755, run_id=None, record_run: bool = False,
         lock_timeout: float = 0.0, before_write=None, after_write=None, first=None,
         after_first=None, lease: dict | None = None, generation: dict | None = None,
         audit: dict | None = None) -> dict:
    """Converge ``files`` (dicts: path relative to root, content str, mode int; ``mask`` "env"
    with ``mask_keys``, or "all") under ``root``, removing files the previous run wrote and
    this one does not.  ``record_run`` records ``run_id`` as the host's last writer even when
    nothing changed (a later call of the same run checks it: ``check_run``).  ``after_write``
    runs after the writes, still under the lock: if it raises, the files are put back; the
    audit lines it returns (a list, or None) follow the files' own.
    ``before_write`` runs under the lock before anything is read or written (a check whose
    answer another run must not change before the writes).
    ``first`` (a path) is written before the others and ``after_first`` called right after it,
    changed or not (a running server loads that file before its clients see the rest).
    ``lease``: the run's lease options (``host_lock.HostLock``); ``generation``: the secrets
    generation of the run's vault, checked against the host's before anything else (check mode
    too) and recorded with the files.  ``audit``: the run's audit context (``audit_log``), None
    when audit logging is off: each changed file is one line, after ``after_write`` succeeded.

    Returns ``changed``, ``files`` (path -> created|updated|mode|owner|removed|unchanged),
    ``changed_files``, ``removed_files``, ``created_directories`` and ``diff`` (before/after
    per changed file, secret values masked)."""
    root = os.path.abspath(root)
    if os.path.lexists(root) and not os.path.isdir(root):
        raise SyncError(f"{root}: exists and is not a directory")
    uid, gid = _resolve_owner(owner, group)
    lock = HostLock(root, run_id, lock_timeout, lease) if not check else None
    if lock is not None:
        _ensure_dir(root, directory_mode, False, [])
        lock.__enter__()
    failure = None
    try:
        new_generation = (check_generation(root, generation) if os.path.isdir(root)
                          else bool(generation and generation.get("number")))
        if before_write is not None:
            before_write()
        result = _sync_locked(root, files, check, uid, gid, directory_mode, run_id, record_run,
                              after_write, first, after_first,
                              generation if new_generation else None, lease, audit)
        if lock is not None and lock.broken:
            result["broke_lease"] = lock.broken
        return result
    except BaseException as exc:
        failure = exc
        raise
    finally:
        if lock is not None:
            lock.__exit__(type(failure) if failure else None, None, None)


def _sync_locked(root, files, check, uid, gid, directory_mode, run_id, record_run,
                 after_write, first=None, after_first=None, generation=None,
                 lease=None, audit=None) -> dict:
    state = read_state(root)
    wanted = {}
    for spec in files:                  # every check before the first write
        wanted[os.path.normpath(spec["path"])] = (_preflight(root, spec["path"]), spec)
    stale = sorted(p for p in state.get("files", []) if isinstance(p, str) and p not in wanted)
    stale = [(p, path) for p in stale
             if os.path.isfile(path := _preflight(root, p)) and not os.path.islink(path)]

    states, diffs, created_dirs, writes = {}, [], [], []
    for rel, (path, spec) in sorted(wanted.items()):
        data, mode = spec["content"].encode("utf-8"), spec["mode"]
        st, before = _read(path)
        same_owner = st is not None and (st.st_uid, st.st_gid) == (uid, gid)
        if before == data and stat.S_IMODE(st.st_mode) == mode and same_owner:
            states[rel] = "unchanged"
            continue
        states[rel] = ("created" if st is None else "updated" if before != data else
                       "mode" if same_owner else "owner")
        writes.append((path, data, mode, st, before))
        diffs.append(_diff(path, st, before, data, spec, mode))
    for rel, path in stale:
        st, before = _read(path)
        states[rel] = "removed"
        diffs.append(_diff(path, st, before, None, {"mask": "all"}, 0))
    for path, *_ in writes:
        _ensure_dir(os.path.dirname(path), directory_mode, True, created_dirs)

    changed_files = sorted(p for p, s in states.items() if s != "unchanged")
    result = {"changed": bool(changed_files) or generation is not None,
              "generation_recorded": generation is not None,
              "files": states, "changed_files": changed_files,
              "removed_files": [rel for rel, _ in stale],
              "created_directories": created_dirs, "diff": diffs,
              # the previous run's record: when, which run, who (flashmm-config status)
              "last_write": {k: state[k] for k in ("run_id", "written_at", "owner", "action",
                                                   "commit") if isinstance(state.get(k), str)}}
    if check:       # what drift shows: files in the root that no run of deploy wrote
        result["extra_files"] = _extra_files(root, set(wanted) | {rel for rel, _ in stale})
        return result

    done = []                           # (path, st, before) of what was written or removed
    first_path = _preflight(root, first) if first else None
    writes.sort(key=lambda w: w[0] != first_path)       # stable: the rest keep their order
    try:
        if after_first is not None and all(w[0] != first_path for w in writes):
            after_first()               # unchanged: still make sure it is loaded
        for path, data, mode, st, before in writes:
            _ensure_dir(os.path.dirname(path), directory_mode, False, [])
            done.append((path, st, before))
            if before == data:          # mode or owner only: a rename makes the owner ours
                os.chmod(path, mode)
                if (st.st_uid, st.st_gid) != (uid, gid):
                    write_atomic(path, data, mode, uid, gid)
            else:
                write_atomic(path, data, mode, uid, gid)
            if path == first_path and after_first is not None:
                after_first()
        for _, path in stale:
            st, before = _read(path)
            done.append((path, st, before))
            os.unlink(path)
        if changed_files or record_run or state.get("files") != sorted(wanted):
            record = {"files": sorted(wanted), "run_id": run_id,
                      "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            # who wrote them, doing what, with which toolkit (flashmm-config status shows it)
            record.update((k, lease[k]) for k in ("owner", "action", "commit")
                          if lease and lease.get(k))
            _ensure_dir(os.path.join(root, STATE_DIR), 0o700, False, [])
            write_atomic(os.path.join(root, STATE_FILE), json.dumps(record).encode(), 0o600)
        if generation is not None:
            path = os.path.join(root, GENERATION_FILE)
            done.append((path, *_read(path)))
            record_generation(root, generation)
        later = after_write() if after_write is not None else None
        # no change without its line: a log that cannot be written puts the files back
        if audit:
            audit_log.append(root, audit, _audit_lines(audit, wanted, writes, stale, states,
                                                       generation) + list(later or []))
    except BaseException:
        _roll_back(done)
        raise
    return result


def _audit_lines(audit, wanted, writes, stale, states, generation) -> list[dict]:
    """One audit line per changed file: its path and state and, for an environment file, the
    names of the variables whose values changed (never a value)."""
    before_of = {path: before for path, _, _, _, before in writes}
    lines = []
    for rel, (path, spec) in sorted(wanted.items()):
        if states.get(rel, "unchanged") == "unchanged":
            continue
        details = {"file": rel, "state": states[rel]}
        if spec.get("mask") == "env" and states[rel] in ("created", "updated"):
            old = _values((before_of.get(path) or b"").decode("utf-8", "replace"))
            new = _values(spec["content"])
            details.update(audit_log.names(k for k in set(old) | set(new)
                                           if old.get(k) != new.get(k)))
        lines.append(audit_log.entry(audit, "file", **details))
    lines.extend(audit_log.entry(audit, "file", file=rel, state="removed") for rel, _ in stale)
    if generation is not None:
        lines.append(audit_log.entry(audit, "secrets generation",
                                     generation=generation.get("number")))
    return lines


MAX_EXTRA = 100


def _extra_files(root: str, known: set) -> list[str]:
    """Paths under ``root`` (not ``.flashmm/``) that are in no run's list: put there by hand or
    by something else; at most MAX_EXTRA, sorted.  Directories are not followed into symlinks."""
    found = []
    if not os.path.isdir(root):
        return found
    for top, dirs, names in os.walk(root):
        rel_top = os.path.relpath(top, root)
        if rel_top == ".":
            dirs[:] = [d for d in dirs if d != STATE_DIR]
        dirs.sort()
        for name in sorted(names):
            rel = os.path.normpath(os.path.join(rel_top, name))
            if rel not in known:
                found.append(rel)
                if len(found) >= MAX_EXTRA:
                    return sorted(found)
    return sorted(found)


def _roll_back(done) -> None:
    """Put back what a failed call wrote or removed, newest first; best effort."""
    for path, st, before in reversed(done):
        try:
            if before is None:
                os.unlink(path)
            else:
                write_atomic(path, before, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        except OSError:
            pass

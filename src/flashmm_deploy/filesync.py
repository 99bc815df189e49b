"""Converge a set of files under one root in a single pass: atomic writes, stated modes, a
per-file diff with secret values masked, and a check mode that writes nothing.

Stdlib only, no relative imports: Ansible ships this file to target hosts as
``module_utils/flashmm_filesync.py`` (a symlink) for ``library/flashmm_files.py``.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile

# An assignment as a hand-edited .env may hold it: an optional comment mark, "export", spaces
# around "=".  Groups: the prefix up to and including "=", the key, the raw value.
_ASSIGNMENT = re.compile(r"(\s*(?:#\s*)?(?:export\s+)?([^=\s#]+)\s*=)\s*(.*)")
MASK = "'<redacted>'"
MASK_CHANGED = "'<redacted, changed>'"
UNPARSED = "# <line redacted: not a KEY=value assignment>"
HIDDEN = "# <content hidden: holds secrets>\n"
HIDDEN_CHANGED = "# <content hidden: holds secrets; changed>\n"


class SyncError(Exception):
    pass


def _values(text: str) -> dict[str, str]:
    """key -> raw value of the live (uncommented) assignments; the last one wins, as in dotenv."""
    out = {}
    for line in text.split("\n"):
        m = _ASSIGNMENT.match(line)
        if m and not line.lstrip().startswith("#"):
            out[m.group(2)] = m.group(3)
    return out


def mask_env(text: str, names, other: str | None = None, reveal=None) -> str:
    """``text`` with secret values replaced by ``'<redacted>'``: those of ``names`` and, when
    ``reveal`` is given, of every key not in it (in a hand-edited file an unknown key may be a
    secret too, and a line that is no assignment is redacted whole).  A quoted value spanning
    lines is masked whole.  With ``other``, a masked value that differs from the same key's
    value there is marked ``'<redacted, changed>'``, so a diff still says *that* it changed."""
    hidden = set(names)
    theirs = _values(other) if other is not None else None
    out, quote = [], None            # quote: the one still open on a multi-line masked value
    for line in text.split("\n"):
        if quote is not None:
            if re.search(r"(?<!\\)" + quote, line):
                quote = None
            continue
        m = _ASSIGNMENT.match(line)
        if m is None:
            unparsed = reveal is not None and line.strip() and not line.lstrip().startswith("#")
            out.append(UNPARSED if unparsed else line)
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


def _resolve_owner(owner, group) -> tuple[int, int]:
    uid = gid = -1
    if owner not in (None, ""):
        import pwd
        uid = int(owner) if str(owner).isdigit() else pwd.getpwnam(owner).pw_uid
    if group not in (None, ""):
        import grp
        gid = int(group) if str(group).isdigit() else grp.getgrnam(group).gr_gid
    return uid, gid


def write_atomic(path, data: bytes, mode: int, uid: int = -1, gid: int = -1) -> None:
    """Temporary file in the same directory, mode (and owner) set before any byte is written,
    fsync, rename: readers see the old file or the new one, never a part."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.")
    try:
        os.fchmod(fd, mode)             # restrictive before the first byte is written
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def sync(root: str, files: list[dict], *, check: bool = False, owner=None, group=None,
         directory_mode: int = 0o755) -> dict:
    """Converge ``files`` (dicts: path relative to root, content str, mode int; ``mask`` "env"
    with ``mask_keys``, or "all") under ``root``.  Returns ``changed``, ``files`` (path ->
    created|updated|mode|unchanged),
    ``changed_files`` and ``diff`` (a list of before/after dicts, secret values masked)."""
    root = os.path.abspath(root)
    uid, gid = _resolve_owner(owner, group)
    states, diffs, created_dirs = {}, [], []
    for spec in sorted(files, key=lambda f: f["path"]):
        rel = os.path.normpath(spec["path"])
        if rel.startswith("..") or os.path.isabs(rel):
            raise SyncError(f"{spec['path']}: must be a relative path inside {root}")
        path = os.path.join(root, rel)
        data = spec["content"].encode("utf-8")
        mode = spec["mode"]
        before = None
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                raise SyncError(f"{path}: exists and is not a regular file")
            with open(path, "rb") as fh:
                before = fh.read()
        except FileNotFoundError:
            st = None
        owner_ok = st is not None and (uid in (-1, st.st_uid)) and (gid in (-1, st.st_gid))
        if before == data and st is not None and stat.S_IMODE(st.st_mode) == mode and owner_ok:
            states[rel] = "unchanged"
            continue
        states[rel] = "created" if st is None else ("updated" if before != data else "mode")
        _ensure_dir(os.path.dirname(path), directory_mode, check, created_dirs)
        if not check:
            if before == data:
                os.chmod(path, mode)
                if uid != -1 or gid != -1:
                    os.chown(path, uid, gid)
            else:
                write_atomic(path, data, mode, uid, gid)
        old_text = before.decode("utf-8", "replace") if before is not None else ""
        new_text = spec["content"]
        # mask_keys alone means a secret KEY=value file too: never show a secret by omission
        mask = spec.get("mask") or ("env" if "mask_keys" in spec else None)
        if mask == "env":     # a secret file: show only values of known non-secret keys
            keys = spec.get("mask_keys") or []
            reveal = set(_values(new_text)) - set(keys)
            old_text, new_text = (mask_env(old_text, keys, reveal=reveal),
                                  mask_env(new_text, keys, old_text, reveal))
        elif mask == "all":   # nothing of it is shown, only that it changed
            old_text = HIDDEN if before is not None else ""
            new_text = HIDDEN if before == data else HIDDEN_CHANGED
        diffs.append({
            "before_header": path if st is not None else "(absent)",
            "after_header": f"{path} (mode {mode:04o})",
            "before": old_text,
            "after": new_text,
        })
    changed_files = sorted(p for p, s in states.items() if s != "unchanged")
    return {"changed": bool(changed_files), "files": states, "changed_files": changed_files,
            "created_directories": created_dirs, "diff": diffs}

"""Callback plugin: keeps the module payloads Ansible builds (AnsiballZ) between runs of this
checkout, in ``.state/ansiballz``, so that a run loads them instead of building each module
again.  The logic is ``flashmm_deploy.plan.module_cache``; enabled in ansible.cfg
(callbacks_enabled)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: flashmm_module_cache
type: aggregate
short_description: Keeps Ansible's module payloads between runs of this checkout
description:
  - >-
    Ansible builds every module a run calls into a payload (the module and the module_utils
    it imports, ~0.1 s of controller CPU each) and keeps it only until the run ends. This
    plugin links the run's payload cache to C(.state/ansiballz/<fingerprint>) in the checkout,
    so a later run loads it.
  - >-
    The fingerprint covers the Ansible and Python versions, every Python file in the module
    and module_utils paths, and each collection's manifest (its Python files when it has
    none): changed code is built again. Unused fingerprints are removed after a day (the
    newest four are kept). After editing a file inside an installed collection, remove
    C(.state/ansiballz).
  - >-
    A damaged entry is removed and built again; with less than 64 MiB free on its disk the
    store is not used. Any failure leaves the run as Ansible makes it, with a message at
    -vvv.
  - >-
    Environment C(FLASHMM_MODULE_CACHE): another directory for the store (its mode is left
    as it is, and nothing in it but the fingerprint directories is ever removed), or C(off)
    (or empty) for none. A fingerprint directory that is not this user's, or that others
    may write to, is not used (Ansible unpickles what it holds).
requirements:
  - enabled in ansible.cfg (callbacks_enabled = flashmm_module_cache)
"""

import os  # noqa: E402  (after DOCUMENTATION, as Ansible plugins put it)
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from ansible import constants as C  # noqa: E402
from ansible.executor.module_common import _CachedModule  # noqa: E402  (what Ansible stores)
from ansible.plugins.callback import CallbackBase  # noqa: E402
from ansible.release import __version__ as ansible_version  # noqa: E402

from flashmm_deploy.core.paths import project_root  # noqa: E402
from flashmm_deploy.plan import module_cache  # noqa: E402


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "flashmm_module_cache"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        # Loaded in the controller's main process before any worker forks: the workers build
        # the payloads, into the directory linked here.
        super().__init__(*args, **kwargs)
        store = os.environ.get("FLASHMM_MODULE_CACHE", str(project_root() / ".state" / "ansiballz"))
        if store in ("", "off"):
            self._display.vvv("flashmm_module_cache: off (FLASHMM_MODULE_CACHE)")
            return
        try:
            collections = [*C.COLLECTIONS_PATHS, *(sys.path if C.COLLECTIONS_SCAN_SYS_PATH else ())]
            key = module_cache.fingerprint(
                [*C.DEFAULT_MODULE_PATH, *C.DEFAULT_MODULE_UTILS_PATH], [p for p in collections if p],
                extra=(ansible_version, sys.version))
            where = module_cache.attach(C.DEFAULT_LOCAL_TMP, Path(store), key,
                                        check=_CachedModule.load)
            self._display.vvv(f"flashmm_module_cache: module payloads in {where}")
        except Exception as exc:  # noqa: BLE001  (a cache never breaks a run)
            self._display.vvv(f"flashmm_module_cache: not used ({type(exc).__name__}: {exc})")

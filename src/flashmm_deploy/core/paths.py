"""Where things are: the project root (the checkout holding ``roles/``, ``playbooks/`` and
``.git``) and paths as messages show them.

A leaf module (standard library only, no import from this package), so that every layer may
import it.  The one place that knows where this file sits in the checkout.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def project_root() -> Path:
    """The checkout this package is imported from (this file is ``src/flashmm_deploy/core/paths.py``
    in it)."""
    return Path(__file__).resolve().parents[3]


def display_path(path: Path) -> str:
    """A path relative to the working directory when below it (errors stay short and
    machine-independent), else absolute."""
    return _display_path(Path(path), os.getcwd())


@lru_cache(maxsize=4096)
def _display_path(path: Path, cwd: str) -> str:     # resolve() is slow: once per path
    try:
        return str(path.resolve().relative_to(Path(cwd).resolve()))
    except ValueError:
        return str(path)

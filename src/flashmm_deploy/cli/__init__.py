"""``flashmm-config``, the command line (entry point ``flashmm_deploy.cli:main``): ``app`` parses
and dispatches, ``common`` is what every command module shares, and one module a command group.
``main`` imports ``app`` when called, so importing a command module does not load them all."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from flashmm_deploy.cli.app import main as run

    return run(argv)

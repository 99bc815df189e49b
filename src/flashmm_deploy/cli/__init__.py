"""``flashmm-config``, the command line (entry point ``flashmm_deploy.cli.app:main``): ``app``
parses and dispatches, ``common`` is what every command module shares, and one module a command
group.  Empty on purpose: importing a command module loads only what it imports."""

# Over 350 lines: the parser and the small commands; the command groups have modules.
"""``flashmm-config``: validate, explain and diff inventories without running Ansible.

Exit codes: 0 valid / done, 1 invalid configuration (or stale docs with ``docs --check``),
2 usage error (bad arguments, unreadable inventory, unknown host or key).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

# Each command imports what only it uses (docs, the plan, secret generation, the backup code):
# a `validate` process should not pay for the others (`python -X importtime`).
from flashmm_deploy.cli import (audit as cli_audit, backup as cli_backup, drift as cli_drift,
                                runtime as cli_runtime)
from flashmm_deploy.inventory import host_validation
from flashmm_deploy.cli.common import (EXIT_INVALID, EXIT_OK, EXIT_USAGE, UsageError, load_inventory,
                                       select_hosts, vault_keys)
from flashmm_deploy.core.errors import FlashmmError, format_issues
from flashmm_deploy.core.paths import display_path
from flashmm_deploy.config.layers import did_you_mean, shown
from flashmm_deploy.config.schema import FIELDS

# the names the commands here use for cli.common's shared pieces
_vault_keys, _inventory, _hosts = vault_keys, load_inventory, select_hosts


def _say_closed_vaults(inv) -> None:
    """Which vault stayed closed, and the option that opens it (its secrets are then
    reported as not available)."""
    for where, vault_id in inv.closed_vaults.items():
        name = vault_id or "ENV"
        print(f"{where}: not opened (encrypted{f' for vault id {vault_id!r}' if vault_id else ''}"
              f"; give --vault-id {name}@FILE or {name}@prompt)", file=sys.stderr)


def cmd_validate(args) -> int:
    status = EXIT_OK
    for path in args.inventory:
        inv = _inventory(args, path)
        if not inv.hosts:
            print(f"{path}: INVALID: the inventory has no hosts "
                  f"({display_path(inv.hosts_file)})", file=sys.stderr)
            status = EXIT_INVALID
            continue
        results = host_validation.validate_inventory(inv, _hosts(inv, args.host),
                                         require_secrets=args.require_secrets,
                                         runtime_url=args.redis)
        _check_settings(inv, results)
        if not args.quiet:
            _say_closed_vaults(inv)
        warnings = {h: r.warnings for h, r in results.items() if r.warnings}
        errors = {h: r.errors for h, r in results.items() if r.errors}
        if warnings and not args.quiet:
            print(format_issues(warnings, f"{path}: warning"), file=sys.stderr)
        if errors:
            print(format_issues(errors, f"{path}: INVALID"), file=sys.stderr)
            status = EXIT_INVALID
        else:
            print(f"{path}: {len(results)} host(s) valid"
                  + (f" ({sum(map(len, warnings.values()))} warning(s))" if warnings else ""))
    return status


def _check_settings(inv, results) -> None:
    """A deploy's checks of role variables, roots and host names, added to ``results``."""
    from flashmm_deploy.plan import host_checks
    from flashmm_deploy.config import role_settings

    specs = role_settings.project_specs()
    if specs is None:
        return
    issues: dict[str, list] = {}
    all_results = {h: results.get(h) or host_validation.validate_host(inv, h) for h in inv.hosts}
    inputs = host_checks.inputs_from_inventory(inv)
    host_checks.check_settings(inputs, all_results, specs, issues)
    for host, result in results.items():
        # what only Ansible can evaluate, checked where its result is already certain
        found = issues.get(host, []) + host_validation.unevaluated_issues(inv, host)
        # unknown flashmm_* variables: validate_host reported them already
        new = [issue for issue in found if issue not in result.errors]
        if new:
            result.errors.extend(new)
            result.config = None


def cmd_explain(args) -> int:
    from flashmm_deploy.config import effective

    if args.key not in FIELDS:
        raise UsageError(f"{args.key}: unknown key{did_you_mean(args.key)}")
    inv = _inventory(args, args.inventory)
    host = _hosts(inv, args.host)[0]
    result = host_validation.validate_host(inv, host, runtime_url=args.redis)
    info = effective.explain(result.resolution, args.key)
    if args.json:
        print(json.dumps({"host": host, **info}, indent=2))
    else:
        print(f"{info['key']} = {json.dumps(info['value'])}   (host {host}, env {info['env']})")
        print(f"  from layer '{info['layer']}', {info['source']}")
        for s in reversed(info["shadowed"]):
            print(f"  shadows {json.dumps(s['value'])} from layer '{s['layer']}', {s['source']}")
        if info["runtime_overridable"]:
            print(f"  runtime-overridable in Redis as {FIELDS[args.key].redis_key}")
    if result.errors:
        print(format_issues({host: result.errors}, "note: this host's configuration is INVALID"),
              file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


def _flat_effective(inv, host: str) -> tuple[dict[str, Any] | None, Any]:
    from flashmm_deploy.config import effective

    result = host_validation.validate_host(inv, host)
    if result.errors:
        return None, result
    cfg = effective.effective(result.config, redact=False)
    flat = {}
    for path in FIELDS:
        node: Any = cfg
        for part in path.split("."):
            node = node[part]
        flat[path] = node
    return flat, result


def cmd_diff(args) -> int:
    inv_a, inv_b = _inventory(args, args.inventory_a), _inventory(args, args.inventory_b)
    host_a, host_b = _hosts(inv_a, args.host_a)[0], _hosts(inv_b, args.host_b)[0]
    a, ra = _flat_effective(inv_a, host_a)
    b, rb = _flat_effective(inv_b, host_b)
    for flat, res, path, host in ((a, ra, args.inventory_a, host_a), (b, rb, args.inventory_b, host_b)):
        if flat is None:
            print(format_issues({host: res.errors}, f"{path}: INVALID"), file=sys.stderr)
    if a is None or b is None:
        return EXIT_INVALID
    print(f"--- {args.inventory_a} ({host_a})\n+++ {args.inventory_b} ({host_b})")
    count = 0
    for path in FIELDS:
        if a[path] != b[path]:
            count += 1
            if FIELDS[path].secret:   # say that a secret differs, never what it is
                print(f"  {path}: {shown(path, a[path])} -> {shown(path, b[path])} (differs)")
            else:
                print(f"  {path}: {json.dumps(a[path])} -> {json.dumps(b[path])}")
    print(f"{count} key(s) differ")
    return EXIT_OK


def cmd_docs(args) -> int:
    """Every problem with the root or a file is a usage error naming the path (an unreadable
    or unwritable file, a root that is no directory); each file is replaced atomically."""
    from flashmm_deploy.config import docs
    from flashmm_deploy.hostside import filesync

    root = Path(args.root)
    if not root.is_dir():
        what = "does not exist" if not root.exists() and not root.is_symlink() else \
            "is not a directory"
        raise UsageError(f"--root {display_path(root)}: {what}; it names the project root, "
                         "where .env.example and docs/ are written")
    stale = []
    for rel, make in docs.GENERATED.items():
        target = root / rel
        try:
            current = target.read_text(encoding="utf-8") if target.is_file() else None
        except (OSError, UnicodeDecodeError) as exc:
            if args.check:          # unreadable is stale: --check writes nothing
                current = None
            else:
                raise UsageError(f"{display_path(target)}: cannot read it "
                                 f"({getattr(exc, 'strerror', None) or exc.reason})") from None
        try:
            text = make(current)
        except docs.SectionMissing as exc:
            if not args.check:      # a hand-written file: never rewritten without its markers
                raise UsageError(f"{display_path(target)}: {exc}") from None
            stale.append(rel)
            continue
        if text is None or current == text:     # absent hand-written file, or fresh
            continue
        stale.append(rel)
        if not args.check:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                filesync.write_atomic(target, text.encode("utf-8"), 0o644)
            except OSError as exc:
                where = Path(exc.filename) if exc.filename else target
                detail = f": {display_path(where)}" if where in target.parents else ""
                raise UsageError(f"{display_path(target)}: cannot write it "
                                 f"({exc.strerror}{detail})") from None
    if args.check and stale:
        print(f"stale generated files: {', '.join(stale)}; run `flashmm-config docs`", file=sys.stderr)
        return EXIT_INVALID
    print("up to date" if not stale else f"wrote {', '.join(stale)}")
    return EXIT_OK


def cmd_secrets(args) -> int:
    """init: a new encrypted vault (``--replace`` starts an existing one over); generate: add
    the missing generatable secrets to it.  Names are printed, never values."""
    from flashmm_deploy.secrets import secret_gen

    inv = _inventory(args, args.inventory)
    create = args.secrets_command == "init"
    replace = create and args.replace
    vault = inv.path / "group_vars" / "all" / "vault.yml"
    if replace and (vault.exists() or vault.is_symlink()):
        print(secret_gen.replace_warning(inv, vault), file=sys.stderr)
        if not (args.yes or _confirmed("Replace it anyway? Type 'replace' to confirm: ",
                                       "replace")):
            raise UsageError(f"{display_path(vault)}: not replaced, nothing changed (give --yes "
                             "to replace it without a question)")
    change = secret_gen.update_vault(inv, _vault_keys(args), create=create, replace=replace)
    print(change.summary())
    return EXIT_OK


def _confirmed(question: str, answer: str) -> bool:
    """The operator typed ``answer`` at a terminal; False without one (stdin not a TTY)."""
    if not sys.stdin.isatty():
        return False
    try:
        print(question, end="", file=sys.stderr, flush=True)
        return sys.stdin.readline().strip() == answer
    except OSError:
        return False


def cmd_secrets_set(args) -> int:
    """set: one third-party key into the vault, its value read from stdin (a pipe or a file)
    or a prompt, never from the command line; as data (a template is refused, never run)."""
    from flashmm_deploy.secrets import rotation

    inv = _inventory(args, args.inventory)
    path = Path(inv.path) / "group_vars" / "all" / "vault.yml"
    rotation.check_settable(args.name)                  # before a value is asked for
    if sys.stdin.isatty():
        import getpass

        value = getpass.getpass(f"new value of {args.name}: ")
        if getpass.getpass(f"{args.name} again: ") != value:
            raise UsageError(f"{args.name}: the two values differ (nothing changed)")
    else:
        value = sys.stdin.read()
        value = value[:-2] if value.endswith("\r\n") else value.removesuffix("\n")
    changed = rotation.set_api_key(path, _vault_keys(args), args.name, value)
    print(f"{args.name}: {'set' if changed else 'unchanged'} in {display_path(path)}"
          + (f"; roll it to the hosts: ansible-playbook playbooks/rotate_secrets.yml -i "
             f"{args.inventory} -e rotate=api" if changed else ""))
    return EXIT_OK


REDIS_HELP = ("include the live runtime layer (flashmm:config:* keys) of this Redis database, "
              "e.g. redis://127.0.0.1:6379/1")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flashmm-config", description=__doc__.split("\n")[0])
    p.add_argument("--vault-id", action="append", default=[], metavar="ENV@SOURCE",
                   help="a vault password as for ansible-playbook: ENV@FILE, ENV@prompt or "
                   "ENV@CLIENT-SCRIPT (repeatable; added to ansible.cfg's vault_identity_list)")
    p.add_argument("--vault-password-file", action="append", default=[], metavar="FILE",
                   help="a vault password file (repeatable; also $ANSIBLE_VAULT_PASSWORD_FILE)")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="validate every host of one or more inventories")
    v.add_argument("inventory", nargs="+")
    v.add_argument("--host")
    v.add_argument("--require-secrets", action="store_true",
                   help="missing or placeholder secrets are errors (as for deploy)")
    v.add_argument("-q", "--quiet", action="store_true", help="no warnings")
    v.add_argument("--redis", metavar="URL", help=REDIS_HELP)
    v.set_defaults(func=cmd_validate)

    e = sub.add_parser("explain", help="value of a key, the layer and file it came from")
    e.add_argument("inventory")
    e.add_argument("key", help="dotted key, e.g. trading.max_position_usdc")
    e.add_argument("--host")
    e.add_argument("--json", action="store_true")
    e.add_argument("--redis", metavar="URL", help=REDIS_HELP)
    e.set_defaults(func=cmd_explain)

    d = sub.add_parser("diff", help="effective-config diff of two inventories (secrets redacted)")
    d.add_argument("inventory_a")
    d.add_argument("inventory_b")
    d.add_argument("--host-a")
    d.add_argument("--host-b")
    d.set_defaults(func=cmd_diff)

    g = sub.add_parser("docs", help="write .env.example and docs/configuration.md")
    g.add_argument("--check", action="store_true", help="exit 1 if they are stale, write nothing")
    g.add_argument("--root", default=".", help="project root (default: .)")
    g.set_defaults(func=cmd_docs)

    s = sub.add_parser("secrets", help="the environment's vault: group_vars/all/vault.yml, "
                       "ansible-vault encrypted with the environment's vault id")
    ssub = s.add_subparsers(dest="secrets_command", required=True)
    si = ssub.add_parser("init", help="create the vault: generatable secrets generated, "
                         "placeholders for third-party ones")
    si.add_argument("inventory")
    si.add_argument("--replace", action="store_true",
                    help="start an existing vault over (every secret new; the old password "
                    "is not needed). Only for an environment no host runs yet: a live one "
                    "rotates its secrets (playbooks/rotate_secrets.yml)")
    si.add_argument("--yes", action="store_true",
                    help="with --replace: replace an existing vault without asking")
    si.set_defaults(func=cmd_secrets)
    sg = ssub.add_parser("generate", help="add the missing generatable secrets (others kept; "
                         "a plain-text vault is encrypted)")
    sg.add_argument("inventory")
    sg.set_defaults(func=cmd_secrets)
    ss = ssub.add_parser("set", help="put a new third-party key (e.g. cambrian_api_key) into "
                         "the vault; its value from stdin or a prompt, never an argument")
    ss.add_argument("inventory")
    ss.add_argument("name", help="the key, as in flashmm_secrets (cambrian_api_key, ...)")
    ss.set_defaults(func=cmd_secrets_set)
    cli_backup.register(sub)            # backup list|verify|show, export-k8s
    cli_runtime.register(sub)           # runtime get|list|set|unset|watch
    cli_drift.register(sub)             # drift (playbooks/drift.yml, as a table)
    cli_audit.register(sub)             # audit (playbooks/audit.yml, merged in time order)
    return p


@functools.cache
def _built_parser() -> argparse.ArgumentParser:
    """One parser per process: building it costs more than most commands (argparse looks up
    gettext catalogues for every help string), and ``main`` may run many times in one process
    (the tests, a shell loop through ``python -c``).  Parsing leaves a parser unchanged."""
    return parser()


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 invalid, 2 usage or unreadable input; never a traceback.  An
    error we did not foresee is named by its type only: its text could hold a value."""
    try:
        args = _built_parser().parse_args(argv)
    except SystemExit as exc:            # argparse: 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    try:
        return args.func(args)
    except (UsageError, FlashmmError) as exc:
        print(f"flashmm-config: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:              # `flashmm-config explain ... | head`: not an error
        _quiet_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence against a traceback
        if os.environ.get("FLASHMM_DEBUG"):
            raise
        print(f"flashmm-config: internal error ({type(exc).__name__}); run again with "
              "FLASHMM_DEBUG=1 for the traceback, and report it", file=sys.stderr)
        return EXIT_USAGE


def _quiet_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so Python's final flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())

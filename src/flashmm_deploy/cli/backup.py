# Over 350 lines: backup list|verify|show and export-k8s, one short function a command.
"""``flashmm-config backup list|verify|show`` and ``flashmm-config export-k8s``: the backups of an
inventory's environment (``playbooks/backup.yml`` writes them), without running Ansible.

The backup directory is ``--backup-dir``, else the inventory's ``flashmm_backup_dir``, else
``backups/`` in the project root: the playbooks' own rule.  Nothing here prints a secret:
``show`` masks secret values in its diffs and says only *that* a secret differs.
Every command that reads a backup verifies it first (signatures included: a backup edited
without the vault password is refused, naming the file); ``--accept-unsigned`` admits a backup
of format 1, taken before backups were signed.
"""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path
from typing import Any

from flashmm_deploy.cli import common as cli_common
from flashmm_deploy.core.paths import display_path, project_root
from flashmm_deploy.redis.keys import CONFIG_PREFIX
from flashmm_deploy.core.values import is_template

# The backup code (backup_store and what it needs: cryptography, git) is imported by the commands
# that use it: every flashmm-config process builds this module's parsers, and `validate` must
# not pay for them.

EXTRA_SECRET_NAMES = ("REDIS_URL", "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN",
                      "DOCKER_INFLUXDB_INIT_PASSWORD")



def _env_dir(args, inv) -> tuple[Path, str]:
    from flashmm_deploy.backup import backup_store
    from flashmm_deploy.secrets.secret_gen import environment_of

    env = environment_of(inv)
    setting = args.backup_dir
    if setting is None and inv.hosts:
        setting = inv.host_variables(inv.hosts[0]).get("flashmm_backup_dir")
        if isinstance(setting, str) and is_template(setting):
            setting = None
    return backup_store.backups_dir(setting) / env, env


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_list(args) -> int:
    from flashmm_deploy.backup import backup_store
    from flashmm_deploy.backup.backup_store import BackupError

    cli = cli_common
    inv = cli.load_inventory(args, args.inventory)
    env_dir, env = _env_dir(args, inv)
    backups = backup_store.list_backups(env_dir)
    _say_incomplete(env_dir)
    if not backups:
        print(f"{display_path(env_dir)}: no backup of environment {env!r}")
        return cli.EXIT_OK
    keys = cli.vault_keys(args)
    status = cli.EXIT_OK
    print(f"{'backup id':<20} {'created (UTC)':<20} {'hosts':>5} {'size':>10}  "
          f"{'config version':<16} {'#':>5}  verify")
    for b in backups:          # oldest first, by sequence (not by the clock)
        versions = sorted({str(h.get("config_version")) for h in b.hosts.values()
                           if isinstance(h, dict)})
        if args.no_verify:
            verdict = "not checked" if b.signed else "not checked (unsigned)"
        else:
            try:
                backup_store.verify(env_dir, b.backup_id, keys, environment=env,
                                    accept_unsigned=args.accept_unsigned)
                verdict = "ok" if b.signed else "ok (unsigned, accepted)"
            except backup_store.BackupGone:
                verdict = "removed while listed (pruned by another run)"
            except BackupError as exc:
                verdict = f"FAILED ({str(exc).count(chr(10))} problem(s); see backup verify)"
                status = cli.EXIT_INVALID
        seq = str(b.sequence) if b.sequence is not None else "-"
        print(f"{b.backup_id:<20} {b.created[:19]:<20} {len(b.hosts):>5} "
              f"{_size(b.size):>10}  {','.join(versions):<16} {seq:>5}  {verdict}")
        if args.hosts:
            print(f"  hosts: {', '.join(sorted(b.hosts))}")
    return status


def _say_incomplete(env_dir: Path) -> None:
    """Name what is not a complete backup (skipped by list and verify), on stderr."""
    from flashmm_deploy.backup import backup_store

    for name, why in backup_store.incomplete(env_dir):
        print(f"{display_path(env_dir / name)}: skipped, not a complete backup ({why})",
              file=sys.stderr)


def cmd_verify(args) -> int:
    from flashmm_deploy.backup import backup_store
    from flashmm_deploy.backup.backup_store import BackupError

    cli = cli_common
    inv = cli.load_inventory(args, args.inventory)
    env_dir, env = _env_dir(args, inv)
    ids = ([backup_store.resolve_id(env_dir, args.backup_id)] if args.backup_id
           else [b.backup_id for b in backup_store.list_backups(env_dir)])
    if not args.backup_id:
        _say_incomplete(env_dir)
    if not ids:
        raise BackupError(f"{display_path(env_dir)}: no backup of environment {env!r}")
    keys = cli.vault_keys(args)
    status = cli.EXIT_OK
    for backup_id in ids:
        try:
            checked = backup_store.verify(env_dir, backup_id, keys, environment=env,
                                          hosts=[args.host] if args.host else None,
                                          accept_unsigned=args.accept_unsigned)
        except backup_store.BackupGone as exc:
            if args.backup_id:          # the one asked for
                print(f"{exc}", file=sys.stderr)
                status = cli.EXIT_INVALID
            else:
                print(f"backup {backup_id}: removed while verifying (pruned by another run); "
                      "skipped", file=sys.stderr)
            continue
        except BackupError as exc:
            print(f"{exc}", file=sys.stderr)
            status = cli.EXIT_INVALID
            continue
        files = sum(len(h.files) for h in checked.hosts.values())
        keys_n = sum(len(h.redis) for h in checked.hosts.values())
        missing = sorted(set(inv.hosts) - set(checked.index["hosts"]))
        extra = sorted(set(checked.index["hosts"]) - set(inv.hosts))
        note = ""
        if missing or extra:
            note = (f"; hosts differ from the inventory's (not in the backup: "
                    f"{', '.join(missing) or '-'}; not in the inventory: {', '.join(extra) or '-'})")
        how = ("signatures, sums and decryption checked" if checked.signed else
               "UNSIGNED (accepted with --accept-unsigned): sums and decryption checked")
        print(f"backup {backup_id}: ok ({len(checked.hosts)} host(s), {files} file(s), "
              f"{keys_n} Redis key(s), {how}){note}")
    return status


# ---- show: a backup against the inventory's current rendering --------------------------------

def current_rendering(inv) -> tuple[dict[str, Any], dict[str, Any], dict[str, set[str]]]:
    """The controller pass over our own inventory reader: (plan fact, host -> the secrets the
    host's .env would get, host -> variables only Ansible can evaluate)."""
    from flashmm_deploy.inventory import host_validation
    from flashmm_deploy.plan import host_checks, plan
    from flashmm_deploy.render import render
    from flashmm_deploy.config import role_settings
    from flashmm_deploy.secrets import secret_files
    from flashmm_deploy.backup.backup_store import BackupError

    roles = project_root() / "roles"
    specs = role_settings.project_specs()
    if specs is None:
        raise BackupError("show needs the project's roles (run it from a checkout)")
    templates = render.Templates({name: (roles / role / "templates" / src).read_text("utf-8")
                                  for name, (role, src) in plan.TEMPLATES.items()})
    inputs = host_checks.inputs_from_inventory(inv)
    variables = {}
    for host, given in inputs.items():
        variables[host] = inv.host_variables(host)
        given.layer_vars = host_validation.layer_vars(
            {**variables[host], "inventory_dir": str(inv.path)})
    built = plan.build(inputs, role_specs=specs, templates=templates, require_secrets=False)
    fact = built.fact()
    secrets = {h: secret_files.pick_secrets(fact["secret_env"], variables[h].get("flashmm_secrets"),
                                            variables[h].get("flashmm_env_overrides"))
               for h in inputs}
    return fact, secrets, {h: set(i.unevaluated) for h, i in inputs.items()}


def _unified(a: str, b: str, name: str) -> list[str]:
    return list(difflib.unified_diff(a.splitlines(keepends=True), b.splitlines(keepends=True),
                                     f"backup: {name}", f"inventory: {name}"))


def _current_files(fact, secrets, host) -> dict[str, tuple[str, bool]]:
    from flashmm_deploy.secrets import secret_files

    hp = fact["hosts"][host]
    out = {f["path"]: (f["content"], bool(f.get("mask"))) for f in hp["files"]}
    out.update((f["path"], (f["content"], True))
               for f in secret_files.host_secret_files(hp, fact["secret_env"], secrets))
    return out


def cmd_show(args) -> int:
    from flashmm_deploy.backup import backup_store
    from flashmm_deploy.backup.backup_store import BackupError
    from flashmm_deploy.hostside.filesync import mask_env

    cli = cli_common
    inv = cli.load_inventory(args, args.inventory)
    env_dir, env = _env_dir(args, inv)
    backup_id = backup_store.resolve_id(env_dir, args.backup_id)
    keys = cli.vault_keys(args)
    hosts = [args.host] if args.host else None
    try:
        checked = backup_store.verify(env_dir, backup_id, keys, environment=env, hosts=hosts,
                                      accept_unsigned=args.accept_unsigned)
    except BackupError as exc:          # as verify: a backup refused is exit 1
        print(f"{exc}", file=sys.stderr)
        return cli.EXIT_INVALID
    index = checked.index
    print(f"backup {backup_id} of environment {env}: taken {index.get('created')}, toolkit "
          f"{(index.get('toolkit') or {}).get('version')} at commit "
          f"{((index.get('toolkit') or {}).get('commit') or '?')[:12]}; verified")
    fact, secrets, unevaluated = current_rendering(inv)
    names = set(fact["secret_env"]) | set(EXTRA_SECRET_NAMES)
    differing = 0
    for host, hb in sorted(checked.hosts.items()):
        m = hb.manifest
        print(f"\n== {host}: config version {m.get('config_version')}, {len(hb.files)} file(s), "
              f"{m['redis']['keys']} Redis key(s) + {m['redis']['secure_keys']} secure record(s)")
        if host not in fact["hosts"]:
            print("   not in the inventory: nothing to compare")
            continue
        current = _current_files(fact, secrets[host], host)
        skip_compose = any(v.startswith("flashmm_stack_") for v in unevaluated[host])
        for path in sorted(set(hb.files) | set(current)):
            if path == "docker-compose.yml" and skip_compose:
                print(f"   {path}: not compared (flashmm_stack_* variables are templates only "
                      "Ansible evaluates)")
                continue
            if path not in current:
                print(f"   {path}: in the backup, not rendered by the inventory (a deploy "
                      "would remove it)")
                differing += 1
                continue
            if path not in hb.files:
                print(f"   {path}: rendered by the inventory, not in the backup")
                differing += 1
                continue
            content, _, secret = hb.files[path]
            mine = content.decode("utf-8", "replace")
            theirs, _ = current[path]
            if mine == theirs:
                print(f"   {path}: same")
                continue
            differing += 1
            if secret and path.endswith(".env"):
                reveal_a = set(_keys(mine)) - names
                reveal_b = set(_keys(theirs)) - names
                diff = _unified(mask_env(mine, names, theirs, reveal_a),
                                mask_env(theirs, names, mine, reveal_b), path)
                print(f"   {path}: differs (secret values masked)")
                sys.stdout.writelines("     " + line if line.endswith("\n") else "     " + line + "\n"
                                      for line in diff)
            elif secret:
                print(f"   {path}: differs (holds secrets: content not shown)")
            else:
                print(f"   {path}: differs")
                sys.stdout.writelines("     " + line if line.endswith("\n") else "     " + line + "\n"
                                      for line in _unified(mine, theirs, path))
        desired = _desired_runtime(fact["hosts"][host])
        backed = {e["key"]: e for e in hb.redis if e["key"].startswith(CONFIG_PREFIX)}
        for key in sorted(set(desired) | set(backed)):
            have = backed.get(key)
            value = have["values"][0] if have and have["type"] == "string" else None
            if value != desired.get(key):
                differing += 1
                print(f"   redis {key}: backup {json.dumps(value)}, inventory "
                      f"{json.dumps(desired.get(key))}")
    print(f"\n{differing} difference(s) between the backup and the inventory's rendering")
    return cli.EXIT_OK


def _keys(text: str) -> list[str]:
    return [line.split("=", 1)[0].strip() for line in text.splitlines()
            if "=" in line and not line.lstrip().startswith("#")]


def _desired_runtime(host_plan) -> dict[str, str]:
    """The runtime keys the host's seed script would set (parsed from its DESIRED table)."""
    import re

    seed = next((f["content"] for f in host_plan["files"] if f["path"] == "redis/seed.lua"), "")
    out = {}
    for k, v in re.findall(r'^  \{("(?:[^"\\]|\\.)*"), ("(?:[^"\\]|\\.)*")\},$', seed, re.M):
        out[_lua_unquote(k)] = _lua_unquote(v)
    return out


def _lua_unquote(text: str) -> str:
    import re

    raw = re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1))), text[1:-1])
    return raw.encode("latin-1").decode("utf-8", "replace")


# ---- export-k8s ------------------------------------------------------------------------------

def cmd_export_k8s(args) -> int:
    from flashmm_deploy.backup import backup_store, restore_secrets
    from flashmm_deploy.render import k8s_export
    from flashmm_deploy.hostside.atomic_write import write_atomic
    from flashmm_deploy.backup.backup_store import BackupError

    cli = cli_common
    from flashmm_deploy.config import dotenv_file

    inv = cli.load_inventory(args, args.inventory)
    host = cli.select_hosts(inv, args.host)[0]
    if args.backup:
        env_dir, env = _env_dir(args, inv)
        backup_id = backup_store.resolve_id(env_dir, args.backup)
        hb = backup_store.verify(env_dir, backup_id, cli.vault_keys(args), environment=env,
                                 hosts=[host], accept_unsigned=args.accept_unsigned
                                 ).hosts[host]
        files = {p: c for p, (c, _, _) in hb.files.items()}
        source = f"backup {backup_id}"
    else:
        from flashmm_deploy.secrets.secret_gen import environment_of

        env = environment_of(inv)
        fact, secrets, _ = current_rendering(inv)
        current = _current_files(fact, secrets[host], host)
        files = {p: t.encode("utf-8") for p, (t, _) in current.items()}
        source = "inventory"
    config = {p[len("config/"):]: c for p, c in files.items() if p.startswith("config/")}
    if ".env" not in files:
        raise BackupError(f"{host}: no .env in the {source}")
    # compose secrets: the values of the app's secret files, not their paths
    env_vars = restore_secrets.with_app_secret_files(
        dotenv_file.parse(files[".env"].decode("utf-8")), files)
    objs = k8s_export.objects(host, env, config, env_vars, namespace=args.namespace,
                              source=source)
    text = k8s_export.to_yaml(objs)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        out = Path(args.output)
        write_atomic(out, text.encode("utf-8"), 0o600)
        print(f"{display_path(out)}: ConfigMap {objs[0]['metadata']['name']} "
              f"({len(config)} file(s)) and Secret {objs[1]['metadata']['name']} "
              f"({len(env_vars)} variable(s)) from the {source} (0600: it holds secrets)")
    return cli.EXIT_OK


def register(sub) -> None:
    """Add ``backup`` and ``export-k8s`` to the CLI's subcommands."""
    dir_help = ("backup directory (default: the inventory's flashmm_backup_dir, else backups/ "
                "in the project root)")
    unsigned_help = ("accept a backup taken before backups were signed (format 1), after "
                     "checking where it came from; every other check still applies")
    b = sub.add_parser("backup", help="backups of an environment: list, verify, show")
    bsub = b.add_subparsers(dest="backup_command", required=True)
    bl = bsub.add_parser("list", help="every complete backup: id, time, hosts, size, config "
                         "version, whether it verifies")
    bl.add_argument("inventory")
    bl.add_argument("--backup-dir", metavar="DIR", help=dir_help)
    bl.add_argument("--no-verify", action="store_true", help="do not verify (no vault needed)")
    bl.add_argument("--hosts", action="store_true", help="list each backup's hosts")
    bl.add_argument("--accept-unsigned", action="store_true", help=unsigned_help)
    bl.set_defaults(func=cmd_list)
    bv = bsub.add_parser("verify", help="check sums, sizes and decryption (exit 1 if a "
                         "backup fails)")
    bv.add_argument("inventory")
    bv.add_argument("backup_id", nargs="?", help="an id or latest (default: every backup)")
    bv.add_argument("--host")
    bv.add_argument("--backup-dir", metavar="DIR", help=dir_help)
    bv.add_argument("--accept-unsigned", action="store_true", help=unsigned_help)
    bv.set_defaults(func=cmd_verify)
    bs = bsub.add_parser("show", help="a backup against the inventory's current rendering "
                         "(secrets masked)")
    bs.add_argument("inventory")
    bs.add_argument("backup_id", help="an id or latest")
    bs.add_argument("--host")
    bs.add_argument("--backup-dir", metavar="DIR", help=dir_help)
    bs.add_argument("--accept-unsigned", action="store_true", help=unsigned_help)
    bs.set_defaults(func=cmd_show)

    k = sub.add_parser("export-k8s", help="a host's config files as a ConfigMap and its .env "
                       "as a Secret (YAML), from the inventory or a backup")
    k.add_argument("inventory")
    k.add_argument("--host", required=True)
    k.add_argument("--backup", metavar="ID", help="export this backup (an id or latest) "
                   "instead of the inventory's current rendering")
    k.add_argument("--namespace")
    k.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="file to write (0600: the Secret holds secrets); - for stdout")
    k.add_argument("--backup-dir", metavar="DIR", help=dir_help)
    k.add_argument("--accept-unsigned", action="store_true", help=unsigned_help)
    k.set_defaults(func=cmd_export_k8s)

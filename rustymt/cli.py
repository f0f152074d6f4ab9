"""The `rustymt` command.

    rustymt serve [--config FILE] [--data-dir DIR] [--listen HOST:PORT]
    rustymt init --data-dir DIR [--config FILE]
    rustymt token create --data-dir DIR --role ROLE [--tenant TENANT_ID] [--ttl SECONDS] [--config FILE]
    rustymt --version

Exit codes: 0 success (serve: stopped by SIGTERM/SIGINT), 1 internal error,
2 invalid configuration or command line (one line naming the key),
3 data directory / catalog / keys unusable, 4 listen address unavailable.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from rustymt import __version__, config
from rustymt.exitcodes import EXIT_CONFIG, EXIT_DATA_DIR, EXIT_FAILURE, EXIT_OK, StartupError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rustymt", description="multitenant database host (CDB of pluggable SQLite databases)")
    parser.add_argument("--version", action="version", version=f"rustymt {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    serve = commands.add_parser("serve", help="run the control-plane daemon in the foreground")
    serve.add_argument("--config", metavar="FILE", help="TOML configuration file")
    serve.add_argument("--data-dir", metavar="DIR", help="data directory (server.data_dir)")
    serve.add_argument("--listen", metavar="HOST:PORT", help="REST/GraphQL address (server.listen; port 0 = any free port)")

    init = commands.add_parser("init", help="create the data dir, catalog, signing keys and CDB row, then exit")
    init.add_argument("--data-dir", metavar="DIR", required=True)
    init.add_argument("--config", metavar="FILE")

    token = commands.add_parser("token", help="API tokens")
    token_commands = token.add_subparsers(dest="token_command", metavar="ACTION")
    token_commands.required = True
    create = token_commands.add_parser("create", help="print a signed JWT on stdout")
    create.add_argument("--data-dir", metavar="DIR", required=True)
    create.add_argument("--role", required=True, help="cdb_admin, tenant_admin, pdb_manager or monitor")
    create.add_argument("--tenant", metavar="TENANT_ID", help="scope the token to one tenant")
    create.add_argument("--ttl", metavar="SECONDS", type=int, help="lifetime (default auth.token_ttl_seconds)")
    create.add_argument("--config", metavar="FILE")
    return parser


def _settings(args: argparse.Namespace):
    overrides = {"server.data_dir": getattr(args, "data_dir", None), "server.listen": getattr(args, "listen", None)}
    settings = config.load(args.config, overrides=overrides)
    settings.config_path = os.path.abspath(args.config) if args.config else None  # engine instances read it too
    return settings


def _fail(message: str, code: int) -> int:
    print(f"rustymt: {message}", file=sys.stderr)
    return code


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def cmd_serve(args: argparse.Namespace) -> int:
    from rustymt import daemon

    settings = _settings(args)
    _setup_logging(settings.server.log_level)
    return daemon.run(settings)


def cmd_init(args: argparse.Namespace) -> int:
    from rustymt.daemon import prepare_data_dir

    settings = _settings(args)
    catalog = prepare_data_dir(settings)
    catalog.close()
    print(f"rustymt: data dir {os.path.abspath(settings.server.data_dir)} ready (catalog, keys, CDB {settings.cdb.name})")
    return EXIT_OK


def cmd_token_create(args: argparse.Namespace) -> int:
    from rustymt.api.auth import issue_token
    from rustymt.catalog.db import catalog_path

    settings = _settings(args)
    if not os.path.exists(catalog_path(settings.server.data_dir)):
        return _fail(f"{settings.server.data_dir} is not a rustymt data dir (run `rustymt init --data-dir DIR` first)",
                     EXIT_DATA_DIR)
    if args.ttl is not None and args.ttl <= 0:
        return _fail("--ttl: must be a positive number of seconds", EXIT_CONFIG)
    if args.tenant is not None and not _tenant_is_live(catalog_path(settings.server.data_dir), args.tenant):
        return _fail(f"--tenant: no live tenant {args.tenant} in {settings.server.data_dir}", EXIT_CONFIG)
    try:
        token = issue_token(settings.server.data_dir, settings, args.role, args.tenant, args.ttl)
    except ValueError as exc:
        return _fail(f"--role/--tenant: {exc}", EXIT_CONFIG)
    print(token)
    return EXIT_OK


def _tenant_is_live(path: str, tenant_id: str) -> bool:
    """A token for a tenant that does not exist (or was terminated) would be
    refused on every request: say so now instead of printing it."""
    import sqlite3

    from rustymt.catalog import tenants as tenant_rows

    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        found = conn.execute(f"SELECT 1 FROM tenants WHERE tenant_id = ? AND {tenant_rows.LIVE}", (tenant_id,)).fetchone()
    return found is not None


COMMANDS = {("serve", None): cmd_serve, ("init", None): cmd_init, ("token", "create"): cmd_token_create}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # usage errors exit 2 with a usage line
    command = COMMANDS[(args.command, getattr(args, "token_command", None))]
    try:
        return command(args)
    except config.ConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except StartupError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - last resort: one line, exit 1, no traceback spill to scripts
        logging.getLogger("rustymt").debug("unhandled error", exc_info=True)
        return _fail(f"internal error: {exc.__class__.__name__}: {exc}", EXIT_FAILURE)


def daemon_main() -> int:
    """`rustymtd [--config FILE] [--data-dir DIR] [--listen HOST:PORT]` = `rustymt serve ...`."""
    arguments = sys.argv[1:]
    return main(["--version"] if arguments == ["--version"] else ["serve", *arguments])

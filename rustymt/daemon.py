"""rustymtd: the control-plane daemon's life from start to graceful stop.

Start: make the data dir (catalog, signing keys, the CDB row; see
prepare_data_dir, also used by `rustymt init`), build the services and the
aiohttp app, bind the listen address, write the bound address to
<data_dir>/run/rustymtd.addr (so `--listen 127.0.0.1:0` can be found), apply
scheduled tier changes that fell due while the daemon was down, then tell
systemd READY=1. While running: apply scheduled tier changes when due (the
catalog holds them, so they survive restarts). SIGTERM/SIGINT: stop accepting,
let in-flight requests finish, stop the engine instances, remove the host
setup (cgroups, tc; host.teardown_on_stop), close the catalog, exit 0. Before
the listener opens: PDB storage recovery (staged creates finished or removed,
catalog and disk reconciled), the seed, and the engine instances started with
every tenant re-applied (rustymt.service.fleet).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import Any

from aiohttp import web

from rustymt import sdnotify
from rustymt.api import malformed
from rustymt.api.app import create_app
from rustymt.api.keys import load_or_create_keys
from rustymt.catalog import cdb as cdb_rows
from rustymt.catalog.db import Catalog, CatalogError, catalog_path
from rustymt.engine import storage
from rustymt.engine.control import ControlError
from rustymt.events.bus import EventBus
from rustymt.exitcodes import EXIT_DATA_DIR, EXIT_FAILURE, EXIT_LISTEN, EXIT_OK, StartupError
from rustymt.model.timeutil import utc_now_iso
from rustymt.service.fleet import Fleet
from rustymt.service.hostbinding import HostBinding
from rustymt.service.services import Services

log = logging.getLogger("rustymt.daemon")

DATA_SUBDIRS = ("keys", "pdbs", "staging", "run")
ADDRESS_FILE = os.path.join("run", "rustymtd.addr")
TIER_CHANGE_POLL_SECONDS = 1.0
SHUTDOWN_GRACE_SECONDS = 10.0


def prepare_data_dir(settings: Any) -> Catalog:
    """Create (or reopen) everything on disk; idempotent. Returns the open catalog."""
    data_dir = settings.server.data_dir
    try:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        for name in DATA_SUBDIRS:
            os.makedirs(os.path.join(data_dir, name), mode=0o700, exist_ok=True)
        catalog = Catalog.open(catalog_path(data_dir))
    except (OSError, CatalogError) as exc:
        raise StartupError(f"data dir {data_dir}: {exc}", EXIT_DATA_DIR) from None
    try:
        with catalog.write() as conn:
            cdb_rows.ensure_cdb(conn, settings.cdb.name, utc_now_iso())
        load_or_create_keys(data_dir, settings.auth.algorithms)
    except Exception as exc:
        catalog.close()
        raise StartupError(f"data dir {data_dir}: {exc}", EXIT_DATA_DIR) from None
    return catalog


def _write_address(data_dir: str, host: str, port: int) -> str:
    path = os.path.join(data_dir, ADDRESS_FILE)
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        handle.write(f"{host}:{port}\n")
    os.replace(temporary, path)  # readers never see a half-written file
    return path


async def _apply_tier_changes_forever(services: Services) -> None:
    while True:
        await asyncio.sleep(TIER_CHANGE_POLL_SECONDS)  # a period, not synchronisation
        try:
            applied = await services.tenants.apply_due_tier_changes()
        except Exception:
            log.exception("applying scheduled tier changes failed; retrying")
            continue
        for change in applied:
            log.info("scheduled tier change applied: %s -> %s", change["tenant_id"], change["new_tier"])


async def _start_engine(services: Services, fleet: Fleet) -> None:
    """Storage recovery (finish or roll back what a crash interrupted), the
    seed, then the engine instances with every tenant re-applied."""
    data_dir = services.settings.server.data_dir
    try:
        await asyncio.to_thread(services.lifecycle.recover)  # committed clone/plug stages published, dead jobs failed
        await asyncio.to_thread(services.pdbs.reconcile_storage)
        await asyncio.to_thread(storage.ensure_seed, data_dir)
    except Exception as exc:
        raise StartupError(f"data dir {data_dir}: PDB storage recovery failed: {exc}", EXIT_DATA_DIR) from None
    try:
        await fleet.start()
    except (ControlError, OSError) as exc:
        await fleet.stop()
        raise StartupError(f"engine instance did not start: {exc}", EXIT_FAILURE) from None
    log.info("engine: %s", ", ".join(f"{i['name']} pid {i['pid']}" for i in fleet.status()))


async def _watchdog_forever(interval: float) -> None:
    while True:
        sdnotify.watchdog()
        await asyncio.sleep(interval)


async def serve(settings: Any) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    catalog = prepare_data_dir(settings)
    bus = EventBus()
    # Host enforcement (docs/host-daemon.md): adopted before any instance starts and before
    # READY=1. Built before the signal handlers: its tc probe forks (pyroute2), and a forked
    # child's signal would reach asyncio's shared wakeup fd and read as our own SIGTERM.
    host_binding = await asyncio.to_thread(HostBinding.from_settings, settings, catalog, bus)
    await asyncio.to_thread(host_binding.adopt_self)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    fleet = Fleet(settings, catalog, bus, placement_of=host_binding.placement_of, on_spawn=host_binding.on_spawn,
                  on_exit=host_binding.on_exit)
    host_binding.fleet = fleet
    fleet.before_wake, fleet.asleep = host_binding.before_wake, host_binding.asleep
    services = Services(catalog, settings, bus, fleet=fleet)
    services.host = host_binding
    services.tenants.host = host_binding
    services.cdb.host_status = host_binding.status
    try:
        await host_binding.start()   # cgroup tree + tc root qdiscs before instances are placed in them
        await _start_engine(services, fleet)
    except BaseException:
        await host_binding.stop()
        await host_binding.close(teardown=False)  # a failed start removes nothing (another daemon may own it)
        catalog.close()
        raise
    app = create_app(services, settings)
    services.observability.install(app)  # API request metrics (metering)
    access_log = logging.getLogger("aiohttp.access") if settings.server.log_level == "debug" else None
    runner = malformed.AppRunner(app, access_log=access_log, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE_SECONDS)
    await runner.setup()
    host, port = settings.server.listen
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        await host_binding.stop()
        await fleet.stop()
        await host_binding.close(teardown=False)
        catalog.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", EXIT_LISTEN) from None
    bound_host, bound_port = runner.addresses[0][:2]
    address_file = _write_address(settings.server.data_dir, bound_host, bound_port)
    log.info("rustymtd listening on http://%s:%d (data dir %s)", bound_host, bound_port, settings.server.data_dir)

    background = []
    try:
        background += services.observability.start()  # metering sampler, webhook dispatcher
        await services.tenants.apply_due_tier_changes()  # those that fell due while we were down
        background.append(asyncio.create_task(_apply_tier_changes_forever(services)))
        interval = sdnotify.watchdog_interval()
        if interval:
            background.append(asyncio.create_task(_watchdog_forever(interval)))
        sdnotify.ready(f"serving on {bound_host}:{bound_port}")
        await stop.wait()
        log.info("stopping: finishing in-flight requests")
        sdnotify.stopping("shutting down")
    finally:
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await services.host.stop()
        await runner.cleanup()
        await fleet.stop()  # instances end their sessions (57P01) and exit
        await services.host.close()  # then the cgroups and tc setup go (host.teardown_on_stop)
        catalog.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address_file)
    log.info("stopped")
    return EXIT_OK


def run(settings: Any) -> int:
    try:
        return asyncio.run(serve(settings))
    except StartupError as exc:
        log.error("%s", exc)
        return exc.exit_code

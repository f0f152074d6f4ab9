"""A real rustymtd enforcing on the host, inside a network namespace the test
creates, with a cgroup root of the test's own.

    hostd.daemon                 tests.daemon.Daemon (HTTP goes into the namespace)
    hostd.tree                   CgroupV1 on the daemon's root (/rustymt-test-<random>)
    hostd.netns                  the namespace's name (tc is programmed on its lo)

The daemon's config: host.cgroup_root = the test root, host.interface = lo,
host.reconcile_seconds = RECONCILE_SECONDS (`Sandbox.env`). Teardown (even on
failure): stop the daemon, kill what the tests started, remove the cgroup
root, remove the namespace, and check both are gone (`sandbox`). Nothing is
created outside the root or the namespace.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import secrets
import subprocess
import sys

import pytest

from rustymt.host import capabilities
from rustymt.host.cgroupfs import CgroupV1
from tests.conftest import require_host
from tests.daemon import REPO_ROOT, Daemon, clean_env
from tests.host.conftest import Spawner, require_v1

RECONCILE_SECONDS = 1.0
PASSWORD = "correct horse battery"  # tests/daemon.py create_tenant's
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


@contextlib.contextmanager
def in_netns(netns: str):
    """This thread in `netns` for the block (sockets made inside stay there)."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(target)
        yield
    finally:
        _setns(home)
        os.close(home)
        os.close(target)


class NetnsDaemon(Daemon):
    """`rustymt serve` run inside the namespace; requests enter the namespace
    only to create their socket (setns applies to the calling thread)."""

    netns = ""

    @classmethod
    def start_in(cls, netns: str, data_dir: str, env: dict, listen: str = "127.0.0.1:0") -> "NetnsDaemon":
        os.makedirs(data_dir, exist_ok=True)
        log_path = os.path.abspath(data_dir) + ".log"
        # setns in the child rather than `ip netns exec`: that also remounts /sys
        # for the namespace, which hides the cgroup hierarchies
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            with open(log_path, "ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "rustymt", "serve", "--data-dir", data_dir, "--listen", listen],
                    stdout=log, stderr=subprocess.STDOUT, env=clean_env(env), cwd=REPO_ROOT,
                    pass_fds=(target,), preexec_fn=lambda: _setns(target))
        finally:
            os.close(target)
        daemon = cls(data_dir, process, log_path, env)
        daemon.netns = netns
        try:
            daemon._wait_ready(os.path.join(data_dir, "run", "rustymtd.addr"))
        except BaseException:
            daemon.kill()
            raise
        return daemon

    def request(self, *args, **kwargs):
        with in_netns(self.netns):
            return super().request(*args, **kwargs)


@dataclasses.dataclass
class HostDaemon:
    daemon: NetnsDaemon
    tree: CgroupV1
    netns: str
    spawner: Spawner

    def tenant(self, name: str, tier: str = "gold", **quota) -> dict:
        created = self.daemon.create_tenant(name, tier)
        if quota:
            response = self.daemon.request("PUT", f"/api/v1/tenants/{created['tenant_id']}/quota", json=quota)
            assert response.status == 200, response.text
        return created

    def connect(self, created: dict, tenant_name: str):
        """psycopg to the tenant's PDB on its port, inside the namespace."""
        import psycopg

        with in_netns(self.netns):
            return psycopg.connect(host="127.0.0.1", port=created["resources"]["network_port"],
                                   dbname=f"PDB_{tenant_name.upper()}", user=f"admin@{tenant_name}.example",
                                   password=PASSWORD, connect_timeout=10, autocommit=True)

    def placement(self, tenant_id: str) -> dict:
        response = self.daemon.request("GET", f"/api/v1/tenants/{tenant_id}/placement")
        assert response.status == 200, response.text
        return response.json


def require_host_daemon() -> capabilities.Capabilities:
    caps = require_v1("cpu", "cpuacct", "cpuset", "memory", "blkio", "pids", "freezer")
    require_host(all(caps.tc.get(kind) is None for kind in capabilities.TC_KINDS),
                 f"tc kinds missing: { {k: v for k, v in caps.tc.items() if v} }")
    return caps


@dataclasses.dataclass
class Sandbox:
    netns: str          # a network namespace of the test's own, lo up
    tree: CgroupV1      # the cgroup root the daemon gets (/rustymt-test-<random>), not created here

    def env(self, **extra: str) -> dict:
        """The daemon's environment: enforcement on, on this root and the namespace's lo."""
        return {"RUSTYMT_HOST_ENFORCE": "true", "RUSTYMT_HOST_CGROUP_ROOT": self.tree.root,
                "RUSTYMT_HOST_INTERFACE": "lo", "RUSTYMT_HOST_RECONCILE_SECONDS": str(RECONCILE_SECONDS), **extra}

    def leftovers(self) -> list[str]:
        found = [path for path in self.tree.group_dirs("") if os.path.exists(path)]
        return found + [f"netns {self.netns}"] * os.path.exists(f"/run/netns/{self.netns}")


@contextlib.contextmanager
def sandbox():
    """A namespace and a cgroup root name of the test's own. On exit, even on
    failure: the root (with whatever is in it) and the namespace (with every
    device in it, ifb included) are removed, then checked gone."""
    from pyroute2 import NetNS, netns

    box = Sandbox(f"rustymt-test-{secrets.token_hex(4)}",
                  CgroupV1(root=f"/rustymt-test-{secrets.token_hex(4)}", mounts=require_host_daemon().v1_mounts))
    netns.create(box.netns)
    try:
        with NetNS(box.netns) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        yield box
    finally:
        try:
            box.tree.remove_root()
        finally:
            netns.remove(box.netns)
        assert box.leftovers() == [], f"test cleanup left {box.leftovers()}"


@pytest.fixture(scope="module")
def hostd(tmp_path_factory):
    spawner = Spawner()
    daemon = None
    with sandbox() as box:
        try:
            daemon = NetnsDaemon.start_in(box.netns, str(tmp_path_factory.mktemp("hostd") / "data"), box.env())
            yield HostDaemon(daemon, box.tree, box.netns, spawner)
        finally:
            if daemon is not None:
                daemon.stop()
            spawner.stop()

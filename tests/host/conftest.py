"""Fixtures for real host tests: a cgroup root of the test's own
(/rustymt-test-<random>, removed even when the test fails), processes
started inside a group before they do any work, a network namespace."""
import os
import secrets
import subprocess
import sys
import textwrap

import pytest

from rustymt.host import capabilities
from rustymt.host.cgroupfs import CgroupV1
from tests.conftest import require_host

HOST_CAPS = None


def host_caps() -> capabilities.Capabilities:
    global HOST_CAPS
    if HOST_CAPS is None:
        HOST_CAPS = capabilities.detect("/tmp")
    return HOST_CAPS


def require_v1(*controllers: str) -> capabilities.Capabilities:
    caps = host_caps()
    require_host(caps.root_user, "needs root")
    require_host(caps.version == 1, f"needs the cgroup v1 driver (this host: layout {caps.layout}, version {caps.version})")
    missing = [name for name in controllers if name not in caps.v1_mounts]
    require_host(not missing, f"cgroup v1 controllers not mounted: {missing}")
    return caps


@pytest.fixture
def v1_tree():
    caps = require_v1("cpu", "cpuacct", "cpuset", "memory", "blkio", "pids", "freezer")
    tree = CgroupV1(root=f"/rustymt-test-{secrets.token_hex(4)}", mounts=caps.v1_mounts)
    try:
        yield tree
    finally:
        tree.remove_root()


class Spawner:
    """Start Python snippets that wait on stdin until placed in their group."""

    def __init__(self):
        self.processes: list[subprocess.Popen] = []

    def start(self, tree, group: str, code: str, **popen) -> subprocess.Popen:
        program = "import sys\nsys.stdin.readline()\n" + textwrap.dedent(code)
        process = subprocess.Popen([sys.executable, "-c", program], stdin=subprocess.PIPE, text=True, **popen)
        self.processes.append(process)
        tree.place(group, process.pid)
        process.stdin.write("go\n")
        process.stdin.flush()
        return process

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def spawner():
    spawn = Spawner()
    try:
        yield spawn
    finally:
        spawn.stop()


@pytest.fixture
def netns_name():
    """A fresh network namespace with lo up; removed afterwards."""
    caps = host_caps()
    require_host(caps.root_user, "needs root")
    require_host(all(caps.tc.get(kind) is None for kind in capabilities.TC_KINDS),
                 f"tc kinds missing: { {k: v for k, v in caps.tc.items() if v} }")
    from pyroute2 import NetNS, netns

    name = f"rustymt-test-{secrets.token_hex(4)}"
    netns.create(name)
    try:
        with NetNS(name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        yield name
    finally:
        netns.remove(name)


def tcp_rate(netns: str, direction: str, port: int, warmup: float = 0.5, window: float = 1.5,
             address: str = "127.0.0.1") -> float:
    """Mbit/s through `port` inside `netns` (see tcp_rate.py)."""
    script = os.path.join(os.path.dirname(__file__), "tcp_rate.py")
    result = subprocess.run(["ip", "netns", "exec", netns, sys.executable, script, direction, str(port), str(warmup), str(window),
                             address],
                            capture_output=True, text=True, timeout=30, check=True)
    return float(result.stdout.strip())

"""What a real rustymtd leaves on the host when it stops (cgroup v1, tc on lo
in the test's own network namespace, a cgroup root of the test's own).

* graceful stop (SIGTERM): every group it made and its root, the HTB root
  qdisc, the ifb device and the ingress qdisc it added are gone; what was
  there before (an ingress qdisc with its own filter, another interface's
  qdisc, another ifb) is untouched;
* host.teardown_on_stop = false: all of it stays, and the next start adopts
  it (same cgroup directories, same ifb device) and removes it at its stop;
* SIGKILL: all of it stays, the next start reconciles it (a stale tenant
  group is removed, the live tenant's group gets the new instance) and its
  graceful stop leaves nothing;
* a root qdisc someone else configured on the interface is never replaced:
  shaping reports unavailable, and the qdisc is intact after the stop;
* a start that fails (here: the listen address is taken) removes nothing;
* a process sitting in <root>/supervisor (a delegated daemon under systemd)
  tears down around itself: its group and the root stay.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import signal
import socket
import subprocess
import sys

import psutil
import pytest

from rustymt.host import ownership
from rustymt.host.tc import HANDLE, INGRESS_HANDLE, ifb_name
from tests.conftest import wait_for
from tests.daemon import REPO_ROOT
from tests.host.conftest import Spawner
from tests.host_daemon.conftest import HostDaemon, NetnsDaemon, Sandbox, in_netns, sandbox

pytestmark = pytest.mark.host

IFB = ifb_name("lo")
FOREIGN_IFB = "ifbkeep0"
FOREIGN_INGRESS_PRIO = 7


@dataclasses.dataclass
class Box:
    sandbox: Sandbox
    data_dir: str                       # one data dir: restarts find their catalog and ownership record
    daemons: list[NetnsDaemon] = dataclasses.field(default_factory=list)

    @property
    def netns(self) -> str:
        return self.sandbox.netns

    @property
    def tree(self):
        return self.sandbox.tree


@pytest.fixture
def box(tmp_path):
    """The sandbox plus the daemons a test starts (SIGKILLed at the end if
    still running, before the sandbox is cleaned and checked)."""
    with sandbox() as sand:
        run = Box(sand, str(tmp_path / "data"))
        try:
            yield run
        finally:
            for daemon in run.daemons:
                daemon.kill()


def start(box, listen: str = "127.0.0.1:0", **env) -> HostDaemon:
    # a SIGKILLed daemon leaves its address file; the helper would read the old port from it
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(box.data_dir, "run", "rustymtd.addr"))
    daemon = NetnsDaemon.start_in(box.netns, box.data_dir, box.sandbox.env(**env), listen)
    box.daemons.append(daemon)
    return HostDaemon(daemon, box.tree, box.netns, Spawner())


def ip(box, *args: str) -> None:
    subprocess.run(["ip", "-n", box.netns, *args], check=True, capture_output=True)


def tc(box, *args: str) -> None:
    subprocess.run(["tc", "-n", box.netns, *args], check=True, capture_output=True)


def tc_view(box) -> dict:
    """lo's qdiscs as {"kind handle"}, lo's ingress filter priorities, the
    links, and the other interface's qdiscs."""
    from pyroute2 import NetNS

    with NetNS(box.netns) as ipr:
        def qdiscs(ifname):
            index = ipr.link_lookup(ifname=ifname)[0]
            return {f"{q.get_attr('TCA_KIND')} {q.get('handle') >> 16:x}:" for q in ipr.get_qdiscs(index=index)}

        lo = ipr.link_lookup(ifname="lo")[0]
        has_ingress = any(q.get("handle") == INGRESS_HANDLE for q in ipr.get_qdiscs(index=lo))
        view = {"lo": qdiscs("lo"),
                "ingress_prios": {f["info"] >> 16 for f in ipr.get_filters(index=lo, parent=INGRESS_HANDLE)}
                if has_ingress else set(),
                "links": {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()},
                "classes": {c["handle"] & 0xFFFF for c in ipr.get_classes(index=lo) if c["handle"] >> 16 == HANDLE >> 16}}
        if "v0" in view["links"]:
            view["v0"] = qdiscs("v0")
        return view


def foreign_setup(box) -> None:
    """What an operator had before rustymt: an ingress qdisc on lo with a
    filter of their own, another interface with an HTB, another ifb."""
    tc(box, "qdisc", "add", "dev", "lo", "ingress")
    tc(box, "filter", "add", "dev", "lo", "parent", "ffff:", "prio", str(FOREIGN_INGRESS_PRIO), "protocol", "all",
       "u32", "match", "u32", "0", "0", "classid", "1:1")
    ip(box, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    tc(box, "qdisc", "add", "dev", "v0", "root", "handle", "1:", "htb", "default", "1")
    ip(box, "link", "add", FOREIGN_IFB, "type", "ifb")


def cgroup_dirs(box) -> list[str]:
    """Every directory of the daemon's tree that exists, in any hierarchy."""
    found = []
    for top in box.tree.group_dirs(""):
        for directory, _subdirs, _files in os.walk(top):
            found.append(directory)
    return sorted(found)


def ledger(box) -> dict | None:
    path = os.path.join(box.data_dir, "run", ownership.FILE_NAME)
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def tenant_group(tenant_id: str) -> str:
    return f"tenants/{tenant_id}"


def shaped_tenant(box, hostd: HostDaemon, tier: str = "gold") -> tuple[str, int]:
    created = hostd.tenant(f"td_{secrets.token_hex(3)}", tier, network_mbps=20)
    tenant_id, port = created["tenant_id"], created["resources"]["network_port"]
    if tier == "gold":
        wait_for(lambda: hostd.tree.exists(tenant_group(tenant_id)) and
                 set(hostd.placement(tenant_id)["instance_pids"]) <= set(hostd.tree.procs(tenant_group(tenant_id))),
                 10, what="the dedicated tenant's instance in its cgroup")
    wait_for(lambda: port in tc_view(box)["classes"], 10, what="the tenant's tc class")
    return tenant_id, port


def stopped_cleanly(hostd: HostDaemon) -> None:
    code = hostd.daemon.stop()
    assert code == 0, f"rustymt serve exited with {code} on SIGTERM:\n{hostd.daemon.log()}"


def running(pids) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_graceful_stop_removes_what_the_daemon_made_and_nothing_else(box):
    foreign_setup(box)
    before = tc_view(box)
    assert before["ingress_prios"] == {FOREIGN_INGRESS_PRIO} and "htb 1:" in before["v0"]

    hostd = start(box)
    dedicated, dedicated_port = shaped_tenant(box, hostd, "gold")
    _shared, shared_port = shaped_tenant(box, hostd, "silver")
    instance_pids = hostd.placement(dedicated)["instance_pids"]
    made = tc_view(box)
    assert {"htb a7:", "ingress ffff:"} <= made["lo"] and IFB in made["links"]
    assert made["ingress_prios"] == {1, FOREIGN_INGRESS_PRIO}          # rustymt's redirect beside the operator's filter
    assert {dedicated_port, shared_port} <= made["classes"]
    assert {f"{top}/{tenant_group(dedicated)}" for top in box.tree.group_dirs("")} <= set(cgroup_dirs(box))
    assert ledger(box) == {"cgroup_root": box.tree.root, "interface": "lo", "root_created": True,
                           "ingress_created": False}

    stopped_cleanly(hostd)
    assert cgroup_dirs(box) == []                                   # groups, then the root, in every hierarchy
    after = tc_view(box)
    assert after["lo"] == {"noqueue 0:", "ingress ffff:"}           # the operator's ingress qdisc stays
    assert after["ingress_prios"] == {FOREIGN_INGRESS_PRIO}         # with their filter, without rustymt's
    assert after["links"] == before["links"] and after["v0"] == before["v0"]
    assert after["classes"] == set()
    assert running(instance_pids) == []
    assert ledger(box) is None
    assert "host teardown: removed" in hostd.daemon.log()


def test_teardown_off_keeps_the_setup_and_the_next_start_adopts_then_removes_it(box):
    hostd = start(box, RUSTYMT_HOST_TEARDOWN_ON_STOP="false")
    tenant_id, port = shaped_tenant(box, hostd, "gold")
    stopped_cleanly(hostd)

    kept = cgroup_dirs(box)
    for group in ("", "supervisor", "shared", "tenants", tenant_group(tenant_id)):
        assert {path.rstrip("/") for path in box.tree.group_dirs(group)} <= set(kept), group
    view = tc_view(box)
    assert {"htb a7:", "ingress ffff:"} <= view["lo"] and IFB in view["links"] and port in view["classes"]
    assert ledger(box)["root_created"] and ledger(box)["ingress_created"]
    inodes = {path: os.stat(path).st_ino for path in kept}
    ifb_index = link_index(box, IFB)

    hostd = start(box)                     # teardown_on_stop back to its default (true)
    wait_for(lambda: set(hostd.placement(tenant_id)["instance_pids"]) <= set(box.tree.procs(tenant_group(tenant_id)))
             and hostd.placement(tenant_id)["instance_pids"], 10, what="the new instance in the kept cgroup")
    assert {path: os.stat(path).st_ino for path in kept} == inodes   # adopted, not re-created
    assert link_index(box, IFB) == ifb_index and port in tc_view(box)["classes"]

    stopped_cleanly(hostd)
    assert cgroup_dirs(box) == []
    view = tc_view(box)
    assert view["lo"] == {"noqueue 0:"} and IFB not in view["links"]  # the ingress qdisc was rustymt's (ledger)
    assert ledger(box) is None


def link_index(box, ifname: str) -> int:
    from pyroute2 import NetNS

    with NetNS(box.netns) as ipr:
        return ipr.link_lookup(ifname=ifname)[0]


def test_after_sigkill_the_next_start_reconciles_and_its_stop_cleans_up(box):
    hostd = start(box)
    tenant_id, port = shaped_tenant(box, hostd, "gold")
    hostd.daemon.process.send_signal(signal.SIGKILL)
    hostd.daemon.process.wait(10)
    # instances die with the daemon (parent-death signal); their groups stay
    wait_for(lambda: not box.tree.procs("shared") and not box.tree.procs(tenant_group(tenant_id)), 15,
             what="instances gone after the daemon's SIGKILL")
    assert box.tree.exists(tenant_group(tenant_id)) and IFB in tc_view(box)["links"]
    box.tree.ensure(tenant_group("tenant_gone"))          # a tenant that is no more (terminated while we were down)

    hostd = start(box)
    wait_for(lambda: not box.tree.exists(tenant_group("tenant_gone")), 10, what="the stale group removed")
    wait_for(lambda: hostd.placement(tenant_id)["instance_pids"] and
             set(hostd.placement(tenant_id)["instance_pids"]) <= set(box.tree.procs(tenant_group(tenant_id))),
             10, what="the new instance in the tenant's group")
    assert port in tc_view(box)["classes"]

    stopped_cleanly(hostd)
    assert cgroup_dirs(box) == []
    view = tc_view(box)
    assert view["lo"] == {"noqueue 0:"} and IFB not in view["links"]
    assert ledger(box) is None


def test_a_foreign_root_qdisc_is_never_replaced(box):
    tc(box, "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "1")
    tc(box, "class", "add", "dev", "lo", "parent", "1:", "classid", "1:1", "htb", "rate", "1gbit")
    hostd = start(box)
    status = hostd.daemon.request("GET", "/api/v1/cdb/status").json["host"]["mechanisms"]
    for mechanism in ("network_egress", "network_ingress"):
        assert status[mechanism]["state"] == "unavailable" and "not rustymt's" in status[mechanism]["reason"]
    created = hostd.tenant(f"td_{secrets.token_hex(3)}", "gold", network_mbps=20)
    wait_for(lambda: box.tree.exists(tenant_group(created["tenant_id"])), 10, what="the tenant's cgroup")

    stopped_cleanly(hostd)
    view = tc_view(box)
    assert view["lo"] == {"htb 1:"} and IFB not in view["links"]
    from pyroute2 import NetNS

    with NetNS(box.netns) as ipr:
        classes = {c["handle"] for c in ipr.get_classes(index=ipr.link_lookup(ifname="lo")[0])}
    assert classes == {0x10001}
    assert cgroup_dirs(box) == []



def test_a_failed_start_removes_nothing(box):
    """The start may fail because another daemon serves this host already:
    its instances live in these groups, so nothing is torn down."""
    with in_netns(box.netns):
        taken = socket.socket()
    with taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(AssertionError, match="exited with 4"):
            start(box, listen=f"127.0.0.1:{taken.getsockname()[1]}")
    for group in ("", "supervisor", "shared", "tenants"):
        assert box.tree.exists(group), group
    assert IFB in tc_view(box)["links"] and ledger(box)["root_created"]


# A process standing in for the daemon under systemd: it sits in <root>/supervisor
# (where adopt_self puts a delegated daemon) and tears down around itself.
SUPERVISED_TEARDOWN = r"""
import json, os, sys
from types import SimpleNamespace
from rustymt.host import HostController, capabilities
root, ledger, neighbour = sys.argv[1], sys.argv[2], int(sys.argv[3])
caps = capabilities.detect("/tmp", probe_network=False)
host = HostController.from_settings(SimpleNamespace(cgroup_root=root, interface="lo", enforce=True), caps=caps,
                                     ledger=ledger)
host.setup()
host.tree.place("supervisor", os.getpid())
host.place(neighbour, "tenant_left")
print(json.dumps(host.teardown()))
"""


def test_teardown_never_removes_the_group_the_process_itself_sits_in(box):
    os.makedirs(box.data_dir)
    neighbour = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        result = subprocess.run([sys.executable, "-c", SUPERVISED_TEARDOWN, box.tree.root,
                                 os.path.join(box.data_dir, ownership.FILE_NAME), str(neighbour.pid)],
                                capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
        assert result.returncode == 0, result.stderr        # it did not kill itself with its group
        removed = json.loads(result.stdout)
        root = box.tree.root
        assert set(removed) == {f"cgroup {root}/tenants/tenant_left", f"cgroup {root}/tenants", f"cgroup {root}/shared"}
        assert neighbour.wait(10) == -signal.SIGKILL         # a process left in a removed group is killed
        # the group it sat in and its ancestor (the root) stay; systemd removes them after the unit stops
        assert sorted(cgroup_dirs(box)) == sorted([*box.tree.group_dirs(""), *box.tree.group_dirs("supervisor")])
    finally:
        neighbour.kill()
        neighbour.wait()

"""Per-tenant network shaping with tc, through pyroute2.

    egress  (interface root)   htb A7:  default A7:99 (unshaped catch-all)
                                 class A7:<port>  rate = ceil = network_mbps
                                 u32 prio <port>: TCP sport == port -> A7:<port>
    ingress (interface ffff:)  u32 match-all -> mirred redirect to the ifb device
    ifb     (rmt-ifb-<iface>)  htb A7: default A7:99, classes as above,
                                 u32 prio <port>: TCP dport == port -> A7:<port>

Why this shape:
* A tenant's class minor and filter priority are its port, so state needs no
  allocation table: a port names its class, and deleting the filters at that
  priority removes exactly that tenant's filters (u32 keeps one instance per
  priority). Minors 1..0xFFFF; ports are >= 1024, so they never meet the
  default class 0x99.
* Egress from the tenant's listener has the tenant port as source port;
  traffic to it arrives with the port as destination and is shaped on the
  ifb device, since qdiscs can only delay outgoing packets.
* u32 matches IPv4 with a plain 20-byte header (TCP ports at offset 20) and
  IPv6 without extension headers (ports at offset 40), both as ETH_P_ALL
  entries at the port's priority (a priority holds one protocol only): flower/matchall are not
  built into these kernels.
* pyroute2 details measured here: HTB `default=0x99` (the "99:0" form leaves
  traffic unclassified), protocol as ETH_P_* numbers, an explicit burst on
  fast classes, counters from get_classes().
* Every call is idempotent ("replace"), so reconcile can re-run it freely.
  Only qdiscs/classes/filters with rustymt's handle are ever changed.
"""
from __future__ import annotations

import dataclasses

MAJOR = 0xA7
HANDLE = MAJOR << 16
DEFAULT_MINOR = 0x99
INGRESS_HANDLE = 0xFFFF0000
ETH_P_ALL = 0x0003
IPPROTO_TCP = 6
# the catch-all: fast enough to be unshaped on any link, still a 64-bit rate
UNSHAPED_RATE = "100gbit"
INGRESS_REDIRECT_PRIO = 1
TC_H_ROOT = 0xFFFFFFFF


class ForeignQdisc(RuntimeError):
    """The interface has a root qdisc rustymt did not make: shaping would replace it."""


def classid(minor: int) -> int:
    return HANDLE | minor


def ifb_name(interface: str) -> str:
    return f"rmt-ifb-{interface}"[:15]


def mbps_rate(mbps: float) -> str:
    return f"{int(round(mbps * 1000))}kbit"


def burst_bytes(mbps: float) -> int:
    """10 ms of traffic, at least two 64 KiB super-packets (loopback/GSO)."""
    return max(int(mbps * 1_000_000 / 8 * 0.01), 2 * 65536 + 1600)


def port_keys(port: int, direction: str, ip_version: int) -> list[str]:
    """u32 keys "value/mask+offset" (offsets from the IP header) for the IP
    version, TCP and the port: the source port is the high half of the
    32-bit word at the transport header, the destination port the low half."""
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {port}")
    shift = 16 if direction == "egress" else 0
    word = f"0x{port << shift:08x}/0x{0xFFFF << shift:08x}"
    if ip_version == 4:  # version 4, 20-byte header; protocol byte 9
        return ["0x45000000/0xff000000+0", f"0x{IPPROTO_TCP << 16:08x}/0x00ff0000+8", f"{word}+20"]
    # version 6; next header byte 6; no extension headers
    return ["0x60000000/0xf0000000+0", f"0x{IPPROTO_TCP << 8:08x}/0x0000ff00+4", f"{word}+40"]


@dataclasses.dataclass
class ClassCounters:
    bytes: int
    packets: int
    drops: int
    overlimits: int
    rate_bps: int          # configured rate, bits/s


class Shaper:
    """HTB shaping on one interface (in one network namespace)."""

    def __init__(self, interface: str = "lo", netns: str | None = None):
        from pyroute2 import IPRoute, NetNS

        self.interface = interface
        self.ipr = NetNS(netns) if netns else IPRoute()
        found = self.ipr.link_lookup(ifname=interface)
        if not found:
            raise LookupError(f"no network interface {interface!r}")
        self.index = found[0]
        self.ifb = ifb_name(interface)
        self.ifb_index: int | None = None

    def close(self) -> None:
        self.ipr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the fixed part: root qdiscs, default classes, ifb and the redirect
    def setup(self) -> None:
        """Root HTB on the interface and on the ifb, ingress redirect.
        ForeignQdisc if the interface's root qdisc was configured by someone
        else: it is left alone (the kernel's default, handle 0:, is replaced)."""
        foreign = self.foreign_root()
        if foreign:
            raise ForeignQdisc(foreign)
        found = self.ipr.link_lookup(ifname=self.ifb)
        if not found:
            self.ipr.link("add", ifname=self.ifb, kind="ifb")
            found = self.ipr.link_lookup(ifname=self.ifb)
        self.ifb_index = found[0]
        self.ipr.link("set", index=self.ifb_index, state="up")
        for index in (self.index, self.ifb_index):
            if not self._our_root(index):
                self.ipr.tc("replace", "htb", index=index, handle=HANDLE, default=DEFAULT_MINOR)
            self.ipr.tc("replace-class", "htb", index=index, handle=classid(DEFAULT_MINOR), parent=HANDLE,
                        rate=UNSHAPED_RATE, ceil=UNSHAPED_RATE, burst=burst_bytes(100_000), cburst=burst_bytes(100_000))
        if not self.has_ingress():
            self.ipr.tc("add", "ingress", index=self.index, handle=INGRESS_HANDLE)
        self.ipr.tc("replace-filter", "u32", index=self.index, parent=INGRESS_HANDLE, prio=INGRESS_REDIRECT_PRIO,
                    protocol=ETH_P_ALL, target=classid(DEFAULT_MINOR), keys=["0x0/0x0+0"],
                    action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": self.ifb_index})

    def _our_root(self, index: int) -> bool:
        return any(q.get("parent") == TC_H_ROOT and q.get("handle") == HANDLE and q.get_attr("TCA_KIND") == "htb"
                   for q in self.ipr.get_qdiscs(index=index))

    def foreign_root(self) -> str | None:
        """A description of the interface's root qdisc when someone else set
        it up (not the kernel's default, handle 0:, and not rustymt's A7:)."""
        for qdisc in self.ipr.get_qdiscs(index=self.index):
            handle, kind = qdisc.get("handle"), qdisc.get_attr("TCA_KIND")
            if qdisc.get("parent") == TC_H_ROOT and handle and not (handle == HANDLE and kind == "htb"):
                return f"{self.interface} already has root qdisc {kind} {handle >> 16:x}: (not rustymt's); left as it is"
        return None

    def has_ingress(self) -> bool:
        return any(q.get("handle") == INGRESS_HANDLE for q in self.ipr.get_qdiscs(index=self.index))

    def _devices(self) -> list[tuple[int, str]]:
        if self.ifb_index is None:
            found = self.ipr.link_lookup(ifname=self.ifb)
            if not found:
                raise LookupError(f"{self.ifb} missing: call setup() first")
            self.ifb_index = found[0]
        return [(self.index, "egress"), (self.ifb_index, "ingress")]

    # -- per tenant port
    def set_port(self, port: int, mbps: float) -> None:
        """Shape `port` to `mbps` both ways (create or change)."""
        burst = burst_bytes(mbps)
        for index, direction in self._devices():
            self.ipr.tc("replace-class", "htb", index=index, handle=classid(port), parent=HANDLE,
                        rate=mbps_rate(mbps), ceil=mbps_rate(mbps), burst=burst, cburst=burst)
            # one u32 instance per priority may hold one protocol only, so
            # both IP versions share ETH_P_ALL with the version in the keys
            self._delete_filters(index, port)
            for version in (4, 6):
                self.ipr.tc("add-filter", "u32", index=index, parent=HANDLE, prio=port, protocol=ETH_P_ALL,
                            target=classid(port), keys=port_keys(port, direction, version))

    def remove_port(self, port: int) -> bool:
        removed = False
        for index, _direction in self._devices():
            removed |= self._delete_filters(index, port)
            if any(c["handle"] == classid(port) for c in self.ipr.get_classes(index=index)):
                self.ipr.tc("del-class", index=index, handle=classid(port), parent=HANDLE)
                removed = True
        return removed

    def _delete_filters(self, index: int, prio: int, parent: int = HANDLE) -> bool:
        present = any(message["info"] >> 16 == prio for message in self.ipr.get_filters(index=index, parent=parent))
        if present:
            # with the kind given pyroute2 encodes prio/protocol; without it
            # the request says prio 0, which deletes every filter on the qdisc
            self.ipr.tc("del-filter", "u32", index=index, parent=parent, prio=prio, protocol=ETH_P_ALL, target=0, keys=[])
        return present

    def ports(self) -> dict[int, dict[str, int]]:
        """{port: {"egress": rate bits/s, "ingress": ...}} for rustymt's tenant classes."""
        shaped: dict[int, dict[str, int]] = {}
        for port, direction, counters in self._classes():
            shaped.setdefault(port, {})[direction] = counters.rate_bps
        return shaped

    def filtered_ports(self) -> dict[int, set[str]]:
        """{port: {directions with a filter}} — to detect a class without its filter."""
        found: dict[int, set[str]] = {}
        for index, direction in self._devices():
            for message in self.ipr.get_filters(index=index, parent=HANDLE):
                prio = message["info"] >> 16
                if message.get_attr("TCA_KIND") == "u32" and prio != DEFAULT_MINOR:
                    found.setdefault(prio, set()).add(direction)
        return found

    def counters(self) -> dict[int, dict[str, ClassCounters]]:
        """{port: {"egress": ClassCounters, "ingress": ...}}; port 0x99 is the
        unshaped rest of the traffic."""
        result: dict[int, dict[str, ClassCounters]] = {}
        for port, direction, counters in self._classes(include_default=True):
            result.setdefault(port, {})[direction] = counters
        return result

    def _classes(self, include_default: bool = False):
        for index, direction in self._devices():
            for message in self.ipr.get_classes(index=index):
                handle = message["handle"]
                if handle >> 16 != MAJOR or message.get_attr("TCA_KIND") != "htb":
                    continue
                minor = handle & 0xFFFF
                if minor == DEFAULT_MINOR and not include_default:
                    continue
                yield minor, direction, _counters(message)

    def teardown(self, ingress: bool = True) -> list[str]:
        """Remove what setup() made: the root HTB (its classes and filters go
        with it), the ifb device (with its qdiscs), and the ingress qdisc —
        or, when `ingress` is False because it was there before rustymt,
        only rustymt's redirect filter in it. Returns what was removed."""
        removed: list[str] = []
        if self.has_ingress():
            if ingress:
                self.ipr.tc("del", "ingress", index=self.index, handle=INGRESS_HANDLE)
                removed.append(f"ingress qdisc on {self.interface}")
            elif self._delete_filters(self.index, INGRESS_REDIRECT_PRIO, parent=INGRESS_HANDLE):
                removed.append(f"ingress redirect filter on {self.interface}")
        if self._our_root(self.index):
            self.ipr.tc("del", "htb", index=self.index, handle=HANDLE)
            removed.append(f"htb root qdisc on {self.interface}")
        found = self.ipr.link_lookup(ifname=self.ifb)
        if found:
            self.ipr.link("del", index=found[0])
            removed.append(f"ifb device {self.ifb}")
        self.ifb_index = None
        return removed


def _counters(message) -> ClassCounters:
    stats = message.get_attr("TCA_STATS2")
    basic = stats.get_attr("TCA_STATS_BASIC") if stats else None
    queue = stats.get_attr("TCA_STATS_QUEUE") if stats else None
    options = message.get_attr("TCA_OPTIONS")
    parms = options.get_attr("TCA_HTB_PARMS") if options else None
    rate64 = options.get_attr("TCA_HTB_RATE64") if options else None
    rate_bytes = rate64 or (parms["rate"] if parms else 0)
    return ClassCounters(
        bytes=basic["bytes"] if basic else 0,
        packets=basic["packets"] if basic else 0,
        drops=queue["drops"] if queue else 0,
        overlimits=queue["overlimits"] if queue else 0,
        rate_bps=rate_bytes * 8,
    )

"""What rustymt made on the host, remembered across restarts, so a graceful
stop removes exactly that and nothing an operator had before.

Most of what the daemon makes carries rustymt's mark and needs no record:
the groups under its cgroup root (supervisor, shared, tenants/<id>), the
HTB root qdisc with handle A7: and the rmt-ifb-<iface> device. Two things
do not: the cgroup root itself (host.cgroup_root may name a directory the
operator made) and the ingress qdisc ffff: (every ingress qdisc has that
handle). For those, "did we create it?" is decided once, when the daemon
first finds them missing, and written to <data_dir>/run/host-owned.json:

    {"cgroup_root": "/rustymt", "interface": "lo", "root_created": true, "ingress_created": true}

The record outlives a crash and a stop with host.teardown_on_stop = false,
so the start that adopts the setup still knows what to remove at its own
graceful stop; a complete teardown deletes it. A record for another root or
interface (the config changed) is ignored.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os

log = logging.getLogger("rustymt.host")

FILE_NAME = "host-owned.json"


@dataclasses.dataclass
class Ownership:
    cgroup_root: str | None          # the tree's root, None without cgroup enforcement
    interface: str | None            # host.interface (whether or not tc is usable)
    root_created: bool = False       # rustymt made the cgroup root directory
    ingress_created: bool = False    # rustymt added the interface's ingress qdisc

    def same_place(self, other: "Ownership") -> bool:
        return (self.cgroup_root, self.interface) == (other.cgroup_root, other.interface)


def load(path: str | None, expected: Ownership) -> Ownership | None:
    """The remembered record when it speaks of the same root and interface."""
    if not path:
        return None
    try:
        with open(path) as handle:
            found = Ownership(**json.load(handle))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.warning("host: ignoring unreadable %s: %s", path, exc)
        return None
    if not found.same_place(expected):
        log.warning("host: %s names root %s / interface %s, not ours now: ignored", path, found.cgroup_root,
                    found.interface)
        return None
    return found


def save(path: str | None, ownership: Ownership) -> None:
    """Written before the objects are made: a crash in between leaves a record
    that claims a missing object, which the next start simply makes."""
    if not path:
        return
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(dataclasses.asdict(ownership), handle)
    os.replace(temporary, path)


def forget(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

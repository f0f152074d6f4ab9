"""The ownership record (rustymt/host/ownership.py), pure file work, no root:
what the teardown may remove beyond rustymt's marked objects."""
from __future__ import annotations

import json

from rustymt.host.ownership import Ownership, forget, load, save


def test_record_round_trips_and_is_forgotten(tmp_path):
    path = str(tmp_path / "host-owned.json")
    here = Ownership("/rustymt", "eth0")
    assert load(path, here) is None                      # nothing remembered yet
    save(path, Ownership("/rustymt", "eth0", root_created=True, ingress_created=False))
    assert load(path, here) == Ownership("/rustymt", "eth0", True, False)
    assert not (tmp_path / "host-owned.json.tmp").exists()   # written whole, then renamed
    forget(path)
    forget(path)                                          # twice is fine
    assert load(path, here) is None


def test_a_record_for_another_root_or_interface_or_unreadable_is_ignored(tmp_path):
    path = str(tmp_path / "host-owned.json")
    save(path, Ownership("/rustymt", "eth0", root_created=True, ingress_created=True))
    assert load(path, Ownership("/other", "eth0")) is None
    assert load(path, Ownership("/rustymt", "lo")) is None
    (tmp_path / "host-owned.json").write_text("{not json")
    assert load(path, Ownership("/rustymt", "eth0")) is None
    (tmp_path / "host-owned.json").write_text(json.dumps({"cgroup_root": "/rustymt", "surprise": 1}))
    assert load(path, Ownership("/rustymt", "eth0")) is None


def test_no_path_means_no_record():
    save(None, Ownership("/rustymt", "lo", True, True))
    forget(None)
    assert load(None, Ownership("/rustymt", "lo")) is None

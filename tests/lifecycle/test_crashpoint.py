"""The crash-point hook's switch: off unless RUSTYMT_CRASHPOINT asks (the test
process has it unset), and its setting is parsed strictly."""
from __future__ import annotations

import os

import pytest

from rustymt.engine import crashpoint


def test_off_by_default_and_strict_settings(tmp_path):
    assert os.environ.get("RUSTYMT_CRASHPOINT") is None and crashpoint.ACTIVE is False
    crashpoint.reached("create", "staged", "PDB_X")  # returns at once: nothing counted, nothing parked
    assert crashpoint._counts == {}
    assert crashpoint._parse("") is None
    assert crashpoint._parse("trace") == {}
    assert crashpoint._parse("create:3, plug_in_place:12") == {"create": 3, "plug_in_place": 12}
    for bad in ("create", "create:0", "create:x", ":2"):
        with pytest.raises(ValueError):
            crashpoint._parse(bad)


def test_descendants_lists_children_first():
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; "
                              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
                              "print(p.pid, flush=True); p.wait()"], stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(child.stdout.readline())
        found = crashpoint.descendants(os.getpid())
        assert child.pid in found and grandchild in found
        assert found.index(child.pid) < found.index(grandchild)
    finally:
        os.kill(grandchild, 9)
        child.wait(10)

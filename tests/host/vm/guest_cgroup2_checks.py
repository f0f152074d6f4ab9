"""Runs INSIDE the test VM (a pure cgroup v2 host): exercise each v2 limit for real.

Started by tests/host/vm/test_cgroup2_vm.py through run_in_vm. A plain script
rather than pytest: under TCG Python runs ~10x slower and `import pytest` ~20x,
so the guest does only the work and the kernel-counter reads, and writes them
to $RUSTYMT_VM_RESULTS/cgroup2.json; the host-side tests assert on them. One
check failing records its traceback and the others still run.

Each check makes its own leaf under a test root, applies limits to it, runs a
workload inside it, and reads what the kernel counted: cpu.stat throttling,
memory.events oom_kill, pids.events max and fork's EAGAIN, io.stat, and
cgroup.events frozen.
"""
from __future__ import annotations

import errno
import json
import mmap
import os
import secrets
import signal
import subprocess
import sys
import time
import traceback

CGROUP_ROOT = "/sys/fs/cgroup"
CONTROLLERS = ("cpu", "io", "memory", "pids")
TEST_ROOT = f"{CGROUP_ROOT}/rustymt-test-{secrets.token_hex(4)}"
DISK = "vda"  # the harness's raw disk (disk_mb)

# What each check applies, and the knobs of its workload.
CPU_MAX = (20_000, 100_000)  # quota, period (µs): 20% of a CPU
CPU_THROTTLED_PERIODS = 5  # periods to observe before stopping the burner
MEMORY_MAX = 32 << 20
MEMORY_ALLOCATION = 96 << 20  # > MEMORY_MAX, < the guest's RAM
PIDS_MAX = 4
PIDS_FORKS = 10
IO_RIOPS = 50
IO_WINDOW_SECONDS = 1.0  # each reader runs this long; the capped one should do ~IO_RIOPS ios
FROZEN_WINDOW_SECONDS = 0.5  # how long a frozen group is watched for CPU use
DEADLINE_SECONDS = 30.0


# --- cgroupfs -----------------------------------------------------------------


def write(path: str, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def flat_keyed(path: str) -> dict[str, int]:
    """cpu.stat, memory.events, pids.events, cgroup.events: "key value" lines."""
    return {key: int(value) for key, value in (line.split() for line in read(path).splitlines())}


def nested_keyed(path: str) -> dict[str, dict[str, int]]:
    """io.stat: "MAJ:MIN key=value ..." lines."""
    stats = {}
    for line in read(path).splitlines():
        device, *pairs = line.split()
        stats[device] = {key: int(value) for key, value in (pair.split("=", 1) for pair in pairs)}
    return stats


def apply(cgroup: str, settings: list[tuple[str, str]]) -> None:
    for name, value in settings:
        write(f"{cgroup}/{name}", value)


def make_leaf(name: str, settings: list[tuple[str, str]]) -> str:
    leaf = f"{TEST_ROOT}/{name}"
    os.mkdir(leaf)
    apply(leaf, settings)
    return leaf


def join_cgroup(cgroup: str) -> None:
    """Move the calling process into `cgroup` ("0" names the writer itself)."""
    write(f"{cgroup}/cgroup.procs", "0")


def spawn_in(cgroup: str, argv: list[str]) -> subprocess.Popen:
    # preexec_fn runs in the child before exec, so the workload starts inside
    # the cgroup; this script has no threads, which makes preexec_fn safe.
    return subprocess.Popen(argv, preexec_fn=lambda: join_cgroup(cgroup),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def fork_in(cgroup: str, work) -> int:
    """Fork a child that joins `cgroup`, runs work(), and exits with its result (0-255)."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            join_cgroup(cgroup)
            status = work()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    return pid


def wait_for(condition, what: str, timeout: float = DEADLINE_SECONDS):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)  # polling interval of a deadline-bounded wait


def remove_leaf(leaf: str) -> None:
    if os.path.exists(f"{leaf}/cgroup.kill"):
        write(f"{leaf}/cgroup.kill", "1")
        wait_for(lambda: flat_keyed(f"{leaf}/cgroup.events")["populated"] == 0, f"{leaf} to empty")
    os.rmdir(leaf)


# --- the checks -----------------------------------------------------------------

BURNER = ["sh", "-c", "while :; do :; done"]


def check_cpu_max() -> dict:
    quota, period = CPU_MAX
    leaf = make_leaf("cpu", [("cpu.max", f"{quota} {period}")])
    burner = spawn_in(leaf, BURNER)
    try:
        wait_for(lambda: flat_keyed(f"{leaf}/cpu.stat")["nr_throttled"] >= CPU_THROTTLED_PERIODS,
                 "the burner to be throttled")
    finally:
        burner.kill()
        burner.wait()
    stat = flat_keyed(f"{leaf}/cpu.stat")
    result = {"cpu.max": read(f"{leaf}/cpu.max").strip(), **{k: stat[k] for k in
              ("nr_periods", "nr_throttled", "throttled_usec", "usage_usec")}}
    remove_leaf(leaf)
    return result


def check_memory_max() -> dict:
    leaf = make_leaf("memory", [("memory.max", str(MEMORY_MAX))])
    # dd's one read() from /dev/zero fills (faults in) the whole block buffer.
    hog = spawn_in(leaf, ["dd", "if=/dev/zero", "of=/dev/null", f"bs={MEMORY_ALLOCATION}", "count=1"])
    _, stderr = hog.communicate(timeout=DEADLINE_SECONDS)
    events = flat_keyed(f"{leaf}/memory.events")
    result = {"memory.max": int(read(f"{leaf}/memory.max")), "returncode": hog.returncode,
              "oom": events["oom"], "oom_kill": events["oom_kill"], "max": events["max"],
              "memory.peak": int(read(f"{leaf}/memory.peak")) if os.path.exists(f"{leaf}/memory.peak") else None,
              "stderr": stderr.decode(errors="replace")[-300:]}
    remove_leaf(leaf)
    return result


def check_pids_max() -> dict:
    leaf = make_leaf("pids", [("pids.max", str(PIDS_MAX))])
    report_r, report_w = os.pipe()
    release_r, release_w = os.pipe()

    def fork_many() -> int:
        # Runs in a child inside the leaf: the child itself is one of the pids.
        os.close(report_r)
        os.close(release_w)
        forked, refused, other = [], 0, []
        for _ in range(PIDS_FORKS):
            try:
                pid = os.fork()
            except OSError as error:
                if error.errno == errno.EAGAIN:
                    refused += 1
                else:
                    other.append(errno.errorcode.get(error.errno, str(error.errno)))
                continue
            if pid == 0:
                os.close(report_w)  # or the parent's read of the report never sees EOF
                os.read(release_r, 1)  # hold the pid until released (EOF)
                os._exit(0)
            forked.append(pid)
        os.write(report_w, json.dumps({"forked": len(forked), "eagain": refused, "other_errors": other}).encode())
        os.close(report_w)
        return 0

    child = fork_in(leaf, fork_many)
    os.close(report_w)
    os.close(release_r)
    with os.fdopen(report_r) as report:
        outcome = json.loads(report.read() or "{}")
    current_while_held = int(read(f"{leaf}/pids.current"))
    os.close(release_w)  # EOF releases the grandchildren
    _, status = os.waitpid(child, 0)
    events = flat_keyed(f"{leaf}/pids.events")
    result = {"pids.max": read(f"{leaf}/pids.max").strip(), **outcome, "pids.current_while_held": current_while_held,
              "events_max": events["max"], "child_status": os.waitstatus_to_exitcode(status)}
    remove_leaf(leaf)
    return result


def disk_devno() -> str:
    return read(f"/sys/class/block/{DISK}/dev").strip()


def direct_reader() -> int:
    """Sequential 4 KiB O_DIRECT reads of the disk for IO_WINDOW_SECONDS."""
    buffer = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT requires
    fd = os.open(f"/dev/{DISK}", os.O_RDONLY | os.O_DIRECT)
    size = os.lseek(fd, 0, os.SEEK_END)
    offset, stop = 0, time.monotonic() + IO_WINDOW_SECONDS
    while time.monotonic() < stop:
        os.preadv(fd, [buffer], offset)
        offset = (offset + 4096) % size
    os.close(fd)
    return 0


def reads_in(leaf: str, devno: str) -> int:
    _, status = os.waitpid(fork_in(leaf, direct_reader), 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise AssertionError(f"direct reader in {leaf} failed: {status}")
    return nested_keyed(f"{leaf}/io.stat").get(devno, {}).get("rios", 0)


def check_io_max() -> dict:
    devno = disk_devno()
    uncapped = make_leaf("io-uncapped", [])
    capped = make_leaf("io-capped", [("io.max", f"{devno} riops={IO_RIOPS}")])
    result = {"device": devno, "io.max": read(f"{capped}/io.max").strip(), "window_seconds": IO_WINDOW_SECONDS,
              "riops": IO_RIOPS, "uncapped_rios": reads_in(uncapped, devno), "capped_rios": reads_in(capped, devno)}
    remove_leaf(capped)
    remove_leaf(uncapped)
    return result


def check_freeze() -> dict:
    leaf = make_leaf("freeze", [])
    burner = spawn_in(leaf, BURNER)
    usage = lambda: flat_keyed(f"{leaf}/cpu.stat")["usage_usec"]  # noqa: E731
    try:
        wait_for(lambda: usage() > 0, "the burner to run")
        write(f"{leaf}/cgroup.freeze", "1")
        wait_for(lambda: flat_keyed(f"{leaf}/cgroup.events")["frozen"] == 1, "frozen 1")
        frozen_at = usage()
        time.sleep(FROZEN_WINDOW_SECONDS)  # the observation window, not synchronisation
        frozen_after = usage()
        write(f"{leaf}/cgroup.freeze", "0")
        wait_for(lambda: flat_keyed(f"{leaf}/cgroup.events")["frozen"] == 0, "frozen 0")
        wait_for(lambda: usage() > frozen_after, "the thawed burner to run again")
        thawed_usage = usage()
        burner_alive_after_thaw = burner.poll() is None
    finally:
        burner.kill()
        burner.wait()
    remove_leaf(leaf)
    return {"usage_frozen_at": frozen_at, "usage_frozen_after": frozen_after, "usage_thawed": thawed_usage,
            "window_seconds": FROZEN_WINDOW_SECONDS, "burner_alive_after_thaw": burner_alive_after_thaw}


CHECKS = {"cpu": check_cpu_max, "memory": check_memory_max, "pids": check_pids_max,
          "io": check_io_max, "freeze": check_freeze}


class CheckTimeout(Exception):
    pass


def on_alarm(signum, frame):
    raise CheckTimeout(f"check exceeded {DEADLINE_SECONDS * 2}s")


def main() -> int:
    # A stuck check fails alone instead of holding the VM until the host's timeout.
    signal.signal(signal.SIGALRM, on_alarm)
    started = time.monotonic()
    enable = " ".join(f"+{name}" for name in CONTROLLERS)
    report: dict = {"controllers": read(f"{CGROUP_ROOT}/cgroup.controllers").split()}
    write(f"{CGROUP_ROOT}/cgroup.subtree_control", enable)
    os.mkdir(TEST_ROOT)
    write(f"{TEST_ROOT}/cgroup.subtree_control", enable)
    for name, check in CHECKS.items():
        began = time.monotonic()
        signal.alarm(int(DEADLINE_SECONDS * 2))
        try:
            report[name] = check()
        except Exception:
            report[name] = {"error": traceback.format_exc()}
        finally:
            signal.alarm(0)
        report[name]["guest_seconds"] = round(time.monotonic() - began, 2)
        print(f"{name}: {json.dumps(report[name])}", flush=True)
    try:
        os.rmdir(TEST_ROOT)
    except OSError as error:  # a failed check left its leaf behind; the VM is disposable
        report["cleanup_error"] = str(error)
    report["guest_seconds"] = round(time.monotonic() - started, 2)
    with open(os.path.join(os.environ["RUSTYMT_VM_RESULTS"], "cgroup2.json"), "w") as out:
        json.dump(report, out, indent=1)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())

"""Run a command inside a throwaway qemu VM that has a pure cgroup v2 host.

The guest is the host's own root filesystem (read-only 9p, tmpfs overlay on
top), so the command can be any program of this checkout, e.g. the venv's
Python. The guest mounts cgroup2 with nsdelegate at /sys/fs/cgroup, with every
controller available; a second, writable 9p share (``results_dir`` on the host,
``/vm-results`` in the guest, also in ``$RUSTYMT_VM_RESULTS``) carries files
back. With ``disk_mb`` the guest gets a raw virtio disk at /dev/vda for io.max.

KVM does not work on these machines, so qemu runs under TCG, on one core of
the host for the VM's lifetime: boot only when testing. Boots can hang (rarely,
under load), so qemu runs under ``timeout``, a watchdog kills a boot that has
not reached the command after ``boot_timeout``, and such a boot is retried
once. The serial console is the command's stdout; markers
with a per-run nonce, on their own lines, delimit it from kernel and init
noise, and carriage returns and terminal escapes are stripped.
"""
from __future__ import annotations

import dataclasses
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.host.vm import assets as vm_assets

# TCG flags measured on these machines (notes/cgroup2-vm.md): q35 rather than
# microvm (which hangs in about a third of boots under load), one vCPU.
QEMU_MACHINE = [
    "-accel", "tcg,thread=multi,tb-size=64",
    "-cpu", "max", "-M", "q35", "-smp", "1", "-m", "512",
    "-nographic", "-no-reboot", "-nic", "none", "-nodefaults", "-serial", "stdio",
]
# quiet + loglevel=1 keeps kernel messages (OOM reports included) off the
# serial line the command's output travels on; panic=-1 + -no-reboot turns a
# guest panic into a qemu exit instead of a hang.
KERNEL_CMDLINE = "console=ttyS0 quiet loglevel=1 panic=-1 rdinit=/init"
ATTEMPTS = 2
# Boot to the command: 4-6 s on a quiet host, 25 s seen with the 2 cores
# contended; a boot this long has hung (microvm-style TSC calibration, ...).
DEFAULT_BOOT_TIMEOUT = 90.0
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_TERMINAL_ESCAPE = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-~]|[()][0-9A-Za-z])")


@dataclasses.dataclass(frozen=True)
class VmResult:
    returncode: int  # the command's exit status inside the guest
    stdout: str  # what it wrote to stdout/stderr (the serial console), cleaned
    results_dir: Path  # host side of the guest's /vm-results share
    boot_seconds: float  # qemu start -> the command started (the successful attempt)
    total_seconds: float  # qemu start -> qemu exit (the successful attempt)
    attempts: int  # 1, or 2 when the first boot failed


class VmError(RuntimeError):
    """The VM did not run the command to completion (after the retry)."""


def unavailable_reason() -> str | None:
    """Why the VM cannot run here, or None when it can (assets may still need a download)."""
    missing = vm_assets.tools_missing()
    if missing:
        return f"VM tests need {', '.join(missing)} (scripts/apt-packages.txt: qemu-system-x86, qemu-utils, busybox-static)"
    if os.geteuid() != 0:
        return "VM tests need root (the guest chroots into the host's root over 9p)"
    return None


def run_in_vm(
    command: Sequence[str],
    timeout: float,
    disk_mb: int | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    results_dir: str | os.PathLike[str] | None = None,
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT,
) -> VmResult:
    """Boot the VM, run ``command`` as root in the guest, power off; return what it did.

    ``timeout`` bounds each attempt (boot + command + poweroff);
    ``boot_timeout`` bounds the boot alone (a hung boot is retried early). ``cwd``
    defaults to the caller's working directory (the guest sees the same paths);
    ``env`` is added to a minimal environment. ``results_dir`` defaults to a
    new temporary directory, which the caller owns and removes.
    """
    prepared = vm_assets.prepare()
    own_results = results_dir is None
    results = Path(tempfile.mkdtemp(prefix="rustymt-vm-")) if own_results else Path(results_dir)
    results.mkdir(parents=True, exist_ok=True)
    nonce = secrets.token_hex(6)
    begin, end = f"RUSTYMT-VM-BEGIN-{nonce}", f"RUSTYMT-VM-EXIT-{nonce}"
    (results / vm_assets.RUN_SCRIPT).write_text(
        _run_script(command, Path(cwd or os.getcwd()), dict(env or {}), begin, end)
    )
    try:
        with tempfile.TemporaryDirectory(prefix="rustymt-vm-disk-") as scratch:
            disk = _make_disk(Path(scratch), disk_mb) if disk_mb else None
            argv = _qemu_argv(prepared, results, disk, timeout)
            completed, attempts = boot_with_retry(argv, begin, end, boot_timeout)
    except VmError as error:
        if own_results:  # the caller never learns its path
            shutil.rmtree(results, ignore_errors=True)
        raise VmError(f"VM did not complete {shlex.join(command)}:\n{error}") from None
    return VmResult(completed.returncode, completed.stdout, results, completed.boot_seconds,
                    completed.total_seconds, attempts)


def boot_with_retry(argv: Sequence[str], begin: str, end: str,
                    boot_timeout: float = DEFAULT_BOOT_TIMEOUT) -> tuple["_Completed", int]:
    """Run `argv` (qemu under timeout) until the markers bracket a finished
    command; a second attempt only when the first never reached the command
    (killed by the boot watchdog after `boot_timeout`, or qemu died)."""
    failures = []
    for attempt in range(1, ATTEMPTS + 1):
        outcome = _boot_once(argv, begin, end, boot_timeout)
        if isinstance(outcome, _Completed):
            return outcome, attempt
        failures.append(outcome)
        if outcome.command_started:
            break  # the guest booted: a second boot would only repeat the command's failure
    raise VmError("\n".join(f"attempt {n}: {failure}" for n, failure in enumerate(failures, start=1)))


def clean_console(raw: bytes) -> str:
    """Serial console bytes -> text: terminal escapes and carriage returns removed."""
    return _TERMINAL_ESCAPE.sub(b"", raw).replace(b"\r", b"").decode("utf-8", "replace")


def between_markers(console: str, begin: str, end: str) -> tuple[str, int] | None:
    """(output between the markers, exit status) or None when either marker is missing."""
    lines = console.split("\n")
    try:
        first = next(i for i, line in enumerate(lines) if line.strip() == begin)
    except StopIteration:
        return None
    for i in range(first + 1, len(lines)):
        fields = lines[i].strip().split()
        if len(fields) == 2 and fields[0] == end and fields[1].isdigit():
            output = "\n".join(lines[first + 1:i])
            # The end marker is preceded by an empty line of our own (see _run_script).
            return output.removesuffix("\n"), int(fields[1])
    return None


@dataclasses.dataclass(frozen=True)
class _Completed:
    returncode: int
    stdout: str
    boot_seconds: float
    total_seconds: float


@dataclasses.dataclass(frozen=True)
class _Failed:
    why: str
    console_tail: str
    command_started: bool

    def __str__(self) -> str:
        return f"{self.why}; console ends with:\n{self.console_tail}"


def _boot_once(argv: Sequence[str], begin: str, end: str, boot_timeout: float) -> _Completed | _Failed:
    started = time.monotonic()
    boot_seconds = None
    raw = bytearray()
    begin_bytes = begin.encode()
    # Its own session, so the boot watchdog can kill timeout and qemu together.
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          start_new_session=True) as qemu:
        assert qemu.stdout is not None
        boot_timed_out = threading.Event()

        def on_boot_timeout() -> None:
            boot_timed_out.set()
            _kill_session(qemu.pid)

        watchdog = threading.Timer(boot_timeout, on_boot_timeout)
        watchdog.start()
        try:
            # Read as it arrives so the boot time is known; the pipe closes when qemu exits.
            while chunk := qemu.stdout.read1(65536):
                raw += chunk
                if boot_seconds is None and begin_bytes in raw:
                    boot_seconds = time.monotonic() - started
                    watchdog.cancel()
        finally:
            watchdog.cancel()
        status = qemu.wait()
    total_seconds = time.monotonic() - started
    console = clean_console(bytes(raw))
    found = between_markers(console, begin, end)
    if found is not None:
        output, returncode = found
        return _Completed(returncode, output, boot_seconds or total_seconds, total_seconds)
    tail = "\n".join(console.splitlines()[-25:])
    started_command = boot_seconds is not None
    if boot_timed_out.is_set() and not started_command:
        return _Failed(f"the command had not started after {boot_timeout:g}s of boot", tail, False)
    if status in (124, 137):
        return _Failed(f"timed out after {total_seconds:.1f}s (timeout status {status})", tail, started_command)
    return _Failed(f"qemu exited with {status} before the command finished", tail, started_command)


def _kill_session(leader: int) -> None:
    try:
        os.killpg(leader, signal.SIGKILL)
    except ProcessLookupError:
        pass  # exited just now


def _run_script(command: Sequence[str], cwd: Path, env: dict[str, str], begin: str, end: str) -> str:
    exports = {"PATH": GUEST_PATH, "HOME": "/root", "LANG": "C.UTF-8",
               "RUSTYMT_VM_RESULTS": vm_assets.GUEST_RESULTS, **env}
    lines = [f"export {name}={shlex.quote(value)}" for name, value in exports.items()]
    # Markers on lines of their own: the console may hold a partial line of
    # init output before, and the command may not end its output with \n.
    lines += [
        f"echo; echo {begin}",
        f"cd {shlex.quote(str(cwd))} && {shlex.join(command)} 2>&1",
        "status=$?",
        f'echo; echo "{end} $status"',
    ]
    return "\n".join(lines) + "\n"


def _make_disk(scratch: Path, disk_mb: int) -> Path:
    disk = scratch / "disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(disk), f"{disk_mb}M"], check=True)
    return disk


def _qemu_argv(prepared: vm_assets.VmAssets, results: Path, disk: Path | None, timeout: float) -> list[str]:
    argv = [
        "timeout", "--kill-after=5", f"{timeout:g}",
        "qemu-system-x86_64", *QEMU_MACHINE,
        "-kernel", str(prepared.vmlinux), "-initrd", str(prepared.initramfs),
        "-append", KERNEL_CMDLINE,
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", f"virtio-9p-pci,fsdev=hostroot,mount_tag={vm_assets.HOSTROOT_TAG}",
        "-fsdev", f"local,id=results,path={_qemu_option_value(results)},security_model=none",
        "-device", f"virtio-9p-pci,fsdev=results,mount_tag={vm_assets.RESULTS_TAG}",
    ]
    if disk is not None:
        argv += ["-drive", f"file={_qemu_option_value(disk)},if=virtio,format=raw,cache=none"]
    return argv


def _qemu_option_value(path: Path) -> str:
    """A path inside qemu's comma-separated option syntax (a literal comma is doubled)."""
    return str(path).replace(",", ",,")

"""The VM harness's parts that need no VM: initramfs archive, kernel unpacking,
the guest run script, and reading the serial console."""
from __future__ import annotations

import lzma
import stat
import subprocess

import pytest

from tests.conftest import require_host, wait_for
from tests.host.vm import assets as vm_assets
from tests.host.vm import harness


def test_newc_archive_lists_files_dirs_and_device_nodes_as_busybox_cpio_reads_them(tmp_path):
    require_host(vm_assets.BUSYBOX.is_file(), f"{vm_assets.BUSYBOX} (busybox-static) missing")
    archive = tmp_path / "initramfs.cpio"
    archive.write_bytes(b"".join(vm_assets.newc_archive([
        vm_assets.CpioDir("bin"),
        vm_assets.CpioFile("bin/hello", b"odd-length!", 0o755),
        vm_assets.CpioNode("console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        vm_assets.CpioFile("init", b"#!/bin/sh\n", 0o700),
    ])))
    listing = subprocess.run([str(vm_assets.BUSYBOX), "cpio", "-tv"], stdin=archive.open("rb"),
                             capture_output=True, text=True, check=True).stdout.splitlines()
    modes_by_name = {line.split()[-1]: line.split()[0] for line in listing}
    assert modes_by_name == {"bin": "drwxr-xr-x", "bin/hello": "-rwxr-xr-x",
                             "console": "crw-------", "init": "-rwx------"}
    extracted = tmp_path / "out"
    extracted.mkdir()
    subprocess.run([str(vm_assets.BUSYBOX), "cpio", "-id", "bin/hello", "init"], stdin=archive.open("rb"),
                   cwd=extracted, check=True, capture_output=True)
    assert (extracted / "bin" / "hello").read_bytes() == b"odd-length!"
    assert (extracted / "init").read_bytes() == b"#!/bin/sh\n"


def test_extract_vmlinux_decompresses_the_xz_payload_and_ignores_what_follows():
    elf = vm_assets.ELF_MAGIC + bytes(range(256)) * 64
    bzimage = b"MZ setup code" * 10 + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"\0trailing bzImage bytes"
    assert vm_assets.extract_vmlinux(bzimage) == elf


def test_extract_vmlinux_rejects_images_without_an_xz_elf():
    with pytest.raises(vm_assets.AssetError, match="no XZ payload"):
        vm_assets.extract_vmlinux(b"MZ gzip-compressed kernel \x1f\x8b")
    with pytest.raises(vm_assets.AssetError, match="not an ELF"):
        vm_assets.extract_vmlinux(b"MZ" + lzma.compress(b"not an elf", format=lzma.FORMAT_XZ))


def test_clean_console_strips_carriage_returns_and_terminal_escapes():
    raw = b"\x1bc\x1b[?7l\x1b[2J\x1b[0mhello\r\n\x1b]0;title\x07world\x1b(B\r\n"
    assert harness.clean_console(raw) == "hello\nworld\n"


def test_run_script_brackets_the_commands_output_and_exit_status_with_markers(tmp_path):
    # The script the guest runs, run here with the host's sh: same shell, same markers.
    script = harness._run_script(["sh", "-c", 'printf "no newline at end"; echo "$GREETING" >&2; exit 7'],
                                 tmp_path, {"GREETING": "it's quoted"}, "BEGIN-x", "EXIT-x")
    console = "init noise without newline" + subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True).stdout
    assert harness.between_markers(console, "BEGIN-x", "EXIT-x") == ("no newline at endit's quoted", 7)


def test_between_markers_needs_both_markers_on_their_own_lines():
    assert harness.between_markers("boot\nBEGIN-x\nout\nEXIT-x 0\n", "BEGIN-x", "EXIT-x") == ("out", 0)
    assert harness.between_markers("boot\nBEGIN-x\nout\n", "BEGIN-x", "EXIT-x") is None  # guest died
    assert harness.between_markers("echo BEGIN-x\nEXIT-x 0\n", "BEGIN-x", "EXIT-x") is None
    assert harness.between_markers("BEGIN-x\nsays EXIT-x 3\nEXIT-x 1\n", "BEGIN-x", "EXIT-x") == ("says EXIT-x 3", 1)


def stand_in_for_qemu(tmp_path, script: str) -> list[str]:
    """A program in qemu's place: it prints a console and exits, counting its runs."""
    return ["sh", "-c", f"echo run >> {tmp_path}/runs; {script}"]


def runs(tmp_path) -> int:
    return (tmp_path / "runs").read_text().count("run")


def test_boot_with_retry_returns_the_first_completed_run(tmp_path):
    argv = stand_in_for_qemu(tmp_path, r"printf 'SeaBIOS\r\n\033cBEGIN-x\r\nout\r\n\r\nEXIT-x 5\r\n'")
    completed, attempts = harness.boot_with_retry(argv, "BEGIN-x", "EXIT-x")
    assert (completed.returncode, completed.stdout, attempts, runs(tmp_path)) == (5, "out", 1, 1)
    assert 0 < completed.boot_seconds <= completed.total_seconds


def test_a_boot_that_never_reaches_the_command_is_retried_once_then_reported(tmp_path):
    argv = stand_in_for_qemu(tmp_path, "echo 'Booting from ROM..'; exit 124")
    with pytest.raises(harness.VmError) as raised:
        harness.boot_with_retry(argv, "BEGIN-x", "EXIT-x")
    assert runs(tmp_path) == 2
    assert "attempt 1: timed out" in str(raised.value) and "attempt 2: timed out" in str(raised.value)
    assert "Booting from ROM.." in str(raised.value)  # the console's tail, for diagnosis


def test_a_command_that_started_but_never_finished_is_not_retried(tmp_path):
    argv = stand_in_for_qemu(tmp_path, "echo BEGIN-x; echo stuck; exit 1")
    with pytest.raises(harness.VmError, match="attempt 1: qemu exited with 1") as raised:
        harness.boot_with_retry(argv, "BEGIN-x", "EXIT-x")
    assert runs(tmp_path) == 1
    assert "attempt 2" not in str(raised.value)


def test_a_hung_boot_is_killed_by_the_boot_watchdog_with_its_children_then_retried(tmp_path):
    # Like timeout + qemu: a process tree that never prints the begin marker.
    argv = stand_in_for_qemu(tmp_path, f"sleep 600 & echo $! >> {tmp_path}/sleepers; echo 'Booting from ROM..'; wait")
    with pytest.raises(harness.VmError) as raised:
        harness.boot_with_retry(argv, "BEGIN-x", "EXIT-x", boot_timeout=0.5)
    assert runs(tmp_path) == 2
    assert str(raised.value).count("the command had not started after 0.5s of boot") == 2
    for pid in map(int, (tmp_path / "sleepers").read_text().split()):
        wait_for(lambda: not alive(pid), 10, what=f"the stand-in's child {pid} to be killed")


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_find_modules_takes_ko_files_and_skips_built_in_ones(tmp_path):
    (tmp_path / "kernel" / "fs" / "9p").mkdir(parents=True)
    (tmp_path / "kernel" / "fs" / "9p" / "9p.ko").write_bytes(b"\x7fELF")
    (tmp_path / "modules.builtin").write_text("kernel/drivers/virtio/virtio.ko\n")
    assert vm_assets._find_modules(tmp_path, ["virtio", "9p"]) == {"9p": tmp_path / "kernel" / "fs" / "9p" / "9p.ko"}
    with pytest.raises(vm_assets.AssetError, match="overlay is neither"):
        vm_assets._find_modules(tmp_path, ["overlay"])


def test_cached_kernels_are_ordered_by_abi_number_not_text(tmp_path):
    for release in ("6.1.0-9-amd64", "6.1.0-56-amd64", "6.1.0-10-amd64", "6.1.0-57-amd64"):
        (tmp_path / f"kernel-{release}").mkdir()
        if release != "6.1.0-57-amd64":  # a download that never produced a vmlinux
            (tmp_path / f"kernel-{release}" / "vmlinux").write_bytes(b"")
    assert vm_assets.cached_kernel_releases(tmp_path) == ["6.1.0-56-amd64", "6.1.0-10-amd64", "6.1.0-9-amd64"]

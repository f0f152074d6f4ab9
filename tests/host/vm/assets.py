"""Assets for the cgroup v2 test VM: a stock Debian kernel and a busybox initramfs.

These machines have only cgroup v1 controllers, so the v2 driver is tested in a
small qemu VM (recipe: /work/shared/notes/cgroup2-vm.md). Everything the VM
boots is derived from Debian packages and cached outside the repository, under
``$RUSTYMT_VM_CACHE`` (default ``~/.cache/rustymt-vm``)::

    <cache>/kernel-6.1.0-<N>-amd64/
        linux-image-...deb   apt-get download (never installed into /boot)
        root/                dpkg-deb -x of it
        vmlinux              the ELF inside vmlinuz (booted PVH: no
                             decompression under TCG, ~3 s saved per boot)
        initramfs-<digest>.cpio
                             busybox + the modules + /init; the digest covers
                             everything that goes in, so a change rebuilds it

Preparation is idempotent (each step skips when its output exists) and safe to
run concurrently (one flock on the cache). The kernel's ABI number is asked of
apt-cache at run time; when apt knows none, or that one cannot be downloaded,
the newest cached kernel is used.

Run ``scripts/vm-assets`` to prepare ahead of the tests.
"""
from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import lzma
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

# The stock kernel has virtio-pci, 9p, virtio-blk and overlayfs as modules;
# this is their dependency order (each one's symbols come from those before).
MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "9pnet",
    "9pnet_virtio",
    "netfs",
    "fscache",
    "9p",
    "virtio_blk",
    "overlay",
)

BUSYBOX = Path("/bin/busybox")  # from busybox-static: no shared libraries to copy
XZ_MAGIC = b"\xfd7zXZ\x00"
ELF_MAGIC = b"\x7fELF"

# Mount tags of the two 9p shares and where the guest sees the results share.
HOSTROOT_TAG = "hostroot"
RESULTS_TAG = "results"
GUEST_RESULTS = "/vm-results"
RUN_SCRIPT = ".rustymt-vm-run.sh"  # written into the results share by the harness

# PID 1 of the guest. It only mounts and chroots; what runs is the harness's
# run script on the results share, so one initramfs serves every command.
INIT = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /lower /upper /newroot
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /etc/modules.order); do
    insmod /lib/modules/$module.ko || echo "rustymt-vm: insmod $module failed"
done
# The host's root, read-only, under a tmpfs overlay so the guest can write
# (Python bytecode caches, pytest's tmp dirs) without touching the host.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose {HOSTROOT_TAG} /lower
mount -t tmpfs -o mode=0755 tmpfs /upper
mkdir -p /upper/upper /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/upper,workdir=/upper/work overlay /newroot
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
# /tmp stays the host's (through the overlay: readable, writes stay in the
# guest), so commands can read what a test put under its tmp_path. /run gets a
# fresh tmpfs: the host's sockets and pid files mean nothing in here.
mount -t tmpfs tmpfs /newroot/run
mount -t cgroup2 -o nsdelegate none /newroot/sys/fs/cgroup
mkdir -p /newroot{GUEST_RESULTS}
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 {RESULTS_TAG} /newroot{GUEST_RESULTS}
chroot /newroot /bin/sh {GUEST_RESULTS}/{RUN_SCRIPT}
sync
poweroff -f
"""


class AssetError(RuntimeError):
    """A VM asset cannot be prepared (no package, no network, bad image)."""


@dataclasses.dataclass(frozen=True)
class VmAssets:
    kernel_release: str  # e.g. "6.1.0-56-amd64"
    vmlinux: Path
    initramfs: Path


def cache_root() -> Path:
    return Path(os.environ.get("RUSTYMT_VM_CACHE") or Path.home() / ".cache" / "rustymt-vm")


def tools_missing() -> list[str]:
    """Host programs the VM needs that are not installed (empty when all are)."""
    wanted = ("qemu-system-x86_64", "qemu-img", "timeout", "apt-get", "dpkg-deb")
    missing = [tool for tool in wanted if shutil.which(tool) is None]
    if not BUSYBOX.is_file():
        missing.append(str(BUSYBOX))
    return missing


def apt_kernel_release() -> str | None:
    """The current generic 6.1 kernel's release as apt knows it, e.g. 6.1.0-56-amd64.

    The linux-image-amd64 metapackage depends on the current ABI; failing that,
    the highest ABI number apt-cache lists. None when apt knows no such kernel.
    """
    pattern = re.compile(r"linux-image-(6\.1\.0-(\d+)-amd64)\b")
    depends = _run_quiet(["apt-cache", "depends", "linux-image-amd64"])
    found = pattern.search(depends)
    if found:
        return found.group(1)
    listed = _run_quiet(["apt-cache", "search", "--names-only", r"^linux-image-6\.1\.0-[0-9]+-amd64$"])
    releases = {m.group(1): int(m.group(2)) for m in pattern.finditer(listed)}
    return max(releases, key=releases.__getitem__) if releases else None


def cached_kernel_releases(root: Path) -> list[str]:
    """Releases whose vmlinux is already cached, newest ABI first."""
    releases = [p.parent.name.removeprefix("kernel-") for p in root.glob("kernel-*/vmlinux")]
    return sorted(releases, key=lambda r: int(r.split("-")[1]), reverse=True)


@functools.cache
def prepare(root: Path | None = None) -> VmAssets:
    """Download and derive whatever is missing; return the paths the VM boots.

    Memoized per process: asking apt-cache takes seconds on a loaded machine,
    and one test session boots with the same assets throughout.
    """
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock"):
        cached = cached_kernel_releases(root)
        release = apt_kernel_release()
        if release is None and not cached:
            raise AssetError(
                "apt-cache knows no linux-image-6.1.0-<N>-amd64 and none is cached; "
                "run `apt-get update` (Debian 12 sources needed)"
            )
        try:
            return _prepare_kernel(root, release or cached[0])
        except AssetError:
            # A newer ABI that cannot be fetched now (offline, mirror moved on):
            # the newest kernel already cached boots just as well.
            if not cached or release in (None, cached[0]):
                raise
            return _prepare_kernel(root, cached[0])


def _prepare_kernel(root: Path, release: str) -> VmAssets:
    kernel_dir = root / f"kernel-{release}"
    kernel_dir.mkdir(exist_ok=True)
    unpacked = _unpack_kernel_package(release, kernel_dir)
    vmlinux = kernel_dir / "vmlinux"
    if not vmlinux.exists():
        _write_atomically(vmlinux, extract_vmlinux((unpacked / "boot" / f"vmlinuz-{release}").read_bytes()))
    initramfs = _build_initramfs(unpacked / "lib" / "modules" / release, kernel_dir)
    return VmAssets(release, vmlinux, initramfs)


def extract_vmlinux(vmlinuz: bytes) -> bytes:
    """The ELF kernel inside a bzImage whose payload is XZ-compressed."""
    start = vmlinuz.find(XZ_MAGIC)
    if start < 0:
        raise AssetError("vmlinuz has no XZ payload (is it XZ-compressed?)")
    # The payload is followed by the rest of the bzImage; the decompressor
    # stops at the end of the XZ stream and leaves that in unused_data.
    elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(vmlinuz[start:])
    if not elf.startswith(ELF_MAGIC):
        raise AssetError("vmlinuz's XZ payload is not an ELF image")
    return elf


def _unpack_kernel_package(release: str, kernel_dir: Path) -> Path:
    unpacked = kernel_dir / "root"
    if (unpacked / "boot" / f"vmlinuz-{release}").exists():
        return unpacked
    debs = list(kernel_dir.glob(f"linux-image-{release}_*.deb"))
    if not debs:
        download = subprocess.run(
            ["apt-get", "download", f"linux-image-{release}"],
            cwd=kernel_dir, capture_output=True, text=True,
        )
        debs = list(kernel_dir.glob(f"linux-image-{release}_*.deb"))
        if download.returncode != 0 or not debs:
            raise AssetError(f"apt-get download linux-image-{release} failed: {download.stderr.strip()}")
    staging = kernel_dir / "root.partial"
    shutil.rmtree(staging, ignore_errors=True)
    unpack = subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(staging)], capture_output=True, text=True)
    if unpack.returncode != 0:
        raise AssetError(f"dpkg-deb -x {debs[0].name} failed: {unpack.stderr.strip()}")
    staging.rename(unpacked)
    return unpacked


def _build_initramfs(module_dir: Path, kernel_dir: Path) -> Path:
    module_paths = _find_modules(module_dir, MODULES)
    members = [
        CpioDir("bin"), CpioDir("dev"), CpioDir("etc"), CpioDir("lib"), CpioDir("lib/modules"),
        # The kernel opens /dev/console for init's stdio before init runs.
        CpioNode("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        CpioFile("bin/busybox", BUSYBOX.read_bytes(), 0o755),
        CpioFile("init", INIT.encode(), 0o755),
        CpioFile("etc/modules.order", "".join(f"{name}\n" for name in module_paths).encode(), 0o644),
    ]
    members += [CpioFile(f"lib/modules/{name}.ko", path.read_bytes(), 0o644) for name, path in module_paths.items()]
    image = b"".join(newc_archive(members))
    target = kernel_dir / f"initramfs-{hashlib.sha256(image).hexdigest()[:16]}.cpio"
    if not target.exists():
        _write_atomically(target, image)
    return target


def _find_modules(module_dir: Path, names: Iterable[str]) -> dict[str, Path]:
    """name -> .ko path for each module; built-in ones are left out (nothing to load)."""
    builtin_file = module_dir / "modules.builtin"
    builtin = {Path(line).name.removesuffix(".ko") for line in builtin_file.read_text().split()} if builtin_file.exists() else set()
    found: dict[str, Path] = {}
    for name in names:
        candidates = sorted((module_dir / "kernel").rglob(f"{name}.ko"))
        if candidates:
            found[name] = candidates[0]
        elif name.replace("-", "_") not in {b.replace("-", "_") for b in builtin}:
            raise AssetError(f"kernel module {name} is neither in {module_dir} nor built in")
    return found


# --- cpio "newc" archives (the initramfs format), written without root -------


@dataclasses.dataclass(frozen=True)
class CpioFile:
    name: str
    data: bytes
    perm: int


@dataclasses.dataclass(frozen=True)
class CpioDir:
    name: str


@dataclasses.dataclass(frozen=True)
class CpioNode:
    name: str
    mode: int  # file type bits | permission bits
    rdev: tuple[int, int] = (0, 0)


def newc_archive(members: Iterable[CpioFile | CpioDir | CpioNode]) -> Iterator[bytes]:
    """The chunks of a cpio archive in the "newc" (070701) format the kernel unpacks."""
    for ino, member in enumerate(members, start=1):
        if isinstance(member, CpioFile):
            yield _newc_entry(ino, member.name, stat.S_IFREG | member.perm, member.data)
        elif isinstance(member, CpioDir):
            yield _newc_entry(ino, member.name, stat.S_IFDIR | 0o755, b"", nlink=2)
        else:
            yield _newc_entry(ino, member.name, member.mode, b"", rdev=member.rdev)
    yield _newc_entry(0, "TRAILER!!!", 0, b"")


def _newc_entry(ino: int, name: str, mode: int, data: bytes, nlink: int = 1, rdev: tuple[int, int] = (0, 0)) -> bytes:
    encoded_name = name.encode() + b"\0"
    # ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded_name), 0)
    header = b"070701" + b"".join(b"%08X" % field for field in fields)
    return _pad4(header + encoded_name) + _pad4(data)


def _pad4(chunk: bytes) -> bytes:
    return chunk + b"\0" * (-len(chunk) % 4)


# --- helpers ------------------------------------------------------------------


def _run_quiet(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True).stdout
    except FileNotFoundError:
        return ""


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.rename(path)


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


if __name__ == "__main__":
    assets = prepare()
    print(f"kernel  {assets.kernel_release}\nvmlinux {assets.vmlinux}\ninitrd  {assets.initramfs}")

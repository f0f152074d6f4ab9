"""Native extension build only; all metadata lives in pyproject.toml.

The engine extension owns a private copy of SQLite: Debian's static
libsqlite3.a (package libsqlite3-dev) is linked in with its symbols hidden, so
that nothing else in the process (the stdlib sqlite3 module initializes the
shared library on import) can initialize our copy first or share our hooks.
See ../shared/notes/sqlite-native-hooks.md.

native/*.c is plain C99 and is compiled with warnings as errors; the
Cython-generated C is compiled with the default flags (Cython's output is not
warning-clean and is not ours to fix).
"""
import glob
import os
import sysconfig

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NATIVE_DIR = "native"
NATIVE_SOURCES = sorted(glob.glob(os.path.join(NATIVE_DIR, "*.c")))
STRICT_CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-D_GNU_SOURCE"]
SQLITE_STATIC = "/usr/lib/x86_64-linux-gnu/libsqlite3.a"
SQLITE_LINK = [
    "-Wl,-Bstatic", "-lsqlite3", "-Wl,-Bdynamic",
    "-Wl,--exclude-libs,ALL", "-lm", "-ldl", "-lpthread",
]
# RUSTYMT_SANITIZE=1 builds the extension with ASan + UBSan (tests then run
# with LD_PRELOAD of libasan; see scripts/test-sanitized).
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"] if os.environ.get("RUSTYMT_SANITIZE") == "1" else []


class StrictNativeBuildExt(build_ext):
    """Compile native/*.c with strict flags, then link them into the extension."""

    def build_extension(self, ext):
        if ext.name != "rustymt._native._core":  # only the engine core links native/*.c + SQLite
            return super().build_extension(ext)
        if not os.path.exists(SQLITE_STATIC) and not glob.glob(f"{sysconfig.get_config_var('LIBDIR')}/libsqlite3.a"):
            raise SystemExit(
                "libsqlite3.a not found: install Debian's libsqlite3-dev (scripts/bootstrap does this)"
            )
        objects = self.compiler.compile(
            NATIVE_SOURCES,
            output_dir=self.build_temp,
            include_dirs=[NATIVE_DIR],
            extra_postargs=STRICT_CFLAGS + SANITIZE,
            depends=glob.glob(os.path.join(NATIVE_DIR, "*.h")),
        )
        ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)


core = Extension(
    "rustymt._native._core",
    sources=["rustymt/_native/_core.pyx"],
    # so an in-place rebuild relinks when only native/*.c or a .pxi changed
    depends=sorted(glob.glob(os.path.join(NATIVE_DIR, "*.[ch]")) + glob.glob("rustymt/_native/*.px[di]")),
    include_dirs=[NATIVE_DIR],
    extra_compile_args=["-O2", "-Wno-unused-function"] + SANITIZE,
    extra_link_args=SQLITE_LINK + SANITIZE,
)

# The wire server's compiled hot loops (pure-Python twins in framing.py / rows.py).
pgwire_speedups = Extension(
    "rustymt.engine.pgwire._speedups",
    sources=["rustymt/engine/pgwire/_speedups.pyx"],
    extra_compile_args=["-O2"] + SANITIZE,
    extra_link_args=SANITIZE,
)

setup(
    ext_modules=cythonize(
        [core, pgwire_speedups],
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False},
        include_path=["rustymt/_native"],
    ),
    cmdclass={"build_ext": StrictNativeBuildExt},
)

# cython: language_level=3
"""The engine's native core: SQLite's page cache, allocator, scheduler and VFS
hooks (native/*.c) and the engine's own binding to its private SQLite copy.

Each unit's wrapper lives in its own .pxi file included here, because the
hooks must share one shared object with the statically linked SQLite.
"""

cdef extern from "version.h":
    const char *rmt_sqlite_version()


def sqlite_version():
    """Version of the SQLite copy linked into the engine (not the system one)."""
    return rmt_sqlite_version().decode("ascii")

include "wfq.pxi"

# cython: language_level=3
"""The engine's native core: SQLite's page cache, allocator, scheduler and VFS
hooks (native/*.c) and the engine's own binding to its private SQLite copy.

Each part's wrapper lives in its own .pxi file included here, because the
hooks must share one shared object with the statically linked SQLite:

  engine.pxi      install() of the hooks, the start-up canary, tenant slots
  connection.pxi  SQLiteError, Connection, Statement (the binding proper)
  testapi.pxi     small C-level test API (a private pool, raw allocator calls)
  wireloop.pxi    the wire server's native round-trip loop
"""

cdef extern from "version.h":
    const char *rmt_sqlite_version()


def sqlite_version():
    """Version of the SQLite copy linked into the engine (not the system one)."""
    return rmt_sqlite_version().decode("ascii")


include "engine.pxi"
include "connection.pxi"
include "testapi.pxi"
include "wfq.pxi"
include "iovfs.pxi"
include "wireloop.pxi"

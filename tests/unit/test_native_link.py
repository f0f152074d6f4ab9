import subprocess
import sys


def test_engine_owns_a_private_sqlite_even_after_stdlib_sqlite3_is_imported():
    # The stdlib module initializes the shared libsqlite3 on import; the engine's
    # static copy must still be its own (no exported sqlite3_* symbols).
    code = "import sqlite3; from rustymt._native import _core; print(_core.sqlite_version())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith("3.")
    import rustymt._native._core as core

    symbols = subprocess.run(["nm", "-D", "--defined-only", core.__file__], capture_output=True, text=True, check=True)
    assert " sqlite3_" not in symbols.stdout

"""Exit codes of the rustymt command and rustymtd (documented in the README).

Kept apart from the daemon so that the CLI can report a bad command line or
configuration without importing the server stack.
"""
from __future__ import annotations

EXIT_OK = 0  # success; serve: stopped by SIGTERM/SIGINT after a graceful shutdown
EXIT_FAILURE = 1  # unexpected internal error (logged)
EXIT_CONFIG = 2  # invalid configuration or command line (one line names the key)
EXIT_DATA_DIR = 3  # data directory, catalog or keys unusable
EXIT_LISTEN = 4  # the listen address cannot be bound


class StartupError(Exception):
    """Startup cannot go on; `exit_code` is one of the codes above."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

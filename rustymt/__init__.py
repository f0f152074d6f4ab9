"""rustymt: one Linux host as a multitenant database server (CDB of pluggable SQLite databases)."""

__version__ = "0.1.0"

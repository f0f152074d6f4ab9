"""Errors on the wire: PgError (what an ErrorResponse carries) and the mapping
from SQLite result codes and messages to PostgreSQL SQLSTATEs."""
from __future__ import annotations

from . import messages
from . import sqlstate as S


class PgError(Exception):
    """An error to report to the client as ErrorResponse (FATAL closes the session)."""

    def __init__(self, code: str, message: str, *, severity: str = "ERROR",
                 detail: str | None = None, hint: str | None = None, position: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.severity = severity
        self.detail = detail
        self.hint = hint
        self.position = position

    def encode(self, kind: bytes = b"E") -> bytes:
        return messages.error_fields(kind, {
            "severity": self.severity, "severity_nonlocalized": self.severity,
            "sqlstate": self.code, "message": self.message, "detail": self.detail,
            "hint": self.hint, "position": self.position,
        })

    def __repr__(self):
        return f"PgError({self.code!r}, {self.message!r}, severity={self.severity!r})"


def fatal(code: str, message: str, **kw) -> PgError:
    return PgError(code, message, severity="FATAL", **kw)


# SQLite primary result codes (sqlite3.h) -> SQLSTATE when the message says no more.
SQLITE_PRIMARY = {
    1: S.SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION,  # SQLITE_ERROR, refined by message below
    2: S.INTERNAL_ERROR,               # SQLITE_INTERNAL
    3: S.INSUFFICIENT_PRIVILEGE,       # SQLITE_PERM
    4: S.TRANSACTION_ROLLBACK,         # SQLITE_ABORT
    5: S.T_R_SERIALIZATION_FAILURE,    # SQLITE_BUSY (after the busy timeout)
    6: S.LOCK_NOT_AVAILABLE,           # SQLITE_LOCKED
    7: S.OUT_OF_MEMORY,                # SQLITE_NOMEM (tenant memory quota)
    8: S.READ_ONLY_SQL_TRANSACTION,    # SQLITE_READONLY
    9: S.QUERY_CANCELED,               # SQLITE_INTERRUPT (CancelRequest)
    10: S.IO_ERROR,                    # SQLITE_IOERR
    11: S.DATA_CORRUPTED,              # SQLITE_CORRUPT
    13: S.DISK_FULL,                   # SQLITE_FULL (storage quota)
    14: S.IO_ERROR,                    # SQLITE_CANTOPEN
    18: S.PROGRAM_LIMIT_EXCEEDED,      # SQLITE_TOOBIG
    19: S.INTEGRITY_CONSTRAINT_VIOLATION,  # SQLITE_CONSTRAINT, refined by extended code
    20: S.DATATYPE_MISMATCH,           # SQLITE_MISMATCH
    21: S.INTERNAL_ERROR,              # SQLITE_MISUSE
    23: S.INSUFFICIENT_PRIVILEGE,      # SQLITE_AUTH (authorizer denied)
    25: S.PROTOCOL_VIOLATION,          # SQLITE_RANGE (bind index)
    26: S.DATA_CORRUPTED,              # SQLITE_NOTADB
}

SQLITE_CONSTRAINT_EXTENDED = {
    275: S.CHECK_VIOLATION,            # SQLITE_CONSTRAINT_CHECK
    787: S.FOREIGN_KEY_VIOLATION,      # SQLITE_CONSTRAINT_FOREIGNKEY
    1299: S.NOT_NULL_VIOLATION,        # SQLITE_CONSTRAINT_NOTNULL
    1555: S.UNIQUE_VIOLATION,          # SQLITE_CONSTRAINT_PRIMARYKEY
    2067: S.UNIQUE_VIOLATION,          # SQLITE_CONSTRAINT_UNIQUE
}

# SQLITE_ERROR covers everything the compiler rejects; its message says what.
SQLITE_ERROR_MESSAGES = (
    ("no such table", S.UNDEFINED_TABLE),
    ("no such column", S.UNDEFINED_COLUMN),
    ("no such function", S.UNDEFINED_FUNCTION),
    ("no such index", S.UNDEFINED_OBJECT),
    ("no such savepoint", S.S_E_INVALID_SPECIFICATION),
    ("already exists", S.DUPLICATE_TABLE),
    ("syntax error", S.SYNTAX_ERROR),
    ("incomplete input", S.SYNTAX_ERROR),
    ("unrecognized token", S.SYNTAX_ERROR),
    ("division by zero", S.DIVISION_BY_ZERO),
    ("datatype mismatch", S.DATATYPE_MISMATCH),
    ("too many sql variables", S.PROGRAM_LIMIT_EXCEEDED),
    ("not authorized", S.INSUFFICIENT_PRIVILEGE),
    ("readonly", S.READ_ONLY_SQL_TRANSACTION),
    ("read-only", S.READ_ONLY_SQL_TRANSACTION),
    ("cannot commit - no transaction is active", S.NO_ACTIVE_SQL_TRANSACTION),
    ("cannot start a transaction within a transaction", S.ACTIVE_SQL_TRANSACTION),
    ("wrong number of arguments", S.UNDEFINED_FUNCTION),
    ("ambiguous column name", S.AMBIGUOUS_COLUMN),
    ("has no column named", S.UNDEFINED_COLUMN),
    ("values for", S.SYNTAX_ERROR),  # "N values for M columns"
)

HINTS = {
    S.T_R_SERIALIZATION_FAILURE: "Another session holds the write lock; retry the transaction.",
    S.OUT_OF_MEMORY: "The tenant's memory quota is exhausted; an open transaction was rolled back.",
    S.DISK_FULL: "The tenant's storage quota is exhausted.",
}


def sqlstate_for_sqlite(code: int, extended_code: int, message: str) -> str:
    primary = code & 0xFF
    if primary == 19:
        return SQLITE_CONSTRAINT_EXTENDED.get(extended_code, S.INTEGRITY_CONSTRAINT_VIOLATION)
    if primary == 1:
        lowered = message.lower()
        for needle, state in SQLITE_ERROR_MESSAGES:
            if needle in lowered:
                return state
        return S.SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION
    return SQLITE_PRIMARY.get(primary, S.INTERNAL_ERROR)


def from_sqlite(exc) -> PgError:
    """PgError for a binding SQLiteError (attributes code, extended_code, message)."""
    code = getattr(exc, "code", 1) or 1
    extended = getattr(exc, "extended_code", code) or code
    text = getattr(exc, "message", None) or str(exc)
    state = sqlstate_for_sqlite(code, extended, text)
    if state == S.QUERY_CANCELED:
        text = "canceling statement due to user request"
    return PgError(state, text, hint=HINTS.get(state))

"""A PDB's local users, managed in SQL by its admin, as a DBA does in PostgreSQL.

    CREATE USER name [WITH] [ENCRYPTED] PASSWORD 'pw' [LOGIN]      -> CREATE ROLE
    CREATE ROLE name [WITH] LOGIN [ENCRYPTED] PASSWORD 'pw'         -> CREATE ROLE
    ALTER USER|ROLE name|CURRENT_USER [WITH] [ENCRYPTED] PASSWORD 'pw' -> ALTER ROLE
    DROP USER|ROLE [IF EXISTS] name [, ...]                          -> DROP ROLE

A local user is a row of the PDB dictionary's `users` table (system.db,
rustymt.engine.storage.SYSTEM_SCHEMA): name, SCRAM-SHA-256 verifier, is_admin.
The wire server authenticates from that table (TenantBackend.verifier via
OpenPdb.dictionary()), so a user created here logs in at once, and users
travel with the PDB's files (clone, unplug manifest, plug).

Two steps, because the password must live as briefly as possible:

  parse(tokens)     on the session's thread while the SQL front layer
                    translates the statement (sqlfront hook): the statement
                    becomes a UserStatement. A plaintext password is turned
                    into a verifier right here (scram.make_verifier); a
                    well-formed verifier (psql's \\password sends one the
                    client computed) is kept as it is, never hashed again.
                    What survives parsing holds no password, and the
                    FrontStatement's `source` is the command tag, not the
                    text. Errors never quote the statement's tokens: an
                    unexpected token may be a mistyped password.
  execute(pdb, ...) when the statement runs (pgwire session hook, bound per
                    session by TenantBackend.open_session): only the PDB admin
                    (42501), not in a read-only PDB (25006), not inside a
                    transaction block (25001: system.db is not part of the
                    tenant's transaction), then one IMMEDIATE transaction on
                    system.db, then the open PDB's dictionary cache is told
                    (OpenPdb.dictionary_changed: the file's timestamps may be
                    too coarse to notice two writes).

Names: unquoted identifiers fold to lower case, "quoted" ones keep theirs (an
admin named admin@acme.example is written "admin@acme.example"); at most 63
bytes (42622, PostgreSQL truncates: we refuse, a silently different login name
is worse); no control characters (42602); public, none and pg_* are reserved
(42939); C## names are common users, which belong to the CDB and are managed
over REST (/api/v1/cdb/common-users): CREATE refuses the name (42939), ALTER
and DROP refuse the action (42501).

Sessions of a dropped user, or of a user whose password changed, go on until
they end (as in PostgreSQL); the next login uses the new dictionary.
"""
from __future__ import annotations

import dataclasses
import os
import re

from rustymt._native import _core
from rustymt.engine import common_users, scram, storage
from rustymt.engine.pgwire import sqlfront
from rustymt.engine.pgwire import sqlstate as S
from rustymt.engine.pgwire.errors import PgError, from_sqlite

MAX_NAME_BYTES = 63               # PostgreSQL's NAMEDATALEN - 1
RESERVED_NAMES = frozenset(("public", "none"))
CURRENT_USER_WORDS = frozenset(("current_user", "session_user", "current_role"))
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MD5_HASH = re.compile(r"^md5[0-9a-f]{32}$")
BUSY_MS = 5000

# CREATE/ALTER options that describe what every PDB user already is: accepted.
_HARMLESS_OPTIONS = frozenset(("inherit", "nosuperuser", "nocreatedb", "nocreaterole", "noreplication",
                               "nobypassrls"))
# Options of PostgreSQL's CREATE/ALTER ROLE a PDB user cannot have (0A000).
_UNSUPPORTED_OPTIONS = frozenset(("superuser", "createdb", "createrole", "replication", "bypassrls", "noinherit",
                                  "connection", "valid", "in", "role", "admin", "user", "sysid", "rename", "set",
                                  "reset", "unencrypted"))


@dataclasses.dataclass(frozen=True, repr=False)
class UserStatement:
    """A parsed user-management statement; holds a verifier, never a password."""
    action: str                      # "create" | "alter" | "drop"
    names: tuple                     # role names; None stands for CURRENT_USER
    verifier: str | None = None      # create/alter
    if_exists: bool = False          # drop

    @property
    def tag(self) -> str:
        return f"{self.action.upper()} ROLE"

    def __repr__(self) -> str:       # no verifier in logs or tracebacks either
        return f"UserStatement({self.action!r}, {self.names!r})"


# ---- parsing ---------------------------------------------------------------------------------

def front_statement(sig) -> sqlfront.FrontStatement:
    """The FrontStatement of CREATE/ALTER/DROP USER|ROLE (kind "role"; value: the UserStatement)."""
    statement = parse(sig)
    front = sqlfront.FrontStatement("role", verb=statement.tag, source=statement.tag)
    front.value = statement
    return front


def parse(sig) -> UserStatement:
    """Significant tokens (sqlfront.Token) of the statement -> UserStatement (PgError 42601/0A000/22023...)."""
    action = sig[0].low
    tag = f"{action.upper()} ROLE"
    is_role = sig[1].low == "role"
    rest = sig[2:]
    if action == "drop":
        return _parse_drop(rest, tag)
    name, rest = _take_name(rest, tag)
    if name is None and action == "create":
        raise PgError(S.RESERVED_NAME, "CURRENT_USER, SESSION_USER and CURRENT_ROLE cannot be created")
    if rest and rest[0].low == "with":
        rest = rest[1:]
    verifier, login = None, None
    i = 0
    while i < len(rest):
        word = rest[i].low if rest[i].kind == "word" else None
        if word == "encrypted" and i + 1 < len(rest) and rest[i + 1].low == "password":
            i += 1
            word = "password"
        if word == "password":
            if verifier is not None:
                raise PgError(S.SYNTAX_ERROR, "conflicting or redundant options: PASSWORD given twice")
            verifier = _verifier(rest[i + 1] if i + 1 < len(rest) else None)
            i += 2
        elif word in ("login", "nologin"):
            login = word == "login"
            i += 1
        elif word in _HARMLESS_OPTIONS:
            i += 1
        elif word in _UNSUPPORTED_OPTIONS:
            raise PgError(S.FEATURE_NOT_SUPPORTED, f"{tag} option {word.upper()} is not supported for PDB users",
                          hint="A PDB user has a name and a password; the PDB admin manages the others.")
        else:
            # Not quoted back: the token may be a password typed without quotes.
            raise PgError(S.SYNTAX_ERROR, f"syntax error in {tag}: unexpected token after the role name "
                                          "(the statement is not echoed: it may hold a password)")
    if login is False or (action == "create" and is_role and login is None):
        raise PgError(S.FEATURE_NOT_SUPPORTED, "roles without LOGIN are not supported: a PDB user is a login",
                      hint="CREATE ROLE name LOGIN PASSWORD '...' (or CREATE USER name PASSWORD '...').")
    if verifier is None:
        raise PgError(S.FEATURE_NOT_SUPPORTED, f"{tag} needs a PASSWORD: PDB users log in with SCRAM-SHA-256")
    return UserStatement(action, (name,), verifier)


def _parse_drop(rest, tag) -> UserStatement:
    if_exists = len(rest) >= 2 and rest[0].low == "if" and rest[1].low == "exists"
    if if_exists:
        rest = rest[2:]
    names = []
    while True:
        name, rest = _take_name(rest, tag)
        names.append(name)
        if not rest:
            break
        if rest[0].text != ",":
            raise PgError(S.SYNTAX_ERROR, f"syntax error in {tag}: expected a comma or the end after a role name")
        rest = rest[1:]
    return UserStatement("drop", tuple(names), if_exists=if_exists)


def _take_name(tokens, tag):
    """(role name or None for CURRENT_USER, remaining tokens)."""
    if not tokens:
        raise PgError(S.SYNTAX_ERROR, f"syntax error in {tag}: a role name is expected")
    first = tokens[0]
    if first.kind == "qident":
        return first.text[1:-1].replace('""', '"'), tokens[1:]
    if first.kind != "word":
        raise PgError(S.SYNTAX_ERROR, f"syntax error in {tag}: a role name is expected")
    if first.low in CURRENT_USER_WORDS:
        return None, tokens[1:]
    # C##name unquoted: the tokenizer splits it into C, #, #, name; glue it
    # back so that the common-user rule, not a syntax error, answers.
    parts, k = [first.low], 1
    while k < len(tokens) and tokens[k].text == "#":
        parts.append("#")
        k += 1
    if k > 1 and k < len(tokens) and tokens[k].kind in ("word", "num"):
        parts.append(tokens[k].text.lower())
        k += 1
    return "".join(parts), tokens[k:]


def _verifier(token) -> str:
    """The verifier to store for the PASSWORD operand token."""
    if token is None or token.kind not in ("str", "estr", "dollar"):
        if token is not None and token.low == "null":
            raise PgError(S.FEATURE_NOT_SUPPORTED, "PASSWORD NULL is not supported: every PDB user logs in with a password")
        if token is not None and token.kind == "param":
            raise PgError(S.SYNTAX_ERROR, "PASSWORD takes a string constant: utility statements have no parameters")
        raise PgError(S.SYNTAX_ERROR, "PASSWORD must be followed by a string constant")
    if token.kind == "dollar":
        tag_len = token.text.index("$", 1) + 1
        text = token.text[tag_len:-tag_len]
    else:
        text = sqlfront._setting_value(token)  # '' and E'' literal rules, as SET values
    if not text:
        raise PgError(S.INVALID_PARAMETER_VALUE, "empty password: a PDB user needs a password")
    if text.startswith(scram.MECHANISM + "$"):
        try:
            scram.parse_scram_verifier(text)
        except ValueError:
            raise PgError(S.INVALID_PARAMETER_VALUE, "malformed SCRAM-SHA-256 verifier",
                          hint="Expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, as psql's "
                               "\\password sends it.") from None
        return text                              # computed by the client: stored as it is
    if _MD5_HASH.match(text):
        raise PgError(S.FEATURE_NOT_SUPPORTED, "MD5 password hashes are not supported: use SCRAM-SHA-256")
    return scram.make_verifier(text)


def validate_name(name: str, action: str) -> None:
    tag = f"{action.upper()} ROLE"
    if not name or _CONTROL.search(name):
        raise PgError(S.INVALID_NAME, f"{tag}: a role name must be non-empty and without control characters")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise PgError(S.NAME_TOO_LONG, f"{tag}: role name is longer than {MAX_NAME_BYTES} bytes")
    if common_users.is_common_name(name):
        if action == "create":
            raise PgError(S.RESERVED_NAME, f'role name "{name}" is reserved for common users',
                          hint="Common (C##) users belong to the CDB: create them with the REST API "
                               "(POST /api/v1/cdb/common-users).")
        raise PgError(S.INSUFFICIENT_PRIVILEGE, f'"{name}" is a common user: it can only be changed for the '
                                                "whole CDB, with the REST API (/api/v1/cdb/common-users)")
    if action == "create" and (name in RESERVED_NAMES or name.startswith("pg_")):
        raise PgError(S.RESERVED_NAME, f'role name "{name}" is reserved',
                      detail='The names public and none, and names starting with "pg_", are reserved.')


# ---- running ---------------------------------------------------------------------------------

def execute(pdb, session_user: str, statement: UserStatement, in_transaction: bool) -> list[PgError]:
    """Run `statement` for `session_user` on the open PDB `pdb` (OpenPdb);
    returns notices for the client (DROP ... IF EXISTS of a missing role)."""
    tag = statement.tag
    if in_transaction:
        raise PgError(S.ACTIVE_SQL_TRANSACTION, f"{tag} cannot run inside a transaction block",
                      hint="PDB users live in the PDB dictionary, outside the tenant's transactions.")
    entry = pdb.dictionary()["users"].get(session_user)
    if entry is None or not entry["is_admin"]:
        raise PgError(S.INSUFFICIENT_PRIVILEGE, f"permission denied to {statement.action} role",
                      detail="Only the PDB admin manages the PDB's users.")
    if pdb.readonly:
        raise PgError(S.READ_ONLY_SQL_TRANSACTION, f"cannot execute {tag} in a read-only PDB")
    names = tuple(session_user if name is None else name for name in statement.names)
    for name in names:
        validate_name(name, statement.action)
    conn = _core.Connection(os.path.join(pdb.folder, storage.DICTIONARY_FILE), create=False)
    try:
        conn.busy_timeout(BUSY_MS)
        storage.execute(conn, "BEGIN IMMEDIATE")
        try:
            notices = _write(conn, statement, names)
            storage.execute(conn, "COMMIT")
        except BaseException:
            if conn.in_transaction:
                storage.execute(conn, "ROLLBACK")
            raise
    except _core.SQLiteError as exc:  # busy past the timeout, disk full...: the right SQLSTATE
        raise from_sqlite(exc) from None
    finally:
        conn.close()
    pdb.dictionary_changed()
    return notices


def _write(conn, statement: UserStatement, names) -> list[PgError]:
    notices = []
    for name in names:
        found = storage.execute(conn, "SELECT is_admin FROM users WHERE username = ?1", (name,))
        if statement.action == "create":
            if found:
                raise PgError(S.DUPLICATE_OBJECT, f'role "{name}" already exists')
            storage.execute(conn, "INSERT INTO users(username, verifier, is_admin, created_at) VALUES (?1, ?2, 0, ?3)",
                            (name, statement.verifier, storage.now_iso()))
            continue
        if not found:
            if statement.if_exists:
                notices.append(PgError(S.SUCCESSFUL_COMPLETION, f'role "{name}" does not exist, skipping',
                                       severity="NOTICE"))
                continue
            raise PgError(S.UNDEFINED_OBJECT, f'role "{name}" does not exist')
        if statement.action == "alter":
            storage.execute(conn, "UPDATE users SET verifier = ?2 WHERE username = ?1", (name, statement.verifier))
        elif found[0][0]:
            raise PgError(S.OBJECT_IN_USE, f'the PDB admin "{name}" cannot be dropped',
                          detail="The PDB admin is created with the PDB and is its only administrator.")
        else:
            storage.execute(conn, "DELETE FROM users WHERE username = ?1", (name,))
    return notices

"""What a tenant session may ask SQLite to do: the authorizer rule table.

Every session connection is opened, its PDB's further tablespaces are
ATTACHed under their names, and only THEN is this table installed (the C
authorizer in the binding, first match wins, no match allows). From that
moment on:

  * no ATTACH or DETACH of any file (a session reaches only its own PDB's
    datafiles; VACUUM INTO is refused by the same rule: it attaches),
  * no load_extension() and no fts3_tokenizer() (native code from SQL),
  * no PRAGMA that reaches outside the tenant's own data or weakens the
    instance: file paths (database_list), the schema's integrity
    (writable_schema, schema_version), durability and locking
    (journal_mode, synchronous, locking_mode), process-wide memory limits,
    temp directories, mmap, page-count limits that would dodge the storage
    quota.

A PDB's lockdown profile (Oracle's PDB lockdown, set with the control op
set_lockdown and kept in the PDB's system.db) adds rules after the base ones;
it can forbid more but never re-allow what the base denies, because the base
rules come first.

A profile's rules are JSON: [{"action": "DROP_TABLE", "object": null,
"result": "deny"}, ...] with action one of the binding's AUTH_ACTIONS names
(e.g. CREATE_TABLE, DROP_TABLE, PRAGMA, FUNCTION, INSERT, DELETE,
ALTER_TABLE), object an optional table/pragma/function name (case-insensitive;
null = any) and result deny (the statement fails with SQLSTATE 42501) or
ignore (columns read as NULL / the action is skipped, SQLite's SQLITE_IGNORE).
"""
from __future__ import annotations

import json

from rustymt._native import _core

DANGEROUS_PRAGMAS = (
    "database_list",          # shows datafile paths of the host
    "writable_schema", "schema_version",   # corrupt the schema
    "journal_mode", "synchronous", "locking_mode",  # durability / locking of shared files
    "temp_store_directory", "data_store_directory",  # files outside the PDB
    "mmap_size", "hard_heap_limit", "soft_heap_limit", "threads",  # process-wide resources
    "max_page_count",         # would sidestep the storage quota
    "trusted_schema", "query_only", "wal_autocheckpoint",
)
DANGEROUS_FUNCTIONS = ("load_extension", "fts3_tokenizer")

BASE_RULES: tuple[tuple[str, str | None, str], ...] = (
    ("ATTACH", None, "deny"),
    ("DETACH", None, "deny"),
    *(("FUNCTION", name, "deny") for name in DANGEROUS_FUNCTIONS),
    *(("PRAGMA", name, "deny") for name in DANGEROUS_PRAGMAS),
)

_RESULTS = ("deny", "ignore", "allow")


def parse_rules(rules) -> list[tuple[str, str | None, str]]:
    """Validate a profile's rules (a list of dicts, or its JSON text)."""
    if isinstance(rules, str):
        try:
            rules = json.loads(rules)
        except json.JSONDecodeError as exc:
            raise ValueError(f"lockdown rules are not JSON: {exc}") from None
    if not isinstance(rules, list):
        raise ValueError("lockdown rules must be a list")
    parsed = []
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict):
            raise ValueError(f"rule {index} must be an object")
        action = str(rule.get("action", "")).upper()
        if action not in _core.AUTH_ACTIONS:
            raise ValueError(f"rule {index}: unknown action {rule.get('action')!r}")
        name = rule.get("object")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"rule {index}: object must be a string or null")
        result = rule.get("result", "deny")
        if result not in _RESULTS:
            raise ValueError(f"rule {index}: result must be one of {', '.join(_RESULTS)}")
        parsed.append((action, name, result))
    return parsed


def rules_json(rules: list[tuple[str, str | None, str]]) -> str:
    return json.dumps([{"action": a, "object": o, "result": r} for a, o, r in rules])


def authorizer_rules(profile_rules: list[tuple[str, str | None, str]] | None) -> list:
    """The full table for a session: base rules first, then the profile's."""
    return [*BASE_RULES, *(profile_rules or ())]

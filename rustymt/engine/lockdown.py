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


# ---- lockdown profiles (Oracle's CREATE LOCKDOWN PROFILE / DISABLE STATEMENT)
#
# An operator writes a profile as statements and features to disable; it is
# compiled here into authorizer rules (the table above). PRAGMA is the one
# statement with an allow-list: "disable PRAGMA except table_info" is the
# rules ("PRAGMA", "table_info", allow), ("PRAGMA", None, deny) — first match
# wins, and the base rules still come before any profile allow.

STATEMENT_ACTIONS: dict[str, tuple[str, ...]] = {
    "ATTACH": ("ATTACH",),
    "DETACH": ("DETACH",),
    "PRAGMA": ("PRAGMA",),
    "CREATE TABLE": ("CREATE_TABLE", "CREATE_TEMP_TABLE"),
    "CREATE INDEX": ("CREATE_INDEX", "CREATE_TEMP_INDEX"),
    "CREATE VIEW": ("CREATE_VIEW", "CREATE_TEMP_VIEW"),
    "CREATE TRIGGER": ("CREATE_TRIGGER", "CREATE_TEMP_TRIGGER"),
    "CREATE VIRTUAL TABLE": ("CREATE_VTABLE",),
    "DROP TABLE": ("DROP_TABLE", "DROP_TEMP_TABLE"),
    "DROP INDEX": ("DROP_INDEX", "DROP_TEMP_INDEX"),
    "DROP VIEW": ("DROP_VIEW", "DROP_TEMP_VIEW"),
    "DROP TRIGGER": ("DROP_TRIGGER", "DROP_TEMP_TRIGGER"),
    "ALTER": ("ALTER_TABLE",),
    "ALTER TABLE": ("ALTER_TABLE",),
    "DELETE": ("DELETE",),
    "UPDATE": ("UPDATE",),
    "INSERT": ("INSERT",),
    "REINDEX": ("REINDEX",),
    "ANALYZE": ("ANALYZE",),
    "SAVEPOINT": ("SAVEPOINT",),
}
# Features: what a statement may make SQLite do rather than a statement kind.
# Temp files on disk: temp objects and the pragmas that move temp storage
# (sorts that spill remain: the instance's temp_store is set to memory).
FEATURE_RULES: dict[str, tuple[tuple[str, str | None], ...]] = {
    "load_extension": (("FUNCTION", "load_extension"),),
    "temp_files": (("CREATE_TEMP_TABLE", None), ("CREATE_TEMP_INDEX", None), ("CREATE_TEMP_VIEW", None),
                   ("CREATE_TEMP_TRIGGER", None), ("PRAGMA", "temp_store"), ("PRAGMA", "temp_store_directory")),
    "recursive_cte": (("RECURSIVE", None),),
}
PROFILE_NAME_MAX = 64


def compile_profile(spec: dict) -> list[tuple[str, str | None, str]]:
    """{"disabled_statements": [...], "pragma_allow": [...], "disabled_features": [...],
    "rules": [raw rules]} -> authorizer rules; ValueError names what is wrong."""
    statements = spec.get("disabled_statements") or []
    allow = spec.get("pragma_allow") or []
    features = spec.get("disabled_features") or []
    for field, value in (("disabled_statements", statements), ("pragma_allow", allow),
                         ("disabled_features", features)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{field} must be a list of strings")
    rules: list[tuple[str, str | None, str]] = []
    normalized = [" ".join(s.upper().split()) for s in statements]
    if allow and "PRAGMA" not in normalized:
        raise ValueError("pragma_allow only makes sense when PRAGMA is a disabled statement")
    for pragma in allow:
        if pragma.lower() in DANGEROUS_PRAGMAS:
            raise ValueError(f"pragma {pragma} is always denied by the base rules; it cannot be allowed")
        rules.append(("PRAGMA", pragma.lower(), "allow"))
    for statement in normalized:
        if statement not in STATEMENT_ACTIONS:
            raise ValueError(f"unknown statement {statement!r} (one of {', '.join(sorted(STATEMENT_ACTIONS))})")
        rules.extend((action, None, "deny") for action in STATEMENT_ACTIONS[statement])
    for feature in features:
        if feature.lower() not in FEATURE_RULES:
            raise ValueError(f"unknown feature {feature!r} (one of {', '.join(sorted(FEATURE_RULES))})")
        rules.extend((action, name, "deny") for action, name in FEATURE_RULES[feature.lower()])
    rules.extend(parse_rules(spec.get("rules") or []))
    return rules


def denied_message(profile: str | None, sqlite_message: str) -> str:
    """The 42501 message of a statement the authorizer refused, naming the profile."""
    if not profile:
        return sqlite_message
    return f"{sqlite_message} (lockdown profile {profile} applies to this PDB)"

"""The SQL front layer: PostgreSQL-isms in, SQLite SQL out.

Clients send PostgreSQL SQL; the engine runs SQLite. This module, with no
database access of its own, turns one client SQL string into a list of
FrontStatement objects, each either

  * "sql":  SQLite text to prepare (`$n` -> `?n`, `x::type` -> CAST, E'' and
            $$ strings -> plain literals, version()/current_setting()/now()...
            -> literals, TRUNCATE -> DELETE, serial -> INTEGER), with the PG
            command verb for the CommandComplete tag, type hints for the
            parameters and result columns; or
  * a session command the protocol layer answers itself: begin/commit/
    rollback (run as plain SQLite BEGIN/COMMIT/ROLLBACK), set/reset/show,
    deallocate, discard, and the harmless no-ops clients send (UNLISTEN *,
    CLOSE ALL, LISTEN, SET TRANSACTION ...).

Parameter types are inferred from context so that asyncpg (which picks
encoders from ParameterDescription) gets real OIDs: a cast `$1::int4`, a
comparison or arithmetic with a column (`col = $1`, `$1 < t.col`,
`col + $1`), a position in `INSERT INTO t (cols) VALUES (...)`, `col IN
($1, $2)`, LIMIT/OFFSET. Column types come from a `columns_of(table)`
callback that the session answers with PRAGMA table_info.
"""
from __future__ import annotations

import re

from . import codecs as C

TOKEN = re.compile(r"""
 (?P<ws>\s+)
|(?P<comment>--[^\n]*|/\*.*?\*/)
|(?P<estr>[eE]'(?:[^'\\]|\\.|'')*')
|(?P<str>'(?:[^']|'')*')
|(?P<qident>"(?:[^"]|"")*")
|(?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*|)\$.*?\$(?P=tag)\$)
|(?P<param>\$\d+)
|(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
|(?P<word>[A-Za-z_][A-Za-z_0-9$]*)
|(?P<op>::|<>|!=|<=|>=|\|\||[^\s])
""", re.S | re.X)

COMPARE_OPS = frozenset(("=", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "like", "ilike", "is"))
ROW_VERBS = frozenset(("select", "values", "with", "pragma", "explain", "show", "table"))
CLAUSE_END = frozenset(("where", "group", "order", "limit", "offset", "on", "using", "having",
                        "union", "except", "intersect", "returning", "set", "values", "window", ";"))

# PG type names (as written after :: or CAST AS) -> SQLite CAST target. Dates,
# times, uuid and json stay TEXT: NUMERIC affinity would turn '2024-01-02' into 2024.
_CAST_TARGET = {C.INT2: "INTEGER", C.INT4: "INTEGER", C.INT8: "INTEGER", C.BOOL: "INTEGER",
                C.FLOAT4: "REAL", C.FLOAT8: "REAL", C.NUMERIC: "NUMERIC", C.BYTEA: "BLOB"}
_MULTIWORD_TYPES = {"double": ("precision",), "character": ("varying",),
                    "timestamp": ("with", "without", "time", "zone"), "time": ("with", "without", "time", "zone")}


class Token:
    __slots__ = ("kind", "text", "low")

    def __init__(self, kind, text):
        self.kind, self.text = kind, text
        self.low = text.lower() if kind == "word" else text

    def __repr__(self):
        return f"{self.kind}:{self.text}"


def tokenize(sql: str) -> list[Token]:
    return [Token(m.lastgroup if m.lastgroup != "tag" else "dollar", m.group()) for m in TOKEN.finditer(sql)]


class FrontStatement:
    """One client statement, translated. `kind` says who runs it (see module doc)."""
    __slots__ = ("kind", "sql", "verb", "param_count", "param_hints", "result_hints", "result_names",
                 "setting", "value", "returns_rows", "source")

    def __init__(self, kind, sql="", verb="", source=""):
        self.kind, self.sql, self.verb, self.source = kind, sql, verb, source
        self.param_count = 0
        self.param_hints: dict[int, int] = {}
        self.result_hints: list = []
        self.result_names: list = []  # PG's name for unaliased expressions, None = SQLite's
        self.setting = None
        self.value = None
        self.returns_rows = False

    def __repr__(self):
        return f"FrontStatement({self.kind!r}, {self.sql!r}, verb={self.verb!r})"


def split_statements(sql: str) -> list[list[Token]]:
    """Split on top-level semicolons (not inside CREATE TRIGGER ... END)."""
    statements, current, in_trigger, depth = [], [], False, 0
    for token in tokenize(sql):
        if token.kind == "op":
            depth += token.text == "("
            depth -= token.text == ")"
        if token.kind == "word" and not in_trigger:
            words = [t.low for t in current if t.kind == "word"]
            if token.low == "trigger" and words[:1] == ["create"]:
                in_trigger = True
        if token.kind == "word" and in_trigger and token.low == "end":
            in_trigger = False
        if token.kind == "op" and token.text == ";" and not in_trigger and depth <= 0:
            if any(t.kind not in ("ws", "comment") for t in current):
                statements.append(current)
            current, depth = [], 0
            continue
        current.append(token)
    if any(t.kind not in ("ws", "comment") for t in current):
        statements.append(current)
    return statements


def _significant(tokens):
    return [t for t in tokens if t.kind not in ("ws", "comment")]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_E_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "\\": "\\", "'": "'"}


def _unescape_e(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: _E_ESCAPES.get(m.group(1), m.group(1)), body.replace("''", "'"))


class Context:
    """What the front layer needs to know about the session."""

    def __init__(self, settings: dict, database: str, user: str, pid: int, columns_of=None):
        self.settings = settings
        self.database = database
        self.user = user
        self.pid = pid
        self.columns_of = columns_of or (lambda table: {})


def translate(sql: str, ctx: Context) -> list[FrontStatement]:
    """All statements of a client SQL string, translated, in order."""
    fast = plain_statement(sql)
    if fast is not None:
        return [fast]
    return [translate_one(tokens, ctx) for tokens in split_statements(sql)]


# A single statement the translation would leave as it is: no parameters,
# casts, comments, special strings or PostgreSQL-only words, and (for SELECT)
# a select list of plain column names, so no result naming/typing is needed.
# pgbench -M simple sends only such statements; the tokenizer cost half of
# each simple query before this shortcut.
_NOT_PLAIN = re.compile(r"""[$"]|::|--|/\*|\b[eE]'|;\s*\S|\b(?:version|current_setting|current_database|current_catalog
    |current_schema|pg_\w+|now|transaction_timestamp|statement_timestamp|clock_timestamp|current_user|session_user
    |ilike|serial|bigserial|smallserial|serial4|serial8|truncate|returning|trigger|with|information_schema|string_agg)\b""",
    re.I | re.X)
_PLAIN_SELECT = re.compile(r"\s*select\s+(?:[a-z_][\w.]*|\*)(?:\s*,\s*(?:[a-z_][\w.]*|\*))*\s+from\s+[^()]*$",
                           re.I | re.S)
_PLAIN_DML = re.compile(r"\s*(insert|update|delete)\s", re.I)


# The verdict depends on the statement's shape, not on its numbers: pgbench
# and ORMs send the same text with other literals, and one cheap substitution
# plus a dict lookup replaced the patterns above (16% of a simple query's
# Python time). Digits inside identifiers (serial4, t2) are kept.
_NUMBERS = re.compile(r"(?<![\w\u0080-\U0010ffff])\d+", re.A)
_SHAPE_VERDICTS: dict[str, str | None] = {}   # shape -> verb ("SELECT", "INSERT", ...) or None
_SHAPE_CACHE_SIZE = 512


_SHAPE_MAX_CHARS = 2048                       # longer statements are not cached (memory)
_MAY_HOLD_PASSWORD = re.compile(r"password", re.I)  # CREATE/ALTER USER ... PASSWORD '...'


def plain_statement(sql: str) -> FrontStatement | None:
    if len(sql) > _SHAPE_MAX_CHARS:
        verb = _plain_verb(sql)
    else:
        shape = number_shape(sql)
        verb = _SHAPE_VERDICTS.get(shape, False)
        if verb is False:
            verb = _plain_verb(shape)
            if len(_SHAPE_VERDICTS) >= _SHAPE_CACHE_SIZE:
                _SHAPE_VERDICTS.clear()
            if verb is not None or not _MAY_HOLD_PASSWORD.search(shape):  # keep no copy of a password
                _SHAPE_VERDICTS[shape] = verb
    if verb is None:
        return None
    text = sql.strip().rstrip(";").rstrip()
    stmt = FrontStatement("sql", text, verb, text)
    stmt.returns_rows = verb == "SELECT"
    return stmt


# A simple Query's integer literals as parameters, so one compiled statement
# serves every text of the same shape (pgbench -M simple and ORMs vary only
# the numbers). Only standalone integers (not 1.5, 1e5, 0x1F, t2, é5) that
# fit in 64 bits; never in texts with quotes (a digit run may sit in a
# string), SQLite parameters of their own, `*` (a cached column list would
# miss columns added later) or BY (ORDER BY 1 means a column, ORDER BY ?1 a
# constant). SQLite identifiers may hold any non-ASCII character, so those
# count as word characters. literal_template_py and number_shape_py are the
# pure-Python twins of the compiled scanners in _speedups.pyx.
_LITERAL_INT = re.compile(r"(?<![\w.\u0080-\U0010ffff])(\d{1,18})(?![\w.\u0080-\U0010ffff])", re.A)
_NO_LITERAL_PARAMS = re.compile(r"['?:@$*#]|\bby\b", re.A | re.I)


def literal_template_py(sql: str):
    """-> (template, values): sql with its standalone integer literals as
    ?1, ?2, ... and their int values in order; None when sql is not eligible
    (see above) or has no such literal. The template is also the cache key."""
    if _NO_LITERAL_PARAMS.search(sql):
        return None
    parts = _LITERAL_INT.split(sql)
    if len(parts) == 1:
        return None
    values = [int(number) for number in parts[1::2]]
    parts[1::2] = [f"?{index}" for index in range(1, len(values) + 1)]
    return "".join(parts), values


def number_shape_py(sql: str) -> str:
    """sql with every digit run that does not continue a word replaced by 0."""
    return _NUMBERS.sub("0", sql)


try:
    from ._speedups import literal_template as literal_template_c
    from ._speedups import number_shape as number_shape_c
except ImportError:  # not built: the pure-Python twins serve
    literal_template_c = number_shape_c = None

literal_template = literal_template_c or literal_template_py
number_shape = number_shape_c or number_shape_py


def _plain_verb(sql: str) -> str | None:
    if _NOT_PLAIN.search(sql):
        return None
    text = sql.strip().rstrip(";").rstrip()
    if _PLAIN_SELECT.match(text):
        return "SELECT"
    dml = _PLAIN_DML.match(text)
    return dml.group(1).upper() if dml else None


def translate_one(tokens: list[Token], ctx: Context) -> FrontStatement:
    sig = _significant(tokens)
    source = "".join(t.text for t in tokens).strip()
    words = [t.low for t in sig[:4] if t.kind == "word"]
    first = words[0] if words else ""
    special = _session_command(first, sig, source, ctx)
    if special is not None:
        return special
    return _translate_sql(sig, tokens, first, source, ctx)


# ---- session commands ------------------------------------------------------------------------

def _session_command(first, sig, source, ctx):
    low = [t.low for t in sig]
    if first in ("begin", "start"):
        if first == "begin" and len(low) > 1 and low[1] not in ("work", "transaction", "isolation", "read", "deferrable", "not"):
            return None  # BEGIN DEFERRED/IMMEDIATE/EXCLUSIVE: SQLite's own forms
        return FrontStatement("begin", "BEGIN", "BEGIN", source)
    if first in ("commit", "end") and all(w in ("commit", "end", "work", "transaction", "and", "no", "chain") for w in low):
        return FrontStatement("commit", "COMMIT", "COMMIT", source)
    if first in ("rollback", "abort"):
        if "to" in low:
            stmt = FrontStatement("sql", "ROLLBACK TO " + " ".join(t.text for t in sig[low.index("to") + 1:]
                                                                   if t.low != "savepoint"), "ROLLBACK", source)
            return stmt
        return FrontStatement("rollback", "ROLLBACK", "ROLLBACK", source)
    if first == "set":
        stmt = FrontStatement("set", verb="SET", source=source)
        rest = [t for t in sig[1:] if t.low not in ("session", "local")]
        if rest and rest[0].low in ("transaction", "session") or len(rest) < 2:
            stmt.kind = "noop"  # SET TRANSACTION ..., SET SESSION CHARACTERISTICS ...
            return stmt
        if rest[0].low == "time" and len(rest) > 1 and rest[1].low == "zone":
            stmt.setting, value_tokens = "timezone", rest[2:]
        else:
            stmt.setting = rest[0].text.strip('"').lower()
            value_tokens = rest[2:] if rest[1].text in ("=",) or rest[1].low == "to" else rest[1:]
        stmt.value = ", ".join(_setting_value(t) for t in value_tokens if t.text != ",")
        return stmt
    if first == "reset":
        stmt = FrontStatement("reset", verb="RESET", source=source)
        stmt.setting = sig[1].text.strip('"').lower() if len(sig) > 1 else "all"
        return stmt
    if first == "show":
        stmt = FrontStatement("show", verb="SHOW", source=source)
        name = " ".join(t.low for t in sig[1:]) or "all"
        stmt.setting = {"time zone": "timezone", "transaction isolation level": "transaction_isolation"}.get(name, name.strip('"'))
        stmt.returns_rows = True
        return stmt
    if first == "discard":
        return FrontStatement("discard", verb="DISCARD " + " ".join(t.text.upper() for t in sig[1:2]), source=source)
    if first == "deallocate":
        stmt = FrontStatement("deallocate", verb="DEALLOCATE", source=source)
        names = [t.text.strip('"') for t in sig[1:] if t.low != "prepare"]
        stmt.setting = names[0] if names else ""
        if stmt.setting.lower() == "all":
            stmt.verb = "DEALLOCATE ALL"
            stmt.setting = None
        return stmt
    if first in ("create", "alter", "drop") and len(low) > 1 and low[1] in ("user", "role"):
        from rustymt.engine import pdb_users  # imports this module, so not at the top
        return pdb_users.front_statement(sig)
    if first in ("unlisten", "listen", "notify"):
        return FrontStatement("noop", verb=first.upper(), source=source)
    if first == "close" and len(sig) >= 2:
        return FrontStatement("noop", verb="CLOSE CURSOR ALL" if sig[1].low == "all" else "CLOSE CURSOR", source=source)
    if first == "checkpoint":
        return FrontStatement("noop", verb="CHECKPOINT", source=source)
    if first in ("vacuum", "analyze") and len(sig) >= 1:
        return None  # SQLite runs both
    return None


def _setting_value(token) -> str:
    if token.kind == "str":
        return token.text[1:-1].replace("''", "'")
    if token.kind == "estr":
        return _unescape_e(token.text[2:-1])
    return token.text.strip('"')


# ---- SQL translation -------------------------------------------------------------------------

def _translate_sql(sig, tokens, first, source, ctx):
    out: list[Token] = []
    casts: list[tuple[int, int, int]] = []  # (start index in out, end index, oid) of CAST(...) spans
    stmt = FrontStatement("sql", source=source)
    i = 0
    n = len(sig)
    while i < n:
        tok = sig[i]
        kind, low = tok.kind, tok.low
        if kind == "param":
            number = int(tok.text[1:])
            stmt.param_count = max(stmt.param_count, number)
            out.append(Token("param", f"?{number}"))
        elif kind == "estr":
            out.append(Token("str", _quote(_unescape_e(tok.text[2:-1]))))
        elif kind == "dollar":
            tag_len = tok.text.index("$", 1) + 1
            out.append(Token("str", _quote(tok.text[tag_len:-tag_len])))
        elif kind == "op" and tok.text == "::":
            i = _cast(sig, i, out, casts, stmt)
            continue
        elif kind == "word":
            if low == "pg_catalog" and i + 3 < n and sig[i + 1].text == "." and sig[i + 3].text == "(":
                i += 2  # pg_catalog.version(), pg_catalog.lower(x): SQLite's functions have no schema
                continue
            if low == "information_schema" and i + 2 < n and sig[i + 1].text == "." \
                    and sig[i + 2].low in _INFORMATION_SCHEMA:
                i = _information_schema_view(sig, i, out, ctx)
                continue
            replaced = _function_literal(sig, i, ctx)
            if replaced is not None:
                literal, i = replaced
                out.append(literal)
                continue
            if low == "string_agg" and i + 1 < n and sig[i + 1].text == "(":
                renamed = Token("word", "group_concat")  # same arguments: (expression, delimiter)
                renamed.low = "string_agg"  # the result column keeps PostgreSQL's name
                out.append(renamed)
            elif low in ("serial", "bigserial", "smallserial", "serial4", "serial8") and first == "create":
                out.append(Token("word", "INTEGER"))
            elif low == "ilike":
                out.append(Token("word", "LIKE"))
            elif low == "truncate" and i == 0:
                out.append(Token("word", "DELETE"))
                out.append(Token("word", "FROM"))
                if i + 1 < n and sig[i + 1].low == "table":
                    i += 1
                stmt.verb = "TRUNCATE TABLE"
            else:
                out.append(tok)
        else:
            out.append(tok)
        i += 1
    stmt.sql = _join(out)
    if not stmt.verb:
        stmt.verb = _verb(sig)
    stmt.returns_rows = first in ROW_VERBS or any(t.low == "returning" for t in sig)
    _infer_params(out, stmt, ctx)
    if first in ("select", "with", "values"):
        stmt.result_hints, stmt.result_names = _result_hints(out, casts, stmt, ctx)
    return stmt


def _join(tokens) -> str:
    parts = []
    previous = None
    for token in tokens:
        if previous is not None and _needs_space(previous, token):
            parts.append(" ")
        parts.append(token.text)
        previous = token
    return "".join(parts)


def _needs_space(a, b) -> bool:
    if a.kind == "op" and a.text in "(." or b.kind == "op" and b.text in "),.;":
        return False
    if b.text == "(" and a.kind == "word":
        return False  # f(x), CAST(x AS t), IN(...): all valid without a space
    return True


def _verb(sig) -> str:
    words = [t.low for t in sig if t.kind == "word"]
    if not words:
        return ""
    first = words[0]
    if first in ("create", "drop", "alter"):
        objects = ("table", "index", "view", "trigger", "schema", "sequence", "database", "extension", "type", "function")
        obj = next((w for w in words[1:5] if w in objects), words[1] if len(words) > 1 else "")
        return f"{first.upper()} {obj.upper()}".strip()
    if first == "with":
        depth = 0
        for tok in sig:
            if tok.kind == "op":
                depth += (tok.text == "(") - (tok.text == ")")
            elif depth == 0 and tok.low in ("select", "insert", "update", "delete"):
                return tok.low.upper()
        return "SELECT"
    if first in ("values", "table", "pragma", "explain"):
        return "SELECT"
    if first == "replace":
        return "INSERT"
    return first.upper()


def _cast(sig, i, out, casts, stmt) -> int:
    """Rewrite `operand::type` (operand = last output token, or a parenthesised
    group with its function name) as CAST(operand AS target). Returns next index."""
    j = i + 1
    type_words = []
    if j < len(sig) and sig[j].kind in ("word", "qident"):
        type_words.append(sig[j].low.strip('"'))
        j += 1
        follow = _MULTIWORD_TYPES.get(type_words[0], ())
        while j < len(sig) and sig[j].low in follow:
            type_words.append(sig[j].low)
            j += 1
    if j < len(sig) and sig[j].text == "(":
        while j < len(sig) and sig[j].text != ")":
            j += 1
        j += 1
    while j + 1 < len(sig) and sig[j].text == "[" and sig[j + 1].text == "]":
        type_words.append("[]")
        j += 2
    if not type_words or not out:
        out.append(sig[i])
        return i + 1
    oid = C.oid_for_decltype(" ".join(type_words))
    if type_words[-1] == "[]" or type_words[0] in ("regclass", "regtype", "oid", "name"):
        oid = C.TEXT
    start = len(out) - 1
    if out[start].text == ")":
        depth = 0
        for k in range(len(out) - 1, -1, -1):
            depth += (out[k].text == ")") - (out[k].text == "(")
            if depth == 0:
                start = k
                break
        if start > 0 and out[start - 1].kind == "word":
            start -= 1
    operand = out[start:]
    if len(operand) == 1 and operand[0].kind == "param":
        stmt.param_hints.setdefault(int(operand[0].text[1:]), oid)
    if oid == C.BOOL and len(operand) == 1 and operand[0].kind == "str":
        truth = C._text_to_bool(operand[0].text[1:-1].encode())
        del out[start:]
        out.append(Token("num", str(truth)))
        casts.append((start, len(out), oid))
        return j
    target = _CAST_TARGET.get(oid, "TEXT")
    del out[start:]
    out.append(Token("word", "CAST"))
    out.append(Token("op", "("))
    out.extend(operand)
    out.append(Token("word", "AS"))
    out.append(Token("word", target))
    out.append(Token("op", ")"))
    casts.append((start, len(out), oid))
    return j


# information_schema views tools ask for, over SQLite's own catalog (one
# schema, "public"; the catalog is the PDB). Types are the declared ones.
_USER_OBJECTS = "{m}type IN ('table', 'view') AND {m}name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
_INFORMATION_SCHEMA = {
    "tables": ("SELECT {db} AS table_catalog, 'public' AS table_schema, name AS table_name, "
               "CASE type WHEN 'view' THEN 'VIEW' ELSE 'BASE TABLE' END AS table_type "
               "FROM sqlite_schema WHERE " + _USER_OBJECTS.format(m="")),
    "columns": ("SELECT {db} AS table_catalog, 'public' AS table_schema, m.name AS table_name, "
                "p.name AS column_name, p.cid + 1 AS ordinal_position, p.dflt_value AS column_default, "
                "CASE WHEN p.\"notnull\" OR p.pk > 0 THEN 'NO' ELSE 'YES' END AS is_nullable, lower(p.type) AS data_type "
                "FROM sqlite_schema AS m JOIN pragma_table_info(m.name) AS p WHERE " + _USER_OBJECTS.format(m="m.")),
    "schemata": "SELECT {db} AS catalog_name, 'public' AS schema_name, {user} AS schema_owner",
}
_AFTER_TABLE = CLAUSE_END | {"join", "inner", "left", "right", "full", "cross", "natural", ")", ","}


def _information_schema_view(sig, i, out, ctx) -> int:
    """information_schema.<view> (sig[i] is `information_schema`) -> a
    subquery named as the view unless an alias follows. Returns the next index."""
    name = sig[i + 2].low
    body = _INFORMATION_SCHEMA[name].format(db=_quote(ctx.database), user=_quote(ctx.user))
    out.append(Token("word", f"({body})"))
    follower = sig[i + 3] if i + 3 < len(sig) else None
    if follower is None or follower.low in _AFTER_TABLE or follower.text in _AFTER_TABLE:
        out.append(Token("word", f"AS {name}"))
    return i + 3


def _function_literal(sig, i, ctx):
    replaced = _function_literal_token(sig, i, ctx)
    if replaced is not None:
        replaced[0].low = "fn:" + sig[i].low  # remembered for the column name
    return replaced


def _function_literal_token(sig, i, ctx):
    """PG functions SQLite lacks -> (literal token, next index), or None."""
    low = sig[i].low
    qualified = i > 0 and sig[i - 1].text == "." and not (i > 1 and sig[i - 2].low == "pg_catalog")
    if low in ("current_user", "session_user") and not qualified:
        return Token("str", _quote(ctx.user)), i + 1
    if low in ("current_schema", "current_catalog") and not qualified and (i + 1 >= len(sig) or sig[i + 1].text != "("):
        return Token("str", _quote("public" if low == "current_schema" else ctx.database)), i + 1
    if i + 2 >= len(sig) or sig[i + 1].text != "(" or qualified:
        return None
    close = i + 2
    depth = 1
    while close < len(sig):
        depth += (sig[close].text == "(") - (sig[close].text == ")")
        if depth == 0:
            break
        close += 1
    args = [t for t in sig[i + 2:close] if t.text != ","]
    if low == "version":
        return Token("str", _quote(f"PostgreSQL {ctx.settings.get('server_version', '')} on rustymt (SQLite engine)")), close + 1
    if low == "current_setting" and args and args[0].kind == "str":
        name = args[0].text[1:-1].lower()
        value = ctx.settings.get(name)
        return (Token("str", _quote(value)) if value is not None else Token("word", "NULL")), close + 1
    if low in ("pg_advisory_unlock_all", "pg_advisory_lock", "pg_advisory_xact_lock"):
        return Token("word", "NULL"), close + 1
    if low in ("current_database", "current_catalog"):
        return Token("str", _quote(ctx.database)), close + 1
    if low in ("current_schema",):
        return Token("str", "'public'"), close + 1
    if low == "pg_backend_pid":
        return Token("num", str(ctx.pid)), close + 1
    if low in ("now", "transaction_timestamp", "statement_timestamp", "clock_timestamp") and close == i + 2:
        return Token("word", "strftime('%Y-%m-%d %H:%M:%f+00:00','now')"), close + 1
    return None


def _column_type(ctx, tables, column) -> int | None:
    column = column.strip('"').lower()
    for table in tables:
        oid = ctx.columns_of(table).get(column)
        if oid is not None:
            return oid
    return None


def _tables(tokens) -> list[str]:
    tables, in_from = [], False
    for k, tok in enumerate(tokens):
        low = tok.low
        if tok.kind == "word" and low in ("from", "join", "update", "into"):
            in_from = low == "from"
            nxt = tokens[k + 1] if k + 1 < len(tokens) else None
            if nxt is not None and nxt.kind in ("word", "qident"):
                name = nxt.text.strip('"')
                if k + 3 < len(tokens) and tokens[k + 2].text == ".":
                    name = tokens[k + 3].text.strip('"')  # schema.table
                tables.append(name.lower())
        elif in_from and tok.text == "," and k + 1 < len(tokens) and tokens[k + 1].kind in ("word", "qident"):
            tables.append(tokens[k + 1].text.strip('"').lower())
        elif tok.kind == "word" and low in CLAUSE_END:
            in_from = False
    return tables


def _infer_params(out, stmt, ctx):
    """Fill stmt.param_hints from context (see module docstring)."""
    if not stmt.param_count:
        return
    tables = _tables(out)
    hints = stmt.param_hints
    insert_columns = _insert_columns(out, ctx, tables)
    tuple_index, depth, in_values = 0, 0, False
    for k, tok in enumerate(out):
        if tok.low == "values":
            in_values, tuple_index, depth = True, 0, 0
        if tok.kind == "op":
            if tok.text == "(":
                depth += 1
                if in_values and depth == 1:
                    tuple_index = 0
            elif tok.text == ")":
                depth -= 1
            elif tok.text == "," and in_values and depth == 1:
                tuple_index += 1
        if tok.kind != "param":
            continue
        number = int(tok.text[1:])
        if number in hints:
            continue
        oid = None
        if in_values and depth == 1 and insert_columns and tuple_index < len(insert_columns):
            oid = _column_type(ctx, tables[:1], insert_columns[tuple_index])
        prev = out[k - 1] if k > 0 else None
        if oid is None and prev is not None and prev.low in ("limit", "offset"):
            oid = C.INT8
        if oid is None and prev is not None and prev.low in COMPARE_OPS and k >= 2 and out[k - 2].kind in ("word", "qident"):
            oid = _column_type(ctx, tables, out[k - 2].text)
        if oid is None and k + 2 < len(out) and out[k + 1].low in COMPARE_OPS and out[k + 2].kind in ("word", "qident") \
                and not (k + 3 < len(out) and out[k + 3].text in ("(", ".")):
            oid = _column_type(ctx, tables, out[k + 2].text)
        if oid is None and prev is not None and prev.text in ("(", ","):
            oid = _in_list_column(out, k, ctx, tables)
        if oid is not None:
            hints[number] = oid


def _insert_columns(out, ctx, tables):
    words = [t.low for t in out[:2]]
    if not out or words[0] not in ("insert", "replace") or not tables:
        return None
    for k, tok in enumerate(out):
        if tok.low == "values" or tok.low == "select":
            break
        if tok.text == "(" and k > 0 and out[k - 1].kind in ("word", "qident") and out[k - 1].low not in ("values",):
            names = []
            for t in out[k + 1:]:
                if t.text == ")":
                    return names
                if t.kind in ("word", "qident"):
                    names.append(t.text.strip('"').lower())
            return names
    return list(ctx.columns_of(tables[0]).keys())


def _in_list_column(out, k, ctx, tables):
    j = k - 1
    while j > 0 and out[j].text != "(":
        if out[j].kind not in ("param", "op") or out[j].text not in (",",) and out[j].kind == "op":
            return None
        j -= 1
    if j >= 2 and out[j - 1].low == "in" and out[j - 2].kind in ("word", "qident"):
        return _column_type(ctx, tables, out[j - 2].text)
    return None


_ARITHMETIC = frozenset("+-*/%")
_NUMERIC_RANK = {C.INT2: 0, C.INT4: 1, C.INT8: 2, C.NUMERIC: 3, C.FLOAT4: 4, C.FLOAT8: 5}


def _arithmetic_oid(out, s, e, cast_spans, stmt, ctx, tables):
    """Type of `a op b op c` (+ - * / %) when every operand's type is known:
    the widest of them, as PostgreSQL's operator resolution would pick."""
    operand_types, k, expect_operand = [], s, True
    ends = {start: (end, oid) for (start, end), oid in cast_spans.items()}
    while k < e:
        tok = out[k]
        if expect_operand:
            if k in ends and ends[k][0] <= e:
                operand_types.append(ends[k][1])
                k = ends[k][0]
            elif tok.kind == "num":
                operand_types.append(C.NUMERIC if any(ch in tok.text for ch in ".eE") else C.INT4)
                k += 1
            elif tok.kind == "param":
                operand_types.append(stmt.param_hints.get(int(tok.text[1:])))
                k += 1
            elif tok.kind in ("word", "qident"):
                if k + 2 < e and out[k + 1].text == ".":
                    k += 2
                    tok = out[k]
                operand_types.append(_column_type(ctx, tables, tok.text))
                k += 1
            else:
                return None
            expect_operand = False
        else:
            if tok.kind != "op" or tok.text not in _ARITHMETIC:
                return None
            expect_operand = True
            k += 1
    if len(operand_types) < 2 or expect_operand or any(o not in _NUMERIC_RANK for o in operand_types):
        return None
    return max(operand_types, key=_NUMERIC_RANK.__getitem__)


def _result_hints(out, casts, stmt, ctx) -> list:
    """Per select-list item: OID when the expression says it, else None."""
    start = next((k for k, t in enumerate(out) if t.low == "select"), None)
    if start is None:
        return [], []
    cast_spans = {(s, e): oid for s, e, oid in casts}
    tables = _tables(out)
    items, depth, item_start = [], 0, start + 1
    k = start + 1
    if k < len(out) and out[k].low in ("distinct", "all"):
        k += 1
        item_start = k
    while k < len(out):
        tok = out[k]
        if tok.kind == "op" and tok.text in "()":
            depth += 1 if tok.text == "(" else -1
        elif depth == 0 and (tok.text == "," or tok.low in ("from", "where", "group", "order", "limit", "union", "having")):
            items.append((item_start, k))
            if tok.text != ",":
                break
            item_start = k + 1
        k += 1
    else:
        items.append((item_start, k))
    if any(out[e - 1].text == "*" for s, e in items if e > s):
        # "*" or "t.*" expands to columns only SQLite knows: no positional hints or names
        # (they would land on the wrong columns); SQLite's own names and decltypes serve.
        return [], []
    hints, names = [], []
    for s, e in items:
        # Drop a trailing alias: "expr AS name" or "expr name".
        aliased = True
        if e - s >= 3 and out[e - 2].low == "as":
            e -= 2
        elif e - s >= 2 and out[e - 1].kind in ("word", "qident") and out[e - 2].kind in ("word", "num", "str", "param", "qident") \
                and out[e - 2].low not in ("distinct",) and out[e - 1].low not in ("null", "true", "false"):
            e -= 1
        else:
            aliased = False
        cast_oid = cast_spans.get((s, e))
        oid = _expression_oid(out[s:e], cast_oid, stmt)
        if oid is None:
            oid = _arithmetic_oid(out, s, e, cast_spans, stmt, ctx, tables)
        hints.append(oid)
        names.append(None if aliased else _expression_name(out[s:e], cast_oid))
    return hints, names


def _expression_name(tokens, cast_oid):
    """The column name PostgreSQL gives an unaliased select-list item."""
    if not tokens:
        return None
    if cast_oid is not None:
        inner = _expression_name(tokens[2:-3], None) if tokens[0].low == "cast" else None
        return inner if inner not in (None, "?column?") else C.PG_TYPE_NAMES.get(cast_oid, "?column?")
    head = tokens[0]
    if len(tokens) == 1 and head.low.startswith("fn:"):
        return head.low[3:]
    if head.kind == "word" and len(tokens) > 1 and tokens[1].text == "(" and head.low != "cast":
        return head.low
    if len(tokens) == 1 and head.kind in ("word", "qident") and head.low not in ("null", "true", "false"):
        return None  # a column: SQLite already names it
    if len(tokens) == 3 and tokens[1].text == "." and tokens[2].kind in ("word", "qident"):
        return None
    if len(tokens) == 1 and head.low in ("true", "false"):
        return "bool"
    return "?column?"


def _expression_oid(tokens, cast_oid, stmt):
    if cast_oid is not None:
        return cast_oid
    if not tokens:
        return None
    head = tokens[0]
    if len(tokens) == 1:
        if head.kind == "num":
            return C.NUMERIC if any(ch in head.text for ch in ".eE") else C.INT4
        if head.kind == "str":
            return C.TEXT
        if head.kind == "param":
            return stmt.param_hints.get(int(head.text[1:]), C.TEXT)
        if head.low in ("true", "false"):
            return C.BOOL
        if head.low in ("current_timestamp",):
            return C.TIMESTAMPTZ
        if head.low in ("current_date",):
            return C.DATE
        if head.kind == "word" and head.text.startswith("strftime("):
            return C.TIMESTAMPTZ
        return None
    if head.kind == "word" and len(tokens) > 1 and tokens[1].text == "(":
        return {"count": C.INT8, "length": C.INT4, "char_length": C.INT4, "octet_length": C.INT4,
                "upper": C.TEXT, "lower": C.TEXT, "substr": C.TEXT, "substring": C.TEXT, "trim": C.TEXT,
                "replace": C.TEXT, "concat": C.TEXT, "typeof": C.TEXT, "random": C.INT8, "abs": None,
                "exists": C.BOOL, "total": C.FLOAT8, "avg": C.FLOAT8}.get(head.low)
    if any(t.text == "||" for t in tokens):
        return C.TEXT
    return None

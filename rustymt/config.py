"""Settings: built-in defaults <- TOML file <- RUSTYMT_<SECTION>_<KEY> env vars.

Every key is declared once in KEYS with its parser, default and meaning; the
README's configuration table is generated from the same list
(`python -m rustymt.config --markdown`). An invalid value raises ConfigError
naming the key, which the CLI prints as one line and exits with code 2.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from types import SimpleNamespace
from typing import Any, Callable, Mapping

ENV_PREFIX = "RUSTYMT_"


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; `key` names it."""

    def __init__(self, key: str, message: str):
        super().__init__(f"config error: {key}: {message}")
        self.key = key


# ---- parsers: each takes a TOML value or an env string, returns the typed value


def parse_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def int_in(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected an integer, got {value!r}") from None
        if isinstance(value, float) and value != number:
            raise ValueError(f"expected an integer, got {value!r}")
        if not lo <= number <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {number}")
        return number

    return parse


def float_in(lo: float, hi: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError("expected a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {value!r}") from None
        if not lo <= number <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {number}")
        return number

    return parse


def parse_listen(value: Any) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [::1]:8420); port 0 picks a free one."""
    text = parse_str(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"host must be an IP address or localhost, got {host!r}") from None
    return host, int_in(0, 65535)(port)


def parse_port_range(value: Any) -> tuple[int, int]:
    """lo-hi, both inclusive, 1024..65535."""
    text = parse_str(value).strip()
    lo, sep, hi = text.partition("-")
    if not sep:
        raise ValueError(f"expected LO-HI, got {text!r}")
    low, high = int_in(1024, 65535)(lo), int_in(1024, 65535)(hi)
    if low > high:
        raise ValueError(f"low end {low} is above high end {high}")
    return low, high


def parse_dir(value: Any) -> str:
    """A directory, made absolute against the working directory at start-up,
    so that paths the API reports (datafiles, manifests) are absolute."""
    text = parse_str(value).strip()
    if not text:
        raise ValueError("must not be empty")
    return os.path.abspath(os.path.expanduser(text))


def parse_str_list(value: Any) -> tuple[str, ...]:
    """A TOML array of strings, or a comma-separated env string."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ValueError("expected a list of strings")


def one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = parse_str(value)
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


def algorithm_list(value: Any) -> tuple[str, ...]:
    algorithms = parse_str_list(value)
    allowed = {"EdDSA", "HS256"}
    if not algorithms or not set(algorithms) <= allowed:
        raise ValueError(f"must be a non-empty list drawn from {sorted(allowed)}, got {list(algorithms)}")
    return algorithms


@dataclasses.dataclass(frozen=True)
class Key:
    section: str
    name: str
    parse: Callable[[Any], Any]
    default: Any
    doc: str

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def env(self) -> str:
        return f"{ENV_PREFIX}{self.section.upper()}_{self.name.upper()}"


KEYS: list[Key] = [
    Key("server", "listen", parse_listen, "127.0.0.1:8420", "REST/GraphQL listen address HOST:PORT"),
    Key("server", "data_dir", parse_dir, "./var", "data directory (catalog, keys, PDB files, sockets)"),
    Key("server", "max_body_bytes", int_in(1024, 64 << 20), 1 << 20, "largest accepted HTTP request body; larger -> 413"),
    Key("server", "log_level", one_of("debug", "info", "warning", "error"), "info", "daemon log level"),
    Key("auth", "algorithms", algorithm_list, "EdDSA", "JWT algorithms accepted (pinned): EdDSA and/or HS256"),
    Key("auth", "token_ttl_seconds", int_in(60, 31 * 86400), 3600, "lifetime of tokens issued by /api/v1/auth/token"),
    Key("auth", "issuer", parse_str, "rustymt", "JWT iss claim written and required"),
    Key("cdb", "name", parse_str, "CDB_PROD", "container database name"),
    Key("cdb", "max_pdbs", int_in(1, 100000), 100, "most PDBs the CDB holds (seed excluded); more -> 507"),
    Key("tenant", "ports", parse_port_range, "20000-20999", "TCP port range tenants' PostgreSQL listeners get ports from (env RUSTYMT_TENANT_PORTS=lo-hi)"),
    Key("tenant", "listen_host", parse_str, "127.0.0.1", "address tenant listeners bind"),
    Key("host", "cgroup_root", parse_str, "", "cgroup subtree rustymt owns; empty = own cgroup when delegated, else /rustymt"),
    Key("host", "interface", parse_str, "lo", "network interface tenant ports are shaped on"),
    Key("host", "enforce", parse_bool, True, "apply cgroup/tc/blkio limits when the host supports them"),
    Key("metering", "interval_seconds", int_in(1, 3600), 60, "usage sampling interval for metering records"),
    Key("webhooks", "allow_private_targets", parse_bool, False, "allow webhook URLs on loopback/private/link-local addresses"),
    Key("pgwire", "max_message_bytes", int_in(1024, 1 << 30), 64 << 20, "largest PostgreSQL protocol message accepted"),
    Key("pgwire", "idle_in_transaction_timeout_seconds", int_in(0, 86400), 600, "close sessions idle inside a transaction this long (0 = never)"),
    Key("pgwire", "tls_cert", parse_str, "", "PEM certificate for TLS on tenant ports (empty = SSLRequest declined)"),
    Key("pgwire", "tls_key", parse_str, "", "PEM private key for tls_cert"),
    Key("graphql", "max_depth", int_in(2, 100), 10, "deepest field nesting a GraphQL operation may select"),
    Key("graphql", "max_cost", int_in(10, 10_000_000), 20000, "GraphQL cost limit: 1 per field, list fields multiply by their page size"),
    Key("graphql", "max_aliases", int_in(0, 10000), 30, "most aliased fields in one GraphQL operation"),
    Key("graphql", "max_batch", int_in(1, 100), 10, "most operations in one batched (JSON array) GraphQL request"),
    Key("graphql", "max_request_bytes", int_in(1024, 64 << 20), 64 << 10, "largest GraphQL request (HTTP body, websocket message); larger -> 413 / close 1009"),
    Key("graphql", "max_tokens", int_in(100, 1_000_000), 5000, "most lexical tokens in one GraphQL document"),
    Key("graphql", "usage_interval_seconds", float_in(0.1, 3600), 5.0, "period of the tenantResourceUsage subscription's samples"),
    Key("graphql", "subscriber_queue", int_in(1, 100000), 256, "events a subscription may fall behind before it is dropped with an error"),
    Key("graphql", "connection_init_timeout_seconds", float_in(0.1, 600), 10.0, "websocket clients must send connection_init this soon (else close 4408)"),
    Key("graphql", "max_operations_per_socket", int_in(1, 100000), 100, "operations one websocket may run at once; more are refused with an error"),
    Key("graphql", "explorer_assets_url", parse_str, "https://unpkg.com", "base URL GraphiQL's assets load from (package@version/file under it)"),
    Key("graphql", "explorer_assets_dir", parse_str, "", "local node_modules directory holding graphiql, react, react-dom; when set the daemon serves the assets itself (offline hosts)"),
    Key("engine", "pool_frames", int_in(64, 1 << 24), 8192, "page frames in each engine instance's buffer pool (4 KiB pages; tenants get partitions of it)"),
    Key("lifecycle", "export_roots", parse_str_list, "", "directories unplug manifests/datafiles and plug sources may be in (absolute); the first is the default for relative paths; empty = <data_dir>/exports"),
    Key("host", "reconcile_seconds", float_in(0.2, 3600), 3.0, "period of the host reconcile loop (cgroups, tc vs the catalog)"),
    Key("host", "teardown_on_stop", parse_bool, True, "a graceful stop removes the cgroups, qdiscs and ifb device the daemon made; false keeps them for a fast restart (the next start adopts them)"),
]

def _price_book(value: Any):
    from rustymt.metering.pricebook import parse_price_book  # billing owns its format
    return parse_price_book(value)


# metering, SLA, billing, webhooks (branch metering)
KEYS += [
    Key("metering", "raw_retention_seconds", int_in(60, 7 * 86400), 7200, "raw samples older than this are rolled up into 1-minute records"),
    Key("metering", "minute_retention_seconds", int_in(3600, 90 * 86400), 3 * 86400, "1-minute records older than this are rolled up into 1-hour records"),
    Key("metering", "hour_retention_days", int_in(31, 3650), 400, "1-hour records (and SLA hours) older than this are deleted"),
    Key("metering", "max_range_days", int_in(1, 3650), 31, "widest start..end a metering query may ask for; wider -> 400"),
    Key("billing", "currency", parse_str, "USD", "ISO-4217 currency of every price in billing.price_book"),
    Key("billing", "price_book", _price_book, "", "JSON (env) or TOML table: per tier monthly_base, included and overage rates, sla_credits; empty = built-in book (docs/metering.md)"),
    Key("sla", "latency_min_statements", int_in(1, 1_000_000), 100, "a window needs this many statements before its p99 and error rate are judged"),
    Key("webhooks", "timeout_seconds", float_in(0.5, 120), 10.0, "one delivery attempt's deadline (connect + response)"),
    Key("webhooks", "retry_base_seconds", float_in(0.05, 3600), 2.0, "first retry delay; doubles per attempt, jittered within its upper half"),
    Key("webhooks", "retry_max_seconds", float_in(0.1, 86400), 3600.0, "longest delay between two attempts"),
    Key("webhooks", "max_age_seconds", int_in(1, 7 * 86400), 86400, "a delivery still failing this long after its event is dead-lettered"),
]

# Names fixed by the contract that do not follow the SECTION_KEY rule.
ENV_ALIASES = {"RUSTYMT_TENANT_PORTS": ("tenant", "ports")}


# API rate limits of callers without a tier (rustymt/api/ratelimit.py; branch perfapi)
KEYS += [
    Key("api", "operator_requests_per_hour", int_in(1, 1_000_000_000), 360_000, "rate limit of each operator token subject (no tenant_id): refill per hour"),
    Key("api", "operator_burst", int_in(1, 1_000_000_000), 20_000, "rate limit of each operator token subject: requests it may send back to back"),
    Key("api", "anonymous_requests_per_hour", int_in(1, 1_000_000_000), 36_000, "rate limit of requests without a valid token (401s, /auth/token), per client address: refill per hour"),
    Key("api", "anonymous_burst", int_in(1, 1_000_000_000), 2_000, "rate limit of requests without a valid token, per client address: requests it may send back to back"),
]


def _key_index() -> dict[tuple[str, str], Key]:
    return {(key.section, key.name): key for key in KEYS}


def _refuse_unknown_env(env: Mapping[str, str]) -> None:
    """A misspelt override (RUSTYMT_HOST_ENFORCED=false) must not be silently
    ignored, as an unknown TOML key is not: a variable under a known section's
    prefix that names no key is an error. Other RUSTYMT_* variables (test and
    bench knobs) are not settings and pass."""
    known = {key.env for key in KEYS} | set(ENV_ALIASES)
    sections = {key.section.upper() for key in KEYS}
    for variable in env:
        if not variable.startswith(ENV_PREFIX) or variable in known:
            continue
        section = variable[len(ENV_PREFIX):].split("_", 1)[0]
        if section in sections:
            raise ConfigError(variable, f"unknown setting: [{section.lower()}] has no such key")


def load(path: str | None = None, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> SimpleNamespace:
    """Build the settings; `overrides` maps "section.key" to a value (CLI flags)."""
    env = os.environ if env is None else env
    index = _key_index()
    raw: dict[tuple[str, str], Any] = {}
    if path:
        try:
            with open(path, "rb") as handle:
                document = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None
        for section, table in document.items():
            if not isinstance(table, dict):
                raise ConfigError(section, "expected a [section] table")
            for name, value in table.items():
                if (section, name) not in index:
                    raise ConfigError(f"{section}.{name}", "unknown key")
                raw[(section, name)] = value
    _refuse_unknown_env(env)
    for key in KEYS:
        if key.env in env:
            raw[(key.section, key.name)] = env[key.env]
    for variable, target in ENV_ALIASES.items():
        if variable in env:
            raw[target] = env[variable]
    for dotted, value in (overrides or {}).items():
        if value is not None:
            raw[tuple(dotted.split(".", 1))] = value
    sections: dict[str, dict[str, Any]] = {}
    for key in KEYS:
        value = raw.get((key.section, key.name), key.default)
        try:
            parsed = key.parse(value)
        except ValueError as exc:
            raise ConfigError(key.dotted, str(exc)) from None
        sections.setdefault(key.section, {})[key.name] = parsed
    return SimpleNamespace(**{name: SimpleNamespace(**values) for name, values in sections.items()})


def markdown_table() -> str:
    """The README's configuration table."""
    lines = ["| key | env | default | meaning |", "|---|---|---|---|"]
    for key in KEYS:
        lines.append(f"| `{key.dotted}` | `{key.env}` | `{key.default}` | {key.doc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())

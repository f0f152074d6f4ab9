"""PDB local users managed in SQL (rustymt.engine.pdb_users) against a real
daemon and its engine instance: psql and psycopg on the tenant's port, the
PDB dictionary read back from system.db, the daemon's log (instance output
included) searched for the passwords."""
from __future__ import annotations

import os
import subprocess

import psycopg
import pytest

from rustymt.engine import scram, storage
from tests.conftest import wait_for
from tests.daemon_engine.conftest import connect, get_json, new_tenant, port_range_env

# Distinctive, so that a leak into a log, an error or a file is found by a substring search.
ALICE_PW = "alice-Pw-7f3a9c"
ALICE_NEW_PW = "alice-New-Pw-51d2e8"
BOB_PW = "bob-Pw-from-psql-0b6e44"
REFUSED_PW = "refused-Pw-c0ffee42"
CLONE_PW = "clone-Pw-93ab17"
SECRETS = (ALICE_PW, ALICE_NEW_PW, BOB_PW, REFUSED_PW, CLONE_PW)


@pytest.fixture(scope="module")
def engine_daemon(tmp_path_factory):
    """The module's daemon, logging at debug level: the most it ever writes is
    searched for the passwords at the end."""
    from tests.daemon import Daemon

    daemon = Daemon.start(str(tmp_path_factory.mktemp("pdbusers") / "data"),
                          env={**port_range_env(), "RUSTYMT_SERVER_LOG_LEVEL": "debug"})
    yield daemon
    assert daemon.stop() == 0, daemon.log()


def as_user(tenant: dict, user: str, password: str, dbname: str | None = None) -> psycopg.Connection:
    return connect({**tenant, "user": user, "password": password}, dbname)


def psql(tenant: dict, user: str, password: str, sql: str, dbname: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(tenant["port"]),
                           "-U", user, "-d", dbname or tenant["pdb_name"], "-c", sql],
                          env={**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"},
                          capture_output=True, text=True, timeout=30)


def sqlstate_of(conn: psycopg.Connection, sql: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(sql)
    return raised.value


def login_refused(tenant: dict, user: str, password: str) -> bool:
    try:
        as_user(tenant, user, password).close()
    except psycopg.OperationalError as exc:
        assert "password authentication failed" in str(exc), exc
        return True
    return False


def dictionary_users(daemon, tenant: dict, pdb_id: str | None = None) -> dict:
    return storage.read_dictionary(storage.pdb_dir(daemon.data_dir, pdb_id or tenant["pdb_id"]))["users"]


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def test_create_alter_drop_user_and_log_in_at_once(engine_daemon):
    tenant = new_tenant(engine_daemon, "users")
    with connect(tenant) as admin:
        cur = admin.execute(f"CREATE USER alice WITH PASSWORD '{ALICE_PW}'")
        assert cur.statusmessage == "CREATE ROLE"
        # A new user logs in at once, with psycopg and with psql (PGPASSWORD).
        with as_user(tenant, "alice", ALICE_PW) as alice:
            assert alice.execute("SELECT current_user").fetchone() == ("alice",)
            assert alice.info.parameter_status("is_superuser") == "off"
            result = psql(tenant, "alice", ALICE_PW, "CREATE TABLE notes (t text); INSERT INTO notes VALUES ('hi'); "
                                                     "SELECT t FROM notes")
            assert result.returncode == 0 and result.stdout.split() == ["CREATE", "TABLE", "INSERT", "0", "1", "hi"], result.stderr
            # A new password takes over at once; the open session goes on (as in PostgreSQL).
            assert admin.execute(f"ALTER USER alice PASSWORD '{ALICE_NEW_PW}'").statusmessage == "ALTER ROLE"
            assert login_refused(tenant, "alice", ALICE_PW)
            as_user(tenant, "alice", ALICE_NEW_PW).close()
            assert admin.execute("DROP USER alice").statusmessage == "DROP ROLE"
            assert login_refused(tenant, "alice", ALICE_NEW_PW)
            # Documented choice: a dropped user's open session lives until it ends.
            assert alice.execute("SELECT t FROM notes").fetchall() == [("hi",)]
        # DROP ... IF EXISTS of a missing role: a notice, as PostgreSQL sends it.
        notices = []
        admin.add_notice_handler(lambda diag: notices.append((diag.severity, diag.message_primary)))
        assert admin.execute("DROP ROLE IF EXISTS alice").statusmessage == "DROP ROLE"
        assert notices == [("NOTICE", 'role "alice" does not exist, skipping')]
        # CREATE ROLE ... LOGIN is the same thing (here over the extended protocol);
        # the dictionary keeps a verifier, never the password.
        cur = admin.execute(f"CREATE ROLE alice LOGIN PASSWORD '{ALICE_PW}'", prepare=True)
        assert cur.statusmessage == "CREATE ROLE"
    users = dictionary_users(engine_daemon, tenant)
    assert set(users) == {tenant["user"], "alice"} and users["alice"]["is_admin"] is False
    assert scram.scram_verify_password(ALICE_PW, users["alice"]["verifier"])
    with open(os.path.join(storage.pdb_dir(engine_daemon.data_dir, tenant["pdb_id"]), storage.DICTIONARY_FILE), "rb") as f:
        assert not any(secret.encode() in f.read() for secret in SECRETS)
    as_user(tenant, "alice", ALICE_PW).close()


def test_psql_password_verifier_is_stored_as_sent(engine_daemon):
    """psql's \\password computes the verifier itself and sends ALTER USER name
    PASSWORD 'SCRAM-SHA-256$4096:...': stored byte for byte, not hashed again."""
    tenant = new_tenant(engine_daemon, "pwverif")
    with connect(tenant) as admin:
        admin.execute("CREATE USER bob PASSWORD 'first password of bob'")
    verifier = scram.make_verifier(BOB_PW)
    result = psql(tenant, tenant["user"], tenant["password"], f"ALTER USER bob PASSWORD '{verifier}'")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ALTER ROLE"
    assert dictionary_users(engine_daemon, tenant)["bob"]["verifier"] == verifier
    result = psql(tenant, "bob", BOB_PW, "SELECT current_user")
    assert result.returncode == 0 and result.stdout.strip() == "bob", result.stderr
    # The admin changes its own password the same way (psql's \password with no name).
    admin_verifier = scram.make_verifier("the admin's next password")
    result = psql(tenant, tenant["user"], tenant["password"], f"ALTER USER {quoted(tenant['user'])} PASSWORD '{admin_verifier}'")
    assert result.returncode == 0, result.stderr
    assert login_refused(tenant, tenant["user"], tenant["password"])
    as_user(tenant, tenant["user"], "the admin's next password").close()


def test_refusals_have_their_sqlstates_and_never_echo_the_password(engine_daemon):
    tenant = new_tenant(engine_daemon, "refuse")
    admin_name = tenant["user"]
    with connect(tenant) as admin:
        admin.execute(f"CREATE USER carol PASSWORD '{ALICE_PW}'")
        cases = [
            (admin, f"CREATE USER carol PASSWORD '{REFUSED_PW}'", "42710"),                 # duplicate_object
            (admin, f"ALTER USER nobody PASSWORD '{REFUSED_PW}'", "42704"),                 # undefined_object
            (admin, "DROP USER nobody", "42704"),
            (admin, "DROP USER carol, nobody", "42704"),                                     # all or nothing
            (admin, f"DROP USER {quoted(admin_name)}", "55006"),                             # the PDB admin stays
            (admin, "DROP USER CURRENT_USER", "55006"),
            (admin, f"CREATE USER c##ops PASSWORD '{REFUSED_PW}'", "42939"),                # common users: REST
            (admin, f"CREATE USER \"C##OPS\" PASSWORD '{REFUSED_PW}'", "42939"),
            (admin, f"ALTER USER \"C##OPS\" PASSWORD '{REFUSED_PW}'", "42501"),
            (admin, "DROP USER \"C##OPS\"", "42501"),
            (admin, f"CREATE USER pg_monitor2 PASSWORD '{REFUSED_PW}'", "42939"),           # reserved_name
            (admin, f"CREATE USER public PASSWORD '{REFUSED_PW}'", "42939"),
            (admin, f"CREATE USER {'u' * 64} PASSWORD '{REFUSED_PW}'", "42622"),            # name_too_long
            (admin, f"CREATE USER \"tab\there\" PASSWORD '{REFUSED_PW}'", "42602"),         # invalid_name
            (admin, f"CREATE USER dave PASSWORD '{REFUSED_PW}' SUPERUSER", "0A000"),
            (admin, f"CREATE ROLE dave PASSWORD '{REFUSED_PW}'", "0A000"),                  # NOLOGIN role
            (admin, "CREATE USER dave", "0A000"),                                            # no password
            (admin, f"CREATE USER dave PASSWORD {REFUSED_PW}", "42601"),                    # unquoted: not echoed
            (admin, "ALTER USER carol PASSWORD 'SCRAM-SHA-256$4096:bad'", "22023"),          # malformed verifier
            (admin, "ALTER USER carol PASSWORD ''", "22023"),
        ]
        with as_user(tenant, "carol", ALICE_PW) as carol:
            cases += [(carol, f"CREATE USER erin PASSWORD '{REFUSED_PW}'", "42501"),       # only the PDB admin
                      (carol, f"ALTER USER carol PASSWORD '{REFUSED_PW}'", "42501"),
                      (carol, "DROP USER carol", "42501")]
            for conn, sql, code in cases:
                error = sqlstate_of(conn, sql)
                assert error.sqlstate == code, (sql, error)
                said = " ".join(filter(None, (str(error), error.diag.message_detail, error.diag.message_hint)))
                assert REFUSED_PW not in said, (sql, said)
        # Inside a transaction block: refused (system.db is not part of the tenant's transaction).
        with admin.transaction():
            admin.execute("SELECT 1")
            assert sqlstate_of(admin, f"CREATE USER frank PASSWORD '{REFUSED_PW}'").sqlstate == "25001"
            raise psycopg.Rollback
    assert set(dictionary_users(engine_daemon, tenant)) == {admin_name, "carol"}  # nothing half-done
    as_user(tenant, "carol", ALICE_PW).close()  # the refused ALTERs changed nothing


def test_read_only_pdb_refuses_user_changes(engine_daemon):
    tenant = new_tenant(engine_daemon, "rouser")
    with connect(tenant) as admin:
        admin.execute(f"CREATE USER grace PASSWORD '{ALICE_PW}'")
    path = f"/api/v1/pdbs/{tenant['pdb_id']}"
    assert engine_daemon.request("POST", path + "/close", {"mode": "IMMEDIATE"}).status == 200
    assert engine_daemon.request("POST", path + "/open", {"mode": "READ_ONLY"}).status == 200
    with connect(tenant) as admin:
        assert sqlstate_of(admin, f"CREATE USER heidi PASSWORD '{REFUSED_PW}'").sqlstate == "25006"
        assert sqlstate_of(admin, f"ALTER USER grace PASSWORD '{REFUSED_PW}'").sqlstate == "25006"
        assert sqlstate_of(admin, "DROP USER grace").sqlstate == "25006"
    as_user(tenant, "grace", ALICE_PW).close()  # users log in to a read-only PDB as before


def test_user_created_over_sql_logs_into_a_hot_clone(engine_daemon):
    tenant = new_tenant(engine_daemon, "cloneuser")
    with connect(tenant) as admin:
        admin.execute(f"CREATE USER ivan PASSWORD '{CLONE_PW}'")
        admin.execute("CREATE TABLE kept (v text)")
        admin.execute("INSERT INTO kept VALUES ('cloned')")
    answer = engine_daemon.request("POST", f"/api/v1/pdbs/{tenant['pdb_id']}/clone",
                                   {"target_name": "CLONEUSER_DEV", "clone_type": "hot", "open_after_clone": True})
    assert answer.status == 202, answer.text

    def finished():
        job = get_json(engine_daemon, f"/api/v1/jobs/{answer.json['job_id']}")
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    job = wait_for(finished, 60, what="hot clone job")
    assert job["status"] == "completed", job
    with as_user(tenant, "ivan", CLONE_PW, "CLONEUSER_DEV") as ivan:
        assert ivan.execute("SELECT v FROM kept").fetchall() == [("cloned",)]
    # Then each PDB has its own dictionary: dropping ivan in the clone leaves the source's.
    with connect(tenant, "CLONEUSER_DEV") as clone_admin:
        clone_admin.execute("DROP USER ivan")
    assert login_refused({**tenant, "pdb_name": "CLONEUSER_DEV"}, "ivan", CLONE_PW)
    as_user(tenant, "ivan", CLONE_PW).close()


def test_no_password_reaches_the_daemon_or_instance_log(engine_daemon):
    """Last in the module: every password above went over the wire in SQL text."""
    tenant = new_tenant(engine_daemon, "logcheck")
    with connect(tenant) as admin:  # one more of each, so this test stands alone too
        admin.execute(f"CREATE USER judy PASSWORD '{ALICE_PW}'")
        admin.execute(f"ALTER USER judy PASSWORD '{ALICE_NEW_PW}'")
        sqlstate_of(admin, f"CREATE USER judy PASSWORD '{REFUSED_PW}'")
    with open(engine_daemon.log_path, errors="replace") as handle:
        log = handle.read()
    assert "instance" in log  # the file holds the instance's output too
    assert [secret for secret in SECRETS if secret in log] == []

"""The rustymt command: forms, config errors (one line, exit 2), exit codes, signals."""
from __future__ import annotations

import json
import http.client
import os
import signal
import socket
import subprocess
import sys

import pytest

from rustymt import __version__
from rustymt.cli import main
from tests.daemon import REPO_ROOT, Daemon, clean_env, rustymt


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.strip() == f"rustymt {__version__}"


@pytest.mark.parametrize("env,key", [
    ({"RUSTYMT_SERVER_LISTEN": "no-port-here"}, "server.listen"),
    ({"RUSTYMT_TENANT_PORTS": "3000-2000"}, "tenant.ports"),
    ({"RUSTYMT_SERVER_MAX_BODY_BYTES": "lots"}, "server.max_body_bytes"),
    ({"RUSTYMT_AUTH_ALGORITHMS": "none"}, "auth.algorithms"),
    ({"RUSTYMT_HOST_ENFORCED": "false"}, "RUSTYMT_HOST_ENFORCED"),  # a misspelt override is not ignored
])
def test_invalid_config_is_one_line_naming_the_key_exit_2(tmp_path, env, key):
    result = rustymt("serve", "--data-dir", str(tmp_path / "d"), env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], result.stderr
    assert not (tmp_path / "d").exists()  # refused before touching anything


def test_invalid_config_file_names_the_key(tmp_path):
    config_file = tmp_path / "rustymt.toml"
    config_file.write_text('[cdb]\nmax_pdbs = 0\n')
    result = rustymt("serve", "--config", str(config_file), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2 and "cdb.max_pdbs" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    config_file.write_text('[cdb]\nsurprise = 1\n')
    result = rustymt("serve", "--config", str(config_file), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2 and "cdb.surprise" in result.stderr


@pytest.mark.parametrize("argv", [["serve", "--no-such-flag"], [], ["token", "create", "--role", "cdb_admin"], ["token"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and "usage:" in capsys.readouterr().err


def test_init_then_token_create(tmp_path):
    data_dir = str(tmp_path / "var")
    assert rustymt("token", "create", "--data-dir", data_dir, "--role", "cdb_admin").returncode == 3  # not initialized
    first = rustymt("init", "--data-dir", data_dir)
    assert first.returncode == 0, first.stderr
    assert sorted(os.listdir(data_dir)) >= ["catalog.db", "keys", "pdbs", "run", "staging"]
    assert rustymt("init", "--data-dir", data_dir).returncode == 0  # idempotent
    token = rustymt("token", "create", "--data-dir", data_dir, "--role", "monitor", "--ttl", "60")
    assert token.returncode == 0 and token.stdout.count(".") == 2  # a JWS compact serialization
    bad_role = rustymt("token", "create", "--data-dir", data_dir, "--role", "overlord")
    assert bad_role.returncode == 2 and len(bad_role.stderr.strip().splitlines()) == 1
    unscoped = rustymt("token", "create", "--data-dir", data_dir, "--role", "tenant_admin")
    assert unscoped.returncode == 2  # a tenant_admin token must name its tenant
    assert rustymt("token", "create", "--data-dir", data_dir, "--role", "monitor", "--ttl", "0").returncode == 2
    ghost = rustymt("token", "create", "--data-dir", data_dir, "--role", "tenant_admin", "--tenant", "tenant_nope")
    assert ghost.returncode == 2 and "tenant_nope" in ghost.stderr and not ghost.stdout  # no token for a tenant that is not there


def test_rustymtd_version():
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "rustymtd"), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"rustymt {__version__}"


def test_unusable_data_dir_exits_3(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    result = rustymt("serve", "--data-dir", str(blocker), "--listen", "127.0.0.1:0")
    assert result.returncode == 3, result.stderr
    assert str(blocker) in result.stderr


def test_listen_address_in_use_exits_4(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = rustymt("serve", "--data-dir", str(tmp_path / "d"), "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 4, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_gracefully_with_exit_0(tmp_path, signum):
    daemon = Daemon.start(str(tmp_path / "d"))
    idle = http.client.HTTPConnection(daemon.host, daemon.port, timeout=15)  # a keep-alive client that stays
    try:
        idle.request("GET", "/healthz")
        assert json.loads(idle.getresponse().read()) == {"status": "ok"}
        daemon.process.send_signal(signum)
        assert daemon.process.wait(15) == 0, daemon.log()
        assert "stopped" in daemon.log()
        assert not os.path.exists(os.path.join(daemon.data_dir, "run", "rustymtd.addr"))
    finally:
        idle.close()
        daemon.kill()


def test_rustymtd_entry_point_is_serve(tmp_path):
    code = "import sys; sys.argv = ['rustymtd', '--listen', 'bogus']; from rustymt.cli import daemon_main; raise SystemExit(daemon_main())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 2 and "server.listen" in result.stderr


def test_sigterm_lets_an_in_flight_request_finish(tmp_path):
    """A request the server has started (it sent 100 Continue) completes after SIGTERM, and is kept."""
    daemon = Daemon.start(str(tmp_path / "d"))
    token = daemon.admin_token
    body = b'{"tenant_name": "late_corp", "admin_user": "late@x", "admin_password": "long enough", "service_tier": "bronze"}'
    try:
        with socket.create_connection((daemon.host, daemon.port), timeout=15) as client:
            client.sendall((f"POST /api/v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                            "Expect: 100-continue\r\n\r\n").encode())
            assert client.recv(1024).startswith(b"HTTP/1.1 100")  # the server is handling it now
            daemon.process.send_signal(signal.SIGTERM)
            client.sendall(body)
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += client.recv(65536)
        assert answer.startswith(b"HTTP/1.1 201"), answer
        assert daemon.process.wait(15) == 0, daemon.log()
        daemon = Daemon.start(daemon.data_dir)
        names = [t["tenant_name"] for t in daemon.request("GET", "/api/v1/tenants").json["tenants"]]
        assert names == ["late_corp"]
    finally:
        daemon.stop()

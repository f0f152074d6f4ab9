"""GET /api/v1/cdb/status reflects the catalog; the CDB's identity is fixed at first start."""
from __future__ import annotations


def test_cdb_status_counts_and_identity(daemon_factory):
    daemon = daemon_factory(env={"RUSTYMT_CDB_NAME": "CDB_TEST", "RUSTYMT_CDB_MAX_PDBS": "7"})
    status = daemon.request("GET", "/api/v1/cdb/status").json
    assert (status["cdb_name"], status["total_pdbs"], status["open_pdbs"], status["max_pdbs"]) == ("CDB_TEST", 0, 0, 7)
    ids = [daemon.create_tenant(f"cdb_{i}")["tenant_id"] for i in range(3)]
    assert daemon.request("GET", "/api/v1/cdb/status").json["total_pdbs"] == 3
    daemon.request("DELETE", f"/api/v1/tenants/{ids[0]}")
    assert daemon.request("GET", "/api/v1/cdb/status").json["total_pdbs"] == 2
    # Tenants see nothing CDB-wide.
    scoped = daemon.token("tenant_admin", tenant_id=ids[1])
    assert daemon.request("GET", "/api/v1/cdb/status", token=scoped).error_code == "PERMISSION_DENIED"
    # A later start under another configured name keeps the CDB it created.
    assert daemon.stop() == 0
    daemon = daemon_factory(env={"RUSTYMT_CDB_NAME": "CDB_OTHER"}, data_dir=daemon.data_dir)
    status = daemon.request("GET", "/api/v1/cdb/status").json
    assert status["cdb_name"] == "CDB_TEST" and status["total_pdbs"] == 2 and status["uptime_seconds"] >= 0

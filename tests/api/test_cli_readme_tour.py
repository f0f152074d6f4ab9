"""The README's curl tour, run as written against a real daemon (so it cannot rot)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.daemon import REPO_ROOT, clean_env


def tour_script() -> str:
    readme = open(os.path.join(REPO_ROOT, "README.md")).read()
    section = readme.split("## A short tour", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def test_readme_tour_runs(api_daemon):
    if shutil.which("curl") is None:
        pytest.fail("curl is missing (scripts/apt-packages.txt lists it)")
    rustymt_bin = os.path.join(REPO_ROOT, ".venv", "bin", "rustymt")
    script = tour_script()
    assert "API=http://127.0.0.1:8420" in script and "--data-dir ./var" in script
    script = script.replace("API=http://127.0.0.1:8420", f"API={api_daemon.base_url}")
    script = script.replace("--data-dir ./var", f"--data-dir {api_daemon.data_dir}")
    if not os.path.exists(rustymt_bin):  # not bootstrapped: the module form is the same command
        script = script.replace(".venv/bin/rustymt", "python3 -m rustymt")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                            cwd=REPO_ROOT, env=clean_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    # Each curl printed one JSON document; none of them is an error.
    decoder, text, answers = json.JSONDecoder(), result.stdout.strip(), []
    while text:
        answer, end = decoder.raw_decode(text)
        answers.append(answer)
        text = text[end:].strip()
    assert not [a for a in answers if "error" in a or "errors" in a], answers
    assert answers[0]["status"] == "active" and answers[0]["resources"]["memory_mb"] == 4096
    assert any(a.get("new_tier") == "gold" for a in answers)
    assert any(a.get("state") == "suspended" for a in answers) and any(a.get("state") == "active" and "resumed_at" in a for a in answers)
    assert any(a.get("token_type") == "Bearer" for a in answers)
    assert any(a.get("openapi", "").startswith("3.1") for a in answers)
    assert answers[-1]["data"]["cdb"]["cdbName"] == "CDB_PROD"


def test_readme_psql_users_example_runs(api_daemon):
    """The block after the tour: the tenant admin creates a PDB user in SQL, who logs in at once."""
    readme = open(os.path.join(REPO_ROOT, "README.md")).read()
    blocks = re.findall(r"```sh\n(.*?)```", readme.split("## A short tour", 1)[1], re.S)
    example = blocks[1]
    assert "-p 20000" in example and "CREATE USER alice" in example
    if shutil.which("psql") is None:
        pytest.fail("psql is missing (scripts/apt-packages.txt lists postgresql-client)")
    listed = api_daemon.request("GET", "/api/v1/tenants?page_size=100").json["tenants"]
    acme = [tenant for tenant in listed if tenant["tenant_name"] == "acme_corp"]
    if not acme:  # this module's tour test made it; run alone, make it here as the tour does
        created = api_daemon.request("POST", "/api/v1/tenants", json={
            "tenant_name": "acme_corp", "admin_user": "admin@acme.com", "admin_password": "secure_password",
            "service_tier": "silver"})
        assert created.status == 201, created.text
        tenant_id = created.json["tenant_id"]
    else:
        tenant_id = acme[0]["tenant_id"]
    port = api_daemon.request("GET", f"/api/v1/tenants/{tenant_id}").json["network_port"]
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", example.replace("-p 20000", f"-p {port}")],
                            capture_output=True, text=True, env={**clean_env(), "PGCONNECT_TIMEOUT": "10"}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "CREATE ROLE" in result.stdout and "PostgreSQL 15" in result.stdout

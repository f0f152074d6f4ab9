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

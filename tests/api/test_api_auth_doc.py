"""docs/api-auth.md states the role and rate-limit tables the code enforces."""
from __future__ import annotations

import re
from pathlib import Path

from rustymt import config
from rustymt.model.tiers import TIERS
from rustymt.service.authz import PERMISSIONS, ROLE_PERMISSIONS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "api-auth.md").read_text()


def _table(header: str) -> dict[str, list[str]]:
    """Rows of the markdown table whose header line starts with `header`, keyed by first cell."""
    lines = DOC.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(header))
    rows = {}
    for line in lines[start + 2:]:  # skip the header and the |---| line
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_role_table_matches_authz():
    roles = _table("| role |")
    assert set(roles) == set(ROLE_PERMISSIONS)
    for role, cells in roles.items():
        listed = set(re.findall(r"`([a-z_]+:[a-z_]+)`", cells[-1]))
        assert listed == set(ROLE_PERMISSIONS[role]), role
        assert listed <= set(PERMISSIONS)


def test_rate_limit_table_matches_tiers():
    rows = _table("| tier |")
    assert set(rows) == set(TIERS)
    for name, (per_hour, burst) in rows.items():
        assert int(per_hour.replace(",", "")) == TIERS[name].requests_per_hour
        assert int(burst) == TIERS[name].burst


def test_caller_bucket_table_states_the_config_defaults():
    shapes = " ".join(cells[-1] for cells in _table("| caller |").values())
    defaults = {key.dotted: key.default for key in config.KEYS if key.section == "api"}
    assert len(defaults) == 4
    for dotted, default in defaults.items():
        assert re.search(rf"`{re.escape(dotted)}` \({default:,}\)", shapes), dotted

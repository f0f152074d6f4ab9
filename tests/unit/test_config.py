import os

import pytest

from rustymt import config


def test_defaults_are_the_documented_embedded_default():
    settings = config.load(env={})
    assert settings.server.listen == ("127.0.0.1", 8420)
    assert settings.server.data_dir == os.path.abspath("./var")
    assert settings.tenant.ports == (20000, 20999)
    assert settings.auth.algorithms == ("EdDSA",)


def test_env_overrides_file_and_the_tenant_ports_alias(tmp_path):
    path = tmp_path / "rustymt.toml"
    path.write_text('[server]\nlisten = "127.0.0.1:9000"\n[cdb]\nmax_pdbs = 7\n')
    settings = config.load(str(path), env={"RUSTYMT_CDB_MAX_PDBS": "9", "RUSTYMT_TENANT_PORTS": "30000-30010"})
    assert settings.server.listen == ("127.0.0.1", 9000)
    assert settings.cdb.max_pdbs == 9
    assert settings.tenant.ports == (30000, 30010)


@pytest.mark.parametrize(
    "env, key",
    [
        ({"RUSTYMT_TENANT_PORTS": "30010-30000"}, "tenant.ports"),
        ({"RUSTYMT_SERVER_LISTEN": "nohost"}, "server.listen"),
        ({"RUSTYMT_CDB_MAX_PDBS": "many"}, "cdb.max_pdbs"),
        ({"RUSTYMT_AUTH_ALGORITHMS": "none"}, "auth.algorithms"),
        ({"RUSTYMT_WEBHOOKS_ALLOW_PRIVATE_TARGETS": "maybe"}, "webhooks.allow_private_targets"),
    ],
)
def test_invalid_values_name_the_key(env, key):
    with pytest.raises(config.ConfigError) as caught:
        config.load(env=env)
    assert caught.value.key == key
    assert key in str(caught.value)


def test_unknown_key_in_file_is_refused(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nlisen = 1\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load(str(path), env={})
    assert caught.value.key == "server.lisen"


def test_every_key_is_in_the_markdown_table():
    table = config.markdown_table()
    for key in config.KEYS:
        assert f"`{key.dotted}`" in table and f"`{key.env}`" in table


def test_readme_documents_every_key_exactly_as_generated():
    import pathlib

    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert config.markdown_table() in readme, "README's configuration table is stale: regenerate it with python -m rustymt.config"

"""GET /graphql in a browser: the GraphiQL page, with CDN or locally served assets."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess

import aiohttp
import pytest

from rustymt.api.graphql.explorer import ASSETS
from tests.conftest import require_host
from tests.graphql.browser import CHROMIUM, Chromium, install_graphiql
from tests.graphql.client import unique


def test_page_loads_assets_from_the_configured_cdn(daemon_factory, tmp_path):
    custom = daemon_factory(env={"RUSTYMT_GRAPHQL_EXPLORER_ASSETS_URL": "https://cdn.example.test/npm/"})
    page = custom.request("GET", "/graphql", token=None, headers={"Accept": "text/html"})
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    for package, version, path in ASSETS.values():
        assert f"https://cdn.example.test/npm/{package}@{version}/{path}" in page.text
    # not a browser: JSON clients get a GraphQL answer, not HTML
    plain = custom.request("GET", "/graphql", token=None, headers={"Accept": "application/json"})
    assert plain.status == 400 and plain.json["errors"][0]["extensions"]["code"] == "INVALID_REQUEST"


def test_local_assets_are_served_and_confined(daemon_factory, tmp_path):
    modules = tmp_path / "node_modules"
    for package, _version, path in ASSETS.values():
        target = modules / package / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"/* {package} {path} */")
    (tmp_path / "secret.txt").write_text("not for you")
    local = daemon_factory(env={"RUSTYMT_GRAPHQL_EXPLORER_ASSETS_DIR": str(modules)})
    page = local.request("GET", "/graphql", token=None, headers={"Accept": "text/html"})
    for package, _version, path in ASSETS.values():
        url = f"/graphql/assets/{package}/{path}"
        assert url in page.text and "unpkg" not in page.text
        asset = local.request("GET", url, token=None)
        assert asset.status == 200 and asset.text == f"/* {package} {path} */"
    for probe in ("/graphql/assets/../secret.txt", "/graphql/assets/%2e%2e/secret.txt", "/graphql/assets/react/package.json"):
        refused = local.request("GET", probe, token=None)
        assert refused.status == 404 and "not for you" not in refused.text


@pytest.mark.slow
def test_graphiql_in_headless_chromium_runs_a_query_with_a_token(daemon_factory, tmp_path):
    require_host(os.path.exists(CHROMIUM), "Debian's chromium is not installed (scripts/apt-packages.txt)")
    require_host(shutil.which("npm") is not None, "npm is not installed")
    try:
        modules = install_graphiql()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        require_host(False, f"npm install of GraphiQL failed: {getattr(exc, 'stderr', b'')[-300:]!r}")
    daemon = daemon_factory(env={"RUSTYMT_GRAPHQL_EXPLORER_ASSETS_DIR": modules})
    name = unique("browser")
    tenant = daemon.create_tenant(name, tier="bronze")
    token = daemon.token("tenant_admin", tenant_id=tenant["tenant_id"])
    query = 'query { tenant(id: "%s") { tenantName serviceTier } }' % tenant["tenant_id"]
    browser = Chromium.start(str(tmp_path / "profile"))

    async def scenario():
        async with aiohttp.ClientSession() as session:
            page = await browser.page(session)
            await page.command("Page.enable")
            await page.command("Page.navigate", url=daemon.base_url + "/graphql")
            editor = "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror"
            headers = "document.querySelector('.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror').CodeMirror"
            result = "document.querySelector('.graphiql-response .CodeMirror').CodeMirror.getValue()"
            await page.wait_until("!!document.querySelector('.graphiql-query-editor .CodeMirror')", 30, "GraphiQL's editor")
            # the schema arrived by introspection without a token: the docs explorer can open
            await page.wait_until("!!document.querySelector('.graphiql-execute-button')", 10, "the run button")
            await page.evaluate(f"{editor}.setValue({json.dumps(query)})")
            await page.evaluate(f"{headers}.setValue('{{}}')")
            await page.evaluate("document.querySelector('.graphiql-execute-button').click()")
            refused = await page.wait_until(f"{result}.includes('UNAUTHENTICATED') && {result}", 20, "the refusal without a token")
            await page.evaluate(f"{headers}.setValue({json.dumps(json.dumps({'Authorization': 'Bearer ' + token}))})")
            await page.evaluate("document.querySelector('.graphiql-execute-button').click()")
            answer = await page.wait_until(f"{result}.includes({json.dumps(name)}) && {result}", 20, "the query's result")
            return refused, answer

    try:
        refused, answer = asyncio.run(scenario())
    finally:
        browser.stop()
    assert json.loads(answer)["data"]["tenant"] == {"tenantName": name, "serviceTier": "BRONZE"}
    assert json.loads(refused)["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

"""GET /graphql from a browser: the GraphiQL explorer page.

As other Python GraphQL servers do, the page is a few lines of HTML that load
GraphiQL's UMD build and React from a base URL: `graphql.explorer_assets_url`
(default the public CDN, laid out package@version/file). For hosts without
internet access, `graphql.explorer_assets_dir` names a local node_modules
directory — the output of

    npm install graphiql@3.9.0 react@18.3.1 react-dom@18.3.1

— and the daemon serves exactly the files the page needs from it at
/graphql/assets/<package>/<file>. Nothing of GraphiQL is shipped with rustymt.

The page talks to /graphql on the same origin. Introspection needs no token,
so the schema loads at once; paste {"Authorization": "Bearer <jwt>"} into
the Headers tab to run operations.
"""
from __future__ import annotations

import html
import os

from aiohttp import web

# (package, version, file) the page loads; pinned together: GraphiQL 3's UMD
# build expects React 18's UMD globals (React 19 ships no UMD build).
ASSETS = {
    "react": ("react", "18.3.1", "umd/react.production.min.js"),
    "react_dom": ("react-dom", "18.3.1", "umd/react-dom.production.min.js"),
    "graphiql_js": ("graphiql", "3.9.0", "graphiql.min.js"),
    "graphiql_css": ("graphiql", "3.9.0", "graphiql.min.css"),
}
LOCAL_PREFIX = "/graphql/assets"

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>rustymt GraphQL explorer</title>
<link rel="stylesheet" href="{graphiql_css}">
<style>html, body, #graphiql {{ height: 100%; margin: 0; }}</style>
</head>
<body>
<div id="graphiql">Loading GraphiQL from {base}&hellip;</div>
<script crossorigin src="{react}"></script>
<script crossorigin src="{react_dom}"></script>
<script crossorigin src="{graphiql_js}"></script>
<script>
  const fetcher = GraphiQL.createFetcher({{ url: new URL("/graphql", window.location.href).href }});
  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, {{
      fetcher,
      defaultEditorToolsVisibility: "headers",
      shouldPersistHeaders: false,
      defaultQuery: "# Paste {{\\"Authorization\\": \\"Bearer <jwt>\\"}} into Headers below, then run.\\n{{\\n  cdb {{ cdbName totalPdbs openPdbs }}\\n}}\\n",
    }}),
  );
</script>
</body>
</html>
"""


def wants_explorer(request: web.Request) -> bool:
    return (request.method == "GET" and "query" not in request.query
            and "text/html" in request.headers.get("Accept", ""))


def asset_urls(base_url: str, local: bool) -> dict[str, str]:
    if local:
        return {name: f"{LOCAL_PREFIX}/{package}/{path}" for name, (package, _version, path) in ASSETS.items()}
    base = base_url.rstrip("/")
    return {name: f"{base}/{package}@{version}/{path}" for name, (package, version, path) in ASSETS.items()}


def render_page(base_url: str, local: bool) -> str:
    urls = {name: html.escape(url, quote=True) for name, url in asset_urls(base_url, local).items()}
    return PAGE.format(base=html.escape(LOCAL_PREFIX if local else base_url), **urls)


def setup_explorer(app: web.Application, settings) -> web.Application:
    """Returns the page handler; registers the local asset route when a directory is configured."""
    assets_dir = settings.graphql.explorer_assets_dir
    page = render_page(settings.graphql.explorer_assets_url, bool(assets_dir))

    async def explorer(_request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-cache"})

    if assets_dir:
        # Only the files the page names: a fixed allow-list, so no path can escape the directory.
        files = {f"{package}/{path}": os.path.join(assets_dir, package, path) for package, _v, path in ASSETS.values()}

        async def asset(request: web.Request) -> web.StreamResponse:
            target = files.get(request.match_info["path"])
            if target is None or not os.path.isfile(target):
                raise web.HTTPNotFound()
            return web.FileResponse(target, headers={"Cache-Control": "public, max-age=86400"})

        app.router.add_get(LOCAL_PREFIX + "/{path:.+}", asset)
    return explorer

"""REST route modules. Each module exposes `ROUTES: list[Route]`;
rustymt.api.app.collect_routes gathers every module in this package."""

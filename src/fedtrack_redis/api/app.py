"""The admin API application: routes, health, metrics, dashboard, error mapping.

Every route except ``/healthz``, ``/openapi.json``, ``/docs`` and the dashboard page
needs ``Authorization: Bearer $FEDTRACK_ADMIN_TOKEN``. Library errors map to status
codes: bad input 400, a service down 503.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool

from ..config import Settings
from ..errors import BackendUnavailableError, ConfigurationError, FedtrackError
from ..policy.store import PolicyStore
from ..reads import StatsReader
from . import models
from .deps import ERRORS, Policy, Stats, require_token
from .metrics import ClusterCollector
from .routes import router


def create_app(
    settings: Settings, *, policy: PolicyStore | None = None, stats: StatsReader | None = None
) -> FastAPI:
    """Build the app. Without `policy` / `stats` it opens its own at start-up and closes them."""
    if not settings.admin_token:
        raise ConfigurationError("FEDTRACK_ADMIN_TOKEN: the admin API needs a token; set one")
    registry = CollectorRegistry(auto_describe=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_policy = policy is None
        own_stats = stats is None
        if policy is not None:
            store = policy
        else:
            opened = PolicyStore(
                settings.require_database(),
                settings.redis_url,
                namespace=settings.namespace,
                database_id=settings.database_id,
            )
            store = await run_in_threadpool(opened.init)
        reader = stats or StatsReader(settings.redis_url, namespace=settings.namespace)
        app.state.policy, app.state.stats = store, reader
        collector = ClusterCollector(store, reader)
        registry.register(collector)
        try:
            yield
        finally:
            registry.unregister(collector)
            if own_policy:
                store.close()
            if own_stats:
                reader.close()

    app = FastAPI(
        title="fedtrack admin API",
        version="1",
        lifespan=lifespan,
        description="Cluster-wide federation policy and delivery diagnostics.",
    )
    app.state.admin_token = settings.admin_token.encode()
    app.state.local_domain = settings.local_domain
    app.include_router(router, dependencies=[Depends(require_token)])

    @app.exception_handler(FedtrackError)
    async def fedtrack_error(request: Request, exc: FedtrackError) -> JSONResponse:
        code = 503 if isinstance(exc, BackendUnavailableError) else 400
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.get("/healthz", tags=["health"], responses={503: {"model": models.Health}})
    def healthz(policy: Policy, stats: Stats, response: Response) -> models.Health:
        """200 when Redis and the database answer, 503 otherwise (no token needed)."""
        redis_ok = stats.ping()
        database_ok = policy.ping_database()
        if not (redis_ok and database_ok):
            response.status_code = 503
        return models.Health(
            redis="ok" if redis_ok else "unavailable",
            database="ok" if database_ok else "unavailable",
        )

    @app.get(
        "/metrics",
        tags=["health"],
        dependencies=[Depends(require_token)],
        responses=ERRORS,
        response_class=Response,
    )
    def metrics() -> Response:
        """Prometheus exposition: cluster totals, rules, and this process's own metrics."""
        body = generate_latest(registry) + generate_latest(REGISTRY)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> HTMLResponse:
        from .dashboard import page

        return HTMLResponse(page())

    return app

"""The admin API application: routes, health, metrics, dashboard, reference page, errors.

Every route except ``/healthz``, ``/openapi.json``, ``/docs``, the dashboard page and its
stylesheet needs ``Authorization: Bearer <token>`` (`tokens`); a read token may only
GET. Wrong tokens are limited per peer address (`limiter`). Every response carries the
security headers of `security`. Library errors map to status codes in `failures`: bad
input 400, a service down 503 without the driver's text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Response
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool

from ..config import Settings
from ..policy.store import PolicyStore
from ..reads import StatsReader
from . import dashboard, docs, failures, models
from .deps import ERRORS, Policy, Stats, authenticate
from .health_routes import router as health_router
from .history_routes import router as history_router
from .limiter import FailureLimiter
from .metrics import ClusterCollector
from .routes import router
from .rule_routes import router as rule_router
from .security import DOCS_POLICY, SecurityHeaders
from .tokens import parse_tokens


def create_app(
    settings: Settings,
    *,
    policy: PolicyStore | None = None,
    stats: StatsReader | None = None,
    limiter: FailureLimiter | None = None,
) -> FastAPI:
    """Build the app. Without `policy` / `stats` it opens its own at start-up and closes them.

    Raises `ConfigurationError` (one line naming the variable) when no token is set or
    one is invalid, before anything is opened.
    """
    tokens = parse_tokens(settings.admin_token, settings.admin_tokens)
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
                database_pool=True,  # an admin process: changes skip a new connection
            )
            store = await run_in_threadpool(opened.init)
        reader = stats or StatsReader(
            settings.redis_url, namespace=settings.namespace, database=settings.database_url
        )
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
        docs_url=None,  # Swagger UI and ReDoc load from a CDN: /docs is our own page
        redoc_url=None,
    )
    policies = {"/": dashboard.content_security_policy(), "/docs": DOCS_POLICY}
    app.state.tokens = tokens
    app.state.limiter = limiter if limiter is not None else FailureLimiter()
    app.state.local_domain = settings.local_domain
    for authenticated in (router, rule_router, health_router, history_router):
        app.include_router(authenticated, dependencies=[Depends(authenticate)])
    app.add_middleware(SecurityHeaders, policies=policies)
    failures.install(app, settings, policies)

    @app.get("/healthz", tags=["health"], responses={503: {"model": models.Health}})
    def healthz(policy: Policy, stats: Stats, response: Response) -> models.Health:
        """200 when Redis and the database answer and the database is the namespace's
        (G11); 503 otherwise, with the reason. Names the engine and whether replicas are
        in sync (no token needed)."""
        from ..cluster_status import describe

        redis_ok = stats.ping()
        this = policy.database_id()
        database_ok = this is not None
        plumbing = describe(stats.engine, stats.keys, this, policy.guard.pinned)
        mismatch = plumbing.get("database", {}).get("mismatch")
        if not (redis_ok and database_ok) or mismatch:
            response.status_code = 503
        return models.Health(
            redis="ok" if redis_ok else "unavailable",
            database="ok" if database_ok else "unavailable",
            engine=plumbing.get("engine"),
            replicas_in_sync=plumbing.get("replicas_in_sync"),
            database_id=this,
            mismatch=mismatch,
        )

    @app.get(
        "/metrics",
        tags=["health"],
        dependencies=[Depends(authenticate)],
        responses=ERRORS,
        response_class=Response,
    )
    def metrics() -> Response:
        """Prometheus exposition: cluster totals, rules, and this process's own metrics."""
        body = generate_latest(registry) + generate_latest(REGISTRY)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard_page() -> HTMLResponse:
        return HTMLResponse(dashboard.page())

    @app.get("/dashboard.css", include_in_schema=False)
    def dashboard_stylesheet() -> Response:
        return Response(dashboard.stylesheet(), media_type="text/css; charset=utf-8")

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def reference() -> HTMLResponse:
        return HTMLResponse(docs.render(app.openapi()))

    return app

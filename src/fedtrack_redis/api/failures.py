"""How the admin API answers failures: status codes, bodies without driver text, logs.

Bad input is a 400 with the library's message (URLs redacted). A service down is a 503
whose body says ``service unavailable: <reason>``: our own words and the driver
exception's class name, never the driver's message (it can carry connection
parameters, SQL, or a password), and the same line is logged with the redacted URL of
the service. Anything else is a 500 ``internal error``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..config import Settings
from ..errors import BackendUnavailableError, FedtrackError
from ..redact import driver_errors, redact_url, unavailable_reason
from .security import headers_for

log = logging.getLogger("fedtrack_redis.api")


def install(app: FastAPI, settings: Settings, policies: Mapping[str, str]) -> None:
    """Register the exception handlers of `app`."""

    def unavailable(request: Request, exc: BaseException, reason: str) -> JSONResponse:
        service = _service(exc, settings)
        log.warning(
            "%s %s: 503 service unavailable: %s%s",
            request.method,
            request.url.path,
            reason,
            f" ({service})" if service else "",
        )
        return JSONResponse({"detail": f"service unavailable: {reason}"}, status_code=503)

    @app.exception_handler(FedtrackError)
    async def fedtrack_error(request: Request, exc: FedtrackError) -> JSONResponse:
        if isinstance(exc, BackendUnavailableError):
            return unavailable(request, exc, unavailable_reason(exc))
        return JSONResponse({"detail": redact_url(str(exc))}, status_code=400)

    @app.exception_handler(sa.exc.SQLAlchemyError)
    async def database_error(request: Request, exc: sa.exc.SQLAlchemyError) -> JSONResponse:
        return unavailable(request, exc, f"database ({type(exc).__name__})")

    @app.exception_handler(redis.RedisError)
    async def redis_error(request: Request, exc: redis.RedisError) -> JSONResponse:
        return unavailable(request, exc, f"Redis ({type(exc).__name__})")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Sent by Starlette's outermost middleware, past ours: the headers are set here.
        log.error(
            "%s %s: 500 internal error (%s)", request.method, request.url.path, type(exc).__name__
        )
        return JSONResponse(
            {"detail": "internal error"},
            status_code=500,
            headers=headers_for(request.url.path, policies),
        )


def _service(exc: BaseException, settings: Settings) -> str:
    """Which service failed, with its URL redacted ("" when the chain does not say)."""
    for driver in driver_errors(exc):
        if isinstance(driver, sa.exc.SQLAlchemyError):
            return f"database {redact_url(settings.database_url or '')}"
        if isinstance(driver, redis.RedisError):
            return f"Redis {redact_url(settings.redis_url)}"
    return ""

"""FastAPI dependencies: the library objects the app holds, and the token check."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..policy.store import PolicyStore
from ..reads import StatsReader

bearer = HTTPBearer(auto_error=False, description="FEDTRACK_ADMIN_TOKEN")


def _policy(request: Request) -> PolicyStore:
    store: PolicyStore = request.app.state.policy
    return store


def _stats(request: Request) -> StatsReader:
    reader: StatsReader = request.app.state.stats
    return reader


def local_domain(request: Request) -> str:
    value: str = request.app.state.local_domain
    return value


async def require_token(request: Request) -> None:
    """401 without a bearer token, 403 with a wrong one (compared in constant time)."""
    credentials: HTTPAuthorizationCredentials | None = await bearer(request)
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token (Authorization: Bearer $FEDTRACK_ADMIN_TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    expected: bytes = request.app.state.admin_token
    if not hmac.compare_digest(credentials.credentials.encode(), expected):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong bearer token")


Policy = Annotated[PolicyStore, Depends(_policy)]
Stats = Annotated[StatsReader, Depends(_stats)]
LocalDomain = Annotated[str, Depends(local_domain)]

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Bad input"},
    401: {"description": "No bearer token"},
    403: {"description": "Wrong bearer token"},
    503: {"description": "Redis or the database is unavailable"},
}

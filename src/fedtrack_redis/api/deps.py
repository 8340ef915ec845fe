"""FastAPI dependencies: the library objects the app holds, the token check, the actor.

`authenticate` runs before every protected route: 401 without a bearer token, 429 while
the caller's address is blocked for wrong tokens, 403 with a wrong token (counted) or
with a read token on anything but GET. `Actor` gives a route the audit identity of its
caller, ``api:<token name>@<client address>`` (the audit log's actor).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..policy.store import PolicyStore
from ..reads import StatsReader
from .limiter import FailureLimiter
from .tokens import Token, Tokens

bearer = HTTPBearer(
    auto_error=False, description="FEDTRACK_ADMIN_TOKEN or a token of FEDTRACK_ADMIN_TOKENS"
)

WRONG_TOKEN = "wrong bearer token"
READ_METHODS = frozenset({"GET", "HEAD"})


def _policy(request: Request) -> PolicyStore:
    store: PolicyStore = request.app.state.policy
    return store


def _stats(request: Request) -> StatsReader:
    reader: StatsReader = request.app.state.stats
    return reader


def local_domain(request: Request) -> str:
    value: str = request.app.state.local_domain
    return value


def peer_address(request: Request) -> str:
    """The TCP peer's address (a reverse proxy's own address when behind one)."""
    return request.client.host if request.client is not None else "unknown"


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Token:
    """The caller's token, or the HTTP error that refuses the request."""
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token (Authorization: Bearer $FEDTRACK_ADMIN_TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    limiter: FailureLimiter = request.app.state.limiter
    address = peer_address(request)
    wait = limiter.retry_after(address)
    if wait:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many wrong tokens from {address}; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    tokens: Tokens = request.app.state.tokens
    token = tokens.match(credentials.credentials)
    if token is None:
        limiter.failed(address)
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            WRONG_TOKEN,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    if token.read_only and request.method not in READ_METHODS:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"the token {token.name!r} is read-only: it cannot change anything",
            headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
        )
    request.state.token = token
    request.state.actor = f"api:{token.name}@{address}"
    return token


#: The name the router and the app use for the check (kept for existing callers).
require_token = authenticate


def _actor(request: Request, token: Annotated[Token, Depends(authenticate)]) -> str:
    actor: str = request.state.actor
    return actor


Policy = Annotated[PolicyStore, Depends(_policy)]
Stats = Annotated[StatsReader, Depends(_stats)]
LocalDomain = Annotated[str, Depends(local_domain)]
#: The authenticated caller's token.
Caller = Annotated[Token, Depends(authenticate)]
#: The audit identity of the caller: ``api:<token name>@<client address>``.
Actor = Annotated[str, Depends(_actor)]

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Bad input"},
    401: {"description": "No bearer token"},
    403: {"description": "Wrong bearer token, or a read token on a change"},
    429: {"description": "Too many wrong tokens from this address (see Retry-After)"},
    503: {"description": "Redis or the database is unavailable"},
}

"""Run the admin API with uvicorn."""

from __future__ import annotations

import uvicorn

from ..config import Settings
from .app import create_app


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8025) -> None:
    """Serve until interrupted. Binds 127.0.0.1 unless told otherwise."""
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_level="warning")

"""Alembic environment: runs on the connection `fedtrack_redis.store.migrate` hands over."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from fedtrack_redis.store.schema import metadata

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata)
        context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    engine = config.attributes.get("engine") or sa.create_engine(str(url))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata)
        context.run_migrations()


run()

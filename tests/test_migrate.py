"""Schema migrations: init() brings a database to the head, safely from many processes."""

from __future__ import annotations

import multiprocessing

import sqlalchemy as sa

from fedtrack_redis.store import migrate


def upgrade_in_child(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()


def test_many_processes_upgrade_one_database_at_once(database_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=upgrade_in_child, args=(database_url,)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    engine = sa.create_engine(database_url)
    try:
        assert migrate.current_revision(engine) == migrate.head_revision()
        tables = set(sa.inspect(engine).get_table_names())
        assert {"federation_rules", "federation_settings", "federation_server_stats"} <= tables
        with engine.connect() as connection:
            versions = connection.execute(
                sa.text("SELECT count(*) FROM federation_settings WHERE key = 'version'")
            ).scalar_one()
        assert versions == 1
    finally:
        engine.dispose()


def test_upgrade_is_idempotent(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        migrate.upgrade(engine)
        migrate._upgraded.clear()
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.head_revision()
    finally:
        engine.dispose()

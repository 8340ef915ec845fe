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


def test_a_database_at_0003_keeps_its_rules_as_exact_exception_rules(
    database_url: str, redis_url: str, namespace: str
) -> None:
    """An installation of the previous version, rules and all, upgraded in place."""
    from alembic import command

    from fedtrack_redis import PolicyStore, check_federation_policy

    engine = sa.create_engine(database_url)
    try:
        config = migrate.alembic_config(engine)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0003")
        old = {"spam.example": 1700000000, "1.2.3.4": 1700000001, "xn--mnchen-3ya.de": 17}
        with engine.begin() as connection:
            for domain, created in old.items():
                connection.execute(
                    sa.text("INSERT INTO federation_rules (domain, created_at) VALUES (:d, :c)"),
                    {"d": domain, "c": created},
                )
        migrate._upgraded.clear()
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.head_revision()
        with engine.connect() as connection:
            audit_rows = connection.execute(sa.text("SELECT count(*) FROM federation_audit"))
            assert audit_rows.scalar_one() == 0
    finally:
        engine.dispose()
    with PolicyStore(database_url, redis_url, namespace=namespace) as store:
        assert store.list_rules() == old
        for rule in store.rules():
            assert (rule.kind, rule.effect, rule.reason, rule.expires_at) == (
                "exact",
                "exception",
                "",
                None,
            )
            assert rule.created_at == old[rule.text]
        assert not check_federation_policy("spam.example", store=store)
        assert not check_federation_policy("[IPv6:::ffff:1.2.3.4]", store=store)
        assert not check_federation_policy("münchen.de", store=store)
        assert check_federation_policy("a.spam.example", store=store)  # exact, as before
        store.add_rule("spam.example", reason="kept, now with a reason")
        rule = store.get_rule("spam.example")
        assert rule is not None and rule.created_at == old["spam.example"]


def test_the_stats_table_leaves_room_for_in_place_updates(migrated_postgres_url: str) -> None:
    """Flushes rewrite every changed row: fill factor 50 keeps those updates HOT."""
    engine = sa.create_engine(migrated_postgres_url)
    with engine.connect() as connection:
        options = connection.exec_driver_sql(
            "SELECT reloptions FROM pg_class WHERE relname = 'federation_server_stats'"
        ).scalar_one()
    engine.dispose()
    assert options == ["fillfactor=50"]

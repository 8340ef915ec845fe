"""SQLAlchemy Core tables. The migrations in ``migrations/versions`` create them; keep both in step.

Names follow the original package (`federation_rules`, `federation_server_stats`) and
docs/flusher.md (column formats). One namespace per database (or PostgreSQL schema): no
namespace column.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..stats import COUNTER_FIELDS

metadata = sa.MetaData()

#: Federation rules. ``domain`` holds the rule's canonical text (the original's column
#: name, kept: an exact rule's text is the domain), whose form names its ``kind``.
#: ``effect`` ``exception`` blocks in ACCEPT mode and allows in REJECT mode; ``block``
#: and ``allow`` are the same in both. Times are unix seconds; ``expires_at`` NULL for
#: a rule that never expires, ``updated_at`` NULL until the rule is first changed.
federation_rules = sa.Table(
    "federation_rules",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("domain", sa.String(255), nullable=False, unique=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False, server_default="exact"),
    sa.Column("effect", sa.String(16), nullable=False, server_default="exception"),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("private_comment", sa.Text, nullable=False, server_default=""),
    sa.Column("created_by", sa.String(255), nullable=True),
    sa.Column("source", sa.String(64), nullable=False, server_default="manual"),
    sa.Column("updated_at", sa.BigInteger, nullable=True),
    sa.Column("expires_at", sa.BigInteger, nullable=True),
    sa.Index("ix_federation_rules_expires_at", "expires_at"),
)

#: Every change of the policy, written in the transaction of the change. ``before`` and
#: ``after`` are JSON (NULL where nothing was); ``target`` is a rule text, ``policy``,
#: ``enabled``, ``*`` (a flush) or an import's file name. Paged newest first by ``id``,
#: alone or within one target.
federation_audit = sa.Table(
    "federation_audit",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("before", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("after", sa.JSON(none_as_null=True), nullable=True),
    sa.Index("ix_federation_audit_target_id", "target", "id"),
)

#: Cluster settings: ``policy`` (ACCEPT/REJECT), ``enabled`` (true/false) and
#: ``version``, the change counter that orders policy changes across hosts.
federation_settings = sa.Table(
    "federation_settings",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

#: One column per counter of the domain hash, named as the JSON fields.
COUNTER_COLUMNS: tuple[str, ...] = ("queued_messages", *COUNTER_FIELDS)

#: Durable copy of the per-domain Redis hashes (absolute values, written by the flusher).
#: ``latency_histogram`` holds the log-scale buckets as ``"bucket:count,..."``.
federation_server_stats = sa.Table(
    "federation_server_stats",
    metadata,
    sa.Column("domain", sa.String(253), primary_key=True),
    *(
        sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
        for name in COUNTER_COLUMNS
    ),
    sa.Column("last_active", sa.DateTime(timezone=True), nullable=True),
    sa.Column("latency_histogram", sa.Text, nullable=False, server_default=""),
    # Room in each page for flushes to update rows in place (migration 0005).
    postgresql_with={"fillfactor": 50},
)

#: Last push sequence applied per (shard, worker), copied with the stats it produced so
#: that a chunk retried after Redis lost its data is not counted twice (G2 + G6).
federation_push_acks = sa.Table(
    "federation_push_acks",
    metadata,
    sa.Column("shard", sa.Integer, primary_key=True),
    sa.Column("worker_id", sa.String(128), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    #: Unix seconds of the worker's last applied push, as Redis saw it (for pruning).
    sa.Column("seen_at", sa.BigInteger, nullable=False, server_default="0"),
)

#: One row: the fencing token of the newest flusher leader (G4).
federation_flusher = sa.Table(
    "federation_flusher",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("fence", sa.BigInteger, nullable=False),
)

#: One row: this database's identity (G11), a random id created with the tables. Redis
#: records it beside its hydration markers and in the policy keys.
federation_identity = sa.Table(
    "federation_identity",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("database_id", sa.String(32), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

#: Delivery health state changes (docs/health.md), copied from the shards' event streams
#: by the flusher leader; `id` is ``<shard>-<stream id>``, so a copy made twice is one row.
federation_health_events = sa.Table(
    "federation_health_events",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("domain", sa.String(255), nullable=False),
    sa.Column("from_state", sa.String(16), nullable=False),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Index("ix_federation_health_events_domain_at", "domain", "at"),
)

#: One row per (event, webhook URL): what is still to be delivered, and when to try again.
federation_webhook_deliveries = sa.Table(
    "federation_webhook_deliveries",
    metadata,
    sa.Column("event_id", sa.String(40), primary_key=True),
    sa.Column("url", sa.String(2048), primary_key=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_at", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.BigInteger, nullable=True),
    sa.Column("gave_up", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Index("ix_federation_webhook_deliveries_due", "delivered_at", "next_at"),
)

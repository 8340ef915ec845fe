"""SQLAlchemy Core tables. The migrations in ``migrations/versions`` create them; keep both in step.

Names follow the original package (`federation_rules`, `federation_server_stats`) and
docs/flusher.md (column formats). One namespace per database (or PostgreSQL schema): no
namespace column.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..stats import COUNTER_FIELDS

metadata = sa.MetaData()

#: Domain exception rules: a blocklist in ACCEPT mode, an allowlist in REJECT mode.
federation_rules = sa.Table(
    "federation_rules",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("domain", sa.String(253), nullable=False, unique=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
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
